package healthcheck

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Kind is the type of probe.
type Kind string

// Probe kinds. A check of type "none" is not a Kind: its backends are
// always up and the caller does not give them to a Manager.
const (
	TCP  Kind = "tcp"  // connect, then reset
	HTTP Kind = "http" // GET Path, expect a status in Expect (default 200-399)
	UDP  Kind = "udp"  // send Payload, expect any reply
)

// Bounds checked by Spec.Validate (the same as the control plane's).
const (
	MinInterval = 100 * time.Millisecond
	MaxRiseFall = 100
)

// defaultPayload is what a UDP probe sends when the Spec gives no Payload.
var defaultPayload = []byte("xdplb health check\n")

// ErrInvalidSpec is wrapped by every error of Spec.Validate.
var ErrInvalidSpec = errors.New("invalid health check")

// Spec is one probe: what to probe, how, and how often. Targets with equal
// Specs share one probe loop.
type Spec struct {
	Kind    Kind
	Target  netip.AddrPort // backend address, VIP port or check port
	Path    string         // http; default "/"
	Host    string         // http Host header; default Target
	Expect  StatusRange    // http statuses wanted; zero: DefaultExpect
	Payload []byte         // udp; default a short fixed payload

	Interval, Timeout time.Duration
	Rise, Fall        int
}

// Validate reports whether the Spec can be probed, wrapping ErrInvalidSpec.
func (s Spec) Validate() error {
	if err := s.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	return nil
}

func (s Spec) validate() error {
	switch s.Kind {
	case TCP, HTTP, UDP:
	default:
		return fmt.Errorf("unknown kind %q: want tcp, http or udp", s.Kind)
	}
	if !s.Target.IsValid() || s.Target.Port() == 0 {
		return fmt.Errorf("target %s: want an address and a port", s.Target)
	}
	if a := s.Target.Addr(); a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("target %s: not a unicast address", s.Target)
	}
	if s.Interval < MinInterval {
		return fmt.Errorf("interval %s: want at least %s", s.Interval, MinInterval)
	}
	if s.Timeout <= 0 || s.Timeout >= s.Interval {
		return fmt.Errorf("timeout %s: want more than 0 and less than the interval %s", s.Timeout, s.Interval)
	}
	if s.Rise < 1 || s.Rise > MaxRiseFall {
		return fmt.Errorf("rise %d: want 1-%d", s.Rise, MaxRiseFall)
	}
	if s.Fall < 1 || s.Fall > MaxRiseFall {
		return fmt.Errorf("fall %d: want 1-%d", s.Fall, MaxRiseFall)
	}
	if s.Kind == HTTP {
		if s.Path != "" && !strings.HasPrefix(s.Path, "/") {
			return fmt.Errorf("path %q: must start with /", s.Path)
		}
		if s.Expect != (StatusRange{}) {
			if err := s.Expect.validate(); err != nil {
				return err
			}
		}
		if strings.ContainsAny(s.Host, " \r\n") {
			return fmt.Errorf("host %q: must not contain spaces or line breaks", s.Host)
		}
	}
	return nil
}

// normalized fills in defaults and clears the fields its Kind does not use,
// so that Specs that probe the same way share a loop (a tcp check handed a
// Path by a generic caller is still the same tcp check).
func (s Spec) normalized() Spec {
	s.Target = netip.AddrPortFrom(s.Target.Addr().Unmap(), s.Target.Port())
	switch s.Kind {
	case HTTP:
		if s.Path == "" {
			s.Path = "/"
		}
		if s.Expect == (StatusRange{}) {
			s.Expect = DefaultExpect
		}
		s.Payload = nil
	case UDP:
		if len(s.Payload) == 0 {
			s.Payload = defaultPayload
		}
		// A copy: the caller may reuse its slice, and loops read it
		// concurrently.
		s.Payload = append([]byte(nil), s.Payload...)
		s.Path, s.Host, s.Expect = "", "", StatusRange{}
	default:
		s.Path, s.Host, s.Expect, s.Payload = "", "", StatusRange{}, nil
	}
	return s
}

// specKey is a Spec as a map key (Spec itself holds a slice).
type specKey struct {
	kind              Kind
	target            netip.AddrPort
	path, host        string
	expect            StatusRange
	payload           string
	interval, timeout time.Duration
	rise, fall        int
}

func (s Spec) key() specKey {
	return specKey{
		kind: s.Kind, target: s.Target, path: s.Path, host: s.Host, expect: s.Expect,
		payload: string(s.Payload), interval: s.Interval, timeout: s.Timeout, rise: s.Rise, fall: s.Fall,
	}
}

// StatusRange is the HTTP statuses an http check takes for up: Lo to Hi,
// both included.
type StatusRange struct {
	Lo, Hi int
}

// DefaultExpect is what an http check takes for up unless told otherwise:
// any 2xx or 3xx (a redirect is an answer, and is not followed).
var DefaultExpect = StatusRange{Lo: 200, Hi: 399}

// ParseStatusRange reads "200-399" or a single status "200". The statuses
// are 100-599 and LO <= HI.
func ParseStatusRange(s string) (StatusRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	r := StatusRange{}
	var err error
	if r.Lo, err = strconv.Atoi(strings.TrimSpace(lo)); err != nil {
		return StatusRange{}, fmt.Errorf("expect %q: want an http status or a range like 200-399", s)
	}
	r.Hi = r.Lo
	if isRange {
		if r.Hi, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
			return StatusRange{}, fmt.Errorf("expect %q: want an http status or a range like 200-399", s)
		}
	}
	if err := r.validate(); err != nil {
		return StatusRange{}, err
	}
	return r, nil
}

func (r StatusRange) validate() error {
	if r.Lo < 100 || r.Lo > 599 || r.Hi < 100 || r.Hi > 599 {
		return fmt.Errorf("expect %s: want http statuses 100-599", r)
	}
	if r.Lo > r.Hi {
		return fmt.Errorf("expect %s: the first status must not be above the last", r)
	}
	return nil
}

// Contains reports whether status is in r.
func (r StatusRange) Contains(status int) bool { return r.Lo <= status && status <= r.Hi }

// String writes r as ParseStatusRange reads it: "200-399", or "200" for a
// range of one status.
func (r StatusRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + "-" + strconv.Itoa(r.Hi)
}
