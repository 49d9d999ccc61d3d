package model

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/xdplb/xdplb/healthcheck"
)

// Sentinel errors of the store and validation; the API maps them to 404,
// 409 and 400. They are always wrapped with the VIP or backend concerned.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInvalid  = errors.New("invalid")
	// ErrOwnAddress marks a VIP on an address of the LB host itself, which
	// would take the host's own services (SSH): refused (it also matches
	// ErrInvalid) unless the operator forces it.
	ErrOwnAddress = errors.New("an address of this host")
)

// Health check types.
const (
	CheckNone = "none"
	CheckTCP  = "tcp"
	CheckHTTP = "http"
	CheckUDP  = "udp"
)

// Health check defaults and bounds, applied by Normalize and checked by Validate.
const (
	DefaultCheckInterval = Duration(time.Second)
	DefaultCheckTimeout  = Duration(500 * time.Millisecond)
	DefaultRise          = 2
	DefaultFall          = 3
	MinCheckInterval     = Duration(healthcheck.MinInterval)
	MaxRiseFall          = healthcheck.MaxRiseFall
	MaxWeight            = 65535
	// A VIP's new-flow rate limit: at most MaxNewFlowsRate a second, in
	// bursts of at most MaxNewFlowsBurst.
	MaxNewFlowsRate  = 10_000_000
	MaxNewFlowsBurst = 100_000_000
)

// DefaultConnsMin is a backend's lower mark when only its cap is given:
// 3/4 of it, rounded down (IPVS leaves -y unset; HAProxy has none).
func DefaultConnsMin(maxConns uint32) uint32 { return uint32(uint64(maxConns) * 3 / 4) }

// invalidError is a validation problem: its text is the message alone (one
// line, ready for the CLI), and it matches ErrInvalid and its cause, if any.
type invalidError struct {
	msg   string
	cause error
}

func (e *invalidError) Error() string { return e.msg }

func (e *invalidError) Unwrap() []error {
	if e.cause != nil {
		return []error{ErrInvalid, e.cause}
	}
	return []error{ErrInvalid}
}

func Invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// OwnAddressf is an ErrInvalid that matches ErrOwnAddress too, with the
// message alone as its text.
func OwnAddressf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...), cause: ErrOwnAddress}
}

// AsInvalid makes err match ErrInvalid, keeping its text and chain.
func AsInvalid(err error) error {
	if err == nil || errors.Is(err, ErrInvalid) {
		return err
	}
	return &invalidError{msg: err.Error(), cause: err}
}

// Normalize fills defaults and puts s into its canonical form, so that two
// equal configurations compare equal and export the same text: addresses
// unmapped, names lower-cased, mode dr and scheduler maglev when empty,
// health-check defaults when a check is set, a backend port equal to the
// VIP port written as 0, VIPs sorted by (address, port, protocol) and
// backends by (address, port), empty lists non-nil.
//
// Weights are not defaulted: 0 is meaningful (no new flows). Whoever creates
// a backend without a weight applies DefaultWeight (the CLI flag default,
// ParseState for a missing `weight:` key).
func Normalize(s *State) {
	if s.VIPs == nil {
		s.VIPs = []VIP{}
	}
	for i := range s.VIPs {
		NormalizeVIP(&s.VIPs[i])
	}
	slices.SortStableFunc(s.VIPs, func(a, b VIP) int { return CompareVIPID(a.ID(), b.ID()) })
}

// NormalizeVIP is Normalize of one VIP.
func NormalizeVIP(v *VIP) {
	v.Address = v.Address.Unmap()
	v.Protocol = Protocol(strings.ToLower(string(v.Protocol)))
	v.Mode = Mode(strings.ToLower(string(v.Mode)))
	if v.Mode == "" {
		v.Mode = DefaultMode
	}
	v.SNATAddr = v.SNATAddr.Unmap()
	v.Scheduler = Scheduler(strings.ToLower(string(v.Scheduler)))
	if v.Scheduler == "" {
		v.Scheduler = DefaultScheduler
	}
	if v.HealthCheck != nil {
		normalizeCheck(v.HealthCheck)
	}
	if v.MaxNewFlows != 0 && v.MaxNewFlowsBurst == 0 {
		v.MaxNewFlowsBurst = v.MaxNewFlows
	}
	if f := v.Fallback; f != nil {
		f.Address = f.Address.Unmap()
		if f.Port == v.Port {
			f.Port = 0
		}
	}
	if v.Backends == nil {
		v.Backends = []Backend{}
	}
	for i := range v.Backends {
		b := &v.Backends[i]
		b.Address = b.Address.Unmap()
		if b.Port == v.Port {
			b.Port = 0
		}
		if b.MaxConns != 0 && b.MaxConnsMin == 0 {
			b.MaxConnsMin = DefaultConnsMin(b.MaxConns)
		}
	}
	slices.SortStableFunc(v.Backends, func(a, b Backend) int {
		return compareAddrPort(a.Address, a.Port, b.Address, b.Port)
	})
}

