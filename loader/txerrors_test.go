package loader

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/internal/testutil"
)

func TestTxErrorCounters(t *testing.T) {
	for _, c := range []struct {
		driver string
		stats  map[string]uint64
		sum    uint64
		names  []string // nil: the driver has no such counter
	}{
		{"veth", map[string]uint64{ // Linux 6.18, two queues
			"peer_ifindex": 7, "rx_queue_0_xdp_packets": 100, "rx_queue_0_xdp_bytes": 6400,
			"rx_queue_0_drops": 1, "rx_queue_0_xdp_redirect": 5, "rx_queue_0_xdp_drops": 20,
			"rx_queue_0_xdp_tx": 40, "rx_queue_0_xdp_tx_errors": 30,
			"rx_queue_1_drops": 0, "rx_queue_1_xdp_tx_errors": 2, "rx_queue_1_xdp_drops": 9,
			"tx_queue_0_xdp_xmit": 3, "tx_queue_0_xdp_xmit_errors": 4,
		}, 37, []string{"rx_queue_0_drops", "rx_queue_0_xdp_tx_errors", "rx_queue_1_drops",
			"rx_queue_1_xdp_tx_errors", "tx_queue_0_xdp_xmit_errors"}},
		{"virtio_net", map[string]uint64{
			"rx_queue_0_packets": 9, "rx_queue_0_drops": 8, "rx_queue_0_xdp_tx": 7, "rx_queue_0_xdp_drops": 6,
			"rx_queue_0_xdp_redirects": 5, "tx_queue_0_xdp_tx": 4, "tx_queue_0_xdp_tx_drops": 3,
			"tx_queue_1_xdp_tx_drops": 2,
		}, 5, []string{"tx_queue_0_xdp_tx_drops", "tx_queue_1_xdp_tx_drops"}},
		// mlx5 gives the totals and every channel's share: the totals only.
		{"mlx5_core", map[string]uint64{
			"rx_xdp_drop": 50, "rx_xdp_redirect": 9, "rx_xdp_tx_xmit": 70, "rx_xdp_tx_full": 3, "rx_xdp_tx_err": 2,
			"tx_xdp_xmit": 9, "tx_xdp_full": 1, "tx_xdp_err": 4,
			"rx0_xdp_tx_full": 1, "rx1_xdp_tx_full": 2, "rx0_xdp_tx_err": 2, "tx0_xdp_err": 4, "tx1_xdp_err": 0,
		}, 10, []string{"rx_xdp_tx_err", "rx_xdp_tx_full", "tx_xdp_err", "tx_xdp_full"}},
		{"mvneta", map[string]uint64{"xdp_redirect": 1, "xdp_pass": 2, "xdp_drop": 3, "xdp_tx": 4, "xdp_tx_err": 5,
			"xdp_xmit": 6, "xdp_xmit_err": 7}, 12, []string{"xdp_tx_err", "xdp_xmit_err"}},
		{"mlx4_en", map[string]uint64{"rx_xdp_drop": 1, "rx_xdp_redirect": 2, "rx_xdp_redirect_fail": 3, "rx_xdp_tx": 4,
			"rx_xdp_tx_full": 5}, 8, []string{"rx_xdp_redirect_fail", "rx_xdp_tx_full"}},
		// Drivers with no XDP transmit error counter: nothing, not 0.
		{"i40e", map[string]uint64{"rx_packets": 1, "tx_errors": 2, "rx-0.packets": 3, "tx-0.packets": 4, "port.tx_dropped_link_down": 5}, 0, nil},
		{"ixgbe", map[string]uint64{"tx_queue_0_packets": 1, "rx_queue_0_packets": 2, "tx_timeout_count": 3}, 0, nil},
		// Only veth counts refused redirects as rx_queue_N_drops.
		{"other", map[string]uint64{"rx_queue_0_drops": 4}, 0, nil},
		{"veth", nil, 0, nil},
	} {
		sum, names := txErrorCounters(c.driver, c.stats)
		if sum != c.sum || !slices.Equal(names, c.names) {
			t.Errorf("%s: %d from %q, want %d from %q", c.driver, sum, names, c.sum, c.names)
		}
	}
}

