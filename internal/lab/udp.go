package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// UDPEcho is a UDP server in one namespace that answers every datagram
// with "<name> <peer> <payload>": who answered, the peer address it saw
// (the client's own behind a `nat` VIP, the SNAT address behind a
// `fullnat` one) and what was sent.
type UDPEcho struct {
	Name   string
	conn   net.PacketConn
	served atomic.Uint64
	done   chan struct{}
	once   sync.Once
}

// ServeUDPEcho starts an echo server on [::]:port (IPv4 and IPv6) inside
// n's namespace. The lab closes it on Close.
func (l *Lab) ServeUDPEcho(n *Node, name string, port uint16) (*UDPEcho, error) {
	u := &UDPEcho{Name: name, done: make(chan struct{})}
	if err := n.Do(func() error {
		var err error
		u.conn, err = net.ListenPacket("udp", fmt.Sprintf("[::]:%d", port))
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen udp in %s: %w", n.NetNS, err)
	}
	go u.serve()
	l.AddCloser(u.Close)
	return u, nil
}

func (u *UDPEcho) serve() {
	defer close(u.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := u.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		u.served.Add(1)
		reply := fmt.Sprintf("%s %s %s", u.Name, peerString(from.String()), buf[:n])
		_, _ = u.conn.WriteTo([]byte(reply), from)
	}
}

// Served is how many datagrams the server has answered.
func (u *UDPEcho) Served() uint64 { return u.served.Load() }

// Close stops the server.
func (u *UDPEcho) Close() error {
	var err error
	u.once.Do(func() {
		err = u.conn.Close()
		<-u.done
	})
	return err
}

// NATBackend is what runs on one NAT backend: the HTTP name server and the
// UDP echo, both on NATPort.
type NATBackend struct {
	Node *Node
	HTTP *Server
	UDP  *UDPEcho
}

// ServeNATBackends starts the HTTP name server and the UDP echo on NATPort
// in every NAT backend.
func (l *Lab) ServeNATBackends() ([]NATBackend, error) {
	var out []NATBackend
	for _, be := range l.NATBackends {
		h, err := l.ServeName(be, be.Name, NATPort)
		if err != nil {
			return nil, err
		}
		u, err := l.ServeUDPEcho(be, be.Name, NATPort)
		if err != nil {
			return nil, err
		}
		out = append(out, NATBackend{Node: be, HTTP: h, UDP: u})
	}
	return out, nil
}

// EchoOptions configure EchoUDP.
type EchoOptions struct {
	Requests int           // datagrams, each from a socket of its own: a new flow each
	Parallel int           // concurrent exchanges; default 4
	Timeout  time.Duration // for each answer; default 2s
	// FirstPort, when set, makes exchange i use client port FirstPort+i.
	FirstPort uint16
}

// EchoAnswer is one answered datagram.
type EchoAnswer struct {
	Port    uint16         // client port
	Backend string         // who answered
	Peer    netip.AddrPort // the peer the backend saw
	From    netip.AddrPort // where the answer came from (the VIP, if translated back)
}

// EchoResult is what an EchoUDP run saw.
type EchoResult struct {
	Requests  int
	OK        int
	ByBackend map[string]int
	Answers   []EchoAnswer
	Failures  []string // the first few failures, one line each
	Failed    int
	Duration  time.Duration
}

// EchoUDP sends o.Requests datagrams from n to target, each from a new
// socket, and waits for each echo. An answer must carry the payload sent
// and come from target itself: the source of a reply through a NAT VIP is
// translated back, and an unconnected socket (unlike a connected one,
// which would drop it silently) shows any other source as a failure.
func (n *Node) EchoUDP(ctx context.Context, target netip.AddrPort, o EchoOptions) EchoResult {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	var (
		mu  sync.Mutex
		res = EchoResult{ByBackend: map[string]int{}}
		wg  sync.WaitGroup
	)
	start := time.Now()
	jobs := make(chan int)
	for range o.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				var port uint16
				if o.FirstPort != 0 {
					port = o.FirstPort + uint16(i)
				}
				a, err := n.echoOnce(ctx, target, port, fmt.Sprintf("xlb-echo-%d", i), o.Timeout)
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Failed++
					if len(res.Failures) < maxFailureLines {
						res.Failures = append(res.Failures, err.Error())
					}
				} else {
					res.OK++
					res.ByBackend[a.Backend]++
					res.Answers = append(res.Answers, a)
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range o.Requests {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	res.Duration = time.Since(start)
	return res
}

// echoOnce sends one datagram from port (0: ephemeral) and reads its echo.
func (n *Node) echoOnce(ctx context.Context, target netip.AddrPort, port uint16, payload string, timeout time.Duration) (EchoAnswer, error) {
	var c *net.UDPConn
	if err := n.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{Port: int(port)})
		return err
	}); err != nil {
		return EchoAnswer{}, fmt.Errorf("udp socket in %s: %w", n.NetNS, err)
	}
	defer c.Close()
	a := EchoAnswer{Port: uint16(c.LocalAddr().(*net.UDPAddr).Port)}
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = c.SetDeadline(dl)
	if _, err := c.WriteToUDPAddrPort([]byte(payload), target); err != nil {
		return a, fmt.Errorf("udp from port %d to %s: send: %w", a.Port, target, err)
	}
	buf := make([]byte, 2048)
	nr, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return a, fmt.Errorf("udp from port %d to %s: no answer: %w", a.Port, target, err)
	}
	a.From = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	fields := strings.SplitN(string(buf[:nr]), " ", 3)
	if len(fields) != 3 || fields[2] != payload {
		return a, fmt.Errorf("udp from port %d to %s: answer %q from %s, want \"<name> <peer> %s\"", a.Port, target, buf[:nr], a.From, payload)
	}
	a.Backend = fields[0]
	if a.Peer, err = netip.ParseAddrPort(fields[1]); err != nil {
		return a, fmt.Errorf("udp from port %d to %s: answer %q: peer: %w", a.Port, target, buf[:nr], err)
	}
	if a.From != netip.AddrPortFrom(target.Addr().Unmap(), target.Port()) {
		return a, fmt.Errorf("udp from port %d to %s: %s answered from %s, not from the address it was sent to", a.Port, target, a.Backend, a.From)
	}
	return a, nil
}
