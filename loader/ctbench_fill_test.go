package loader

import (
	"fmt"
	"testing"
)

// benchFill puts keys into the connection table as live established flows
// of backend 1.
func benchFill(tb testing.TB, d *Datapath, keys []xdplbFlowKey) {
	now := uint32(tickNow(tb, d))
	l := d.ctLimits()
	for i := range keys {
		d.ct.insert(&keys[i], 1, established, now, l)
	}
}

// benchFillAll fills the table's every slot with live flows from f on.
func benchFillAll(tb testing.TB, d *Datapath, f flow) {
	slots := int(d.ConntrackSlots())
	for round := 0; d.ct.count() < slots && round < 8; round++ {
		benchFill(tb, d, wrapperKeys(f, (slots-d.ct.count())*2))
		f.src = f.src.Next()
	}
}

func benchTableInfo(d *Datapath) string {
	return fmt.Sprintf("cache-line table: %d slots, %d MiB", d.ConntrackSlots(), d.ConntrackBytes()>>20)
}
