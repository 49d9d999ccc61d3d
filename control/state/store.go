// Package state holds the persisted desired state: a self-validating JSON
// file in the state directory, written atomically, with a journal for the
// single-VIP changes of big states, and the lock that makes one daemon its
// only writer.
package state

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/xdplb/xdplb/control/model"
)

// Store holds the desired state, persists it and tells subscribers when it
// changed. Every mutation works on a copy: normalize, validate, run the extra
// check, write to disk, and only then swap it in, so a failure at any step
// leaves both memory and disk unchanged.
type Store struct {
	mu    sync.Mutex
	path  string
	state model.State
	gen   uint64 // counts the states swapped in; see Snapshot
	extra func(model.State) error
	// maxVIPs, maxBackends: the data plane's capacity (0: no limit), see
	// SetLimits.
	maxVIPs, maxBackends uint32
	// persist writes data to path atomically and keeps no reference to
	// data; a field so tests can make it fail.
	persist func(path string, data []byte) error
	subs    []chan struct{}
	journal journal
	enc     vipCache // each VIP's part of the state file
}

// Open opens the state in dir (created with mode 0700 if missing). A
// missing state file is an empty state; an unreadable, damaged (ErrDamaged:
// see Recover) or invalid one is an error, never silently reset. extra (may be nil) adds checks
// that need the environment, e.g. that DR backends are on a connected
// subnet; it runs on the restored state too, so a daemon fails fast on a
// bad state.
func Open(dir string, extra func(model.State) error) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	s := &Store{
		path:    filepath.Join(dir, File),
		extra:   extra,
		persist: writeAtomic,
		enc:     vipCache{},
		journal: journal{path: filepath.Join(dir, JournalFile), min: journalMinState},
	}
	removeTemps(dir)
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.state = model.State{VIPs: []model.VIP{}}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read state: %w", err)
	}
	if len(b) == 0 {
		return nil, damaged(dir, "state file "+s.path, errors.New("it is empty"))
	}
	st, err := decodeFile(b)
	if err != nil {
		return nil, damaged(dir, "state file "+s.path, err)
	}
	replayed, err := s.journal.replay(b, &st)
	if err != nil {
		return nil, damaged(dir, "the journal of state file "+s.path, err)
	}
	if err := s.checkAgainst(&st, nil); err != nil {
		return nil, fmt.Errorf("state file %s: %w", s.path, err)
	}
	s.state = st
	if replayed {
		// The records stay in their journal until the first change
		// rewrites the state file.
		s.journal.baseSize = int64(len(b))
	} else if len(b) >= s.journal.min {
		s.journal.baseSize, s.journal.base = int64(len(b)), fileHash(b)
	}
	return s, nil
}

// Path is the state file.
func (s *Store) Path() string { return s.path }

// State returns a deep copy of the desired state.
func (s *Store) State() model.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Clone()
}

// Generation grows with every change of the state: a reader that sees a
// number has seen every change made before it was read.
func (s *Store) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// Snapshot returns the desired state without a copy, and its generation. The reader must not change the state: the
// store never changes a state it holds, it swaps in a new one that shares
// the unchanged VIPs, so a reader pays for what changed, not for a copy of
// everything.
func (s *Store) Snapshot() (model.State, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.gen
}

// VIP returns a copy of one VIP.
func (s *Store) VIP(id model.VIPID) (model.VIP, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.state.Find(id)
	if i < 0 {
		return model.VIP{}, fmt.Errorf("vip %s: %w", id.Canonical(), model.ErrNotFound)
	}
	return s.state.VIPs[i].Clone(), nil
}

// Subscribe returns a channel that receives a value after each change of the
// state. Notifications coalesce: a slow reader sees one value for many
// changes and should then read the state.
func (s *Store) Subscribe() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.subs = append(s.subs, ch)
	return ch
}

// SetLimits makes every later change refuse a state larger than the data
// plane's maps: maxVIPs and maxBackends count ids 1..max-1 (0: no limit).
func (s *Store) SetLimits(maxVIPs, maxBackends uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxVIPs, s.maxBackends = maxVIPs, maxBackends
}

// AddVIP adds v; ErrExists if a VIP with its address, port and protocol
// exists.
func (s *Store) AddVIP(v model.VIP) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v = v.Clone()
	model.NormalizeVIP(&v)
	if s.state.Find(v.ID()) >= 0 {
		return fmt.Errorf("vip %s: %w", v.ID(), model.ErrExists)
	}
	// The place Normalize would sort it to: after its equals, as a stable
	// sort keeps them.
	i, _ := slices.BinarySearchFunc(s.state.VIPs, v, func(a, b model.VIP) int {
		if c := model.CompareVIPID(a.ID(), b.ID()); c != 0 {
			return c
		}
		return -1
	})
	if err := model.ValidateVIP(&v, i); err != nil {
		return err
	}
	next := model.State{VIPs: slices.Insert(slices.Clone(s.state.VIPs), i, v)}
	sub := model.State{VIPs: []model.VIP{v}}
	return s.commit(next, &sub, &journalRecord{Set: &v})
}

