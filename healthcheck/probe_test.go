package healthcheck

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// probeTimeout bounds every probe in these tests; the timeout cases wait it
// out, the others finish long before.
const probeTimeout = 300 * time.Millisecond

func probe(t *testing.T, s Spec) (Result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), probeTimeout)
	defer cancel()
	start := time.Now()
	r := NewProber().Probe(ctx, s)
	took := time.Since(start)
	if took > probeTimeout+200*time.Millisecond {
		t.Errorf("probe took %s, beyond its %s deadline", took, probeTimeout)
	}
	return r, took
}

func wantResult(t *testing.T, got Result, ok bool, reason string) {
	t.Helper()
	if got.OK != ok || got.Reason != reason {
		t.Errorf("result %+v, want OK=%v Reason=%q", got, ok, reason)
	}
}

// closedPort returns a local address on which nothing listens.
func closedPort(t *testing.T, network string) netip.AddrPort {
	t.Helper()
	var addr string
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr().String()
		c.Close()
	}
	return netip.MustParseAddrPort(addr)
}

// tcpServer accepts connections on ip and reads each until the peer goes,
// so the server never closes first: a TIME_WAIT socket afterwards is the
// client's.
func tcpServer(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// timeWaits counts the TIME_WAIT sockets from or to ap (an IPv4 address).
// The table is the whole network namespace's, shared with other programs:
// the exact address and port keep their sockets out of the count.
func timeWaits(t *testing.T, ap netip.AddrPort) int {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	a := ap.Addr().As4()
	// The kernel prints the address as a host-order (little-endian) word.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	n := 0
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) > 3 && fields[3] == "06" && (fields[1] == want || fields[2] == want) {
			n++
		}
	}
	return n
}

