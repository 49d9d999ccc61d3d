package control

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// StateFile is the name of the desired state inside the state directory.
const StateFile = "state.yaml"

// tempPrefix names the temporary files of an atomic write; leftovers of a
// crash are removed on open.
const tempPrefix = "." + StateFile + ".tmp-"

// Store holds the desired state, persists it and tells subscribers when it
// changed. Every mutation works on a copy: normalize, validate, run the extra
// check, write to disk, and only then swap it in, so a failure at any step
// leaves both memory and disk unchanged.
type Store struct {
	mu    sync.Mutex
	path  string
	state State
	gen   uint64 // counts the states swapped in; see generation
	extra func(State) error
	// maxVIPs, maxBackends: the data plane's capacity (0: no limit), see
	// SetLimits.
	maxVIPs, maxBackends uint32
	// persist writes data to path atomically and keeps no reference to
	// data; a field so tests can make it fail.
	persist func(path string, data []byte) error
	subs    []chan struct{}
	// yaml holds each VIP's part of the state file as last written, so a
	// change re-encodes only the VIPs it touched.
	yaml map[VIPID]vipYAML
	buf  []byte // the last state file written, reused by the next
	// stale: a change went to the journal, not through yaml; the next
	// state file is encoded checking every VIP against yaml.
	stale bool

	// The journal (journal.go): base is the hash of the state file on
	// disk when journaling is on (empty: off, the next change rewrites the
	// state file), baseSize its size, jf the open journal and journalSize
	// its size. journalMin is the state-file size from which it is on.
	base        string
	baseSize    int64
	jf          *os.File
	journalSize int64
	journalMin  int
}

// vipYAML is the item of VIP v in the state file: b, and for a VIP with
// backends, b split into the head (up to the backends key) and one item
// per backend, in v's order.
type vipYAML struct {
	v     VIP
	b     []byte
	head  []byte
	items [][]byte
}

// OpenStore opens the state in dir (created with mode 0700 if missing). A
// missing state file is an empty state; an unreadable or invalid one is an
// error, never silently reset. extra (may be nil) adds checks that need the
// environment, e.g. that DR backends are on a connected subnet; it runs on
// the restored state too, so a daemon fails fast on a bad state.
func OpenStore(dir string, extra func(State) error) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	s := &Store{
		path:       filepath.Join(dir, StateFile),
		extra:      extra,
		persist:    writeFileAtomic,
		journalMin: journalMinState,
	}
	removeTemps(dir)
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.state = State{VIPs: []VIP{}}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read state: %w", err)
	}
	st, err := ParseState(b)
	if err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (fix or remove it): %w", s.path, err)
	}
	replayed, err := replayJournal(dir, b, &st)
	if err != nil {
		return nil, fmt.Errorf("state %s is corrupt (fix or remove it): %w", s.path, err)
	}
	if err := s.check(&st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", s.path, err)
	}
	s.state = st
	s.baseSize = int64(len(b))
	if !replayed && len(b) >= s.journalMin {
		// Replayed records stay in their journal until the first change
		// rewrites the state file.
		s.base = stateHash(b)
	}
	return s, nil
}

// removeTemps deletes temporary files left by a crash during a write.
func removeTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Path is the state file.
func (s *Store) Path() string { return s.path }

// State returns a deep copy of the desired state.
func (s *Store) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Clone()
}

// sharedState returns the desired state without a copy, for readers that
// do not change it: the store never changes a state it holds, it swaps in
// a new one that shares the unchanged VIPs.
func (s *Store) sharedState() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// generation changes whenever the state does: a reader that saw this
// number has seen the state since.
func (s *Store) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// VIP returns a copy of one VIP.
func (s *Store) VIP(id VIPID) (VIP, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := findVIP(&s.state, id)
	if i < 0 {
		return VIP{}, fmt.Errorf("vip %s: %w", canonicalID(id), ErrNotFound)
	}
	return s.state.VIPs[i].Clone(), nil
}

