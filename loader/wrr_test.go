package loader

import (
	"slices"
	"testing"
)

// The smooth wrr walk gives each weight its share over one cycle, reduced
// by the weights' divisor, and spreads the turns.
func TestWRRSequence(t *testing.T) {
	for _, tc := range []struct {
		weights []uint32
		want    []uint16
	}{
		{[]uint32{95, 5}, append(slices.Repeat([]uint16{0}, 10), append([]uint16{1}, slices.Repeat([]uint16{0}, 9)...)...)},
		{[]uint32{100, 100, 100}, []uint16{0, 1, 2}},
		{[]uint32{5, 1, 1}, []uint16{0, 0, 1, 0, 2, 0, 0}},
		{[]uint32{0, 3}, []uint16{1}},
		{[]uint32{0, 0}, nil},
	} {
		got := WRRSequence(tc.weights, MaxWRRSequence)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: %v, want %v", tc.weights, got, tc.want)
		}
	}
}

// Weights too fine for the sequence are scaled: every member keeps a
// turn, and the shares stay within a turn of the weights'.
func TestWRRSequenceScaled(t *testing.T) {
	var weights []uint32
	for i := range 200 {
		weights = append(weights, uint32(1000+i*37))
	}
	seq := WRRSequence(weights, MaxWRRSequence)
	if len(seq) > MaxWRRSequence {
		t.Fatalf("sequence of %d turns, want at most %d", len(seq), MaxWRRSequence)
	}
	turns := make([]int, len(weights))
	for _, i := range seq {
		turns[i]++
	}
	total := 0
	for _, w := range weights {
		total += int(w)
	}
	for i, w := range weights {
		want := float64(w) * float64(len(seq)) / float64(total)
		if turns[i] == 0 || float64(turns[i]) < want-1.5 || float64(turns[i]) > want+1.5 {
			t.Errorf("member %d (weight %d): %d turns, want about %.1f", i, w, turns[i], want)
		}
	}
	// Many members of weight 1 and one heavy one: each keeps its turn.
	weights = slices.Repeat([]uint32{1}, 1023)
	weights = append(weights, 65535)
	seq = WRRSequence(weights, MaxWRRSequence)
	turns = make([]int, len(weights))
	for _, i := range seq {
		turns[i]++
	}
	if len(seq) > MaxWRRSequence || slices.Contains(turns, 0) {
		t.Errorf("1024 members: %d turns, some member without one: %v", len(seq), slices.Contains(turns, 0))
	}
}
