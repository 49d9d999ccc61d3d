package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testutil"
)

func TestLoadReusesPinnedMaps(t *testing.T) {
	testutil.RequireRoot(t)
	bpffs := testutil.MountBPFFS(t)
	opts := testOptions(bpffs)
	d := load(t, opts)
	setupVIPs(t, d)
	mustRun(t, d.Program(), flow{src: client4, dst: vipAddr4, dport: 80, syn: true}.build(t))
	vips, err := d.VIPs()
	must(t, err)
	bes, err := d.Backends()
	must(t, err)
	tbl, err := d.LookupTable(1)
	must(t, err)
	must(t, d.Close())

	d2 := load(t, opts)
	t.Cleanup(func() { d2.Close() })
	vips2, err := d2.VIPs()
	must(t, err)
	bes2, err := d2.Backends()
	must(t, err)
	tbl2, err := d2.LookupTable(1)
	must(t, err)
	if !reflect.DeepEqual(vips, vips2) || !reflect.DeepEqual(bes, bes2) || !reflect.DeepEqual(tbl, tbl2) {
		t.Fatalf("state not kept across reload:\n%v\n%v\n%v\n%v", vips, vips2, bes, bes2)
	}
	if len(tbl2) != testLookupSize || tbl2[0] != 1 {
		t.Fatalf("lookup table after reload: %d entries", len(tbl2))
	}
	if n, err := d2.ConntrackEntries(); err != nil || n != 1 {
		t.Fatalf("conntrack entries after reload %d (%v), want 1", n, err)
	}
	if vc, err := d2.VIPCounters(); err != nil || vc[1].Packets != 1 {
		t.Fatalf("vip counters after reload %v (%v)", vc, err)
	}

	// While d2 has the pins, nobody else loads or removes them: a second
	// daemon on the same bpffs is refused.
	if _, err := Load(opts); !errors.Is(err, ErrPinsInUse) {
		t.Errorf("second load of the same pins: %v, want ErrPinsInUse", err)
	}
	if _, err := RemovePinned(bpffs); !errors.Is(err, ErrPinsInUse) {
		t.Errorf("RemovePinned under a loaded datapath: %v, want ErrPinsInUse", err)
	}
	must(t, d2.Close())

	// Another size must not silently replace the pinned state.
	bad := opts
	bad.ConntrackSize *= 2
	if _, err := Load(bad); !errors.Is(err, ErrIncompatiblePin) {
		t.Errorf("load with another conntrack size: %v, want ErrIncompatiblePin", err)
	}
	bad = opts
	bad.LookupSize = 257
	if _, err := Load(bad); !errors.Is(err, ErrIncompatiblePin) {
		t.Errorf("load with another lookup size: %v, want ErrIncompatiblePin", err)
	}

	d2 = load(t, opts)
	must(t, d2.Remove())
	if _, err := os.Stat(filepath.Join(bpffs, "xdplb")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin dir after Remove: %v", err)
	}
	d3 := load(t, opts) // fresh state after Remove
	defer d3.Remove()
	if vips3, err := d3.VIPs(); err != nil || len(vips3) != 0 {
		t.Fatalf("vips after Remove and Load: %v (%v)", vips3, err)
	}
}

func TestLoadMountsBPFFS(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "a", "bpf")
	d := load(t, testOptions(dir))
	t.Cleanup(func() {
		d.Remove()
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if _, err := os.Stat(filepath.Join(dir, "xdplb", "conntrack")); err != nil {
		t.Fatalf("conntrack not pinned: %v", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	d := newDatapath(t)
	mac := backendMAC(1)
	addr := netip.MustParseAddr("10.0.1.1")
	tests := []struct {
		name string
		err  error
	}{
		{"vip proto", d.PutVIP(VIPKey{Addr: vipAddr4, Port: 1, Proto: 1}, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev})},
		{"vip no addr", d.PutVIP(VIPKey{Port: 1, Proto: ProtoTCP}, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev})},
		{"vip id 0", d.PutVIP(vip4TCP, VIPMeta{ID: 0, Mode: ModeDR, Hash: HashMaglev})},
		{"vip id too big", d.PutVIP(vip4TCP, VIPMeta{ID: 16, Mode: ModeDR, Hash: HashMaglev})},
		{"vip mode", d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: 9, Hash: HashMaglev})},
		{"backend mac", d.PutBackend(Backend{ID: 1, VIPID: 1, Addr: addr, MAC: net.HardwareAddr{1}, SrcMAC: mac, Ifindex: 1})},
		{"backend id", d.PutBackend(Backend{ID: 64, VIPID: 1, Addr: addr, MAC: mac, SrcMAC: mac, Ifindex: 1})},
		{"backend ifindex", d.PutBackend(Backend{ID: 1, VIPID: 1, Addr: addr, MAC: mac, SrcMAC: mac})},
		{"table length", d.PutLookupTable(1, make([]uint32, 7))},
		{"table backend id", d.PutLookupTable(1, fill(testLookupSize, 64))},
		{"load lookup size", func() error { _, err := Load(Options{BPFFS: t.TempDir(), LookupSize: 100}); return err }()},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tt.name, tt.err)
		}
	}
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	if err := d.PutVIP(vip6TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}); !errors.Is(err, ErrInvalid) {
		t.Errorf("second vip on id 1: %v, want ErrInvalid", err)
	}
}

