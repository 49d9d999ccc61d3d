package loader

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

type attachment struct {
	name    string
	ifindex int
	mode    XDPMode // as requested when we created the link
	link    link.Link
}

func linkPinPath(pinDir, ifname string) string {
	return filepath.Join(pinDir, "link_"+ifname)
}

func modeFlags(m XDPMode) []link.XDPAttachFlags {
	switch m {
	case XDPModeNative:
		return []link.XDPAttachFlags{link.XDPDriverMode}
	case XDPModeGeneric:
		return []link.XDPAttachFlags{link.XDPGenericMode}
	default:
		return []link.XDPAttachFlags{link.XDPDriverMode, link.XDPGenericMode}
	}
}

func flagMode(f link.XDPAttachFlags) XDPMode {
	if f == link.XDPGenericMode {
		return XDPModeGeneric
	}
	return XDPModeNative
}

// attach puts xdplb_main on ifname. A link pinned by an earlier run is
// updated in place: the program is swapped atomically, no packet meets an
// interface without XDP (the basis of a hitless restart).
func (d *Datapath) attach(name string) error {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	pin := linkPinPath(d.pinDir, name)
	prog := d.objs.XdplbMain

	if l, err := d.pinnedLink(pin, ifc.Index); err != nil {
		return err
	} else if l != nil {
		// Critical section: from Update on, the new program handles traffic.
		if err := l.Update(prog); err != nil {
			l.Close()
			return fmt.Errorf("update xdp link on %s: %w", name, err)
		}
		d.addLink(&attachment{name: name, ifindex: ifc.Index, mode: modeInUse(ifc.Index, d.opts.XDPMode), link: l})
		d.log.Info("xdp program replaced in place", "iface", name)
		return nil
	}

	l, flags, err := attachXDP(prog, ifc.Index, d.opts.XDPMode)
	if err != nil {
		return fmt.Errorf("attach xdp to %s: %w", name, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pin xdp link of %s: %w", name, err)
	}
	d.addLink(&attachment{name: name, ifindex: ifc.Index, mode: flagMode(flags), link: l})
	d.log.Info("xdp program attached", "iface", name, "mode", flagMode(flags))
	return nil
}

// addTxPorts lets NAT send through the interfaces named (map tx_ports).
func (d *Datapath) addTxPorts(names []string) error {
	for _, name := range names {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return fmt.Errorf("interface %s: %w", name, err)
		}
		if err := d.objs.TxPorts.Put(uint32(ifc.Index), xdplbBpfDevmapVal{Ifindex: uint32(ifc.Index)}); err != nil {
			return fmt.Errorf("add %s to tx_ports: %w", name, err)
		}
	}
	return nil
}

func (d *Datapath) addLink(a *attachment) {
	d.mu.Lock()
	d.links = append(d.links, a)
	d.mu.Unlock()
}

// pinnedLink returns the link pinned at pin if it still serves ifindex in
// a mode compatible with the requested one; a stale pin (the interface was
// re-created, or an explicit other mode is asked for) is removed.
func (d *Datapath) pinnedLink(pin string, ifindex int) (link.Link, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load pinned link %s: %w", pin, err)
	}
	info, err := l.Info()
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("pinned link %s info: %w", pin, err)
	}
	stale := ""
	if xdp := info.XDP(); xdp == nil || int(xdp.Ifindex) != ifindex {
		stale = "interface changed"
	} else if want := d.opts.XDPMode; want != XDPModeAuto && modeInUse(ifindex, want) != want {
		// A link cannot change mode; honour the explicit request at the
		// cost of a short gap.
		stale = "xdp mode changed"
	}
	if stale == "" {
		return l, nil
	}
	d.log.Warn("replacing pinned xdp link", "pin", pin, "reason", stale)
	err = errors.Join(l.Unpin(), l.Close())
	if err != nil {
		return nil, fmt.Errorf("remove stale link %s: %w", pin, err)
	}
	return nil, nil
}

func attachXDP(prog *ebpf.Program, ifindex int, mode XDPMode) (link.Link, link.XDPAttachFlags, error) {
	var errs []error
	for _, f := range modeFlags(mode) {
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: f})
		if err == nil {
			return l, f, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", flagMode(f), err))
	}
	return nil, 0, errors.Join(errs...)
}

// modeInUse asks the kernel how XDP is attached to ifindex; fallback is
// returned when it cannot tell.
func modeInUse(ifindex int, fallback XDPMode) XDPMode {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		return fallback
	}
	switch l.Attrs().Xdp.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		return XDPModeNative
	case nl.XDP_ATTACHED_SKB:
		return XDPModeGeneric
	}
	return fallback
}

type passAttachment struct {
	prog *ebpf.Program
	link link.Link
}

func (p *passAttachment) Close() error {
	return errors.Join(p.link.Close(), p.prog.Close())
}

// AttachPass attaches xdplb_pass (native, else generic) to ifindex in the
// caller's network namespace, unpinned: Close detaches it. It is for veth
// peer ends, which deliver XDP_TX'd frames only when they run XDP too.
func AttachPass(ifindex int) (io.Closer, error) {
	spec, err := loadXdplb()
	if err != nil {
		return nil, fmt.Errorf("load bpf spec: %w", err)
	}
	// Only the program is loaded, so no map (the big conntrack included)
	// is created.
	var progs xdplbProgramSpecs
	if err := spec.Assign(&progs); err != nil {
		return nil, fmt.Errorf("bpf spec: %w", err)
	}
	prog, err := ebpf.NewProgram(progs.XdplbPass)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", xdplbProgXdplbPass, err)
	}
	l, _, err := attachXDP(prog, ifindex, XDPModeAuto)
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("attach %s to ifindex %d: %w", xdplbProgXdplbPass, ifindex, err)
	}
	return &passAttachment{prog: prog, link: l}, nil
}
