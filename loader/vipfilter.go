package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// vipFoldMul is VIP_FOLD_MUL of bpf/vipfilter.h.
const vipFoldMul = 0x9e3779b1

// vipFilterBit is the pre-filter bit of a VIP key, the same fold as
// vip_filter_bit in bpf/vipfilter.h: the program is built for bpfel, so it
// reads the address as four little-endian words, and the port is the raw
// network-order value the C struct holds.
func vipFilterBit(k xdplbVipKey) uint32 {
	h := uint32(k.Port)<<16 | uint32(k.Proto)
	for i := 0; i < len(k.Addr); i += 4 {
		h ^= binary.LittleEndian.Uint32(k.Addr[i:])
	}
	return (h * vipFoldMul) >> 16
}

// vipFilterFor sets the bit of every VIP in vips.
func vipFilterFor(vips map[VIPKey]VIPMeta) (xdplbVipBitmap, error) {
	var f xdplbVipBitmap
	for k := range vips {
		ck, err := vipKeyToC(k)
		if err != nil {
			return f, err
		}
		bit := vipFilterBit(ck)
		f.Bits[bit/64] |= 1 << (bit % 64)
	}
	return f, nil
}

// writeVIPFilter replaces the pre-filter with the bits of vips in one
// update. Adding a VIP writes it before the VIP exists, removing one after
// it is gone: a bit set too early or left set is only a false positive.
func (d *Datapath) writeVIPFilter(vips map[VIPKey]VIPMeta) error {
	f, err := vipFilterFor(vips)
	if err != nil {
		return err
	}
	if err := d.objs.VipFilter.Put(uint32(0), f); err != nil {
		return fmt.Errorf("write vip filter: %w", err)
	}
	return nil
}

// setVIPKey records which VIP an id belongs to (vip_keys); the zero key
// frees the id, so established flows of a deleted VIP stop at once.
func (d *Datapath) setVIPKey(id uint32, k xdplbVipKey) error {
	if err := d.objs.VipKeys.Put(id, k); err != nil {
		return fmt.Errorf("write vip key %d: %w", id, err)
	}
	return nil
}

// rebuildVIPIndex makes vip_filter and vip_keys match the vips map. Load
// runs it: maps pinned by a build without them, or a crash between two
// updates, leave them behind the VIPs.
func (d *Datapath) rebuildVIPIndex() error {
	vips, err := d.VIPs()
	if err != nil {
		return err
	}
	if err := d.writeVIPFilter(vips); err != nil {
		return err
	}
	want := make(map[uint32]xdplbVipKey, len(vips))
	for k, m := range vips {
		ck, err := vipKeyToC(k)
		if err != nil {
			return err
		}
		want[m.ID] = ck
	}
	var errs []error
	err = readArray(d.objs.VipKeys, func(id uint32, have xdplbVipKey) {
		if have != want[id] {
			errs = append(errs, d.setVIPKey(id, want[id]))
		}
	})
	if err != nil {
		return fmt.Errorf("read vip keys: %w", err)
	}
	return errors.Join(errs...)
}
