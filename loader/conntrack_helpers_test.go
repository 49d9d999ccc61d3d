package loader

import "testing"

// ctPut writes k's flow into the connection table as the program would
// insert it (its own slot, else the one the program would choose), with
// v's backend and flags, stamped v.LastSeen.
func ctPut(tb testing.TB, d *Datapath, k xdplbFlowKey, v flowVal) {
	tb.Helper()
	if _, ok := d.ct.insert(&k, v.BackendId, v.Flags, uint32(v.LastSeen), d.ctLimits()); !ok {
		tb.Fatalf("conntrack insert of %v lost a race", k)
	}
}

// ctGet is k's flow in the connection table, found as the program finds
// it, its stamp made a tick count at now.
func ctGet(tb testing.TB, d *Datapath, k xdplbFlowKey) (flowVal, bool) {
	tb.Helper()
	s, _, ok := d.ct.lookup(&k)
	if !ok {
		return flowVal{}, false
	}
	return flowVal{
		BackendId: uint32(s.Tag & ctBackendMask),
		Flags:     s.Meta &^ uint32(xdplbFlowFlagsFLOW_F_UDP),
		LastSeen:  halfStamp(s.Stamp, tickNow(tb, d)),
	}, true
}

// ctDel frees k's slot; false: it had none.
func ctDel(tb testing.TB, d *Datapath, k xdplbFlowKey) bool {
	tb.Helper()
	return d.ct.delete(&k)
}

// walkConntrackCount counts the connection table's flows by walking it.
func walkConntrackCount(d *Datapath) int {
	n := 0
	d.ct.walk(0, func(xdplbFlowKey, flowVal) bool { n++; return true })
	return n
}