// Subscribe returns a channel that receives a value after each change of the
// state. Notifications coalesce: a slow reader sees one value for many
// changes and should then read State().
func (s *Store) Subscribe() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.subs = append(s.subs, ch)
	return ch
}

// AddVIP adds v; ErrExists if a VIP with its address, port and protocol exists.
func (s *Store) AddVIP(v VIP) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v = v.Clone()
	normalizeVIP(&v)
	if findVIP(&s.state, v.ID()) >= 0 {
		return fmt.Errorf("vip %s: %w", v.ID(), ErrExists)
	}
	// The place Normalize would sort it to: after its equals, as a stable
	// sort keeps them.
	i, _ := slices.BinarySearchFunc(s.state.VIPs, v, func(a, b VIP) int {
		if c := compareVIPID(a.ID(), b.ID()); c != 0 {
			return c
		}
		return -1
	})
	if err := validateVIP(&v, i); err != nil {
		return err
	}
	next := State{VIPs: slices.Insert(slices.Clone(s.state.VIPs), i, v)}
	sub := State{VIPs: []VIP{v}}
	return s.commit(next, &sub, &v, &journalRecord{Set: &v})
}

// DeleteVIP removes a VIP and its backends.
func (s *Store) DeleteVIP(id VIPID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := findVIP(&s.state, id)
	if i < 0 {
		return fmt.Errorf("vip %s: %w", canonicalID(id), ErrNotFound)
	}
	next := State{VIPs: slices.Delete(slices.Clone(s.state.VIPs), i, i+1)}
	sub := State{VIPs: []VIP{}}
	return s.commit(next, &sub, nil, &journalRecord{Del: canonicalID(id).String()})
}

// AddBackend adds b to a VIP; ErrExists if the VIP has it already. b.Weight
// is taken as given (0 is drained): callers apply DefaultWeight.
func (s *Store) AddBackend(id VIPID, b Backend) error {
	return s.updateVIP(id, func(v *VIP) error {
		b.Address = b.Address.Unmap()
		if findBackend(v, b.Address, b.Port) >= 0 {
			return fmt.Errorf("vip %s: backend %s: %w", v.ID(), BackendName(b.Address, b.Port), ErrExists)
		}
		v.Backends = append(v.Backends, b)
		return nil
	})
}

// SetBackend changes the weight or drain flag of a backend. Port 0 and the
// VIP's port name the same backend.
func (s *Store) SetBackend(id VIPID, addr netip.Addr, port uint16, p BackendPatch) error {
	return s.updateVIP(id, func(v *VIP) error {
		j, err := lookupBackend(v, addr, port)
		if err != nil {
			return err
		}
		if p.Weight != nil {
			v.Backends[j].Weight = *p.Weight
		}
		if p.Drain != nil {
			v.Backends[j].Drain = *p.Drain
		}
		return nil
	})
}

// DeleteBackend removes a backend from a VIP.
func (s *Store) DeleteBackend(id VIPID, addr netip.Addr, port uint16) error {
	return s.updateVIP(id, func(v *VIP) error {
		j, err := lookupBackend(v, addr, port)
		if err != nil {
			return err
		}
		v.Backends = append(v.Backends[:j], v.Backends[j+1:]...)
		return nil
	})
}

// Replace swaps in a whole new state (apply).
func (s *Store) Replace(next State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := next.Clone()
	if err := s.checkAgainst(&st, &s.state); err != nil {
		return err
	}
	// Normalized states compare equal when they mean the same, so an
	// idempotent apply writes nothing and wakes nobody.
	if sameState(&st, &s.state) {
		return nil
	}
	return s.commit(st, nil, nil, nil) // checked with the extra check above
}

