package loader

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
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

// replyFoldSalt is REPLY_FOLD_SALT of bpf/vipfilter.h.
const replyFoldSalt = 0x5bd1e995

// replyFilterBit is the pre-filter bit of a NAT backend's replies: the
// fold of reply_filter_bit in bpf/vipfilter.h, over the address alone.
func replyFilterBit(addr [16]byte) uint32 {
	h := uint32(replyFoldSalt)
	for i := 0; i < len(addr); i += 4 {
		h ^= binary.LittleEndian.Uint32(addr[i:])
	}
	return (h * vipFoldMul) >> 16
}

// setReplyBit gives backend id the reply bit bit (has: it has one; a DR
// backend has none), clearing the one it had. Called with mu held.
func (d *Datapath) setReplyBit(id, bit uint32, has bool) error {
	old, had := d.replyBits[id]
	if had == has && old == bit {
		return nil
	}
	if has {
		if err := d.addFilterBit(bit); err != nil {
			return err
		}
		d.replyBits[id] = bit
	}
	if had {
		if !has {
			delete(d.replyBits, id)
		}
		if err := d.clearFilterBit(old); err != nil {
			return err
		}
	}
	return nil
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

// addFilterBit counts one more VIP on bit and writes the pre-filter when
// the bit was clear. A VIP's bit is set before the VIP exists and cleared
// after it is gone: a bit set too early or left set is only a false
// positive.
func (d *Datapath) addFilterBit(bit uint32) error {
	d.bitCount[bit]++
	if d.bitCount[bit] > 1 {
		return nil
	}
	d.filter.Bits[bit/64] |= 1 << (bit % 64)
	return d.writeVIPFilter()
}

// clearFilterBit counts one VIP less on bit and clears it with the last.
func (d *Datapath) clearFilterBit(bit uint32) error {
	if d.bitCount[bit] > 1 {
		d.bitCount[bit]--
		return nil
	}
	delete(d.bitCount, bit)
	d.filter.Bits[bit/64] &^= 1 << (bit % 64)
	return d.writeVIPFilter()
}

// writeVIPFilter writes the indexed pre-filter in one update (8 KiB, the
// map's only value).
func (d *Datapath) writeVIPFilter() error {
	if err := d.objs.VipFilter.Put(uint32(0), d.filter); err != nil {
		return fmt.Errorf("write vip filter: %w", err)
	}
	return nil
}

// setAddrCount records how many VIPs an address has (vip_addrs); zero
// removes it.
func (d *Datapath) setAddrCount(addr [16]byte, n uint32) error {
	if n == 0 {
		delete(d.addrCount, addr)
		if err := d.objs.VipAddrs.Delete(addr); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		return nil
	}
	if err := d.objs.VipAddrs.Put(addr, n); err != nil {
		return err
	}
	d.addrCount[addr] = n
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

// rebuildVIPIndex builds the VIP index from the vips map and makes
// vip_filter, vip_addrs and vip_keys match it. Load runs it: maps pinned by
// a build without them, or a crash between two updates, leave them behind
// the VIPs.
func (d *Datapath) rebuildVIPIndex() error {
	vips, err := d.VIPs()
	if err != nil {
		return err
	}
	d.vipIndex = vips
	d.vipIDs = make(map[uint32]VIPKey, len(vips))
	d.addrCount = make(map[[16]byte]uint32)
	d.bitCount = make(map[uint32]uint32)
	d.filter = xdplbVipBitmap{}
	want := make(map[uint32]xdplbVipKey, len(vips))
	for k, m := range vips {
		ck, err := vipKeyToC(k)
		if err != nil {
			return err
		}
		d.vipIDs[m.ID] = k
		d.addrCount[ck.Addr]++
		bit := vipFilterBit(ck)
		d.bitCount[bit]++
		d.filter.Bits[bit/64] |= 1 << (bit % 64)
		want[m.ID] = ck
	}
	d.replyBits = make(map[uint32]uint32)
	err = readArray(d.objs.Backends, func(id uint32, b xdplbBackend) {
		if b.valid() && modeFromFlags(b.Flags) != ModeDR {
			bit := replyFilterBit(b.Addr)
			d.replyBits[id] = bit
			d.bitCount[bit]++
			d.filter.Bits[bit/64] |= 1 << (bit % 64)
		}
	})
	if err != nil {
		return fmt.Errorf("read backends: %w", err)
	}
	if err := d.writeVIPFilter(); err != nil {
		return err
	}
	var stale [][16]byte // deleted after the walk, which they would disturb
	err = iterate(d.objs.VipAddrs, func(addr [16]byte, _ uint32) {
		if d.addrCount[addr] == 0 {
			stale = append(stale, addr)
		}
	})
	if err != nil {
		return fmt.Errorf("read vip addresses: %w", err)
	}
	var errs []error
	for _, addr := range stale {
		errs = append(errs, d.objs.VipAddrs.Delete(addr))
	}
	for addr, n := range d.addrCount {
		errs = append(errs, d.objs.VipAddrs.Put(addr, n))
	}
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
