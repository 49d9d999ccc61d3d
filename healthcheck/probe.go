package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Prober runs one probe. It must return by the deadline of ctx (the Spec's
// timeout) and be safe for concurrent use.
type Prober interface {
	Probe(ctx context.Context, s Spec) Result
}

// Result is the outcome of one probe. Reason is short and stable, as it is
// shown to operators and logged: "ok", "connect refused", "timeout",
// "http 503", "port unreachable", "no route", or a short error text.
type Result struct {
	OK     bool
	Reason string
}

// Reasons of the probes.
const (
	ReasonOK              = "ok"
	ReasonRefused         = "connect refused"
	ReasonTimeout         = "timeout"
	ReasonPortUnreachable = "port unreachable"
	ReasonNoRoute         = "no route"
	ReasonReset           = "connection reset"
	ReasonClosed          = "connection closed"
	ReasonCanceled        = "canceled"
)

// httpBodyPrefix is how much of a response body the HTTP probe reads: a
// server may want its response read before the close, but a health check
// must not download a page.
const httpBodyPrefix = 512

// NewProber returns the network prober: tcp, http and udp over the host's
// sockets.
func NewProber() Prober {
	// No keepalive: a probe connection lives for a handshake, and the
	// four setsockopt calls it costs are a third of a probe's syscalls.
	p := &netProber{dialer: net.Dialer{KeepAlive: -1}}
	p.http = &http.Client{
		Transport: &http.Transport{
			DialContext:            p.dialTCP,
			DisableKeepAlives:      true, // one connection per probe: it checks the accept path too
			DisableCompression:     true,
			MaxResponseHeaderBytes: 16 << 10,
			// Proxy stays nil: a health check goes to the backend itself.
		},
		// A redirect is an answer; following it would probe another server.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p
}

type netProber struct {
	dialer net.Dialer
	http   *http.Client
}

func (p *netProber) Probe(ctx context.Context, s Spec) Result {
	switch s.Kind {
	case TCP:
		return p.probeTCP(ctx, s)
	case HTTP:
		return p.probeHTTP(ctx, s)
	case UDP:
		return p.probeUDP(ctx, s)
	}
	return Result{Reason: fmt.Sprintf("unknown kind %q", s.Kind)}
}

// dialTCP connects with SO_LINGER 0, so that closing sends a RST and leaves
// no TIME_WAIT socket: at 10,000 probes a second, TIME_WAIT (60s) would
// hold 600,000 local ports, many more than the ephemeral range.
func (p *netProber) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := p.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetLinger(0); err != nil {
			c.Close()
			return nil, fmt.Errorf("set linger: %w", err)
		}
	}
	return c, nil
}

func (p *netProber) probeTCP(ctx context.Context, s Spec) Result {
	// Not Dialer.DialTCP: given no local address it binds to 0.0.0.0:0
	// before connecting, a syscall more and an ephemeral port taken for
	// every destination (the bind path), where connect alone picks a port
	// per destination, so that ports are shared.
	c, err := p.dialer.DialContext(ctx, "tcp", s.Target.String())
	if err != nil {
		return Result{Reason: reason(ctx, err)}
	}
	// Reset on close, as in dialTCP.
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetLinger(0); err != nil {
			c.Close()
			return Result{Reason: "set linger: " + shortError(err)}
		}
	}
	c.Close()
	return Result{OK: true, Reason: ReasonOK}
}

func (p *netProber) probeHTTP(ctx context.Context, s Spec) Result {
	path := s.Path
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Target.String()+path, nil)
	if err != nil {
		return Result{Reason: "bad request: " + err.Error()}
	}
	if s.Host != "" {
		req.Host = s.Host
	}
	req.Header.Set("User-Agent", "xdplb-healthcheck")
	resp, err := p.http.Do(req)
	if err != nil {
		return Result{Reason: reason(ctx, err)}
	}
	defer resp.Body.Close()
	_, _ = io.CopyN(io.Discard, resp.Body, httpBodyPrefix) // best effort: the status decides
	want := s.Expect
	if want == (StatusRange{}) {
		want = DefaultExpect
	}
	if !want.Contains(resp.StatusCode) {
		return Result{Reason: "http " + strconv.Itoa(resp.StatusCode)}
	}
	return Result{OK: true, Reason: ReasonOK}
}

func (p *netProber) probeUDP(ctx context.Context, s Spec) Result {
	// A connected socket: the kernel reports the ICMP port unreachable
	// for it as ECONNREFUSED, and drops datagrams from anyone else.
	c, err := p.dialer.DialUDP(ctx, "udp", netip.AddrPort{}, s.Target)
	if err != nil {
		return Result{Reason: reason(ctx, err)}
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(dl); err != nil {
			return Result{Reason: reason(ctx, err)}
		}
	}
	// A cancel without a deadline must still end the read.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	payload := s.Payload
	if len(payload) == 0 {
		payload = defaultPayload
	}
	if _, err := c.Write(payload); err != nil {
		return Result{Reason: udpReason(ctx, err)}
	}
	var buf [512]byte
	if _, err := c.Read(buf[:]); err != nil {
		return Result{Reason: udpReason(ctx, err)}
	}
	return Result{OK: true, Reason: ReasonOK}
}

func udpReason(ctx context.Context, err error) string {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return ReasonPortUnreachable
	}
	return reason(ctx, err)
}

// reason turns a probe error into a short, stable text without addresses
// (the target is logged beside it).
func reason(ctx context.Context, err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return ReasonNoRoute
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ReasonReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ReasonClosed
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		if errors.Is(ctx.Err(), context.Canceled) {
			return ReasonCanceled
		}
		return ReasonTimeout
	case errors.Is(err, context.Canceled):
		return ReasonCanceled
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout
	}
	return shortError(err)
}

// shortError is the innermost useful text of err: "connection reset by
// peer", not "dial tcp 10.0.0.1:80: connect: connection reset by peer".
func shortError(err error) string {
	for {
		var next error
		var ue *url.Error
		var oe *net.OpError
		var se *os.SyscallError
		switch {
		case errors.As(err, &ue):
			next = ue.Err
		case errors.As(err, &oe):
			next = oe.Err
		case errors.As(err, &se):
			next = se.Err
		}
		if next == nil {
			break
		}
		err = next
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}