func normalizeCheck(hc *HealthCheck) {
	hc.Type = strings.ToLower(hc.Type)
	if hc.Type == "" || hc.Type == CheckNone {
		// Nothing is probed: the other fields mean nothing, and clearing
		// them keeps one spelling of "no check" whatever flag defaults the
		// caller sent along.
		*hc = HealthCheck{Type: CheckNone}
		return
	}
	if hc.Interval == 0 {
		hc.Interval = DefaultCheckInterval
	}
	if hc.Timeout == 0 {
		// The timeout must stay below the interval, also for short intervals.
		hc.Timeout = min(DefaultCheckTimeout, hc.Interval/2)
	}
	if hc.Rise == 0 {
		hc.Rise = DefaultRise
	}
	if hc.Fall == 0 {
		hc.Fall = DefaultFall
	}
	if hc.Type == CheckHTTP && hc.Path == "" {
		hc.Path = "/"
	}
	// One spelling of a range ("200 - 299" is "200-299"); a bad one stays
	// as written, for Validate to name.
	if hc.Expect != "" {
		if e, err := ParseExpect(hc.Expect); err == nil {
			hc.Expect = e
		}
	}
}

// ParseExpect reads the statuses an http check takes for up, "LO-HI" or
// one status (100-599, LO <= HI), and returns them in their one spelling.
func ParseExpect(s string) (string, error) {
	r, err := healthcheck.ParseStatusRange(s)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// Validate checks a normalized state (see Normalize; empty fields that
// Normalize fills are errors here) and returns the first problem in VIP order,
// wrapping ErrInvalid. It changes nothing.
func Validate(s State) error { return ValidateLimits(s, 0, 0) }

// ValidateLimits is Validate plus the data plane's map sizes (0: no limit):
// VIP ids are 1..maxVIPs-1 and backend ids 1..maxBackends-1, one per backend
// of each VIP, so at most maxVIPs-1 VIPs and maxBackends-1 backends in all.
func ValidateLimits(s State, maxVIPs, maxBackends uint32) error {
	if err := CheckCapacity(s, maxVIPs, maxBackends); err != nil {
		return err
	}
	seen := make(map[VIPID]bool, len(s.VIPs))
	for i := range s.VIPs {
		v := &s.VIPs[i]
		if err := ValidateVIP(v, i); err != nil {
			return err
		}
		id := v.ID()
		id.Addr = id.Addr.Unmap()
		if seen[id] {
			return Invalidf("vip %s: duplicate vip", id)
		}
		seen[id] = true
	}
	return nil
}

// checkCapacity refuses a state with more VIPs or backends (over all VIPs)
// than the data plane's maps hold (ids 1..max-1; 0: no limit). It is cheap:
// the store runs it on every change.
func CheckCapacity(s State, maxVIPs, maxBackends uint32) error {
	if maxVIPs > 0 && len(s.VIPs) > int(maxVIPs)-1 {
		return Invalidf("%d vips: at most %d fit in the data plane", len(s.VIPs), int(maxVIPs)-1)
	}
	total := 0
	for i := range s.VIPs {
		total += len(s.VIPs[i].Backends)
		if s.VIPs[i].Fallback != nil {
			total++ // it has an entry, as a backend
		}
	}
	if maxBackends > 0 && total > int(maxBackends)-1 {
		return Invalidf("%d backends in all vips: at most %d fit in the data plane", total, int(maxBackends)-1)
	}
	return nil
}

// ValidateVIP checks one normalized VIP; index names it in messages when its
// address is missing.
func ValidateVIP(v *VIP, index int) error {
	if !v.Address.IsValid() {
		return Invalidf("vip #%d: address is missing or malformed", index+1)
	}
	name := v.ID().String()
	if err := checkAddr(v.Address); err != nil {
		return Invalidf("vip %s: address %s", name, err)
	}
	if v.Port == 0 {
		return Invalidf("vip %s: port must be 1-65535", name)
	}
	if v.Protocol != TCP && v.Protocol != UDP {
		return Invalidf("vip %s: protocol %q: want tcp or udp", name, v.Protocol)
	}
	if !slices.Contains(Modes(), v.Mode) {
		return Invalidf("vip %s: unknown mode %q: want %s", name, v.Mode, OneOf(Modes()))
	}
	if err := validateSNAT(v); err != nil {
		return Invalidf("vip %s: snat address %s: %s", name, v.SNATAddr, err)
	}
	if !slices.Contains(Schedulers(), v.Scheduler) {
		return Invalidf("vip %s: unknown scheduler %q: want %s", name, v.Scheduler, OneOf(Schedulers()))
	}
	if n := len(v.Backends); v.Scheduler.UsesSet() && (n > MaxSchedBackends || n == MaxSchedBackends && v.Fallback != nil) {
		return Invalidf("vip %s: scheduler %s takes at most %d backends (fallback included): use maglev, sh or random for more",
			name, v.Scheduler, MaxSchedBackends)
	}
	if err := validatePersistence(v.Persistence); err != nil {
		return Invalidf("vip %s: %s", name, err)
	}
	if v.FailoverBelow > MaxFailoverBelow {
		return Invalidf("vip %s: failover_below %d: want a percentage, 0-%d", name, v.FailoverBelow, MaxFailoverBelow)
	}
	if v.HealthCheck != nil {
		if err := validateCheck(v); err != nil {
			return Invalidf("vip %s: healthcheck: %s", name, err)
		}
	}
	if err := validateNewFlows(v.MaxNewFlows, v.MaxNewFlowsBurst); err != nil {
		return Invalidf("vip %s: %s", name, err)
	}
	type bkey struct {
		addr netip.Addr
		port uint16
	}
	seen := make(map[bkey]bool, len(v.Backends))
	for j := range v.Backends {
		b := &v.Backends[j]
		if !b.Address.IsValid() {
			return Invalidf("vip %s: backend #%d: address is missing or malformed", name, j+1)
		}
		port := b.Port
		if port == 0 {
			port = v.Port
		}
		addr := b.Address.Unmap()
		bname := BackendName(addr, b.Port)
		if err := checkAddr(addr); err != nil {
			return Invalidf("vip %s: backend %s: address %s", name, bname, err)
		}
		if addr.Is4() != v.Address.Unmap().Is4() {
			return Invalidf("vip %s: backend %s: address family differs from the vip's", name, bname)
		}
		if addr == v.Address.Unmap() {
			return Invalidf("vip %s: backend %s: backend address is the vip address", name, bname)
		}
		if v.Mode == ModeDR && port != v.Port {
			return Invalidf("vip %s: backend %s: dr mode cannot change the port: use the vip port %d or none", name, bname, v.Port)
		}
		if b.Weight > MaxWeight {
			return Invalidf("vip %s: backend %s: weight %d: want 0-%d", name, bname, b.Weight, MaxWeight)
		}
		if b.Priority > MaxPriority {
			return Invalidf("vip %s: backend %s: priority %d: want 0-%d", name, bname, b.Priority, MaxPriority)
		}
		if err := validateConnCap(b.MaxConns, b.MaxConnsMin); err != nil {
			return Invalidf("vip %s: backend %s: %s", name, bname, err)
		}
		if err := ValidateGroup(b.Group); err != nil {
			return Invalidf("vip %s: backend %s: %s", name, bname, err)
		}
		k := bkey{addr, port}
		if seen[k] {
			return Invalidf("vip %s: backend %s: duplicate backend", name, bname)
		}
		seen[k] = true
	}
	if f := v.Fallback; f != nil {
		if err := validateFallback(v, *f); err != nil {
			return Invalidf("vip %s: fallback %s: %s", name, f, err)
		}
		port := f.Port
		if port == 0 {
			port = v.Port
		}
		if seen[bkey{f.Address.Unmap(), port}] {
			return Invalidf("vip %s: fallback %s: is a backend of the vip too", name, f)
		}
	}
	return nil
}

// validateNewFlows checks a VIP's new-flow rate limit (rate 0: none).
func validateNewFlows(rate, burst uint32) error {
	switch {
	case rate == 0 && burst != 0:
		return fmt.Errorf("max_new_flows_burst %d without max_new_flows", burst)
	case rate > MaxNewFlowsRate:
		return fmt.Errorf("max_new_flows %d: want 1-%d new flows a second (0: no limit)", rate, MaxNewFlowsRate)
	case rate != 0 && (burst == 0 || burst > MaxNewFlowsBurst):
		return fmt.Errorf("max_new_flows_burst %d: want 1-%d", burst, MaxNewFlowsBurst)
	}
	return nil
}

// validatePersistence checks a VIP's persistence (0: none): whole
// seconds, as IPVS takes them, up to MaxPersistence.
func validatePersistence(d Duration) error {
	switch {
	case d < 0 || d > MaxPersistence:
		return fmt.Errorf("persistence %s: want 1s-%s (0: none)", d, MaxPersistence)
	case time.Duration(d)%time.Second != 0:
		return fmt.Errorf("persistence %s: want whole seconds", d)
	}
	return nil
}

// ValidateGroup checks a backend's group label ("" is none): 1-32
// letters, digits, '-', '_' or '.', as a release is named.
func ValidateGroup(g string) error {
	if len(g) > 32 {
		return fmt.Errorf("group %q: at most 32 characters", g)
	}
	for _, c := range g {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("group %q: want letters, digits, '-', '_' or '.'", g)
		}
	}
	return nil
}

