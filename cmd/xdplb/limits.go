package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/xdplb/xdplb/control/model"
)

// The limits an operator sets: a VIP's new-flow rate limit and a
// backend's connection cap. Both are a number with an optional second
// one after a comma, "N[,key=M]"; 0 or none removes the limit.

const (
	maxNewFlowsUsage = "RATE[,burst=N]"
	maxConnsUsage    = "N[,min=M]"
)

// parseLimit reads "N[,key=M]" (or none for 0): the number and the
// second one (0 when not given, which Normalize makes its default).
func parseLimit(s, key string) (n, m uint32, err error) {
	if strings.TrimSpace(strings.ToLower(s)) == "none" {
		return 0, 0, nil
	}
	first, rest, hasRest := strings.Cut(s, ",")
	v, err := strconv.ParseUint(strings.TrimSpace(first), 10, 32)
	if err != nil {
		return 0, 0, errors.New("not a number")
	}
	if !hasRest {
		return uint32(v), 0, nil
	}
	k, val, ok := strings.Cut(strings.TrimSpace(rest), "=")
	if !ok || strings.TrimSpace(k) != key {
		return 0, 0, fmt.Errorf("after the comma, want %s=N", key)
	}
	w, err := strconv.ParseUint(strings.TrimSpace(val), 10, 32)
	if err != nil || w == 0 {
		return 0, 0, fmt.Errorf("%s=%s: want 1 or more (leave it out for the default)", key, val)
	}
	if v == 0 {
		return 0, 0, fmt.Errorf("%s without a limit", key)
	}
	return uint32(v), uint32(w), nil
}

// newFlowLimitFlag reads --max-new-flows RATE[,burst=N].
func newFlowLimitFlag(c *cli.Context) (model.NewFlowLimit, error) {
	s := c.String("max-new-flows")
	rate, burst, err := parseLimit(s, "burst")
	if err != nil {
		return model.NewFlowLimit{}, usagef(c, "--max-new-flows %q: %v; want %s, RATE new flows a second, 0 or none for no limit", s, err, maxNewFlowsUsage)
	}
	return model.NewFlowLimit{Rate: rate, Burst: burst}, nil
}

// connCapFlag reads --max-conns N[,min=M].
func connCapFlag(c *cli.Context) (model.ConnCap, error) {
	s := c.String("max-conns")
	n, m, err := parseLimit(s, "min")
	if err != nil {
		return model.ConnCap{}, usagef(c, "--max-conns %q: %v; want %s, 0 or none for no cap", s, err, maxConnsUsage)
	}
	return model.ConnCap{Max: n, Min: m}, nil
}

// limitString is a VIP's rate limit as `vip list` shows it.
func limitString(v model.VIP) string {
	if v.MaxNewFlows == 0 {
		return "-"
	}
	s := strconv.FormatUint(uint64(v.MaxNewFlows), 10) + "/s"
	if v.MaxNewFlowsBurst != v.MaxNewFlows {
		s += " burst " + strconv.FormatUint(uint64(v.MaxNewFlowsBurst), 10)
	}
	return s
}

// capString is a backend's connection cap as `vip list` and `backend
// list` show it.
func capString(b model.Backend) string {
	if b.MaxConns == 0 {
		return "-"
	}
	return fmt.Sprintf("%d min %d", b.MaxConns, b.MaxConnsMin)
}
