package bench

import "testing"

func TestCTSimEvictionsPure(t *testing.T) {
	const buckets, slots = 1 << 14, 8
	total := buckets * slots
	at := []int{total / 2, total * 7 / 10, total * 9 / 10, total * 3 / 2}
	got := ctSimEvictions(buckets, slots, at, 1)
	if got[0] != 0 {
		t.Errorf("%d evictions at half load, want none", got[0])
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			t.Fatalf("evictions fell: %v", got)
		}
	}
	// Past every slot, at least the flows beyond the slots are lost.
	if got[3] < at[3]-total {
		t.Errorf("%d evictions after %d flows into %d slots", got[3], at[3], total)
	}
	if again := ctSimEvictions(buckets, slots, at, 1); again[3] != got[3] {
		t.Errorf("not repeatable: %v then %v", got, again)
	}
	// One slot per bucket and one bucket: every flow after the first goes.
	if got := ctSimEvictions(1, 1, []int{5}, 2); got[0] != 4 {
		t.Errorf("one slot: %d evictions of 5 flows, want 4", got[0])
	}
}
