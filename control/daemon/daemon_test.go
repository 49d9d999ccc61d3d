package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/control/api"
	"github.com/xdplb/xdplb/control/reconcile"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/state"
	"github.com/xdplb/xdplb/loader"
)

func daemonConfig(t *testing.T) Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "xlbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return Config{
		Options:     loader.Options{Interfaces: []string{"lo"}, LookupSize: testTableSize},
		StateDir:    filepath.Join(dir, "state"),
		SocketPath:  filepath.Join(dir, "run", "xdplb.sock"),
		MetricsAddr: "127.0.0.1:0",
		Version:     "test",
	}
}

func TestDaemonFlagErrors(t *testing.T) {
	open := func(loader.Options) (DatapathCloser, error) {
		t.Fatal("data plane opened despite a bad flag")
		return nil, nil
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.LookupSize = 65536 }, "--maglev-size 65536: must be a prime"},
		{func(c *Config) { c.Interfaces = []string{"nosuch0"} }, "interface nosuch0 not found"},
		{func(c *Config) { c.Interfaces = nil }, "at least one --iface"},
		{func(c *Config) { c.XDPMode = loader.XDPMode("fast") }, `--xdp-mode "fast"`},
	} {
		cfg := daemonConfig(t)
		tc.change(&cfg)
		err := RunWith(context.Background(), cfg, open)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err %v, want %q", err, tc.want)
		}
	}
}

func TestDaemonBadConfigFailsFast(t *testing.T) {
	cfg := daemonConfig(t)
	cfg.ConfigFile = filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(cfg.ConfigFile, []byte("vips:\n  - address: 10.0.0.300\n    port: 80\n    protocol: tcp\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := RunWith(context.Background(), cfg, func(loader.Options) (DatapathCloser, error) {
		return newTestDatapath(), nil
	})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(cfg.SocketPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func TestDaemonServesAndStops(t *testing.T) {
	cfg := daemonConfig(t)
	dp := newTestDatapath()
	optsc := make(chan loader.Options, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, cfg, func(o loader.Options) (DatapathCloser, error) { optsc <- o; return dp, nil })
	}()
	c := api.NewClient(cfg.SocketPath)
	defer c.Close()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err = c.Status(context.Background()); err == nil {
			break
		}
	}
	if err != nil {
		cancel()
		t.Fatalf("daemon not serving: %v (exit: %v)", err, <-done)
	}
	if opts := <-optsc; opts.LookupSize != testTableSize || opts.XDPMode != loader.XDPModeAuto || len(opts.Interfaces) != 1 {
		t.Errorf("loader options %+v", opts)
	}
	id := model.VIPID{Addr: netip.MustParseAddr("192.0.2.10"), Port: 80, Protocol: model.TCP}
	if err := c.AddVIP(context.Background(), model.VIP{Address: id.Addr, Port: 80, Protocol: model.TCP}, false); err != nil {
		t.Fatal(err)
	}
	// A second daemon on the same socket refuses to start; so does one on
	// the same state dir with another socket, and neither removes the
	// running one's socket.
	second := func(loader.Options) (DatapathCloser, error) {
		t.Error("second daemon opened the data plane")
		return dp, nil
	}
	if err := RunWith(context.Background(), cfg, second); !errors.Is(err, state.ErrLocked) {
		t.Errorf("second daemon: %v", err)
	}
	other := cfg
	other.SocketPath = filepath.Join(t.TempDir(), "other.sock")
	err = RunWith(context.Background(), other, second)
	if !errors.Is(err, state.ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", os.Getpid())) {
		t.Errorf("second daemon on the same state dir: %v", err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Errorf("first daemon after the second was refused: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	if _, err := os.Stat(cfg.SocketPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket not removed: %v", err)
	}
	vips, _ := dp.VIPs()
	if _, ok := vips[reconcile.VIPKeyOf(id)]; !ok {
		t.Fatal("vip not written to the data plane")
	}
	// The state survives: a restarted daemon's store has the VIP.
	st, err := state.Open(cfg.StateDir, nil)
	if err != nil || len(st.State().VIPs) != 1 {
		t.Fatalf("restored state: %v %v", st, err)
	}
}

func TestDaemonDetachOnExit(t *testing.T) {
	for _, detach := range []bool{false, true} {
		t.Run(fmt.Sprint("detach=", detach), func(t *testing.T) {
			cfg := daemonConfig(t)
			cfg.DetachOnExit = detach
			dp := newTestDatapath()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- RunWith(ctx, cfg, func(loader.Options) (DatapathCloser, error) { return dp, nil })
			}()
			c := api.NewClient(cfg.SocketPath)
			defer c.Close()
			var err error
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if err = c.AddVIP(context.Background(), model.VIP{Address: netip.MustParseAddr("192.0.2.10"), Port: 80, Protocol: model.TCP}, false); err == nil {
					break
				}
			}
			cancel()
			if err != nil {
				t.Fatalf("add vip: %v (exit: %v)", err, <-done)
			}
			if err := <-done; err != nil {
				t.Fatalf("daemon exit: %v", err)
			}
			vips, _ := dp.VIPs()
			if dp.Removed() != detach || (len(vips) == 0) != detach {
				t.Errorf("removed %v with %d vips left, want removed %v", dp.Removed(), len(vips), detach)
			}
			// The desired state stays either way, and the lock is free.
			st, err := state.Open(cfg.StateDir, nil)
			if err != nil || len(st.State().VIPs) != 1 {
				t.Fatalf("state after exit: %v", err)
			}
			l, err := state.LockDir(cfg.StateDir)
			if err != nil {
				t.Fatalf("lock after exit: %v", err)
			}
			l.Unlock()
		})
	}
}

func TestLockStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	l, err := state.LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.LockDir(dir); !errors.Is(err, state.ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	if err := Detach(context.Background(), DetachConfig{StateDir: dir, BPFFS: t.TempDir()}); !errors.Is(err, state.ErrLocked) ||
		!strings.Contains(err.Error(), "stop the daemon first") {
		t.Fatalf("detach while locked: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l, err = state.LockDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l.Unlock()
}

const testTableSize = 251

// newTestDatapath is an empty fake data plane with small limits.
func newTestDatapath() *reconciletest.Datapath {
	return reconciletest.NewDatapath(testTableSize, 16, 64)
}

// logBuffer is a slog text log a test can read while goroutines write it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// The sweep runs every interval until the context ends; a data plane that
// cannot sweep is warned about once, not at every tick.
func TestSweepNAT(t *testing.T) {
	dp := newTestDatapath()
	dp.SetNATStats(loader.NATStats{}, errors.New("nat: not built yet"))
	log, buf := newTestLogger()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sweepNAT(ctx, dp, 5*time.Millisecond, log); close(done) }()
	for deadline := time.Now().Add(5 * time.Second); dp.Sweeps() < 4; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sweeps in 5s", dp.Sweeps())
		}
	}
	dp.SetNATStats(loader.NATStats{Entries: 3, SNATPortsInUse: 2}, nil)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(buf.String(), "works again"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("recovery not logged:\n%s", buf.String())
		}
	}
	cancel()
	<-done
	n := dp.Sweeps()
	time.Sleep(20 * time.Millisecond)
	if dp.Sweeps() != n {
		t.Fatal("sweeps go on after the context ended")
	}
	if w := strings.Count(buf.String(), "level=WARN"); w != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", w, buf.String())
	}
	if !strings.Contains(buf.String(), "snat_ports_in_use=2") {
		t.Fatalf("log:\n%s", buf.String())
	}
}

