package loader

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Ports sit in the BPF structs in network byte order; the generated Go
// fields are raw host-order integers over the same bytes.
func toNetPort(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func fromNetPort(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

// addr16 gives the 16-byte form the program compares: IPv4 as ::ffff:a.b.c.d.
func addr16(a netip.Addr) ([16]byte, error) {
	if !a.IsValid() {
		return [16]byte{}, fmt.Errorf("%w: missing address", ErrInvalid)
	}
	if a.Zone() != "" {
		return [16]byte{}, fmt.Errorf("%w: address %s has a zone", ErrInvalid, a)
	}
	return a.Unmap().As16(), nil
}

func addrFrom16(b [16]byte) netip.Addr { return netip.AddrFrom16(b).Unmap() }

func vipKeyToC(k VIPKey) (xdplbVipKey, error) {
	a, err := addr16(k.Addr)
	if err != nil {
		return xdplbVipKey{}, err
	}
	if k.Proto != ProtoTCP && k.Proto != ProtoUDP {
		return xdplbVipKey{}, fmt.Errorf("%w: protocol %d (want tcp or udp)", ErrInvalid, k.Proto)
	}
	return xdplbVipKey{Addr: a, Port: toNetPort(k.Port), Proto: uint8(k.Proto)}, nil
}

func vipKeyFromC(k xdplbVipKey) VIPKey {
	return VIPKey{Addr: addrFrom16(k.Addr), Port: fromNetPort(k.Port), Proto: Protocol(k.Proto)}
}

func (k VIPKey) String() string {
	proto := fmt.Sprint(uint8(k.Proto))
	switch k.Proto {
	case ProtoTCP:
		proto = "tcp"
	case ProtoUDP:
		proto = "udp"
	}
	return netip.AddrPortFrom(k.Addr, k.Port).String() + "/" + proto
}

func mac6(m net.HardwareAddr, what string) ([6]byte, error) {
	var out [6]byte
	if len(m) != 6 {
		return out, fmt.Errorf("%w: %s %q is not a 6-byte MAC", ErrInvalid, what, m)
	}
	copy(out[:], m)
	return out, nil
}

func (d *Datapath) backendToC(b Backend) (xdplbBackend, error) {
	if b.ID == 0 || b.ID >= d.opts.MaxBackends {
		return xdplbBackend{}, fmt.Errorf("%w: backend id %d outside 1..%d", ErrInvalid, b.ID, d.opts.MaxBackends-1)
	}
	if b.VIPID == 0 || b.VIPID >= d.opts.MaxVIPs {
		return xdplbBackend{}, fmt.Errorf("%w: vip id %d outside 1..%d", ErrInvalid, b.VIPID, d.opts.MaxVIPs-1)
	}
	if b.Ifindex == 0 {
		return xdplbBackend{}, fmt.Errorf("%w: backend %d has no egress interface", ErrInvalid, b.ID)
	}
	a, err := addr16(b.Addr)
	if err != nil {
		return xdplbBackend{}, err
	}
	mac, err := mac6(b.MAC, "backend mac")
	if err != nil {
		return xdplbBackend{}, err
	}
	src, err := mac6(b.SrcMAC, "source mac")
	if err != nil {
		return xdplbBackend{}, err
	}
	// A down backend stays VALID: its id and counters are kept, and the
	// program still tells its flows apart from those of a deleted one.
	flags := uint16(xdplbBackendFlagsBACKEND_F_VALID)
	if b.Down {
		flags |= uint16(xdplbBackendFlagsBACKEND_F_DOWN)
	}
	return xdplbBackend{
		Addr:    a,
		Mac:     mac,
		SrcMac:  src,
		Ifindex: b.Ifindex,
		VipId:   b.VIPID,
		Port:    toNetPort(b.Port),
		Flags:   flags,
	}, nil
}

func backendFromC(id uint32, b xdplbBackend) Backend {
	return Backend{
		ID:      id,
		VIPID:   b.VipId,
		Addr:    addrFrom16(b.Addr),
		Port:    fromNetPort(b.Port),
		MAC:     net.HardwareAddr(append([]byte(nil), b.Mac[:]...)),
		SrcMAC:  net.HardwareAddr(append([]byte(nil), b.SrcMac[:]...)),
		Ifindex: b.Ifindex,
		Down:    b.Flags&uint16(xdplbBackendFlagsBACKEND_F_DOWN) != 0,
	}
}

func vipMetaToC(m VIPMeta) xdplbVipMeta {
	var flags uint16
	if m.NoHealthy {
		flags |= uint16(xdplbVipFlagsVIP_F_NO_HEALTHY)
	}
	return xdplbVipMeta{VipId: m.ID, Mode: uint8(m.Mode), Sched: uint8(m.Hash), Flags: flags}
}

func vipMetaFromC(m xdplbVipMeta) VIPMeta {
	return VIPMeta{
		ID:        m.VipId,
		Mode:      ForwardMode(m.Mode),
		Hash:      HashKind(m.Sched),
		NoHealthy: m.Flags&uint16(xdplbVipFlagsVIP_F_NO_HEALTHY) != 0,
	}
}

func (b xdplbBackend) valid() bool {
	return b.Flags&uint16(xdplbBackendFlagsBACKEND_F_VALID) != 0
}
