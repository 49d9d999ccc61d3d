package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/bench/progs"
)

// vethFrameLen is the size of every generated frame (without FCS).
const vethFrameLen = 64

// vethFrame builds the generated frame: Ethernet from the generator's MAC
// to the LB's, IPv4 client -> VIP, UDP to the VIP's port with checksum 0
// (none), zero payload up to 64 bytes.
func vethFrame(w *vethWire) []byte { return vethFrameTo(w, vethVIP) }

// vethFrameTo is vethFrame to another VIP address.
func vethFrameTo(w *vethWire, vip netip.Addr) []byte {
	f := make([]byte, vethFrameLen)
	copy(f[0:6], w.LB.MAC)
	copy(f[6:12], w.Gen.MAC)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_IP)
	ip := f[14:34]
	ip[0] = 0x45 // version 4, 20-byte header
	binary.BigEndian.PutUint16(ip[2:4], vethFrameLen-14)
	ip[8] = 64 // TTL
	ip[9] = unix.IPPROTO_UDP
	src, dst := vethClient.As4(), vip.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], vethIPChecksum(ip))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:2], 40000)
	binary.BigEndian.PutUint16(udp[2:4], vethVIPPort)
	binary.BigEndian.PutUint16(udp[4:6], vethFrameLen-34)
	return f
}

func vethIPChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// vethGenerators are the traffic generators: one flow, and a new 5-tuple
// per frame, to the DR VIP; the same to the NAT VIP, and one flow to the
// full-NAT VIP.
type vethGenerators struct {
	OneFlow, NewFlows       *ebpf.Program
	NATOneFlow, NATNewFlows *ebpf.Program
	FullNATOneFlow          *ebpf.Program
}

// loadGenerators loads the generators and attaches the sink to the
// generator's veth, where the LB's frames come back.
func (w *vethWire) loadGenerators(frame []byte) (*vethGenerators, error) {
	g := &vethGenerators{}
	for _, gen := range []struct {
		to    **ebpf.Program
		frame []byte
		new   bool
	}{
		{&g.OneFlow, frame, false},
		{&g.NewFlows, frame, true},
		{&g.NATOneFlow, vethFrameTo(w, vethNATVIP), false},
		{&g.NATNewFlows, vethFrameTo(w, vethNATVIP), true},
		{&g.FullNATOneFlow, vethFrameTo(w, vethFullNATVIP), false},
	} {
		p, err := progs.LoadGenerator(gen.frame[:progs.GenHeaderLen], gen.new)
		if err != nil {
			return nil, err
		}
		w.onClose(p.Close)
		*gen.to = p
	}
	sink, err := progs.LoadWireSink()
	if err != nil {
		return nil, err
	}
	w.onClose(sink.Close)
	if err := w.Gen.attachXDP(w, w.Gen.Iface, sink); err != nil {
		return nil, err
	}
	if err := w.holdGenerators(g); err != nil {
		return nil, err
	}
	return g, nil
}

