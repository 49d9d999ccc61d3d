package model

import (
	"strconv"
	"strings"
)

// ActivePriority is the worst (highest) of the active pools, the deepest
// step of the ladder that takes new flows: 0 while the primary pool
// suffices; -1 when no pool takes new flows (the fallback does, or they
// are dropped). It is the value of xdplb_vip_active_priority.
// The pools are the reconciler's choice (control/reconcile, pools.go).
func ActivePriority(pools []uint32) int {
	if len(pools) == 0 {
		return -1
	}
	return int(pools[len(pools)-1])
}

// PoolsString writes active pools as `vip list` and the logs show them:
// "0", "0+1" while two share new flows, "none" for no pool.
func PoolsString(pools []uint32) string {
	if len(pools) == 0 {
		return "none"
	}
	s := make([]string, len(pools))
	for i, p := range pools {
		s[i] = strconv.FormatUint(uint64(p), 10)
	}
	return strings.Join(s, "+")
}
