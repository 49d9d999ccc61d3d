package loader

import (
	"testing"

	"github.com/xdplb/xdplb/vm-tests/testutil"
)

// BenchmarkProgram times the program per frame in the kernel: the
// established-flow fast path and the cheapest pass path.
func BenchmarkProgram(b *testing.B) {
	testutil.RequireRoot(b)
	d, err := Load(testOptions(testutil.MountBPFFS(b)))
	if err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Cleanup(func() { d.Remove() })
	setupVIPs(b, d)
	frames := []struct {
		name    string
		in      []byte
		verdict uint32
	}{
		{"established ipv4 tcp", flow{src: client4, dst: vipAddr4, dport: 80, ack: true}.build(b), xdpTX},
		{"established ipv6 tcp", flow{src: client6, dst: vipAddr6, dport: 80, ack: true}.build(b), xdpTX},
		{"non-vip ipv4 tcp", flow{src: client4, dst: other4, dport: 80}.build(b), xdpPass},
	}
	for _, f := range frames {
		// The first run creates the flow entry, so the timed runs take the
		// established path.
		if r := mustRun(b, d.Program(), f.in); r.verdict != f.verdict {
			b.Fatalf("%s: verdict %d, want %d", f.name, r.verdict, f.verdict)
		}
		b.Run(f.name, func(b *testing.B) {
			v, per, err := d.Program().Benchmark(f.in, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			if v != f.verdict {
				b.Fatalf("verdict %d, want %d", v, f.verdict)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/frame")
		})
	}
}
