package progs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
)

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem ctlookup -type ct_bucket -type nat_config ctlookup ctlookup.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror

// CTBucketSlots is the connection table's slots per bucket (bpf/types.h).
var CTBucketSlots = len(ctlookupCtBucket{}.Slots)

// ConnTable is one connection table with a benchmark's two programs: Fill
// puts the frame's flow in unless it is there, Lookup finds it (and
// touches it as the established path does) and counts a miss. Both send
// the frame back (XDP_TX, MACs swapped), as the floor does; the frame is
// IPv4 TCP without options.
type ConnTable struct {
	Fill, Lookup *ebpf.Program
	maps         []*ebpf.Map // the table's own, for their memory
	miss         *ebpf.Map
	closers      []interface{ Close() error }
}

// lruObjects are the LRU reference's programs and maps, nothing else of
// the object file.
type lruObjects struct {
	Fill   *ebpf.Program `ebpf:"cl_lru_fill"`
	Lookup *ebpf.Program `ebpf:"cl_lru_lookup"`
	Table  *ebpf.Map     `ebpf:"cl_lru"`
	Miss   *ebpf.Map     `ebpf:"cl_miss"`
}

// newObjects are the cache-line table's: the product's maps conntrack and
// ct_keys, and those its insert reads or counts in.
type newObjects struct {
	Fill      *ebpf.Program `ebpf:"cl_new_fill"`
	Lookup    *ebpf.Program `ebpf:"cl_new_lookup"`
	Conntrack *ebpf.Map     `ebpf:"conntrack"`
	Keys      *ebpf.Map     `ebpf:"ct_keys"`
	NatParams *ebpf.Map     `ebpf:"nat_params"`
	Miss      *ebpf.Map     `ebpf:"cl_miss"`
}

// ctlookupSpec is the object file's spec with nothing pinned: the product's
// maps ask to be pinned by name, and a benchmark's tables are its own.
func ctlookupSpec() (*ebpf.CollectionSpec, error) {
	spec, err := loadCtlookup()
	if err != nil {
		return nil, fmt.Errorf("load conn-table spec: %w", err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	return spec, nil
}

// LoadLRUTable loads the replaced connection table: an LRU hash of
// entries 5-tuples to a 16-byte value (backend, flags, stamp).
func LoadLRUTable(entries uint32) (*ConnTable, error) {
	spec, err := ctlookupSpec()
	if err != nil {
		return nil, err
	}
	spec.Maps[ctlookupMapClLru].MaxEntries = entries
	var o lruObjects
	if err := spec.LoadAndAssign(&o, nil); err != nil {
		return nil, fmt.Errorf("load lru table of %d: %w", entries, err)
	}
	return &ConnTable{Fill: o.Fill, Lookup: o.Lookup, maps: []*ebpf.Map{o.Table}, miss: o.Miss,
		closers: []interface{ Close() error }{o.Fill, o.Lookup, o.Table, o.Miss}}, nil
}

// LoadCacheLineTable loads the product's connection table (bpf/conntrack.h)
// with buckets buckets and hash seed seed, its flows never idle past their
// limits during a benchmark.
func LoadCacheLineTable(buckets uint32, seed uint64) (*ConnTable, error) {
	spec, err := ctlookupSpec()
	if err != nil {
		return nil, err
	}
	spec.Maps[ctlookupMapConntrack].MaxEntries = buckets
	spec.Maps[ctlookupMapCtKeys].MaxEntries = buckets
	if err := spec.Variables[ctlookupVarCfgCtBuckets].Set(buckets); err != nil {
		return nil, fmt.Errorf("set buckets: %w", err)
	}
	if err := spec.Variables[ctlookupVarCfgCtSeed].Set(seed); err != nil {
		return nil, fmt.Errorf("set seed: %w", err)
	}
	var o newObjects
	if err := spec.LoadAndAssign(&o, nil); err != nil {
		return nil, fmt.Errorf("load cache-line table of %d buckets: %w", buckets, err)
	}
	t := &ConnTable{Fill: o.Fill, Lookup: o.Lookup, maps: []*ebpf.Map{o.Conntrack, o.Keys}, miss: o.Miss,
		closers: []interface{ Close() error }{o.Fill, o.Lookup, o.Conntrack, o.Keys, o.NatParams, o.Miss}}
	const never = 1 << 40 // ticks: no flow of a benchmark goes idle
	cfg := ctlookupNatConfig{SnatPortCount: 1, TcpIdleTicks: never, UdpIdleTicks: never, ClosingTicks: never}
	if err := o.NatParams.Put(uint32(0), &cfg); err != nil {
		t.Close()
		return nil, fmt.Errorf("set idle limits: %w", err)
	}
	return t, nil
}

// Misses is the number of Lookup runs that found no flow.
func (t *ConnTable) Misses() (uint64, error) {
	var per []uint64
	if err := t.miss.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read misses: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// Bytes is the memory the kernel charges for the table's maps (memlock in
// their fdinfo): for an LRU hash its preallocated elements and lists, for
// the cache-line table its slots and keys.
func (t *ConnTable) Bytes() (uint64, error) {
	var sum uint64
	for _, m := range t.maps {
		n, err := MapMemlock(m)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}

// MapMemlock is the memlock line of m's fdinfo: the bytes the kernel
// charges for the map.
func MapMemlock(m *ebpf.Map) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		return 0, fmt.Errorf("map fdinfo: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "memlock:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("map fdinfo: no memlock line")
}

// Close releases the programs and maps: the table's memory goes with its
// last reference.
func (t *ConnTable) Close() error {
	var errs []error
	for _, c := range t.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
