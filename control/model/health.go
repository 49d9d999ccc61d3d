package model

import (
	"net/netip"
	"strings"
	"time"

	"github.com/xdplb/xdplb/healthcheck"
)

// HealthTargetID names the health-check target of a backend of a VIP:
// "10.0.0.100:80/tcp|10.0.0.1".
func HealthTargetID(vip VIPID, addr netip.Addr, port uint16) string {
	return vip.String() + healthTargetSep + BackendName(addr.Unmap(), port)
}

const healthTargetSep = "|"

// SplitHealthTargetID is HealthTargetID undone: the VIP and the backend
// as messages and metric labels name them. ok is false for an id that
// HealthTargetID did not make.
func SplitHealthTargetID(id string) (vip, backend string, ok bool) {
	return strings.Cut(id, healthTargetSep)
}

// HealthSpec is the probe of backend b of v: the backend's address at the
// check port, else at the backend's port, else at the VIP's; HTTP probes
// send the VIP as Host. ok is false when v has no check.
func HealthSpec(v *VIP, b Backend) (healthcheck.Spec, bool) {
	if v.HealthCheck == nil {
		return healthcheck.Spec{}, false
	}
	hc := *v.HealthCheck
	normalizeCheck(&hc) // the store holds normalized checks; this keeps callers exact for any input
	if hc.Type == CheckNone {
		return healthcheck.Spec{}, false
	}
	return checkSpec(v, hc, b), true
}

// checkSpec is the Spec of hc for backend b of v, as it is (no defaults).
func checkSpec(v *VIP, hc HealthCheck, b Backend) healthcheck.Spec {
	port := hc.Port
	if port == 0 {
		port = v.BackendPort(b)
	}
	s := healthcheck.Spec{
		Kind:     healthcheck.Kind(hc.Type),
		Target:   netip.AddrPortFrom(b.Address.Unmap(), port),
		Interval: time.Duration(hc.Interval),
		Timeout:  time.Duration(hc.Timeout),
		Rise:     hc.Rise,
		Fall:     hc.Fall,
	}
	if hc.Type == CheckHTTP {
		s.Path = hc.Path
		// Validated already (validateCheck); a bad range here probes
		// with the default rather than not at all.
		s.Expect, _ = healthcheck.ParseStatusRange(hc.Expect)
		s.Host = netip.AddrPortFrom(v.Address.Unmap(), v.Port).String()
	}
	return s
}