// updateVIP runs change on a copy of one VIP and commits the result. The
// other VIPs are neither copied nor checked again: the store never changes
// a VIP it holds, so the new state shares them with the old one.
func (s *Store) updateVIP(id VIPID, change func(*VIP) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := findVIP(&s.state, id)
	if i < 0 {
		return fmt.Errorf("vip %s: %w", canonicalID(id), ErrNotFound)
	}
	old := &s.state.VIPs[i]
	v := old.Clone()
	if err := change(&v); err != nil {
		return err
	}
	normalizeVIP(&v) // the key stays: changes touch backends only
	if err := validateVIP(&v, i); err != nil {
		return err
	}
	if sameVIP(&v, old) {
		return nil
	}
	next := State{VIPs: slices.Clone(s.state.VIPs)}
	next.VIPs[i] = v
	sub := newBackends(State{VIPs: []VIP{v}}, State{VIPs: []VIP{*old}})
	return s.commit(next, &sub, &v, &journalRecord{Set: &v})
}

// commit makes next (normalized and valid) the state: the extra check on
// sub (what next adds, see newBackends; nil: checked already), the write
// to disk, the swap and the notifications. changed (nil: any) is
// the only VIP that next adds or changes; its other VIPs are then the
// store's own, unchanged. rec (nil: none) is the change as a journal
// record, written instead of the state file when the journal takes it.
func (s *Store) commit(next State, sub *State, changed *VIP, rec *journalRecord) error {
	if err := checkCapacity(next, s.maxVIPs, s.maxBackends); err != nil {
		return err
	}
	if s.extra != nil && sub != nil {
		if err := s.extra(sub.Clone()); err != nil {
			return asInvalid(err)
		}
	}
	if rec != nil {
		ok, err := s.journal(*rec)
		if err != nil {
			return fmt.Errorf("save state: %w", err)
		}
		if ok {
			s.state, s.stale = next, true
			s.gen++
			s.notify()
			return nil
		}
	}
	if s.stale {
		changed = nil // the cache may hold older versions of journaled VIPs
	}
	data, cache, err := s.marshal(next, changed)
	if err != nil {
		return err
	}
	if err := s.persist(s.path, data); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	s.state, s.yaml, s.stale = next, cache, false
	s.gen++
	s.rebased(data)
	if len(next.VIPs) > 0 {
		s.buf = data
	}
	s.notify()
	return nil
}

// notify tells every subscriber that the state changed.
func (s *Store) notify() {
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is pending already
		}
	}
}

// yamlListHead starts MarshalState's output of a state with VIPs; each VIP
// follows as an item of that list, encoded the same whatever its
// neighbours.
const yamlListHead = "vips:\n"

// marshal is MarshalState(st) (st is normalized) from the VIPs' cached
// parts where they did not change, and the cache for the result. With
// changed set, every other VIP of st is taken as unchanged.
func (s *Store) marshal(st State, changed *VIP) ([]byte, map[VIPID]vipYAML, error) {
	if len(st.VIPs) == 0 {
		b, err := MarshalState(st)
		return b, nil, err
	}
	var cache map[VIPID]vipYAML
	if changed != nil && len(s.yaml) > 0 {
		// The other VIPs are in the cache already.
		cache = maps.Clone(s.yaml)
	} else {
		cache = make(map[VIPID]vipYAML, len(st.VIPs))
	}
	size := len(yamlListHead)
	for i := range st.VIPs {
		v := &st.VIPs[i]
		id := v.ID()
		c, ok := s.yaml[id]
		if !ok || (changed == nil || changed.ID() == id) && !sameVIP(&c.v, v) {
			var err error
			if c, err = encodeVIP(*v, c); err != nil {
				return nil, nil, err
			}
			cache[id] = c
		} else if changed == nil {
			cache[id] = c
		}
		size += len(c.b)
	}
	// The state file is as big as the state: reuse the buffer of the last
	// write (persist keeps no reference to it).
	out := s.buf[:0]
	if cap(out) < size {
		out = make([]byte, 0, size+size/8)
	}
	out = append(out, yamlListHead...)
	for i := range st.VIPs {
		out = append(out, cache[st.VIPs[i].ID()].b...)
	}
	return out, cache, nil
}

