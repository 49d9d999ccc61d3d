package reconcile

import (
	"github.com/xdplb/xdplb/loader"
)

// Datapath is what the reconciler and the metrics collector need of the
// data plane; *loader.Datapath implements it, and tests use a fake.
type Datapath interface {
	// Limits fixed at load time.
	LookupTableSize() uint32 // prime, e.g. 65537
	MaxVIPs() uint32         // model.VIP ids are 1..MaxVIPs()-1
	MaxBackends() uint32     // backend ids are 1..MaxBackends()-1
	ConntrackSize() uint32   // flows the connection table is sized for (--conntrack-size)

	VIPs() (map[loader.VIPKey]loader.VIPMeta, error)
	PutVIP(loader.VIPKey, loader.VIPMeta) error
	DeleteVIP(loader.VIPKey) error

	Backends() (map[uint32]loader.Backend, error)
	PutBackend(loader.Backend) error
	DeleteBackend(id uint32) error

	// PutLookupTable makes table a VIP's table; len(table) must be
	// LookupTableSize(), entries are backend ids (0: empty). A table in
	// use may be rewritten slot by slot (each slot atomically), so every
	// backend the old or the new table names must be usable meanwhile.
	PutLookupTable(vipID uint32, table []uint32) error
	// PutLookupTables gives the new VIPs of tables their tables in one
	// map update, which pays at most one RCU grace period (~12 ms here)
	// for them all.
	PutLookupTables(tables map[uint32][]uint32) error
	LookupTable(vipID uint32) ([]uint32, error) // nil when the model.VIP has none
	DeleteLookupTable(vipID uint32) error
	// PutSchedSet makes members a VIP's backend set, for rr, wrr, lc and
	// wlc (swapped whole); DeleteSchedSet removes it.
	PutSchedSet(vipID uint32, members []loader.SchedMember) error
	DeleteSchedSet(vipID uint32) error
	// SetOpenFlows writes the open flows lc and wlc compare, by backend
	// id; the data plane counts on from there.
	SetOpenFlows(counts map[uint32]int64) error

	VIPCounters() (map[uint32]loader.Counters, error)     // by model.VIP id
	BackendCounters() (map[uint32]loader.Counters, error) // by backend id
	// BackendCountsByID is every backend of the maps with its counters,
	// by ascending id: a scrape reads it rather than Backends and
	// BackendCounters.
	BackendCountsByID() ([]loader.BackendCount, error)
	ActionCounters() ([]loader.ActionCount, error)
	// DriverTxErrors is what the drivers of the attached interfaces
	// refused to send of the frames returned with XDP_TX or redirected
	// (which ActionCounters counts as sent), where the driver counts it:
	// an interface whose driver does not is left out.
	DriverTxErrors() ([]loader.TxErrorCount, error)
	DropCounters() (map[string]uint64, error) // by drop reason name
	// VIPDropCounters are the drops of new flows of each VIP, by VIP id
	// and reason name; only the reasons that counted.
	VIPDropCounters() (map[uint32]map[string]uint64, error)
	// FlowCountsByBackend counts open flows per backend id: connection-
	// table entries not closed by a TCP FIN/RST and seen within their
	// phase's idle limit, established apart from half-open.
	FlowCountsByBackend() (map[uint32]loader.FlowCount, error)
	ConntrackEntries() (int, error)
	// Conns calls fn with every connection-table entry until fn returns
	// false (`xdplb conns`); the table changes under the walk.
	Conns(fn func(loader.Conn) bool) error
	// NATStats is the NAT table as of its last sweep; EventCounters the
	// data plane's events that are not drops, by name. Both may fail on
	// a data plane without them: readers skip them then.
	NATStats() (loader.NATStats, error)
	EventCounters() (map[string]uint64, error)
	Status() (loader.Status, error)
}
