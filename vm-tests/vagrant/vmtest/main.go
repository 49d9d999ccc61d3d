// Command xdplb-vmtest is the test helper of the Vagrant lab
// (vm-tests/vagrant): one static binary, built on the host and copied into
// the guests, so that they need no compiler and no packages. It is the
// backends' HTTP server, the client's traffic and the load balancer's
// waits, each subcommand judging its own result (exit 1 with one line on
// what went wrong):
//
//	xdplb-vmtest serve -name NAME -port 80 -port 8080
//	xdplb-vmtest get -name LABEL -url URL -n N -want be1,be2 [-min-share 0.2] [-peer ADDR]
//	xdplb-vmtest load -url URL[,URL...] -stop FILE [-interval 50ms] [-conns 2] [-max 10m]
//	xdplb-vmtest wait -vip VIP -up ADDR,... [-down ADDR,...] [-timeout 60s]
//	xdplb-vmtest summary
//
// It is test code and never part of bin/xdplb.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// peerHeader carries the address the backend saw the connection come from:
// the client's behind dr and nat, the SNAT address behind fullnat.
const peerHeader = "X-Peer"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "xdplb-vmtest:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: xdplb-vmtest serve|get|load|wait|summary [flags]")
	}
	cmds := map[string]func(context.Context, []string, io.Writer) error{
		"serve": serve, "get": get, "load": load, "wait": wait, "summary": summary,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], stdout)
}

// list is a flag of comma-separated values, repeatable.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }
func (l *list) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// serve answers every request on each port with the server's name, and
// the peer it saw in peerHeader, until it is stopped.
func serve(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	name := fs.String("name", "", "name to answer with (default: the host name)")
	var ports list
	fs.Var(&ports, "port", "port to listen on, IPv4 and IPv6 (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		*name = h
	}
	if len(ports) == 0 {
		return errors.New("serve: at least one -port")
	}
	body := []byte(*name + "\n")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			w.Header().Set(peerHeader, ap.Addr().Unmap().String())
		}
		_, _ = w.Write(body)
	})
	errc := make(chan error, len(ports))
	var servers []*http.Server
	for _, p := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort("::", p))
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		// Long idle times: the load's long-lived connections wait between
		// requests, and a slow guest must not see its connection closed.
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: time.Minute, IdleTimeout: 10 * time.Minute}
		servers = append(servers, srv)
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case <-ctx.Done():
		for _, srv := range servers {
			_ = srv.Close()
		}
		return nil
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
}

// answer is one request's outcome: the backend's name and the peer it saw.
type answer struct {
	name, peer string
}

func parseAnswer(resp *http.Response) (answer, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return answer{}, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("status %s", resp.Status)
	}
	return answer{name: strings.TrimSpace(string(b)), peer: resp.Header.Get(peerHeader)}, nil
}

// newConnClient makes a client whose every request opens a connection of
// its own: a new flow for the load balancer to schedule.
func newConnClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
}