// vip_addrs follows the VIPs: an address stays a VIP address while any
// VIP uses it, which the fragment policy observes.
func TestVIPAddressRefcount(t *testing.T) {
	d := newDatapath(t)
	frag := rawIPv4(client4, vipAddr4, 6, 0x2000, tcpHeader(1, 80, 5, 20))
	verdict := func() uint32 { return mustRun(t, d.Program(), frag).verdict }
	if v := verdict(); v != xdpPass {
		t.Fatalf("fragment with no vip: verdict %d", v)
	}
	must(t, d.PutVIP(vip4TCP, VIPMeta{ID: 1, Mode: ModeDR, Hash: HashMaglev}))
	must(t, d.PutVIP(vip4UDP, VIPMeta{ID: 2, Mode: ModeDR, Hash: HashMaglev}))
	must(t, d.PutVIP(vip4UDP, VIPMeta{ID: 2, Mode: ModeDR, Hash: HashSource})) // update, not a new VIP
	must(t, d.DeleteVIP(vip4TCP))
	if v := verdict(); v != xdpDrop {
		t.Fatalf("fragment with one vip left on the address: verdict %d", v)
	}
	must(t, d.DeleteVIP(vip4UDP))
	must(t, d.DeleteVIP(vip4UDP)) // absent: no error
	if v := verdict(); v != xdpPass {
		t.Fatalf("fragment after all vips deleted: verdict %d", v)
	}
	st, err := d.Status()
	must(t, err)
	for _, m := range st.Maps {
		if (m.Name == "vips" || m.Name == "vip_addrs") && m.Entries != 0 {
			t.Errorf("map %s has %d entries", m.Name, m.Entries)
		}
	}
}

func TestAttachUpdatesPinnedLink(t *testing.T) {
	testutil.RequireRoot(t)
	bpffs := testutil.MountBPFFS(t)
	testutil.InNetNS(t, testutil.NewNetNS(t, ""), func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "xlb0"}, PeerName: "xlb1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		for _, n := range []string{"xlb0", "xlb1"} {
			l, _ := netlink.LinkByName(n)
			netlink.LinkSetUp(l)
		}
		opts := testOptions(bpffs)
		opts.Interfaces = []string{"xlb0"}
		opts.XDPMode = XDPModeNative
		d, err := Load(opts)
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		st, err := d.Status()
		if err != nil || len(st.Interfaces) != 1 {
			return fmt.Errorf("status %+v (%v)", st, err)
		}
		first := st.Interfaces[0]
		info, _ := d.Program().Info()
		pid, _ := info.ID()
		if first.Mode != XDPModeNative || first.ProgramID != uint32(pid) || first.Name != "xlb0" {
			t.Errorf("interface status %+v, want native with program %d", first, pid)
		}
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if l, _ := netlink.LinkByName("xlb0"); l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
			t.Errorf("xdp detached by Close")
		}

		// A restart updates the same link with the new program.
		d, err = Load(opts)
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		st, _ = d.Status()
		if len(st.Interfaces) != 1 || st.Interfaces[0].LinkID != first.LinkID || st.Interfaces[0].ProgramID == first.ProgramID {
			t.Errorf("after reload %+v, want link %d with a new program", st.Interfaces, first.LinkID)
		}

		peer, _ := netlink.LinkByName("xlb1")
		pass, err := AttachPass(peer.Attrs().Index)
		if err != nil {
			t.Errorf("attach pass: %v", err)
		} else if err := pass.Close(); err != nil {
			t.Errorf("close pass: %v", err)
		}

		// The offline uninstall (xdplb detach): the daemon is gone, only
		// the pins hold the link and the maps.
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if removed, err := RemovePinned(bpffs); err != nil || !removed {
			t.Errorf("RemovePinned: %v, %v", removed, err)
		}
		if l, _ := netlink.LinkByName("xlb0"); l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			t.Errorf("xdp still attached after RemovePinned")
		}
		if _, err := os.Stat(filepath.Join(bpffs, "xdplb")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin dir after RemovePinned: %v", err)
		}
		if removed, err := RemovePinned(bpffs); err != nil || removed {
			t.Errorf("second RemovePinned: %v, %v, want nothing to remove", removed, err)
		}
		// A directory that is no bpffs holds no pins of ours.
		if removed, err := RemovePinned(t.TempDir()); err != nil || removed {
			t.Errorf("RemovePinned on a plain dir: %v, %v", removed, err)
		}
		return nil
	})
}

// The build before NAT pinned a drops map with fewer reasons: its pin is
// replaced (counters restart at zero) and everything else is kept, so an
// upgrade keeps the connection table.
func TestLoadReplacesStaleCounterPins(t *testing.T) {
	testutil.RequireRoot(t)
	bpffs := testutil.MountBPFFS(t)
	opts := testOptions(bpffs)
	d := load(t, opts)
	setupVIPs(t, d)
	mustRun(t, d.Program(), flow{src: client4, dst: vipAddr4, dport: 80, syn: true}.build(t))
	must(t, d.Close())

	// A drops map as the old build made it: 8 reasons.
	path := filepath.Join(bpffs, pinSubdir, xdplbMapDrops)
	must(t, os.Remove(path))
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "drops", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 8})
	must(t, err)
	must(t, old.Pin(path))
	old.Close()

	d2 := load(t, opts)
	t.Cleanup(func() { d2.Close() })
	if n, err := d2.ConntrackEntries(); err != nil || n != 1 {
		t.Errorf("conntrack entries after the upgrade %d (%v), want 1", n, err)
	}
	drops, err := d2.DropCounters()
	must(t, err)
	if _, ok := drops["snat_exhausted"]; !ok {
		t.Errorf("drop reasons after the upgrade %v: no snat_exhausted", drops)
	}
	pinned, err := ebpf.LoadPinnedMap(path, nil)
	must(t, err)
	defer pinned.Close()
	if pinned.MaxEntries() != uint32(xdplbDropReasonDROP_REASON_MAX) {
		t.Errorf("pinned drops holds %d reasons, want %d", pinned.MaxEntries(), xdplbDropReasonDROP_REASON_MAX)
	}
}