// yamlBackendsKey and yamlBackendItem begin the backends of a VIP item and
// each of its backends in MarshalState's output.
const (
	yamlBackendsKey = "\n    backends:\n"
	yamlBackendItem = "      - "
)

// encodeVIP is v's item of MarshalState's list. prev is the item of an
// earlier version of v (the zero value: none): when only backends changed,
// it encodes only the backends prev does not have, so changing one backend
// of a big VIP costs one backend. The result keeps v, which the store never
// changes, without a copy.
func encodeVIP(v VIP, prev vipYAML) (vipYAML, error) {
	hv, hp := v, prev.v
	hv.Backends, hp.Backends = nil, nil
	var add []Backend
	if prev.head != nil && sameVIP(&hv, &hp) {
		// Both lists are sorted by address and port (normalized).
		items := make([][]byte, len(v.Backends))
		k := 0
		for j, b := range v.Backends {
			for k < len(prev.v.Backends) && compareAddrPort(prev.v.Backends[k].Address, prev.v.Backends[k].Port, b.Address, b.Port) < 0 {
				k++
			}
			if k < len(prev.v.Backends) && prev.v.Backends[k] == b {
				items[j] = prev.items[k]
			} else {
				add = append(add, b)
			}
		}
		if len(add) == 0 && len(v.Backends) > 0 {
			return joinVIP(v, prev.head, items), nil
		}
		if len(add) < len(v.Backends) {
			hv.Backends = add
			enc, err := splitVIP(hv)
			if err == nil && len(enc.items) == len(add) {
				k := 0
				for j := range items {
					if items[j] == nil {
						items[j] = enc.items[k]
						k++
					}
				}
				return joinVIP(v, prev.head, items), nil
			}
		}
	}
	enc, err := splitVIP(v)
	if err != nil {
		return vipYAML{}, err
	}
	return enc, nil
}

// splitVIP encodes v alone and splits the result into its head and one
// item per backend.
func splitVIP(v VIP) (vipYAML, error) {
	b, err := MarshalState(State{VIPs: []VIP{v}})
	if err != nil {
		return vipYAML{}, err
	}
	item, ok := bytes.CutPrefix(b, []byte(yamlListHead))
	if !ok {
		return vipYAML{}, fmt.Errorf("marshal state: unexpected encoding of vip %s", v.ID())
	}
	if len(v.Backends) == 0 {
		return vipYAML{v: v, b: item}, nil
	}
	// Backends are the last key, and their items are indented more than
	// it, so its last occurrence is the key.
	k := bytes.LastIndex(item, []byte(yamlBackendsKey))
	if k < 0 {
		return vipYAML{}, fmt.Errorf("marshal state: unexpected encoding of vip %s", v.ID())
	}
	head, rest := item[:k+len(yamlBackendsKey)], item[k+len(yamlBackendsKey):]
	items := make([][]byte, 0, len(v.Backends))
	sep := []byte("\n" + yamlBackendItem)
	for len(rest) > 0 {
		if !bytes.HasPrefix(rest, []byte(yamlBackendItem)) {
			return vipYAML{}, fmt.Errorf("marshal state: unexpected encoding of vip %s", v.ID())
		}
		n := len(rest)
		if e := bytes.Index(rest, sep); e >= 0 {
			n = e + 1
		}
		items = append(items, rest[:n:n])
		rest = rest[n:]
	}
	if len(items) != len(v.Backends) {
		return vipYAML{}, fmt.Errorf("marshal state: unexpected encoding of vip %s", v.ID())
	}
	return vipYAML{v: v, b: item, head: head[:len(head):len(head)], items: items}, nil
}