// get sends n requests, each on a new connection, and checks that none
// failed, that each wanted backend took at least its share, that no other
// answered and, with -peer, that every backend saw that peer.
func get(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	label := fs.String("name", "get", "what the output line is about")
	url := fs.String("url", "", "URL to request")
	n := fs.Int("n", 40, "requests, each on a new connection")
	parallel := fs.Int("parallel", 4, "requests in flight at once")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit of one request")
	minShare := fs.Float64("min-share", 0.2, "least share of the requests each wanted backend takes")
	peer := fs.String("peer", "", "the peer address every backend must have seen")
	var want list
	fs.Var(&want, "want", "backends that must answer, and no other")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || len(want) == 0 || *n < 1 || *parallel < 1 {
		return errors.New("get: -url, -want and a positive -n and -parallel are required")
	}
	client := newConnClient(*timeout)
	var (
		mu     sync.Mutex
		names  = map[string]int{}
		peers  = map[string]int{}
		errs   []string
		failed int
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range *parallel {
		wg.Go(func() {
			for range jobs {
				a, err := request(ctx, client, *url)
				mu.Lock()
				if err != nil {
					failed++
					if len(errs) < 3 {
						errs = append(errs, err.Error())
					}
				} else {
					names[a.name]++
					peers[a.peer]++
				}
				mu.Unlock()
			}
		})
	}
	for i := range *n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()

	fmt.Fprintf(stdout, "%s: %d requests, %d failed; backends %s; peers %s\n", *label, *n, failed, counts(names), counts(peers))
	var problems []string
	if failed > 0 {
		problems = append(problems, fmt.Sprintf("%d failed (%s)", failed, strings.Join(errs, "; ")))
	}
	for _, w := range want {
		if got := float64(names[w]) / float64(*n); got < *minShare {
			problems = append(problems, fmt.Sprintf("%s took %d of %d, below %.0f%%", w, names[w], *n, *minShare*100))
		}
	}
	for name := range names {
		if !slices.Contains(want, name) {
			problems = append(problems, fmt.Sprintf("%s answered, wanted only %s", name, want.String()))
		}
	}
	if *peer != "" && failed < *n && (len(peers) != 1 || peers[*peer] == 0) {
		problems = append(problems, fmt.Sprintf("backends saw peers %s, want %s", counts(peers), *peer))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", *label, strings.Join(problems, "; "))
	}
	return nil
}

func request(ctx context.Context, client *http.Client, url string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return answer{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(resp)
}

// counts writes a count map as "a 3, b 2" in a stable order.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// load sends traffic until the stop file appears: a request on a new
// connection every -interval, over the URLs in turn, and -conns long-lived
// connections per URL that send a request every -interval and must never
// break. Any failure fails it; so does no traffic at all.
func load(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	var urls list
	fs.Var(&urls, "url", "URLs to request (comma-separated, repeatable)")
	stopFile := fs.String("stop", "", "the load stops once this file exists")
	interval := fs.Duration("interval", 50*time.Millisecond, "time between requests on new connections, and on each long-lived one")
	conns := fs.Int("conns", 2, "long-lived connections per URL")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit of one request")
	maxTime := fs.Duration("max", 10*time.Minute, "the load stops after this long in any case")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(urls) == 0 || *stopFile == "" {
		return errors.New("load: -url and -stop are required")
	}
	ctx, cancel := context.WithTimeout(ctx, *maxTime)
	defer cancel()
	go func() { // the stop file ends the load
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := os.Stat(*stopFile); err == nil {
					cancel()
					return
				}
			}
		}
	}()

	var st loadStats
	var wg sync.WaitGroup
	for _, u := range urls {
		for range *conns {
			wg.Go(func() { st.longLived(ctx, u, *interval, *timeout) })
		}
	}
	client := newConnClient(*timeout)
	t := time.NewTicker(*interval)
	for i := 0; ctx.Err() == nil; i++ {
		u := urls[i%len(urls)]
		wg.Go(func() {
			// Not the load's context: a request in flight at the stop
			// finishes, it does not count as failed.
			a, err := request(context.Background(), client, u)
			st.done(&st.fresh, a, err, "new connection to "+u)
		})
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	t.Stop()
	wg.Wait()
	return st.report(stdout)
}

type loadStats struct {
	fresh, long         atomic.Int64 // requests answered: on new connections, on long-lived ones
	freshFail, longFail atomic.Int64 // failures; a long-lived connection ends at its first
	mu                  sync.Mutex
	names               map[string]int
	errs                []string
}

func (s *loadStats) done(ok *atomic.Int64, a answer, err error, what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ok == &s.fresh {
			s.freshFail.Add(1)
		} else {
			s.longFail.Add(1)
		}
		if len(s.errs) < 5 {
			s.errs = append(s.errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), what, err))
		}
		return
	}
	ok.Add(1)
	if s.names == nil {
		s.names = map[string]int{}
	}
	s.names[a.name]++
}

