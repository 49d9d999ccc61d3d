package reconciletest

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/xdplb/xdplb/loader"
)

// The fake refuses what the real maps refuse or what would send a packet
// to a missing backend, so reconciler bugs fail their tests.
func TestDatapathRefusesBadWrites(t *testing.T) {
	dp := NewDatapath(7, 4, 8)
	if err := dp.PutBackend(loader.Backend{ID: 1, Mode: loader.ModeDR}); err != nil {
		t.Fatal(err)
	}
	key := loader.VIPKey{Addr: netip.MustParseAddr("10.0.0.1"), Port: 80, Proto: loader.ProtoTCP}
	for _, tc := range []struct {
		name  string
		write func() error
	}{
		{"backend id 0", func() error { return dp.PutBackend(loader.Backend{ID: 0, Mode: loader.ModeDR}) }},
		{"backend id max", func() error { return dp.PutBackend(loader.Backend{ID: 8, Mode: loader.ModeDR}) }},
		{"backend without mode", func() error { return dp.PutBackend(loader.Backend{ID: 2}) }},
		{"vip without mode", func() error { return dp.PutVIP(key, loader.VIPMeta{ID: 1}) }},
		{"fullnat without snat", func() error { return dp.PutVIP(key, loader.VIPMeta{ID: 1, Mode: loader.ModeFullNAT}) }},
		{"snat of nat", func() error {
			return dp.PutVIP(key, loader.VIPMeta{ID: 1, Mode: loader.ModeNAT, SNATAddr: netip.MustParseAddr("10.0.9.1")})
		}},
		{"snat of another family", func() error {
			return dp.PutVIP(key, loader.VIPMeta{ID: 1, Mode: loader.ModeFullNAT, SNATAddr: netip.MustParseAddr("2001:db8::1")})
		}},
		{"vip id 0", func() error { return dp.PutVIP(key, loader.VIPMeta{ID: 0, Mode: loader.ModeDR}) }},
		{"vip id max", func() error { return dp.PutVIP(key, loader.VIPMeta{ID: 4, Mode: loader.ModeDR}) }},
		{"missing vip", func() error { return dp.DeleteVIP(key) }},
		{"short table", func() error { return dp.PutLookupTable(1, []uint32{1, 1}) }},
		{"missing backend", func() error { return dp.PutLookupTable(1, []uint32{1, 1, 2, 1, 0, 1, 1}) }},
	} {
		if err := tc.write(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	errFail := errors.New("injected")
	dp.SetFailPut(errFail)
	if err := dp.PutBackend(loader.Backend{ID: 2, Mode: loader.ModeDR}); !errors.Is(err, errFail) {
		t.Errorf("put with SetFailPut: %v", err)
	}
	dp.SetFailPut(nil)
	if w := dp.TakeWrites(); !slices.Equal(w, []string{"put-backend 1"}) {
		t.Fatalf("writes %v, want only the first backend", w)
	}
	if err := dp.PutLookupTable(1, []uint32{1, 1, 0, 1, 0, 1, 1}); err != nil {
		t.Fatal(err)
	}
	if err := dp.PutVIP(key, loader.VIPMeta{ID: 1, Mode: loader.ModeDR}); err != nil {
		t.Fatal(err)
	}
	if w := dp.TakeWrites(); !slices.Equal(w, []string{"put-table 1", "put-vip 1"}) {
		t.Fatalf("writes %v", w)
	}
}

func TestDatapathCountersFunc(t *testing.T) {
	dp := NewDatapath(7, 4, 8)
	dp.SetBackendCounters(3, loader.Counters{Packets: 9})
	if c, _ := dp.BackendCounters(); c[3].Packets != 9 {
		t.Fatalf("set counters %v", c)
	}
	for _, id := range []uint32{5, 2} {
		if err := dp.PutBackend(loader.Backend{ID: id, Mode: loader.ModeDR}); err != nil {
			t.Fatal(err)
		}
	}
	var got [][]uint32
	dp.SetCountersFunc(func(ids []uint32) map[uint32]loader.Counters {
		got = append(got, ids)
		return map[uint32]loader.Counters{ids[0]: {Packets: uint64(len(got))}}
	})
	dp.BackendCounters()
	c, _ := dp.BackendCounters()
	if len(got) != 2 || !slices.Equal(got[1], []uint32{2, 5}) || c[2].Packets != 2 {
		t.Fatalf("counters func called with %v, returned %v", got, c)
	}
}
