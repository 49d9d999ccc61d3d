package progs

import (
	"github.com/cilium/ebpf"
	"testing"

	"github.com/xdplb/xdplb/internal/testutil"
)

// TestConnTables fills each table through the flow-set harness and finds
// every flow again, in order and at random; flows never put in miss.
func TestConnTables(t *testing.T) {
	testutil.RequireRoot(t)
	const flows = 3000
	for _, tc := range []struct {
		name string
		load func() (*ConnTable, error)
	}{
		{"lru", func() (*ConnTable, error) { return LoadLRUTable(4096) }},
		{"cache-line", func() (*ConnTable, error) { return LoadCacheLineTable(4096/uint32(CTBucketSlots), 0x1234) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := tc.load()
			if err != nil {
				t.Fatalf("%+v", err)
			}
			defer tab.Close()
			frame := make([]byte, 64)
			frame[12], frame[14], frame[23] = 0x08, 0x45, 6 // IPv4, TCP
			run := func(h *FlowSetHarness, n int) {
				t.Helper()
				if v, _, err := h.Program().Benchmark(frame, n, nil); err != nil || v != xdpTX {
					t.Fatalf("run: verdict %d, %v", v, err)
				}
			}
			harness := func(prog string) *FlowSetHarness {
				p := tab.Fill
				if prog == "lookup" {
					p = tab.Lookup
				}
				h, err := LoadFlowSetHarness(p, fsSportOff, fsSaddrOff)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { h.Close() })
				return h
			}
			fill, lookup := harness("fill"), harness("lookup")
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(fill.InOrder(0))
			run(fill, flows)
			must(lookup.InOrder(0))
			run(lookup, flows)
			must(lookup.Random(flows, 7))
			run(lookup, 10*flows)
			if n, err := tab.Misses(); err != nil || n != 0 {
				t.Fatalf("%d misses (%v) looking up flows put in", n, err)
			}
			must(lookup.InOrder(flows))
			for i := 1; i <= 3; i++ {
				opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
				if v, err := lookup.Program().Run(&opts); err != nil || v != xdpPass {
					t.Fatalf("a flow never put in: verdict %d, %v; want pass", v, err)
				}
				if n, _ := tab.Misses(); n != uint64(i) {
					t.Fatalf("flow %d, never put in: %d misses, want %d", flows+i-1, n, i)
				}
			}
			b, err := tab.Bytes()
			if err != nil || b == 0 {
				t.Fatalf("bytes %d, %v", b, err)
			}
			t.Logf("%s: %d bytes for 4096 flows", tc.name, b)
		})
	}
}