// holdGenerators attaches the generators, in native mode, to the ends of
// veth pairs that carry no traffic (they stay down). Why: an XDP test run adds its
// program to the kernel's XDP dispatcher at start and removes it at the end,
// each change waiting for an RCU grace period (tens of milliseconds on a
// busy machine, during which nothing is sent). A program attached to a
// driver is in the dispatcher already, so the test run only takes a
// reference and the generator runs back to back.
func (w *vethWire) holdGenerators(g *vethGenerators) error {
	h, err := netlink.NewHandleAt(w.Gen.ns)
	if err != nil {
		return fmt.Errorf("netlink handle %s: %w", w.Gen.NetNS, err)
	}
	defer h.Close()
	ps := []*ebpf.Program{g.OneFlow, g.NewFlows, g.NATOneFlow, g.NATNewFlows, g.FullNATOneFlow}
	for i := 0; i < len(ps); i += 2 {
		a, b := fmt.Sprintf("gen-hold%d", i), fmt.Sprintf("gen-hold%d", i+1)
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
			return fmt.Errorf("add veth %s <-> %s: %w", a, b, err)
		}
		for j, name := range []string{a, b} {
			if i+j < len(ps) {
				if err := w.Gen.attachXDP(w, name, ps[i+j]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// attachXDP attaches p to n's interface iface in native mode until the
// wire is closed.
func (n *vethNode) attachXDP(w *vethWire, iface string, p *ebpf.Program) error {
	var l link.Link
	err := n.do(func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: p, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return fmt.Errorf("attach xdp to %s in %s: %w", iface, n.NetNS, err)
	}
	w.onClose(l.Close)
	return nil
}

// vethXDPMd is struct xdp_md, the context of an XDP test run.
type vethXDPMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// vethRun is one measured run of one case.
type vethRun struct {
	Sent     uint64        // frames the generator sent
	Received uint64        // frames the LB's veth took in (rx_packets)
	Returned uint64        // frames back at the generator's veth (rx_packets)
	Elapsed  time.Duration // the generator's running time
	// CPU is the generator thread's CPU time. The LB's and the sink's
	// work runs inline in it (softirqs at the end of each batch), so it
	// says how much the path cost when the machine is busy with others.
	CPU time.Duration
}

// Mpps is the rate of frames that made it through the LB and back.
func (r vethRun) Mpps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Returned) / r.Elapsed.Seconds() / 1e6
}

// MppsPerCPU is frames back per second of the generator thread's CPU time.
func (r vethRun) MppsPerCPU() float64 {
	if r.CPU <= 0 {
		return 0
	}
	return float64(r.Returned) / r.CPU.Seconds() / 1e6
}

// generate runs gen in live-frames mode for about dur on one thread in the
// generator's namespace: every XDP_TX of the generator leaves through the
// generator's veth and lands in the LB's. It counts what arrived from the
// interface counters, once the wire has drained.
func (w *vethWire) generate(ctx context.Context, gen *ebpf.Program, frame []byte, dur time.Duration) (vethRun, error) {
	var r vethRun
	genBefore, err := w.Gen.stats()
	if err != nil {
		return r, err
	}
	lbBefore, err := w.LB.stats()
	if err != nil {
		return r, err
	}
	err = w.Gen.do(func() error {
		// Calls of ~20ms each, so the duration is kept to within one call
		// whatever the rate; the first call sizes the others.
		chunk := uint32(1 << 14)
		cpu0, err := vethThreadCPU()
		if err != nil {
			return err
		}
		start := time.Now()
		for time.Since(start) < dur && ctx.Err() == nil {
			t := time.Now()
			opts := ebpf.RunOptions{
				Data:    frame,
				Repeat:  chunk,
				Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
				Context: vethXDPMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(w.Gen.Ifindex)},
			}
			if _, err := gen.Run(&opts); err != nil {
				return fmt.Errorf("live-frames run on %s: %w", w.Gen.Iface, err)
			}
			r.Sent += uint64(chunk)
			if took := time.Since(t); took > 0 {
				next := float64(chunk) * float64(20*time.Millisecond) / float64(took)
				chunk = uint32(min(max(next, 1<<12), 1<<22))
			}
		}
		r.Elapsed = time.Since(start)
		cpu1, err := vethThreadCPU()
		r.CPU = cpu1 - cpu0
		return err
	})
	if err != nil {
		return r, err
	}
	genAfter, err := w.Gen.drained()
	if err != nil {
		return r, err
	}
	lbAfter, err := w.LB.stats()
	if err != nil {
		return r, err
	}
	r.Returned = genAfter.RxPackets - genBefore.RxPackets
	r.Received = lbAfter.RxPackets - lbBefore.RxPackets
	return r, nil
}

// vethThreadCPU is the calling thread's CPU time.
func vethThreadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("thread cpu time: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// drained waits until n's rx counter stops moving (frames still in the
// veth rings when the generator stops), at most half a second.
func (n *vethNode) drained() (vethIfStats, error) {
	last, err := n.stats()
	if err != nil {
		return last, err
	}
	for range 50 {
		time.Sleep(10 * time.Millisecond)
		cur, err := n.stats()
		if err != nil {
			return cur, err
		}
		if cur.RxPackets == last.RxPackets {
			return cur, nil
		}
		last = cur
	}
	return last, nil
}
