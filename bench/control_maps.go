package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
)

// ctlPinnedTables reads the daemon's lookup tables straight from its pinned
// map of maps (the bench sees the daemon's bpffs), by VIP id. memlock is
// the kernel memory of the inner maps, from this process's fdinfo of each.
func ctlPinnedTables(pinDir string) (tables map[uint32][]uint32, memlock map[uint32]uint64, err error) {
	outer, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "lookup"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, fmt.Errorf("open pinned lookup map: %w", err)
	}
	defer outer.Close()
	var ids []uint32
	var k uint32
	var innerID uint32
	it := outer.Iterate()
	for it.Next(&k, &innerID) {
		ids = append(ids, k)
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("iterate lookup map: %w", err)
	}
	tables = make(map[uint32][]uint32, len(ids))
	memlock = map[uint32]uint64{}
	for _, id := range ids {
		var inner *ebpf.Map
		if err := outer.Lookup(id, &inner); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue // deleted meanwhile
			}
			return nil, nil, fmt.Errorf("lookup table %d: %w", id, err)
		}
		t, err := ctlReadU32Array(inner)
		if err == nil {
			var mapID uint32
			var mem uint64
			mapID, mem, err = ctlFdMemlock("self", inner.FD())
			memlock[mapID] = mem
		}
		inner.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("lookup table %d: %w", id, err)
		}
		tables[id] = t
	}
	return tables, memlock, nil
}

// ctlPinnedTable reads one VIP's lookup table from the pinned map.
func ctlPinnedTable(pinDir string, id uint32) ([]uint32, error) {
	outer, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "lookup"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open pinned lookup map: %w", err)
	}
	defer outer.Close()
	var inner *ebpf.Map
	if err := outer.Lookup(id, &inner); err != nil {
		return nil, fmt.Errorf("lookup table %d: %w", id, err)
	}
	defer inner.Close()
	return ctlReadU32Array(inner)
}

func ctlReadU32Array(m *ebpf.Map) ([]uint32, error) {
	n := int(m.MaxEntries())
	out := make([]uint32, n)
	keys := make([]uint32, 4096)
	vals := make([]uint32, 4096)
	var cursor ebpf.MapBatchCursor
	for {
		got, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range got {
			if int(keys[i]) < n {
				out[keys[i]] = vals[i]
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read table: %w", err)
		}
	}
}

// ctlFdMemlock reads map_id and memlock from /proc/PID/fdinfo/FD.
func ctlFdMemlock(pid string, fd int) (mapID uint32, memlock uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%s/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, 0, err
	}
	seen := 0
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "map_id":
			x, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return 0, 0, fmt.Errorf("fdinfo map_id %q: %w", v, err)
			}
			mapID = uint32(x)
			seen++
		case "memlock":
			if memlock, err = strconv.ParseUint(v, 10, 64); err != nil {
				return 0, 0, fmt.Errorf("fdinfo memlock %q: %w", v, err)
			}
			seen++
		}
	}
	if seen != 2 {
		return 0, 0, fmt.Errorf("fd %d of %s is not a bpf map", fd, pid)
	}
	return mapID, memlock, nil
}

// ctlProcessMapMemory sums the memlock of every BPF map the process holds an
// fd of, by map id (a map held twice counts once).
func ctlProcessMapMemory(pid int) (map[uint32]uint64, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[uint32]uint64{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || target != "anon_inode:bpf-map" {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		id, mem, err := ctlFdMemlock(strconv.Itoa(pid), fd)
		if err != nil {
			continue // closed meanwhile
		}
		out[id] = mem
	}
	return out, nil
}