// longLived keeps one connection to url and sends a request on it every
// interval until ctx ends; it stops at the first failure, counted once.
func (s *loadStats) longLived(ctx context.Context, url string, interval, timeout time.Duration) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		s.done(&s.long, answer{}, err, "long-lived connection to "+url)
		return
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() == nil {
			s.done(&s.long, answer{}, err, "long-lived connection to "+url)
		}
		return
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for ctx.Err() == nil {
		_ = conn.SetDeadline(time.Now().Add(timeout))
		a, err := func() (answer, error) {
			if err := req.Write(conn); err != nil {
				return answer{}, err
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				return answer{}, err
			}
			return parseAnswer(resp)
		}()
		s.done(&s.long, a, err, "long-lived connection to "+url)
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

func (s *loadStats) report(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(w, "load: %d requests on new connections, %d failed; %d on long-lived connections, %d failed; backends %s\n",
		s.fresh.Load(), s.freshFail.Load(), s.long.Load(), s.longFail.Load(), counts(s.names))
	for _, e := range s.errs {
		fmt.Fprintln(w, "  ", e)
	}
	switch {
	case s.freshFail.Load() > 0 || s.longFail.Load() > 0:
		return fmt.Errorf("load: %d failed on new connections, %d long-lived connections broke", s.freshFail.Load(), s.longFail.Load())
	case s.fresh.Load() == 0 || s.long.Load() == 0:
		return errors.New("load: no traffic went through")
	}
	return nil
}

// backend is what wait reads of `xdplb backend list -o json`.
type backend struct {
	Address string `json:"address"`
	Port    uint16 `json:"port"`
	State   string `json:"state"`
}

// wait polls the daemon (through the xdplb CLI) until each -up backend of
// the VIP is up and each -down one is down.
func wait(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	vip := fs.String("vip", "", "the VIP, as the CLI writes it")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait")
	xdplb := fs.String("xdplb", "xdplb", "the xdplb binary")
	var up, down list
	fs.Var(&up, "up", "backend addresses that must be up")
	fs.Var(&down, "down", "backend addresses that must be down")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *vip == "" || len(up)+len(down) == 0 {
		return errors.New("wait: -vip and -up or -down are required")
	}
	want := map[string]string{}
	for _, a := range up {
		want[a] = "up"
	}
	for _, a := range down {
		want[a] = "down"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	var last string
	for {
		out, err := exec.CommandContext(ctx, *xdplb, "backend", "list", *vip, "-o", "json").Output()
		if err == nil {
			var bs []backend
			if err := json.Unmarshal(out, &bs); err != nil {
				return fmt.Errorf("wait: backend list: %w", err)
			}
			states := map[string]string{}
			var parts []string
			for _, b := range bs {
				states[b.Address] = b.State
				parts = append(parts, b.Address+" "+b.State)
			}
			last = strings.Join(parts, ", ")
			if matches(states, want) {
				fmt.Fprintf(stdout, "%s: %s after %.1fs\n", *vip, last, time.Since(start).Seconds())
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait: %s not as wanted after %s: %s", *vip, *timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func matches(states, want map[string]string) bool {
	for a, s := range want {
		if states[a] != s {
			return false
		}
	}
	return true
}

// summary prints one line on the load balancer's daemon: the kernel, what
// it found in it, and how each interface runs XDP.
func summary(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("summary", flag.ContinueOnError)
	xdplb := fs.String("xdplb", "xdplb", "the xdplb binary")
	tables := fs.Bool("tables", false, "print the daemon's uptime and the connection tables' fill instead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, *xdplb, "status", "-o", "json").Output()
	if err != nil {
		return fmt.Errorf("summary: xdplb status: %w", err)
	}
	var st struct {
		Version string `json:"version"`
		Kernel  struct {
			Release string `json:"release"`
			Count   string `json:"count"`
			BTF     bool   `json:"btf"`
		} `json:"kernel"`
		Interfaces []struct {
			Name    string `json:"name"`
			XDPMode string `json:"xdp_mode"`
		} `json:"interfaces"`
		Uptime string `json:"uptime"`
		Maps   []struct {
			Name    string `json:"name"`
			Entries int    `json:"entries"`
		} `json:"maps"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("summary: xdplb status: %w", err)
	}
	if *tables {
		var fill []string
		for _, m := range st.Maps {
			if strings.HasPrefix(m.Name, "ct") || strings.Contains(m.Name, "conn") || strings.Contains(m.Name, "nat") {
				fill = append(fill, fmt.Sprintf("%s %d", m.Name, m.Entries))
			}
		}
		fmt.Fprintf(stdout, "daemon up %s; entries: %s\n", st.Uptime, strings.Join(fill, ", "))
		return nil
	}
	var ifs []string
	for _, i := range st.Interfaces {
		ifs = append(ifs, i.Name+" "+i.XDPMode)
	}
	fmt.Fprintf(stdout, "xdplb %s on %s: XDP %s; btf %v, tables counted by %s\n",
		st.Version, st.Kernel.Release, strings.Join(ifs, ", "), st.Kernel.BTF, st.Kernel.Count)
	return nil
}