// The statistics of a real veth on this kernel: the names the rule of
// txErrorCounters is written for are there, and an XDP_TX frame that the
// peer (no XDP program, GRO off) cannot take is counted as refused, until
// the peer runs a program of its own; the data plane reports that count
// for a native attachment only.
func TestDriverTxErrorsVeth(t *testing.T) {
	testutil.RequireRoot(t)
	bpffs := testutil.MountBPFFS(t)
	testutil.InNetNS(t, testutil.NewNetNS(t, ""), func() error {
		// No IPv6, so that the peer sends nothing of its own meanwhile.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644); err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "xlb0"}, PeerName: "xlb1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		links := map[string]netlink.Link{}
		for _, n := range []string{"xlb0", "xlb1"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
			links[n] = l
		}
		// No XDP on xlb0 yet: nothing to report.
		if _, ok, err := driverTxErrors(links["xlb0"].Attrs().Index); ok || err != nil {
			return fmt.Errorf("without xdp: ok %v, err %v; want nothing", ok, err)
		}
		driver, stats, err := driverStats("xlb0")
		if err != nil {
			return err
		}
		for _, name := range []string{"rx_queue_0_xdp_tx", "rx_queue_0_xdp_tx_errors", "tx_queue_0_xdp_xmit_errors", "rx_queue_0_drops", "rx_queue_0_xdp_drops"} {
			if _, ok := stats[name]; !ok {
				t.Errorf("veth statistics lack %s: %v", name, stats)
			}
		}
		if _, names := txErrorCounters(driver, stats); driver != "veth" ||
			!slices.Equal(names, []string{"rx_queue_0_drops", "rx_queue_0_xdp_tx_errors", "tx_queue_0_xdp_xmit_errors"}) {
			t.Errorf("driver %q, counters %q", driver, names)
		}
		if _, _, err := driverStats("lo"); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("statistics of lo: %v, want EOPNOTSUPP", err)
		}

		tx, err := loadTxProgram()
		if err != nil {
			return err
		}
		defer tx.Close()
		l, _, err := attachXDP(tx, links["xlb0"].Attrs().Index, XDPModeNative)
		if err != nil {
			return fmt.Errorf("attach XDP_TX program: %w", err)
		}
		closeTx := sync.OnceValue(l.Close)
		defer closeTx()

		// Frames sent on xlb1 reach xlb0's program, which sends them back:
		// xlb1 runs no XDP, so veth refuses every one.
		send := func(n int) error {
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("packet socket: %w", err)
			}
			defer unix.Close(fd)
			to := &unix.SockaddrLinklayer{Ifindex: links["xlb1"].Attrs().Index, Halen: 6}
			copy(to.Addr[:], links["xlb0"].Attrs().HardwareAddr)
			frame := make([]byte, 60)
			copy(frame, links["xlb0"].Attrs().HardwareAddr)
			copy(frame[6:], links["xlb1"].Attrs().HardwareAddr)
			frame[12], frame[13] = 0x88, 0xb5 // local experimental ethertype
			for range n {
				if err := unix.Sendto(fd, frame, 0, to); err != nil {
					return fmt.Errorf("send: %w", err)
				}
			}
			return nil
		}
		before, ok, err := driverTxErrors(links["xlb0"].Attrs().Index)
		if err != nil || !ok {
			return fmt.Errorf("with xdp: ok %v, err %v; want counters", ok, err)
		}
		if err := send(10); err != nil {
			return err
		}
		after, _, err := driverTxErrors(links["xlb0"].Attrs().Index)
		if err != nil {
			return err
		}
		if after-before != 10 {
			t.Errorf("peer without xdp: %d frames refused, want 10", after-before)
		}

		// With a program on the peer, the frames are sent.
		pass, err := AttachPass(links["xlb1"].Attrs().Index)
		if err != nil {
			return err
		}
		defer pass.Close()
		if err := send(10); err != nil {
			return err
		}
		_, stats, err = driverStats("xlb0")
		if err != nil {
			return err
		}
		final, _ := txErrorCounters("veth", stats)
		if final != after || stats["rx_queue_0_xdp_tx"] < 10 {
			t.Errorf("peer with xdp: %d refused (was %d), %d sent; want none refused, 10 sent", final, after, stats["rx_queue_0_xdp_tx"])
		}

		// The data plane reports the driver's count of its native
		// attachments (since the interface was created, whichever program
		// sent), and nothing of a generic one.
		if err := closeTx(); err != nil {
			return err
		}
		opts := testOptions(bpffs)
		opts.Interfaces = []string{"xlb0"}
		for _, mode := range []XDPMode{XDPModeNative, XDPModeGeneric} {
			opts.XDPMode = mode
			d, err := Load(opts)
			if err != nil {
				return fmt.Errorf("load %s: %w", mode, err)
			}
			got, err := d.DriverTxErrors()
			want := []TxErrorCount{{Ifindex: uint32(links["xlb0"].Attrs().Index), Count: final}}
			if mode == XDPModeGeneric {
				want = nil
			}
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("%s: DriverTxErrors %v (%v), want %v", mode, got, err, want)
			}
			if err := d.Close(); err != nil {
				return err
			}
			if _, err := RemovePinned(bpffs); err != nil {
				return err
			}
		}
		return nil
	})
}

// loadTxProgram loads an XDP program that returns XDP_TX.
func loadTxProgram() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R0, 3), // XDP_TX
		asm.Return(),
	}})
}