func TestProbeTCP(t *testing.T) {
	t.Run("ok, reset without time-wait", func(t *testing.T) {
		// An address of its own, for fewer strangers in the count.
		target := tcpServer(t, "127.0.0.113")
		if n := timeWaits(t, target); n > 0 {
			t.Skipf("%d TIME_WAIT sockets of %s before the test", n, target)
		}
		for range 5 {
			r, _ := probe(t, Spec{Kind: TCP, Target: target})
			wantResult(t, r, true, "ok")
		}
		// The RST reaches the server's read at once; give it a moment to
		// close its end, then no socket of the port may be in TIME_WAIT.
		deadline := time.Now().Add(time.Second)
		for timeWaits(t, target) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := timeWaits(t, target); n > 0 {
			t.Errorf("%d sockets in TIME_WAIT after 5 probes: the probe must close with a reset", n)
		}
	})
	t.Run("refused", func(t *testing.T) {
		r, took := probe(t, Spec{Kind: TCP, Target: closedPort(t, "tcp")})
		wantResult(t, r, false, "connect refused")
		if took > 100*time.Millisecond {
			t.Errorf("a refused connect took %s", took)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		r, took := probe(t, Spec{Kind: TCP, Target: fullListener(t)})
		wantResult(t, r, false, "timeout")
		if took < probeTimeout-10*time.Millisecond {
			t.Errorf("timed out after %s, before the %s deadline", took, probeTimeout)
		}
	})
}

// fullListener returns a listener whose accept queue is full: Linux drops a
// SYN to it (it does not answer, nor reset), so a connect hangs until its
// deadline. The queue holds backlog+1 connections; with backlog 0 one
// connection that is never accepted fills it.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	// listen(2) on a listening socket only changes its backlog.
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		t.Fatalf("listen backlog 0: %v %v", err, lerr)
	}
	target := netip.MustParseAddrPort(ln.Addr().String())
	for i := range 4 {
		c, err := net.DialTimeout("tcp", target.String(), 200*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && i > 0 {
				return target // the queue is full
			}
			t.Fatalf("filler %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the accept queue did not fill")
	return target
}

func TestProbeHTTP(t *testing.T) {
	hosts := make(chan string, 16)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host
		switch r.URL.Path {
		case "/ok":
			fmt.Fprintln(w, "healthy")
		case "/redirect":
			// Following it would probe a closed port and fail.
			http.Redirect(w, r, "http://"+closedPort(t, "tcp").String()+"/", http.StatusFound)
		case "/down":
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		case "/big":
			for range 1000 {
				fmt.Fprintln(w, strings.Repeat("x", 1000))
			}
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-release:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	target := netip.MustParseAddrPort(srv.Listener.Addr().String())

	tests := []struct {
		name, path, host string
		expect           StatusRange
		ok               bool
		reason           string
	}{
		{"200", "/ok", "", StatusRange{}, true, "ok"},
		{"default path", "", "", StatusRange{}, false, "http 404"},
		{"302 is up, not followed", "/redirect", "", StatusRange{}, true, "ok"},
		{"503", "/down", "", StatusRange{}, false, "http 503"},
		{"404", "/missing", "", StatusRange{}, false, "http 404"},
		{"expect 200 gets 200", "/ok", "", StatusRange{200, 200}, true, "ok"},
		{"expect 204 gets 200", "/ok", "", StatusRange{204, 204}, false, "http 200"},
		{"expect 418 gets 418", "/teapot", "", StatusRange{418, 418}, true, "ok"},
		{"418 without expect", "/teapot", "", StatusRange{}, false, "http 418"},
		{"expect 400-499 gets 418", "/teapot", "", StatusRange{400, 499}, true, "ok"},
		{"expect 200-299 gets 302", "/redirect", "", StatusRange{200, 299}, false, "http 302"},
		{"expect 200-503 gets 503", "/down", "", StatusRange{200, 503}, true, "ok"},
		{"expect 500-599 gets 200", "/ok", "", StatusRange{500, 599}, false, "http 200"},
		{"big body", "/big", "", StatusRange{}, true, "ok"},
		{"host header", "/ok", "10.0.0.1:80", StatusRange{}, true, "ok"},
		{"timeout", "/slow", "", StatusRange{}, false, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, took := probe(t, Spec{Kind: HTTP, Target: target, Path: tt.path, Host: tt.host, Expect: tt.expect})
			wantResult(t, r, tt.ok, tt.reason)
			wantHost := tt.host
			if wantHost == "" {
				wantHost = target.String()
			}
			select {
			case h := <-hosts:
				if h != wantHost {
					t.Errorf("server saw Host %q, want %q", h, wantHost)
				}
			default:
				t.Error("the server saw no request")
			}
			if tt.reason == "timeout" && took < probeTimeout-10*time.Millisecond {
				t.Errorf("timed out after %s, before the %s deadline", took, probeTimeout)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		r, _ := probe(t, Spec{Kind: HTTP, Target: closedPort(t, "tcp"), Path: "/"})
		wantResult(t, r, false, "connect refused")
	})
	t.Run("not http", func(t *testing.T) {
		// A server that answers garbage and closes.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = http.ReadRequest(bufio.NewReader(c))
			fmt.Fprint(c, "SSH-2.0-OpenSSH\r\n")
			c.Close()
		}()
		r, _ := probe(t, Spec{Kind: HTTP, Target: netip.MustParseAddrPort(ln.Addr().String())})
		if r.OK || r.Reason == "" || len(r.Reason) > 60 || strings.Contains(r.Reason, "127.0.0.1") {
			t.Errorf("result %+v, want a failure with a short reason without addresses", r)
		}
	})
}

func TestProbeUDP(t *testing.T) {
	udpServer := func(t *testing.T, echo bool) (netip.AddrPort, <-chan string) {
		t.Helper()
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		got := make(chan string, 4)
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				got <- string(buf[:n])
				if echo {
					_, _ = c.WriteTo(buf[:n], from)
				}
			}
		}()
		return netip.MustParseAddrPort(c.LocalAddr().String()), got
	}
	t.Run("echo", func(t *testing.T) {
		target, got := udpServer(t, true)
		r, _ := probe(t, Spec{Kind: UDP, Target: target, Payload: []byte("ping")})
		wantResult(t, r, true, "ok")
		if p := <-got; p != "ping" {
			t.Errorf("server got %q, want the payload %q", p, "ping")
		}
	})
	t.Run("default payload", func(t *testing.T) {
		target, got := udpServer(t, true)
		r, _ := probe(t, Spec{Kind: UDP, Target: target})
		wantResult(t, r, true, "ok")
		if p := <-got; p != string(defaultPayload) {
			t.Errorf("server got %q, want the default payload", p)
		}
	})
	t.Run("port unreachable", func(t *testing.T) {
		r, took := probe(t, Spec{Kind: UDP, Target: closedPort(t, "udp")})
		wantResult(t, r, false, "port unreachable")
		if took > 100*time.Millisecond {
			t.Errorf("port unreachable took %s: the ICMP error was not seen", took)
		}
	})
	t.Run("no reply", func(t *testing.T) {
		target, got := udpServer(t, false)
		r, took := probe(t, Spec{Kind: UDP, Target: target})
		wantResult(t, r, false, "timeout")
		if took < probeTimeout-10*time.Millisecond {
			t.Errorf("timed out after %s, before the %s deadline", took, probeTimeout)
		}
		<-got
	})
	t.Run("canceled", func(t *testing.T) {
		target, _ := udpServer(t, false)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		r := NewProber().Probe(ctx, Spec{Kind: UDP, Target: target})
		wantResult(t, r, false, "canceled")
		if took := time.Since(start); took > 250*time.Millisecond {
			t.Errorf("a canceled probe without a deadline took %s", took)
		}
	})
}

func TestShortError(t *testing.T) {
	_, err := net.Dial("tcp", "256.0.0.1:80")
	if got := reason(context.Background(), err); strings.Contains(got, "dial") || got == "" || len(got) > 60 {
		t.Errorf("reason(%v) = %q, want the short inner text", err, got)
	}
	if got := reason(context.Background(), &net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}); got != "no route" {
		t.Errorf("EHOSTUNREACH: %q, want no route", got)
	}
}
