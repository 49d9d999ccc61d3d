package loader

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// The data plane's defaults, written here only: the daemon's config and
// the CLI's flag defaults read them (ARCHITECTURE.md).
const (
	DefaultBPFFS         = "/sys/fs/bpf"
	DefaultXDPMode       = XDPModeAuto
	DefaultLookupSize    = 65537 // prime
	DefaultConntrackSize = 1 << 20
	DefaultMaxVIPs       = 1024
	DefaultMaxBackends   = 65536
	// A flow that saw only its opening counts as open this long (IPVS's
	// SYN_RECV), and its entries are reclaimed after it: a DR LB never sees
	// the RST a backend refuses it with, and a spoofed SYN's never comes.
	DefaultHalfOpenTimeout = 60 * time.Second
)

// DefaultHalfOpenSize is the half-open table's size for a connection table
// of conntrackSize entries: a quarter of it. Half-open flows last a round
// trip, so this holds a new-flow rate times the round trip many times over
// (halfopen.go), and it bounds the NAT translations of half-open flows to
// a quarter of the NAT table (sized like the connection table), leaving
// the rest to established flows whatever floods the LB.
func DefaultHalfOpenSize(conntrackSize uint32) uint32 {
	return min(max(conntrackSize/4, 1), maxHalfOpenSize)
}

// maxHalfOpenSize keeps ct_half (buckets of 8 flows, 520 bytes each)
// below the 4 GiB an array map can be: 2^22 buckets are 2.2 GB.
const maxHalfOpenSize = 1 << 25

// DefaultSNATPorts are the source ports full NAT takes (--snat-ports):
// below the kernel's ephemeral range (net.ipv4.ip_local_port_range,
// 32768-60999 by default), because the LB's own connections from the SNAT
// address (health checks to the same backends above all) take their source
// ports from there, and one that matched a live mapping's 5-tuple would
// have its replies translated to that mapping's client.
var DefaultSNATPorts = PortRange{Lo: 1024, Hi: 32767}

// Options configure Load. A zero field takes its default (see Defaults).
// Validate words its errors after the daemon's flags, given in brackets.
type Options struct {
	BPFFS         string    // [--bpffs] DefaultBPFFS; pins go to BPFFS/xdplb; mounted as bpffs if it is not one
	Interfaces    []string  // [--iface] Load accepts none (tests): it loads and pins, attaches nothing
	XDPMode       XDPMode   // [--xdp-mode] native|generic|auto; DefaultXDPMode
	LookupSize    uint32    // [--maglev-size] a prime; DefaultLookupSize
	ConntrackSize uint32    // [--conntrack-size] DefaultConntrackSize
	MaxVIPs       uint32    // DefaultMaxVIPs
	MaxBackends   uint32    // DefaultMaxBackends
	SNATPorts     PortRange // [--snat-ports] full NAT's source ports; DefaultSNATPorts
	// [--half-open-timeout] how long a flow that saw only its opening
	// lives without a packet, in every table; DefaultHalfOpenTimeout
	HalfOpenTimeout time.Duration
	// The half-open table's flows (ct_half), in whole buckets of 8;
	// DefaultHalfOpenSize(ConntrackSize), which 0 also means to Validate.
	// No flag: it follows --conntrack-size (tests and benchmarks set it).
	HalfOpenSize uint32
	Logger       *slog.Logger
}