// joinVIP is the item of v from its head and its backends' items.
func joinVIP(v VIP, head []byte, items [][]byte) vipYAML {
	n := len(head)
	for _, it := range items {
		n += len(it)
	}
	b := make([]byte, 0, n)
	b = append(b, head...)
	for _, it := range items {
		b = append(b, it...)
	}
	return vipYAML{v: v, b: b, head: head, items: items}
}

// check normalizes st in place and runs every validation on it.
func (s *Store) check(st *State) error {
	return s.checkAgainst(st, nil)
}

// checkAgainst is check for a change from prev (nil: none): the extra
// check, which asks the kernel about every backend, sees only the
// backends that prev does not have already (with their VIPs). A weight
// change then costs no netlink request, and applying a state that adds
// one VIP costs only that VIP's backends.
func (s *Store) checkAgainst(st, prev *State) error {
	Normalize(st)
	if err := Validate(*st); err != nil {
		return err
	}
	if s.extra == nil {
		return nil
	}
	sub := *st
	if prev != nil {
		sub = newBackends(*st, *prev)
	}
	if err := s.extra(sub.Clone()); err != nil {
		return asInvalid(err)
	}
	return nil
}

// newBackends is the part of st that prev lacks: every VIP that is new or
// whose mode changed, and of the others the backends (by address and
// port) that are new. Both states are normalized.
func newBackends(st, prev State) State {
	old := make(map[VIPID]*VIP, len(prev.VIPs))
	for i := range prev.VIPs {
		old[prev.VIPs[i].ID()] = &prev.VIPs[i]
	}
	out := State{VIPs: []VIP{}}
	for _, v := range st.VIPs {
		o, ok := old[v.ID()]
		if !ok || o.Mode != v.Mode {
			out.VIPs = append(out.VIPs, v)
			continue
		}
		had := make(map[backendRef]bool, len(o.Backends))
		for _, b := range o.Backends {
			had[backendRef{Addr: b.Address, Port: b.Port}] = true
		}
		var add []Backend
		for _, b := range v.Backends {
			if !had[backendRef{Addr: b.Address, Port: b.Port}] {
				add = append(add, b)
			}
		}
		if len(add) > 0 {
			nv := v
			nv.Backends = add
			out.VIPs = append(out.VIPs, nv)
		}
	}
	return out
}

// sameState reports whether two normalized states are equal.
func sameState(a, b *State) bool {
	return slices.EqualFunc(a.VIPs, b.VIPs, func(x, y VIP) bool { return sameVIP(&x, &y) })
}

func canonicalID(id VIPID) VIPID {
	id.Addr = id.Addr.Unmap()
	return id
}

func findVIP(st *State, id VIPID) int {
	id = canonicalID(id)
	for i := range st.VIPs {
		vid := st.VIPs[i].ID()
		vid.Addr = vid.Addr.Unmap()
		if vid == id {
			return i
		}
	}
	return -1
}

// findBackend finds a backend of v; port 0 means the VIP's port.
func findBackend(v *VIP, addr netip.Addr, port uint16) int {
	addr = addr.Unmap()
	if port == 0 {
		port = v.Port
	}
	for j, b := range v.Backends {
		bp := b.Port
		if bp == 0 {
			bp = v.Port
		}
		if b.Address.Unmap() == addr && bp == port {
			return j
		}
	}
	return -1
}

func lookupBackend(v *VIP, addr netip.Addr, port uint16) (int, error) {
	j := findBackend(v, addr, port)
	if j < 0 {
		return -1, fmt.Errorf("vip %s: backend %s: %w", v.ID(), BackendName(addr.Unmap(), port), ErrNotFound)
	}
	return j, nil
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new file, never a mix: temp file in the same directory, fsync,
// rename, fsync the directory (which makes the rename durable).
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SetLimits makes every later change refuse a state larger than the data
// plane's maps: maxVIPs and maxBackends count ids 1..max-1 (0: no limit).
func (s *Store) SetLimits(maxVIPs, maxBackends uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxVIPs, s.maxBackends = maxVIPs, maxBackends
}
