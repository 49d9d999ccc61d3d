package control

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
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
	extra func(State) error
	// persist writes data to path atomically; a field so tests can make
	// it fail.
	persist func(path string, data []byte) error
	subs    []chan struct{}
	// yaml holds each VIP's part of the state file as last written, so a
	// change re-encodes only the VIPs it touched.
	yaml map[VIPID]vipYAML
}

type vipYAML struct {
	v VIP
	b []byte
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
		path:    filepath.Join(dir, StateFile),
		extra:   extra,
		persist: writeFileAtomic,
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
	if err := s.check(&st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", s.path, err)
	}
	s.state = st
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
	return s.update(func(st *State) error {
		v = v.Clone()
		normalizeVIP(&v)
		if findVIP(st, v.ID()) >= 0 {
			return fmt.Errorf("vip %s: %w", v.ID(), ErrExists)
		}
		st.VIPs = append(st.VIPs, v)
		return nil
	})
}

// DeleteVIP removes a VIP and its backends.
func (s *Store) DeleteVIP(id VIPID) error {
	return s.update(func(st *State) error {
		i := findVIP(st, id)
		if i < 0 {
			return fmt.Errorf("vip %s: %w", canonicalID(id), ErrNotFound)
		}
		st.VIPs = append(st.VIPs[:i], st.VIPs[i+1:]...)
		return nil
	})
}

// AddBackend adds b to a VIP; ErrExists if the VIP has it already. b.Weight
// is taken as given (0 is drained): callers apply DefaultWeight.
func (s *Store) AddBackend(id VIPID, b Backend) error {
	return s.update(func(st *State) error {
		i := findVIP(st, id)
		if i < 0 {
			return fmt.Errorf("vip %s: %w", canonicalID(id), ErrNotFound)
		}
		v := &st.VIPs[i]
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
	return s.update(func(st *State) error {
		v, j, err := lookupBackend(st, id, addr, port)
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
	return s.update(func(st *State) error {
		v, j, err := lookupBackend(st, id, addr, port)
		if err != nil {
			return err
		}
		v.Backends = append(v.Backends[:j], v.Backends[j+1:]...)
		return nil
	})
}

// Replace swaps in a whole new state (apply).
func (s *Store) Replace(next State) error {
	return s.update(func(st *State) error {
		*st = next.Clone()
		return nil
	})
}

// update runs change on a copy of the state and commits the result.
func (s *Store) update(change func(*State) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.state.Clone()
	if err := change(&next); err != nil {
		return err
	}
	if err := s.checkAgainst(&next, &s.state); err != nil {
		return err
	}
	// Normalized states compare equal when they mean the same, so an
	// idempotent apply writes nothing and wakes nobody.
	if sameState(&next, &s.state) {
		return nil
	}
	data, cache, err := s.marshal(next)
	if err != nil {
		return err
	}
	if err := s.persist(s.path, data); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	s.state, s.yaml = next, cache
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is pending already
		}
	}
	return nil
}

// yamlListHead starts MarshalState's output of a state with VIPs; each VIP
// follows as an item of that list, encoded the same whatever its
// neighbours.
const yamlListHead = "vips:\n"

// marshal is MarshalState(st) (st is normalized) from the VIPs' cached
// parts where they did not change, and the cache for the result.
func (s *Store) marshal(st State) ([]byte, map[VIPID]vipYAML, error) {
	if len(st.VIPs) == 0 {
		b, err := MarshalState(st)
		return b, nil, err
	}
	cache := make(map[VIPID]vipYAML, len(st.VIPs))
	out := []byte(yamlListHead)
	for _, v := range st.VIPs {
		c, ok := s.yaml[v.ID()]
		if !ok || !sameVIP(&c.v, &v) {
			b, err := MarshalState(State{VIPs: []VIP{v}})
			if err != nil {
				return nil, nil, err
			}
			item, ok := bytes.CutPrefix(b, []byte(yamlListHead))
			if !ok {
				return nil, nil, fmt.Errorf("marshal state: unexpected encoding of vip %s", v.ID())
			}
			c = vipYAML{v: v.Clone(), b: item}
		}
		cache[v.ID()] = c
		out = append(out, c.b...)
	}
	return out, cache, nil
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

func lookupBackend(st *State, id VIPID, addr netip.Addr, port uint16) (*VIP, int, error) {
	i := findVIP(st, id)
	if i < 0 {
		return nil, -1, fmt.Errorf("vip %s: %w", canonicalID(id), ErrNotFound)
	}
	v := &st.VIPs[i]
	j := findBackend(v, addr, port)
	if j < 0 {
		return nil, -1, fmt.Errorf("vip %s: backend %s: %w", v.ID(), BackendName(addr.Unmap(), port), ErrNotFound)
	}
	return v, j, nil
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
