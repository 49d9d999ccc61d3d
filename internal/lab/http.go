package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HTTPPort is where the DR backends listen, and the port of the lab's VIPs.
const HTTPPort = 80

// NATPort is where the NAT backends listen, for HTTP and for the UDP echo:
// not the VIPs' port, so a translation that leaves the port alone fails.
const NATPort = 8080

// PeerHeader is the response header in which a Server reports the peer
// address (addr:port) its connection came from: the client's own address
// behind a `nat` VIP, the SNAT address behind a `fullnat` one.
const PeerHeader = "X-Peer"

// Server is an HTTP server in one namespace that answers every request with
// its own name, so "which backend answered" is one line, and reports the
// peer it saw in PeerHeader. It can be stopped and started again, like a
// server process that dies and is restarted.
type Server struct {
	Name   string
	node   *Node
	port   uint16
	served atomic.Uint64

	mu   sync.Mutex
	srv  *http.Server  // nil while stopped
	done chan struct{} // closed when srv's Serve has returned
}

// Served is how many requests the server has answered, over all its runs.
func (s *Server) Served() uint64 { return s.served.Load() }

// Running reports whether the server is listening.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Start listens again after Stop (it is started already by ServeName).
// Starting a running server is an error.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return fmt.Errorf("server %s already running", s.Name)
	}
	var ln net.Listener
	// The listening socket is created on a thread inside the namespace and
	// stays there; accepting and serving then run on ordinary goroutines.
	if err := s.node.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", s.port))
		return err
	}); err != nil {
		return fmt.Errorf("listen in %s: %w", s.node.NetNS, err)
	}
	body := []byte(s.Name + "\n")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.served.Add(1)
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set(PeerHeader, peerString(r.RemoteAddr))
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: Scale(5 * time.Second),
		IdleTimeout:       Scale(5 * time.Second),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed on Close
	}()
	s.srv, s.done = srv, done
	return nil
}

// Stop closes the listener and every open connection, as if the server
// process died: from then on the backend's kernel answers new SYNs with a
// RST. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	s.srv, s.done = nil, nil
	if err != nil {
		return fmt.Errorf("close server %s: %w", s.Name, err)
	}
	return nil
}

// Close stops the server for good (the lab calls it on Close).
func (s *Server) Close() error { return s.Stop() }

// ServeName starts a server on [::]:port (IPv4 and IPv6) inside n's namespace
// answering "<name>\n". The lab closes it on Close.
func (l *Lab) ServeName(n *Node, name string, port uint16) (*Server, error) {
	s := &Server{Name: name, node: n, port: port}
	if err := s.Start(); err != nil {
		return nil, err
	}
	l.AddCloser(s.Close)
	return s, nil
}

// peerString writes a remote address with an IPv4 peer of the dual-stack
// listener as IPv4 (10.200.0.2:20001, not [::ffff:10.200.0.2]:20001).
func peerString(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return remote
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

// ServeBackends starts a name server on port HTTPPort in every DR backend.
func (l *Lab) ServeBackends() ([]*Server, error) {
	var out []*Server
	for _, be := range l.Backends {
		s, err := l.ServeName(be, be.Name, HTTPPort)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// DialContext opens a connection from inside n's namespace: the socket is
// created on a thread that has entered the namespace (see Do).
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		if port, ok := ctx.Value(localPortKey{}).(uint16); ok {
			d.LocalAddr = &net.TCPAddr{Port: int(port)}
		}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// localPortKey carries the client port a dial must bind (a uint16).
type localPortKey struct{}

// LoadOptions configure Load.
type LoadOptions struct {
	Requests    int           // total requests, each on a new TCP connection
	Parallel    int           // concurrent requests; default 4
	Timeout     time.Duration // per request; default 3s
	MaxFailures int           // stop early after this many failures; 0: never
	// FirstPort, when set, makes request i use client port FirstPort+i
	// instead of an ephemeral one, so the set of 5-tuples, and with it the
	// hash-based distribution, is the same in every run.
	FirstPort uint16
}

// LoadResult is what a load run saw.
type LoadResult struct {
	Requests   int            // requests attempted
	OK         int            // answered with 200 and a name
	ByBackend  map[string]int // answers per backend name
	Answers    []Answer       // every answered request, in no particular order
	Failures   []string       // the first few failures, one line each
	Failed     int
	LocalPorts int // distinct client ports used: distinct 5-tuples
	Duration   time.Duration
}

// Answer is one answered request: from which client port it was sent, who
// answered, and the peer the server saw (PeerHeader; invalid if it sent
// none).
type Answer struct {
	Port    uint16
	Backend string
	Peer    netip.AddrPort
}

// Names returns the backend names that answered, sorted.
func (r LoadResult) Names() []string {
	names := make([]string, 0, len(r.ByBackend))
	for n := range r.ByBackend {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

const maxFailureLines = 10

// Load sends opts.Requests HTTP GETs to target from n's namespace, each on a
// new TCP connection, and counts who answered.
func (n *Node) Load(ctx context.Context, target netip.AddrPort, opts LoadOptions) LoadResult {
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 3 * time.Second
	}
	var (
		mu    sync.Mutex
		res   = LoadResult{ByBackend: map[string]int{}}
		ports = map[uint16]bool{}
	)
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := n.DialContext(ctx, network, addr)
			if err == nil {
				if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
					mu.Lock()
					ports[uint16(la.Port)] = true
					mu.Unlock()
				}
			}
			return c, err
		},
		ResponseHeaderTimeout: opts.Timeout,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: opts.Timeout}
	url := "http://" + target.String() + "/"

	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range opts.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				rctx := ctx
				if opts.FirstPort != 0 {
					rctx = context.WithValue(ctx, localPortKey{}, opts.FirstPort+uint16(i))
				}
				var local uint16
				rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
					if la, ok := ci.Conn.LocalAddr().(*net.TCPAddr); ok {
						local = uint16(la.Port)
					}
				}})
				a, err := get(rctx, client, url)
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Failed++
					if len(res.Failures) < maxFailureLines {
						res.Failures = append(res.Failures, err.Error())
					}
				} else {
					a.Port = local
					res.OK++
					res.ByBackend[a.Backend]++
					res.Answers = append(res.Answers, a)
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range opts.Requests {
		mu.Lock()
		stop := opts.MaxFailures > 0 && res.Failed >= opts.MaxFailures
		mu.Unlock()
		if stop {
			break
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	res.Duration = time.Since(start)
	res.LocalPorts = len(ports)
	return res
}

// Get does one request from n's namespace on a new connection and returns
// the trimmed body (a backend's name).
func (n *Node) Get(ctx context.Context, target netip.AddrPort, timeout time.Duration) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: n.DialContext}
	defer tr.CloseIdleConnections()
	a, err := get(ctx, &http.Client{Transport: tr, Timeout: timeout}, "http://"+target.String()+"/")
	return a.Backend, err
}

// get does one GET and returns who answered and the peer it reported.
func get(ctx context.Context, c *http.Client, url string) (Answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Answer{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return Answer{}, fmt.Errorf("get %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Answer{}, fmt.Errorf("get %s: status %s", url, resp.Status)
	}
	a := Answer{Backend: strings.TrimSpace(string(b))}
	if a.Backend == "" {
		return Answer{}, errors.New("get " + url + ": empty body")
	}
	a.Peer, _ = netip.ParseAddrPort(resp.Header.Get(PeerHeader)) // invalid if absent
	return a, nil
}
