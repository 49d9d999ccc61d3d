package reconcile

import (
	"errors"
	"fmt"
	"slices"

	"github.com/xdplb/xdplb/control/model"
)

// apply runs ops in order (see diff for the phases) and keeps the mirror
// in step with every write that succeeded. It returns the VIPs whose table
// or entry could not be written, and every error.
func (r *Reconciler) apply(ops []op) (map[model.VIPID]bool, error) {
	failed := map[model.VIPID]bool{}
	var errs []error
	for _, o := range ops {
		if o.phase != phaseEarly && failed[o.vip] && o.vip != (model.VIPID{}) {
			continue
		}
		err := r.write(o)
		if err == nil {
			continue
		}
		errs = append(errs, err)
		if o.phase == phaseLate {
			continue
		}
		failed[o.vip] = true
		for _, t := range o.batch {
			failed[t.vip] = true
		}
	}
	return failed, errors.Join(errs...)
}

// write does one op on the data plane and records it in the mirror.
func (r *Reconciler) write(o op) error {
	m := r.maps
	switch o.kind {
	case opPutBackend:
		if err := r.dp.PutBackend(o.backend); err != nil {
			return fmt.Errorf("put backend %s of vip %s: %w", o.backend.Addr, o.vip, err)
		}
		m.putBackend(o.backend)
	case opDeleteBackend:
		if err := r.dp.DeleteBackend(o.backend.ID); err != nil {
			if o.vip == (model.VIPID{}) {
				return fmt.Errorf("delete orphan backend %d: %w", o.backend.ID, err)
			}
			return fmt.Errorf("delete backend %s of vip %s: %w", o.backend.Addr, o.vip, err)
		}
		m.deleteBackend(o.backend.ID)
	case opPutTable:
		delete(m.tables, o.id) // unknown until written
		if err := r.dp.PutLookupTable(o.id, r.layouts.build(o.members, r.dp.LookupTableSize())); err != nil {
			return fmt.Errorf("put lookup table of vip %s: %w", o.vip, err)
		}
		m.tables[o.id] = slices.Clone(o.members)
	case opSyncTable:
		delete(m.tables, o.id)
		cur, err := r.dp.LookupTable(o.id)
		if err != nil {
			return fmt.Errorf("read lookup table of vip %s: %w", o.vip, err)
		}
		if len(o.members) == 0 {
			// Packets of new flows are dropped either way; no table
			// saves a map of LookupTableSize entries.
			if cur != nil {
				if err := r.dp.DeleteLookupTable(o.id); err != nil {
					return fmt.Errorf("delete lookup table of vip %s: %w", o.vip, err)
				}
			}
			m.tables[o.id] = nil
			return nil
		}
		if table := r.layouts.build(o.members, r.dp.LookupTableSize()); !slices.Equal(cur, table) {
			if err := r.dp.PutLookupTable(o.id, table); err != nil {
				return fmt.Errorf("put lookup table of vip %s: %w", o.vip, err)
			}
		}
		m.tables[o.id] = slices.Clone(o.members)
	case opDeleteTable:
		delete(m.tables, o.id)
		if err := r.dp.DeleteLookupTable(o.id); err != nil {
			return fmt.Errorf("delete lookup table of vip %s: %w", o.vip, err)
		}
		m.tables[o.id] = nil
	case opPutTables:
		tables := make(map[uint32][]uint32, len(o.batch))
		for _, t := range o.batch {
			tables[t.id] = r.layouts.build(t.members, r.dp.LookupTableSize())
		}
		if err := r.dp.PutLookupTables(tables); err != nil {
			return fmt.Errorf("put %d lookup tables: %w", len(tables), err)
		}
		for _, t := range o.batch {
			m.tables[t.id] = slices.Clone(t.members)
		}
	case opPutSet:
		delete(m.sets, o.id)
		if err := r.dp.PutSchedSet(o.id, o.set); err != nil {
			return fmt.Errorf("put scheduler set of vip %s: %w", o.vip, err)
		}
		m.sets[o.id] = slices.Clone(o.set)
	case opDeleteSet:
		delete(m.sets, o.id)
		if err := r.dp.DeleteSchedSet(o.id); err != nil {
			return fmt.Errorf("delete scheduler set of vip %s: %w", o.vip, err)
		}
		m.sets[o.id] = nil
	case opPutVIP:
		if err := r.dp.PutVIP(o.key, o.meta); err != nil {
			return fmt.Errorf("put vip %s: %w", o.vip, err)
		}
		m.vips[o.key] = o.meta
		if o.added {
			r.log.Info("vip added", "vip", o.vip, "id", o.meta.ID)
		}
	case opDeleteVIP:
		if err := r.dp.DeleteVIP(o.key); err != nil {
			return fmt.Errorf("delete vip %s: %w", o.vip, err)
		}
		delete(m.vips, o.key)
		r.log.Info("vip removed", "vip", o.vip)
	}
	return nil
}