// Forwarding off on an attached interface is warned about, per family of
// the nat VIPs; a DR-only state needs none.
func TestWarnForwarding(t *testing.T) {
	sysctl := map[string]string{
		"/proc/sys/net/ipv4/conf/eth0/forwarding": "0\n",
		"/proc/sys/net/ipv4/conf/eth1/forwarding": "1\n",
		"/proc/sys/net/ipv6/conf/eth0/forwarding": "1\n",
		"/proc/sys/net/ipv6/conf/eth1/forwarding": "0\n",
	}
	read := func(p string) ([]byte, error) {
		v, ok := sysctl[p]
		if !ok {
			return nil, os.ErrNotExist
		}
		return []byte(v), nil
	}
	vip := func(addr string, mode model.Mode) model.VIP {
		return model.VIP{Address: netip.MustParseAddr(addr), Port: 80, Protocol: model.TCP, Mode: mode}
	}
	for _, tc := range []struct {
		vips []model.VIP
		want []string
	}{
		{[]model.VIP{vip("10.0.0.1", model.ModeDR), vip("2001:db8::1", model.ModeDR)}, nil},
		{[]model.VIP{vip("10.0.0.1", model.ModeNAT)}, []string{`sysctl="net.ipv4.conf.eth0.forwarding=1"`}},
		{[]model.VIP{vip("2001:db8::1", model.ModeFullNAT), vip("10.0.0.1", model.ModeDR)}, []string{`sysctl="net.ipv6.conf.eth1.forwarding=1"`}},
	} {
		log, buf := newTestLogger()
		warnForwarding(model.State{VIPs: tc.vips}, []string{"eth0", "eth1"}, read, log)
		if n := strings.Count(buf.String(), "level=WARN"); n != len(tc.want) {
			t.Errorf("vips %v: %d warnings, want %v:\n%s", tc.vips, n, tc.want, buf.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("vips %v: no %q in\n%s", tc.vips, w, buf.String())
			}
		}
	}
}

func TestWarnEphemeralOverlap(t *testing.T) {
	read := func(string) ([]byte, error) { return []byte("32768\t60999\n"), nil }
	for _, tc := range []struct {
		snat loader.PortRange
		warn bool
	}{
		{loader.DefaultSNATPorts, false},
		{loader.PortRange{Lo: 20000, Hi: 32768}, true},
		{loader.PortRange{Lo: 60999, Hi: 65535}, true},
		{loader.PortRange{Lo: 61000, Hi: 65535}, false},
	} {
		log, buf := newTestLogger()
		warnEphemeralOverlap(tc.snat, read, log)
		if got := strings.Contains(buf.String(), "level=WARN"); got != tc.warn {
			t.Errorf("snat ports %s: warned %v, want %v:\n%s", tc.snat, got, tc.warn, buf.String())
		}
	}
}

type fakeEvents struct {
	mu sync.Mutex
	n  uint64
}

func (f *fakeEvents) EventCounters() (map[string]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return map[string]uint64{"fib_no_neigh": f.n, "nat_reply": 7}, nil
}

func (f *fakeEvents) add(n uint64) {
	f.mu.Lock()
	f.n += n
	f.mu.Unlock()
}

// The next hops are resolved again each time fib_no_neigh grows, and only
// then: a count found at start is history.
func TestWatchNoNeigh(t *testing.T) {
	ev := &fakeEvents{n: 5}
	calls := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log, _ := newTestLogger()
	go watchNoNeigh(ctx, ev, func(context.Context) { calls <- struct{}{} }, time.Millisecond, log)
	select {
	case <-calls:
		t.Fatal("resolved for a count found at start")
	case <-time.After(50 * time.Millisecond):
	}
	ev.add(2)
	select {
	case <-calls:
	case <-time.After(5 * time.Second):
		t.Fatal("not resolved after fib_no_neigh grew")
	}
	select {
	case <-calls:
		t.Fatal("resolved twice for one increase")
	case <-time.After(50 * time.Millisecond):
	}
}

type fakeReplacer struct {
	mu  sync.Mutex
	got []model.State
}

func (f *fakeReplacer) Replace(st model.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, st)
	return nil
}

