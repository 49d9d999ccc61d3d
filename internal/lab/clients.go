package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrKind sorts client errors into what they say about the path: a RST to
// the SYN (nobody listens), a broken established connection, or silence.
type ErrKind string

// Kinds of client errors.
const (
	ErrNone    ErrKind = ""
	ErrRefused ErrKind = "refused" // the SYN was answered with a RST
	ErrReset   ErrKind = "reset"   // an open connection was reset or closed early
	ErrTimeout ErrKind = "timeout" // no answer in time
	ErrOther   ErrKind = "other"
)

// Classify tells which kind of failure err is.
func Classify(err error) ErrKind {
	var ne net.Error
	switch {
	case err == nil:
		return ErrNone
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrReset
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ErrTimeout
	default:
		return ErrOther
	}
}

// dialFrom dials target from n, from client port port when it is not 0.
func (n *Node) dialFrom(ctx context.Context, target netip.AddrPort, port uint16) (net.Conn, error) {
	if port != 0 {
		ctx = context.WithValue(ctx, localPortKey{}, port)
	}
	return n.DialContext(ctx, "tcp", target.String())
}

// roundTrip sends one GET on c and returns the trimmed body (a backend's
// name). The connection is not reused by anyone else, so what answered is
// exactly this connection's server.
func roundTrip(c net.Conn, br *bufio.Reader, host string, keepAlive bool) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+host+"/", nil)
	if err != nil {
		return "", err
	}
	req.Close = !keepAlive
	if err := req.Write(c); err != nil {
		return "", fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return "", fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	name := strings.TrimSpace(string(b))
	if name == "" {
		return "", errors.New("empty body")
	}
	return name, nil
}

// StreamOptions configure StartStream.
type StreamOptions struct {
	Interval time.Duration // between new connections; default 10ms
	Duration time.Duration // stop starting connections after this long; default 10s, at most 2m (scaled by Slowness)
	MaxConns int           // and after this many; default Duration/Interval
	Timeout  time.Duration // per connection, connect and request; default 1s
	// MaxInFlight bounds the connections open at once; a tick that finds
	// this many is skipped (and counted), so a silent target cannot pile up
	// goroutines. Default 64.
	MaxInFlight int
	// FirstPort, when set, makes connection i use client port FirstPort+i,
	// so every connection is a distinct, known 5-tuple.
	FirstPort uint16
}

// Attempt is one connection of a Stream.
type Attempt struct {
	Seq        int
	Port       uint16 // client port
	Start, End time.Time
	Backend    string // the name that answered; "" on error
	Err        error
	Kind       ErrKind
}

// Stream opens new connections at a steady rate, one request each, and
// records every one: when it started and ended, who answered, or how it
// failed.
type Stream struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	mu       sync.Mutex
	attempts []Attempt
	skipped  int
}

// StartStream starts a stream of new connections from n to target. It runs
// until Stop, ctx ends, or its duration or count is reached.
func (n *Node) StartStream(ctx context.Context, target netip.AddrPort, o StreamOptions) *Stream {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Millisecond
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	o.Duration = min(o.Duration, Scale(2*time.Minute))
	if o.MaxConns <= 0 {
		o.MaxConns = int(o.Duration / o.Interval)
	}
	if o.FirstPort != 0 {
		o.MaxConns = min(o.MaxConns, 65535-int(o.FirstPort)+1)
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	s := &Stream{stop: make(chan struct{}), done: make(chan struct{})}
	go s.run(ctx, n, target, o)
	return s
}

func (s *Stream) run(ctx context.Context, n *Node, target netip.AddrPort, o StreamOptions) {
	defer close(s.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, o.MaxInFlight)
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	end := time.NewTimer(o.Duration)
	defer end.Stop()
	for seq := 0; seq < o.MaxConns; {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-end.C:
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			s.mu.Lock()
			s.skipped++
			s.mu.Unlock()
			continue
		}
		a := Attempt{Seq: seq, Start: time.Now()}
		if o.FirstPort != 0 {
			a.Port = o.FirstPort + uint16(seq)
		}
		seq++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			a.Backend, a.Port, a.Err = oneRequest(ctx, n, target, a.Port, o.Timeout)
			a.End = time.Now()
			a.Kind = Classify(a.Err)
			s.mu.Lock()
			s.attempts = append(s.attempts, a)
			s.mu.Unlock()
		}()
	}
}

// oneRequest does one GET on a new connection from port (0: ephemeral) and
// returns who answered and the client port used.
func oneRequest(ctx context.Context, n *Node, target netip.AddrPort, port uint16, timeout time.Duration) (string, uint16, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := n.dialFrom(ctx, target, port)
	if err != nil {
		return "", port, err
	}
	defer c.Close()
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		port = uint16(la.Port)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	name, err := roundTrip(c, bufio.NewReader(c), target.String(), false)
	return name, port, err
}

// Stop stops starting connections, waits for those in flight and returns
// every attempt, ordered by start time.
func (s *Stream) Stop() []Attempt {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	return s.Attempts()
}