// DeleteVIP removes a VIP and its backends.
func (s *Store) DeleteVIP(id model.VIPID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.state.Find(id)
	if i < 0 {
		return fmt.Errorf("vip %s: %w", id.Canonical(), model.ErrNotFound)
	}
	next := model.State{VIPs: slices.Delete(slices.Clone(s.state.VIPs), i, i+1)}
	sub := model.State{VIPs: []model.VIP{}}
	return s.commit(next, &sub, &journalRecord{Del: id.Canonical().String()})
}

// AddBackend adds b to a VIP; ErrExists if the VIP has it already. b.Weight
// is taken as given (0 is drained): callers apply DefaultWeight.
func (s *Store) AddBackend(id model.VIPID, b model.Backend) error {
	return s.updateVIP(id, func(v *model.VIP) error {
		b.Address = b.Address.Unmap()
		if v.FindBackend(b.Address, b.Port) >= 0 {
			return fmt.Errorf("vip %s: backend %s: %w", v.ID(), model.BackendName(b.Address, b.Port), model.ErrExists)
		}
		v.Backends = append(v.Backends, b)
		return nil
	})
}

// SetBackend changes the weight or drain flag of a backend. Port 0 and the
// VIP's port name the same backend.
func (s *Store) SetBackend(id model.VIPID, addr netip.Addr, port uint16, p model.BackendPatch) error {
	return s.updateVIP(id, func(v *model.VIP) error {
		j, err := lookupBackend(v, addr, port)
		if err != nil {
			return err
		}
		p.Apply(&v.Backends[j])
		return nil
	})
}

// SetGroup makes the change p on every backend of the VIP in group g, as
// one change of the state (`backend set VIP --group G`): the reconciler
// then writes the VIP's table once, the whole group shifted together.
func (s *Store) SetGroup(id model.VIPID, g string, p model.BackendPatch) error {
	return s.updateVIP(id, func(v *model.VIP) error {
		n := 0
		for j := range v.Backends {
			if g != "" && v.Backends[j].Group == g {
				p.Apply(&v.Backends[j])
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("vip %s: group %q: no backend: %w", v.ID(), g, model.ErrNotFound)
		}
		return nil
	})
}

// SetVIP changes the options of a VIP (`vip set`); its backends stay.
// Like every single-VIP change it is one journal record when the journal
// is on.
func (s *Store) SetVIP(id model.VIPID, p model.VIPPatch) error {
	return s.updateVIP(id, p.Apply)
}

// DeleteBackend removes a backend from a VIP.
func (s *Store) DeleteBackend(id model.VIPID, addr netip.Addr, port uint16) error {
	return s.updateVIP(id, func(v *model.VIP) error {
		j, err := lookupBackend(v, addr, port)
		if err != nil {
			return err
		}
		v.Backends = slices.Delete(v.Backends, j, j+1)
		return nil
	})
}

// Replace swaps in a whole new state (apply).
func (s *Store) Replace(next model.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := next.Clone()
	if err := s.checkAgainst(&st, &s.state); err != nil {
		return err
	}
	// Normalized states compare equal when they mean the same, so an
	// idempotent apply writes nothing and wakes nobody.
	if model.EqualState(&st, &s.state) {
		return nil
	}
	return s.commit(st, nil, nil) // checked with the extra check above
}

// CheckReplace checks next as Replace does (normalized, validated, the
// extra check, the capacity) and changes nothing: it returns next as
// Replace would store it, and the state Replace would replace.
func (s *Store) CheckReplace(next model.State) (st, cur model.State, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st = next.Clone()
	if err := s.checkAgainst(&st, &s.state); err != nil {
		return model.State{}, model.State{}, err
	}
	if err := model.CheckCapacity(st, s.maxVIPs, s.maxBackends); err != nil {
		return model.State{}, model.State{}, err
	}
	return st, s.state, nil
}

// updateVIP runs change on a copy of one VIP and commits the result. The
// other VIPs are neither copied nor checked again: the store never changes
// a VIP it holds, so the new state shares them with the old one.
func (s *Store) updateVIP(id model.VIPID, change func(*model.VIP) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.state.Find(id)
	if i < 0 {
		return fmt.Errorf("vip %s: %w", id.Canonical(), model.ErrNotFound)
	}
	old := &s.state.VIPs[i]
	v := old.Clone()
	if err := change(&v); err != nil {
		return err
	}
	model.NormalizeVIP(&v) // the key stays: no change touches the address, port or protocol
	if err := model.ValidateVIP(&v, i); err != nil {
		return err
	}
	if model.EqualVIP(&v, old) {
		return nil
	}
	next := model.State{VIPs: slices.Clone(s.state.VIPs)}
	next.VIPs[i] = v
	sub := newBackends(model.State{VIPs: []model.VIP{v}}, model.State{VIPs: []model.VIP{*old}})
	return s.commit(next, &sub, &journalRecord{Set: &v})
}

// commit makes next (normalized and valid) the state: the extra check on
// sub (what next adds, see newBackends; nil: checked already), the write
// to disk, the swap and the notifications. rec (nil: none) is the change
// as a journal record, written instead of the state file when the journal
// takes it.
func (s *Store) commit(next model.State, sub *model.State, rec *journalRecord) error {
	if err := model.CheckCapacity(next, s.maxVIPs, s.maxBackends); err != nil {
		return err
	}
	if s.extra != nil && sub != nil {
		if err := s.extra(withFallbacks(*sub)); err != nil {
			return model.AsInvalid(err)
		}
	}
	journaled := false
	if rec != nil {
		var err error
		if journaled, err = s.journal.append(*rec); err != nil {
			return fmt.Errorf("save state: %w", err)
		}
	}
	if !journaled {
		data, err := encodeFileCached(next, s.enc)
		if err != nil {
			return err
		}
		if err := s.persist(s.path, data); err != nil {
			return fmt.Errorf("save state: %w", err)
		}
		s.journal.rebase(data, true)
	}
	s.state = next
	s.gen++
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is pending already
		}
	}
	return nil
}

