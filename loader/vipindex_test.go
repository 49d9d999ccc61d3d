package loader

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"github.com/xdplb/xdplb/internal/testutil"
)

// checkVIPIndex compares vip_filter, vip_addrs and vip_keys with a full
// recompute from the vips map, and the in-memory index with that map.
func checkVIPIndex(t *testing.T, d *Datapath) {
	t.Helper()
	vips, err := d.VIPs()
	must(t, err)
	if !reflect.DeepEqual(vips, d.vipIndex) {
		t.Fatalf("index %v, vips map %v", d.vipIndex, vips)
	}
	wantFilter, err := vipFilterFor(vips)
	must(t, err)
	var haveFilter xdplbVipBitmap
	must(t, d.objs.VipFilter.Lookup(uint32(0), &haveFilter))
	if haveFilter != wantFilter {
		t.Fatalf("vip_filter differs from a recompute over %d vips", len(vips))
	}
	wantAddrs := make(map[[16]byte]uint32)
	wantKeys := make(map[uint32]xdplbVipKey)
	for k, m := range vips {
		ck, err := vipKeyToC(k)
		must(t, err)
		wantAddrs[ck.Addr]++
		wantKeys[m.ID] = ck
	}
	haveAddrs := make(map[[16]byte]uint32)
	must(t, iterate(d.objs.VipAddrs, func(a [16]byte, n uint32) { haveAddrs[a] = n }))
	if !reflect.DeepEqual(haveAddrs, wantAddrs) {
		t.Fatalf("vip_addrs %v, want %v", haveAddrs, wantAddrs)
	}
	must(t, readArray(d.objs.VipKeys, func(id uint32, k xdplbVipKey) {
		if k != wantKeys[id] {
			t.Errorf("vip_keys[%d] = %v, want %v", id, k, wantKeys[id])
		}
	}))
}

// Random puts (new, updated, renumbered) and deletes keep every derived
// map equal to a full recompute, and the index survives a reload.
func TestVIPIndexMatchesRecompute(t *testing.T) {
	testutil.RequireRoot(t)
	opts := testOptions(testutil.MountBPFFS(t))
	d := load(t, opts)
	t.Cleanup(func() { d.Remove() })
	rng := rand.New(rand.NewPCG(1, 2))
	addrs := []netip.Addr{vipAddr4, vipAddr6, other4, netip.MustParseAddr("10.0.0.101")}
	key := func() VIPKey {
		return VIPKey{Addr: addrs[rng.IntN(len(addrs))], Port: uint16(80 + rng.IntN(3)), Proto: []Protocol{ProtoTCP, ProtoUDP}[rng.IntN(2)]}
	}
	for step := range 400 {
		k := key()
		if rng.IntN(3) == 0 {
			must(t, d.DeleteVIP(k))
		} else {
			// Ids may collide with another VIP's: that put is refused
			// and must leave everything as it was.
			_ = d.PutVIP(k, VIPMeta{ID: 1 + uint32(rng.IntN(int(opts.MaxVIPs-1))), Mode: ModeDR, Hash: HashMaglev})
		}
		checkVIPIndex(t, d)
		if step == 200 {
			must(t, d.Close())
			d = load(t, opts)
			checkVIPIndex(t, d)
		}
	}
}
