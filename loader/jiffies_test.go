package loader

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tick clock reads what the program stamps flows with, and its rate
// is the kernel's CONFIG_HZ.
func TestTickClock(t *testing.T) {
	d := newDatapath(t)
	setupVIPs(t, d)
	f := flow{src: client4, dst: vipAddr4, dport: 80, syn: true}
	before, err := d.ticks.now()
	must(t, err)
	sendTo(t, d, f, 1)
	after, err := d.ticks.now()
	must(t, err)
	if seen := ctEntry(t, d, f).LastSeen; seen < before || seen > after {
		t.Fatalf("flow stamped %d, outside the clock's reads %d..%d", seen, before, after)
	}

	hz, err := d.ticks.rate()
	must(t, err)
	if want := kernelHZ(t); want != 0 && hz != want {
		t.Fatalf("measured tick rate %d, kernel config says %d", hz, want)
	}
	j0, err := d.ticks.now()
	must(t, err)
	time.Sleep(200 * time.Millisecond)
	j1, err := d.ticks.now()
	must(t, err)
	if n, want := j1-j0, hz/5; n < want*8/10 || n > want*15/10 {
		t.Fatalf("%d ticks in 200 ms at %d Hz, want about %d", n, hz, want)
	}
}

// kernelHZ is CONFIG_HZ from the kernel's config, or 0 when unknown.
func kernelHZ(t *testing.T) uint64 {
	t.Helper()
	out, err := exec.Command("sh", "-c", "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r) 2>/dev/null").Output()
	if err != nil && len(out) == 0 {
		return 0
	}
	for _, line := range strings.Split(string(out), "\n") {
		for _, r := range tickRates {
			if line == "CONFIG_HZ="+strconv.FormatUint(r, 10) {
				return r
			}
		}
	}
	return 0
}

func TestNearestRate(t *testing.T) {
	for measured, want := range map[float64]uint64{0: 100, 98: 100, 180: 250, 262: 250, 290: 300, 700: 1000, 1003: 1000} {
		if got := nearestRate(measured); got != want {
			t.Errorf("nearestRate(%v) = %d, want %d", measured, got, want)
		}
	}
}