// Done is closed when the stream has ended and every attempt is recorded.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Attempts returns the attempts finished so far, ordered by start time.
func (s *Stream) Attempts() []Attempt {
	s.mu.Lock()
	out := append([]Attempt(nil), s.attempts...)
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Skipped is how many ticks found MaxInFlight connections open.
func (s *Stream) Skipped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skipped
}

// KeepAliveOptions configure OpenKeepAlive.
type KeepAliveOptions struct {
	Conns   int           // long-lived connections; default 6
	Every   time.Duration // each sends a request this often; default 100ms
	Timeout time.Duration // per request, and to open; default 1s
	MaxLife time.Duration // bound on the whole run; default 2m
	// FirstPort, when set, makes connection i use client port FirstPort+i.
	FirstPort uint16
}

// ConnResult is what one long-lived connection saw.
type ConnResult struct {
	Port     uint16         // client port
	Backend  string         // who answered its first request
	Answers  map[string]int // answers by name (more than one name: it moved)
	Requests int
	Failures int   // 0 or 1: a connection stops at its first failure
	Err      error // that failure
	Closed   bool  // closed by Close (client FIN), not by a failure
}

// KeepAlive is a set of long-lived HTTP/1.1 keep-alive connections, each
// sending a request every few milliseconds on the same TCP connection.
type KeepAlive struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns []*ConnResult
}

// OpenKeepAlive opens the connections from n to target, does the first
// request on each (so each knows its backend) and keeps them busy until
// Close. It fails if any connection cannot be opened.
func (n *Node) OpenKeepAlive(ctx context.Context, target netip.AddrPort, o KeepAliveOptions) (*KeepAlive, error) {
	if o.Conns <= 0 {
		o.Conns = 6
	}
	if o.Every <= 0 {
		o.Every = 100 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.MaxLife <= 0 {
		o.MaxLife = 2 * time.Minute
	}
	k := &KeepAlive{stop: make(chan struct{})}
	type opened struct {
		c  net.Conn
		br *bufio.Reader
		r  *ConnResult
	}
	var all []opened
	// Opening is set-up, not what a test measures: room for one lost SYN
	// (retransmitted after 1 s) on a loaded machine.
	open := max(o.Timeout, Scale(3*time.Second))
	for i := range o.Conns {
		var port uint16
		if o.FirstPort != 0 {
			port = o.FirstPort + uint16(i)
		}
		dctx, cancel := context.WithTimeout(ctx, open)
		c, err := n.dialFrom(dctx, target, port)
		cancel()
		if err == nil {
			r := &ConnResult{Port: uint16(c.LocalAddr().(*net.TCPAddr).Port), Answers: map[string]int{}}
			br := bufio.NewReader(c)
			_ = c.SetDeadline(time.Now().Add(open))
			r.Backend, err = roundTrip(c, br, target.String(), true)
			if err == nil {
				r.Requests, r.Answers[r.Backend] = 1, 1
				all = append(all, opened{c, br, r})
				continue
			}
			c.Close()
		}
		for _, a := range all {
			a.c.Close()
		}
		return nil, fmt.Errorf("open keep-alive connection %d of %d to %s: %w", i+1, o.Conns, target, err)
	}
	deadline := time.Now().Add(o.MaxLife)
	for _, a := range all {
		k.conns = append(k.conns, a.r)
		k.wg.Add(1)
		go k.loop(ctx, a.c, a.br, a.r, target.String(), o, deadline)
	}
	return k, nil
}

func (k *KeepAlive) loop(ctx context.Context, c net.Conn, br *bufio.Reader, r *ConnResult, host string, o KeepAliveOptions, deadline time.Time) {
	defer k.wg.Done()
	defer c.Close() // the client closes first: a FIN the data plane sees
	tick := time.NewTicker(o.Every)
	defer tick.Stop()
	life := time.NewTimer(time.Until(deadline))
	defer life.Stop()
	for {
		select {
		case <-k.stop:
			k.mu.Lock()
			r.Closed = true
			k.mu.Unlock()
			return
		case <-ctx.Done():
			return
		case <-life.C:
			return
		case <-tick.C:
		}
		_ = c.SetDeadline(time.Now().Add(o.Timeout))
		name, err := roundTrip(c, br, host, true)
		k.mu.Lock()
		r.Requests++
		if err != nil {
			r.Failures++
			r.Err = err
		} else {
			r.Answers[name]++
		}
		k.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Results returns a snapshot of every connection's record.
func (k *KeepAlive) Results() []ConnResult {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]ConnResult, 0, len(k.conns))
	for _, r := range k.conns {
		c := *r
		c.Answers = make(map[string]int, len(r.Answers))
		for n, v := range r.Answers {
			c.Answers[n] = v
		}
		out = append(out, c)
	}
	return out
}

// Close stops the requests, closes every connection from the client side
// and returns the final records.
func (k *KeepAlive) Close() []ConnResult {
	k.stopOnce.Do(func() { close(k.stop) })
	k.wg.Wait()
	return k.Results()
}