func (f *fakeReplacer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

// SIGHUP reloads --config: a good file replaces the state, a bad one is
// logged and changes nothing; without --config it is logged and ignored
// (issue 12, defect 7).
func TestReloadOnHUP(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "lb.yaml")
	good := "vips:\n  - {address: 10.0.0.1, port: 80, protocol: tcp, backends: [{address: 10.0.0.11}]}\n"
	if err := os.WriteFile(file, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, content string
		replaced            int
		log                 string
	}{
		{"good", file, good, 1, "SIGHUP: state replaced from config file"},
		{"bad", file, "vips: [{address: nonsense}]\n", 0, "SIGHUP: config not reloaded, the running state is kept"},
		{"none", "", "", 0, "SIGHUP: no --config to reload, ignored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.content != "" {
				if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			store := &fakeReplacer{}
			log, buf := newTestLogger()
			ctx, cancel := context.WithCancel(context.Background())
			reqs := make(chan string)
			done := make(chan struct{})
			go func() { reloadConfig(ctx, reqs, tc.file, store, log); close(done) }()
			reqs <- causeSIGHUP
			reqs <- causeSIGHUP // the first one has been handled when this is taken
			cancel()
			<-done
			if got := store.count(); got != 2*tc.replaced {
				t.Errorf("replaced %d times, want %d", got, 2*tc.replaced)
			}
			if !strings.Contains(buf.String(), tc.log) {
				t.Errorf("log %q, want %q", buf.String(), tc.log)
			}
		})
	}
}

// watchConfig asks for one reload per change of the file's content:
// written in place, replaced by a rename, or written in steps faster than
// the debounce; not for a touch or the same content written again, nor
// while the file is gone.
func TestWatchConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "lb.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a\n")
	reqs := make(chan string, 16)
	log, _ := newTestLogger()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	const debounce = 200 * time.Millisecond
	go func() { done <- watchConfig(ctx, file, reqs, debounce, log) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(debounce) // the watch is set
	expect := func(what string, n int) {
		t.Helper()
		time.Sleep(4 * debounce)
		got := 0
		for len(reqs) > 0 {
			if c := <-reqs; c != causeChanged {
				t.Errorf("cause %q", c)
			}
			got++
		}
		if got != n {
			t.Errorf("%s: %d reloads asked, want %d", what, got, n)
		}
	}
	write("b\n")
	expect("written in place", 1)
	write("b\n")
	now := time.Now()
	if err := os.Chtimes(file, now, now); err != nil {
		t.Fatal(err)
	}
	expect("same content, touched", 0)
	for i := range 5 {
		write(fmt.Sprintf("c%d\n", i))
		time.Sleep(debounce / 10)
	}
	expect("written in quick steps", 1)
	tmp := filepath.Join(dir, ".lb.yaml.tmp")
	if err := os.WriteFile(tmp, []byte("d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	expect("replaced by a rename", 1)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	expect("removed", 0)
	write("e\n")
	expect("back", 1)
	if err := os.WriteFile(filepath.Join(dir, "other.yaml"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("another file of the directory", 0)
}

// A damaged state file stops the daemon before it touches the data plane
// (the maps and announced addresses stay as they were); with RecoverState
// it starts from the last good state and keeps the damaged file.
func TestDaemonDamagedState(t *testing.T) {
	cfg := daemonConfig(t)
	st, err := state.Open(cfg.StateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.10", "192.0.2.11"} {
		if err := st.AddVIP(model.VIP{Address: netip.MustParseAddr(a), Port: 80, Protocol: model.TCP}); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(cfg.StateDir, state.File)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	refuse := func(loader.Options) (DatapathCloser, error) {
		t.Error("the data plane was opened on a damaged state")
		return newTestDatapath(), nil
	}
	err = RunWith(context.Background(), cfg, refuse)
	if !errors.Is(err, state.ErrDamaged) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "--recover-state") {
		t.Fatalf("daemon on a damaged state: %v", err)
	}

	cfg.RecoverState = true
	dp := newTestDatapath()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, cfg, func(loader.Options) (DatapathCloser, error) { return dp, nil })
	}()
	c := api.NewClient(cfg.SocketPath)
	defer c.Close()
	var got model.State
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got, err = c.State(context.Background()); err == nil {
			break
		}
	}
	cancel()
	if derr := <-done; err != nil || derr != nil {
		t.Fatalf("recovering daemon: %v, exit %v", err, derr)
	}
	if len(got.VIPs) != 1 || got.VIPs[0].Address != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("recovered state %+v, want the last good one (the first VIP)", got)
	}
	kept, _ := filepath.Glob(p + ".damaged-*")
	if len(kept) != 1 {
		t.Fatalf("damaged files kept: %v", kept)
	}
	if k, _ := os.ReadFile(kept[0]); !bytes.Equal(k, b[:len(b)/2]) {
		t.Fatal("the damaged file was not kept as it was")
	}
}