// Defaults sets every zero field but Interfaces to its default (Logger
// to one that discards).
func (o *Options) Defaults() {
	if o.BPFFS == "" {
		o.BPFFS = DefaultBPFFS
	}
	if o.XDPMode == "" {
		o.XDPMode = DefaultXDPMode
	}
	if o.LookupSize == 0 {
		o.LookupSize = DefaultLookupSize
	}
	if o.ConntrackSize == 0 {
		o.ConntrackSize = DefaultConntrackSize
	}
	if o.MaxVIPs == 0 {
		o.MaxVIPs = DefaultMaxVIPs
	}
	if o.MaxBackends == 0 {
		o.MaxBackends = DefaultMaxBackends
	}
	if o.SNATPorts == (PortRange{}) {
		o.SNATPorts = DefaultSNATPorts
	}
	if o.HalfOpenTimeout == 0 {
		o.HalfOpenTimeout = DefaultHalfOpenTimeout
	}
	if o.HalfOpenSize == 0 {
		o.HalfOpenSize = DefaultHalfOpenSize(o.ConntrackSize)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports the first setting a daemon cannot run with; the error
// wraps ErrInvalid. It checks the values as they are, so call Defaults
// first for zero fields to mean defaults. It asks the kernel nothing:
// whether the interfaces exist is CheckInterfaces' question. Load applies
// the same checks but accepts no interface at all.
func (o Options) Validate() error {
	if len(o.Interfaces) == 0 {
		return invalidf("at least one --iface is required")
	}
	return o.validate()
}

// validate is Validate without the need for an interface.
func (o Options) validate() error {
	if o.BPFFS == "" {
		return invalidf("--bpffs %q: want a directory", o.BPFFS)
	}
	if _, err := ParseXDPMode(string(o.XDPMode)); err != nil {
		return err
	}
	if !IsPrime(o.LookupSize) {
		return invalidf("--maglev-size %d: must be a prime number (e.g. %d)", o.LookupSize, DefaultLookupSize)
	}
	if o.ConntrackSize == 0 {
		return invalidf("--conntrack-size %d: must be at least 1", o.ConntrackSize)
	}
	// Id 0 is reserved in both, so one slot is not enough.
	if o.MaxVIPs < 2 || o.MaxBackends < 2 {
		return invalidf("max vips %d and max backends %d must be at least 2", o.MaxVIPs, o.MaxBackends)
	}
	// A connection-table slot names its backend in the low bits of its
	// tag (bpf/types.h, CT_BACKEND_MASK).
	if uint64(o.MaxBackends) > ctBackendMask+1 {
		return invalidf("max backends %d: at most %d", o.MaxBackends, ctBackendMask+1)
	}
	if o.SNATPorts.Lo == 0 || o.SNATPorts.Lo > o.SNATPorts.Hi {
		return invalidf("--snat-ports %s: want LO-HI with 1 <= LO <= HI <= 65535", o.SNATPorts)
	}
	if o.HalfOpenTimeout < time.Second || o.HalfOpenTimeout > OpenFlowIdleTCP {
		return invalidf("--half-open-timeout %s: want 1s to %s", o.HalfOpenTimeout, OpenFlowIdleTCP)
	}
	if o.HalfOpenSize > maxHalfOpenSize {
		return invalidf("half-open table of %d flows: want at most %d", o.HalfOpenSize, maxHalfOpenSize)
	}
	seen := make(map[string]bool, len(o.Interfaces))
	for _, name := range o.Interfaces {
		if seen[name] {
			return invalidf("--iface %s given twice", name)
		}
		seen[name] = true
	}
	return nil
}

// CheckInterfaces reports the first of o.Interfaces that is not an
// interface of the caller's network namespace. Load checks this before it
// loads anything.
func (o Options) CheckInterfaces() error {
	for _, name := range o.Interfaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return fmt.Errorf("interface %s not found", name)
		}
	}
	return nil
}

// ParseXDPMode returns the mode named s; the error wraps ErrInvalid.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case XDPModeNative, XDPModeGeneric, XDPModeAuto:
		return m, nil
	}
	return "", invalidf("--xdp-mode %q: want native, generic or auto", s)
}

// ParsePortRange parses "LO-HI" (or one port) as --snat-ports takes it;
// the error wraps ErrInvalid.
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		hi = lo
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || l == 0 || l > h {
		return PortRange{}, invalidf("--snat-ports %q: want LO-HI with 1 <= LO <= HI <= 65535", s)
	}
	return PortRange{Lo: uint16(l), Hi: uint16(h)}, nil
}

// IsPrime reports whether n is prime: a lookup table's size must be, or
// Maglev's permutations do not cover it.
func IsPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint64(3); d*d <= uint64(n); d += 2 {
		if uint64(n)%d == 0 {
			return false
		}
	}
	return true
}

// invalidError is an ErrInvalid whose text is only its message: it reaches
// users as it is, in the words of the flags.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}