// checkAgainst normalizes st in place and validates it as a change from
// prev (nil: none): the extra check, which asks the kernel about every
// backend, sees only the backends that prev does not have already (with
// their VIPs). A weight change then costs no netlink request, and applying
// a state that adds one VIP costs only that VIP's backends.
func (s *Store) checkAgainst(st, prev *model.State) error {
	model.Normalize(st)
	if err := model.Validate(*st); err != nil {
		return err
	}
	if s.extra == nil {
		return nil
	}
	sub := *st
	if prev != nil {
		sub = newBackends(*st, *prev)
	}
	if err := s.extra(withFallbacks(sub)); err != nil {
		return model.AsInvalid(err)
	}
	return nil
}

// withFallbacks is a copy of st for the extra check, each VIP's fallback
// among its backends: the fallback is reached as a backend is, and the
// network's rules (a DR one on a connected subnet, none on an address of
// this host) are the backends'.
func withFallbacks(st model.State) model.State {
	out := st.Clone()
	for i := range out.VIPs {
		v := &out.VIPs[i]
		if v.Fallback != nil {
			v.Backends = append(v.Backends, v.Fallback.Backend())
			v.Fallback = nil
		}
	}
	return out
}

// newBackends is the part of st that prev lacks: every VIP that is new or
// whose mode or SNAT address changed (both decide how its backends are
// checked), and of the others the backends (by address and port) and
// the fallback that are new. Both states are normalized.
func newBackends(st, prev model.State) model.State {
	old := make(map[model.VIPID]*model.VIP, len(prev.VIPs))
	for i := range prev.VIPs {
		old[prev.VIPs[i].ID()] = &prev.VIPs[i]
	}
	type ref struct {
		addr netip.Addr
		port uint16
	}
	out := model.State{VIPs: []model.VIP{}}
	for _, v := range st.VIPs {
		o, ok := old[v.ID()]
		if !ok || o.Mode != v.Mode || o.SNATAddr != v.SNATAddr {
			out.VIPs = append(out.VIPs, v)
			continue
		}
		had := make(map[ref]bool, len(o.Backends))
		for _, b := range o.Backends {
			had[ref{b.Address, b.Port}] = true
		}
		var add []model.Backend
		for _, b := range v.Backends {
			if !had[ref{b.Address, b.Port}] {
				add = append(add, b)
			}
		}
		var fb *model.Fallback
		if v.Fallback != nil && (o.Fallback == nil || *o.Fallback != *v.Fallback) {
			fb = v.Fallback
		}
		if len(add) > 0 || fb != nil {
			nv := v
			nv.Backends, nv.Fallback = add, fb
			if nv.Backends == nil {
				nv.Backends = []model.Backend{}
			}
			out.VIPs = append(out.VIPs, nv)
		}
	}
	return out
}

func lookupBackend(v *model.VIP, addr netip.Addr, port uint16) (int, error) {
	j := v.FindBackend(addr, port)
	if j < 0 {
		return -1, fmt.Errorf("vip %s: backend %s: %w", v.ID(), model.BackendName(addr.Unmap(), port), model.ErrNotFound)
	}
	return j, nil
}

// Migrate writes st, the state an older xdplb kept in the file whose
// content is old, as the state file of dir, with the journal that followed
// old applied: single changes acknowledged before the upgrade are kept.
// The journal is removed once the state file is written.
func Migrate(dir string, old []byte, st model.State) error {
	j := journal{path: filepath.Join(dir, JournalFile)}
	if _, err := j.replay(old, &st); err != nil {
		return err
	}
	data, err := encodeFile(st)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, File), data); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Remove(j.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove journal: %w", err)
	}
	return nil
}