// validateConnCap checks a backend's connection cap (max 0: none): the
// lower mark is below the cap, the gap between them is the hysteresis.
func validateConnCap(maxConns, minConns uint32) error {
	switch {
	case maxConns == 0 && minConns != 0:
		return fmt.Errorf("max_conns_min %d without max_conns", minConns)
	case maxConns != 0 && minConns >= maxConns:
		return fmt.Errorf("max_conns_min %d: want below max_conns %d, the mark at which a full backend takes new flows again", minConns, maxConns)
	}
	return nil
}

// validateFallback checks the fallback f of v by the rules of v's
// backends; whether it is one of them is the caller's question.
func validateFallback(v *VIP, f Fallback) error {
	addr := f.Address.Unmap()
	switch {
	case !addr.IsValid():
		return errors.New("address is missing or malformed")
	case addr.Is4() != v.Address.Unmap().Is4():
		return errors.New("address family differs from the vip's")
	case addr == v.Address.Unmap():
		return errors.New("is the vip address")
	case v.Mode == ModeDR && f.Port != 0 && f.Port != v.Port:
		return fmt.Errorf("dr mode cannot change the port: use the vip port %d or none", v.Port)
	}
	if err := checkAddr(addr); err != nil {
		return fmt.Errorf("address %w", err)
	}
	return nil
}

