package loader

import (
	"encoding/binary"
	"fmt"
	"math/bits"
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
	a, err := addr16(b.Addr)
	if err != nil {
		return xdplbBackend{}, err
	}
	// A down backend stays VALID: its id and counters are kept, and the
	// program still tells its flows apart from those of a deleted one.
	flags := uint16(xdplbBackendFlagsBACKEND_F_VALID)
	if b.Down {
		flags |= uint16(xdplbBackendFlagsBACKEND_F_DOWN)
	}
	if b.NoNew {
		flags |= uint16(xdplbBackendFlagsBACKEND_F_NO_NEW)
	}
	var mac, src [6]byte
	switch b.Mode {
	case 0, ModeDR: // the zero Backend is a DR one
		if b.Ifindex == 0 {
			return xdplbBackend{}, fmt.Errorf("%w: backend %d has no egress interface", ErrInvalid, b.ID)
		}
		if mac, err = mac6(b.MAC, "backend mac"); err != nil {
			return xdplbBackend{}, err
		}
		if src, err = mac6(b.SrcMAC, "source mac"); err != nil {
			return xdplbBackend{}, err
		}
	case ModeNAT, ModeFullNAT:
		// The next hop comes from the FIB per packet; MACs and an
		// interface given anyway are kept for `status`, never used.
		if len(b.MAC) == 6 {
			copy(mac[:], b.MAC)
		}
		if len(b.SrcMAC) == 6 {
			copy(src[:], b.SrcMAC)
		}
		flags |= modeFlag(b.Mode)
	default:
		return xdplbBackend{}, fmt.Errorf("%w: backend %d: forwarding mode %d", ErrInvalid, b.ID, b.Mode)
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

// modeFlag is the backend flag of a NAT mode (BACKEND_F_NAT, _FULLNAT).
func modeFlag(m ForwardMode) uint16 {
	switch m {
	case ModeNAT:
		return uint16(xdplbBackendFlagsBACKEND_F_NAT)
	case ModeFullNAT:
		return uint16(xdplbBackendFlagsBACKEND_F_FULLNAT)
	}
	return 0
}

func modeFromFlags(f uint16) ForwardMode {
	switch {
	case f&uint16(xdplbBackendFlagsBACKEND_F_FULLNAT) != 0:
		return ModeFullNAT
	case f&uint16(xdplbBackendFlagsBACKEND_F_NAT) != 0:
		return ModeNAT
	}
	return ModeDR
}

func backendFromC(id uint32, b xdplbBackend) Backend {
	return Backend{
		Mode:    modeFromFlags(b.Flags),
		ID:      id,
		VIPID:   b.VipId,
		Addr:    addrFrom16(b.Addr),
		Port:    fromNetPort(b.Port),
		MAC:     macFromC(b.Mac, b.Flags),
		SrcMAC:  macFromC(b.SrcMac, b.Flags),
		Ifindex: b.Ifindex,
		Down:    b.Flags&uint16(xdplbBackendFlagsBACKEND_F_DOWN) != 0,
		NoNew:   b.Flags&uint16(xdplbBackendFlagsBACKEND_F_NO_NEW) != 0,
	}
}

// macFromC is a stored MAC; a NAT backend's all-zero one reads as none,
// as it was written.
func macFromC(m [6]byte, flags uint16) net.HardwareAddr {
	if m == ([6]byte{}) && modeFromFlags(flags) != ModeDR {
		return nil
	}
	return net.HardwareAddr(append([]byte(nil), m[:]...))
}

func vipMetaToC(m VIPMeta) xdplbVipMeta {
	var flags uint16
	if m.NoHealthy {
		flags |= uint16(xdplbVipFlagsVIP_F_NO_HEALTHY)
	}
	if m.BackendsFull {
		flags |= uint16(xdplbVipFlagsVIP_F_BACKENDS_FULL)
	}
	if m.RateLimit.Rate != 0 {
		flags |= uint16(xdplbVipFlagsVIP_F_RATE_LIMIT)
	}
	if m.Persistence != 0 {
		flags |= uint16(xdplbVipFlagsVIP_F_PERSIST)
	}
	return xdplbVipMeta{VipId: m.ID, Mode: uint8(m.Mode), Sched: uint8(m.Hash), Flags: flags}
}

// vipMetaFromC is m without its rate limit, which is in vip_rates, nor
// its persistence (vip_persist): rateLimited says whether it has the
// first, m.Flags&VIP_F_PERSIST the second.
func vipMetaFromC(m xdplbVipMeta) (meta VIPMeta, rateLimited bool) {
	return VIPMeta{
		ID:           m.VipId,
		Mode:         ForwardMode(m.Mode),
		Hash:         HashKind(m.Sched),
		NoHealthy:    m.Flags&uint16(xdplbVipFlagsVIP_F_NO_HEALTHY) != 0,
		BackendsFull: m.Flags&uint16(xdplbVipFlagsVIP_F_BACKENDS_FULL) != 0,
	}, m.Flags&uint16(xdplbVipFlagsVIP_F_RATE_LIMIT) != 0
}

// rateToC is the vip_rates entry of l (all zero for none) on a clock of
// hz ticks a second: a period of hz << RATE_CLOCK_SHIFT / Rate units,
// rounded, and a bucket state (tat) of 0, which is a full bucket.
func rateToC(l RateLimit, hz uint64) (xdplbVipRate, error) {
	if l.Rate == 0 {
		if l.Burst != 0 {
			return xdplbVipRate{}, fmt.Errorf("%w: rate limit burst %d without a rate", ErrInvalid, l.Burst)
		}
		return xdplbVipRate{}, nil
	}
	if l.Burst == 0 {
		return xdplbVipRate{}, fmt.Errorf("%w: rate limit burst 0: want 1 or more", ErrInvalid)
	}
	unit := hz << uint64(xdplbRateClockRATE_CLOCK_SHIFT)
	period := max((unit+uint64(l.Rate)/2)/uint64(l.Rate), 1)
	// The bucket compares its numbers signed: tau stays far below 2^63
	// (a burst of 100,000,000 at one flow a second and HZ=1000 is 2^60.5).
	hi, tau := bits.Mul64(uint64(l.Burst-1), period)
	if hi != 0 || tau >= 1<<62 {
		return xdplbVipRate{}, fmt.Errorf("%w: rate limit burst %d: too many seconds of a rate of %d", ErrInvalid, l.Burst, l.Rate)
	}
	return xdplbVipRate{Rate: l.Rate, Burst: l.Burst, Period: period, Tau: tau}, nil
}

func (b xdplbBackend) valid() bool {
	return b.Flags&uint16(xdplbBackendFlagsBACKEND_F_VALID) != 0
}