// validateSNAT checks the SNAT address of v, if it has one. Whether it is
// an address of this host is the network's question (netstack).
func validateSNAT(v *VIP) error {
	a := v.SNATAddr
	switch {
	case !a.IsValid():
		return nil
	case v.Mode != ModeFullNAT:
		return fmt.Errorf("only a fullnat vip has one (mode is %s)", v.Mode)
	case a.Unmap().Is4() != v.Address.Unmap().Is4():
		return errors.New("address family differs from the vip's")
	case a.Unmap() == v.Address.Unmap():
		// Replies to the SNAT address would be taken for packets to the VIP.
		return errors.New("is the vip address")
	}
	if err := checkAddr(a); err != nil {
		return fmt.Errorf("address %w", err)
	}
	return nil
}

// checkAddr rejects addresses that can never be a VIP or a backend.
func checkAddr(a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return errors.New("must not have a zone")
	case a.IsUnspecified():
		return errors.New("is unspecified")
	case a.IsLoopback():
		return errors.New("is a loopback address")
	case a.IsMulticast():
		return errors.New("is a multicast address")
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return errors.New("is the broadcast address")
	}
	return nil
}

// validateCheck checks the health check of v. The timing rules (interval at
// least 100ms, timeout above 0 and below the interval, rise and fall 1-100)
// are the prober's own, healthcheck.Spec.Validate, so that the two can never
// disagree; the rules about the configuration's form are here.
func validateCheck(v *VIP) error {
	hc := v.HealthCheck
	switch hc.Type {
	case CheckNone:
		return nil
	case CheckTCP, CheckUDP, CheckHTTP:
	default:
		return fmt.Errorf("unknown type %q: want tcp, http, udp or none", hc.Type)
	}
	if hc.Type == CheckHTTP && !strings.HasPrefix(hc.Path, "/") {
		// Normalize writes "/" for an empty path, so "" is an error here.
		return fmt.Errorf("path %q: must start with /", hc.Path)
	}
	if hc.Type != CheckHTTP && hc.Path != "" {
		return fmt.Errorf("path %q: only http checks have a path", hc.Path)
	}
	if hc.Expect != "" {
		if hc.Type != CheckHTTP {
			return fmt.Errorf("expect %q: only http checks expect a status", hc.Expect)
		}
		if _, err := ParseExpect(hc.Expect); err != nil {
			return err
		}
	}
	// Any backend stands for all: the target's address does not change
	// the timing rules.
	spec := checkSpec(v, *hc, Backend{Address: v.Address})
	if err := spec.Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), healthcheck.ErrInvalidSpec.Error()+": "))
	}
	return nil
}

// BackendName is how a backend is named in messages and on the command line:
// "ADDR" when it uses the VIP's port (port 0), else "ADDR:PORT".
func BackendName(addr netip.Addr, port uint16) string {
	if port == 0 {
		return addr.String()
	}
	return netip.AddrPortFrom(addr, port).String()
}
