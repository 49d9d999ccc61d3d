package healthcheck

import (
	"slices"
	"testing"
	"time"
)

func TestMachine(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		rise, fall int
		startUp    bool
		results    string // '+' ok, '-' failure, one per second
		want       []int  // indexes of the results that change the state
		wantUp     bool
	}{
		{"start up stays up", 2, 3, true, "++++", nil, true},
		{"start up needs fall failures", 2, 3, true, "--", nil, true},
		{"start up goes down on the fall-th failure", 2, 3, true, "---", []int{2}, false},
		{"a success restarts the count", 2, 3, true, "--+---", []int{5}, false},
		{"pending stays down", 2, 3, false, "+", nil, false},
		{"pending needs rise successes", 2, 3, false, "++", []int{1}, true},
		{"pending and failing stays down", 2, 3, false, "---", nil, false},
		{"a failure restarts the rise", 3, 3, false, "++-+++", []int{5}, true},
		{"down then up again", 2, 3, true, "---++", []int{2, 4}, true},
		{"flapping from up never moves", 2, 2, true, "-+-+-+-+-+", nil, true},
		{"flapping from down never moves", 2, 2, false, "+-+-+-+-+-", nil, false},
		{"flapping with rise and fall 1 moves each time", 1, 1, true, "-+-+", []int{0, 1, 2, 3}, true},
		{"fall 1 from up", 2, 1, true, "+-", []int{1}, false},
		{"rise 1 from pending", 1, 3, false, "+", []int{0}, true},
		{"limits below 1 act as 1", 0, 0, false, "+-", []int{0, 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMachine(tt.rise, tt.fall, tt.startUp, t0)
			if m.up != tt.startUp || m.known || m.reason != "" || !m.since.Equal(t0) {
				t.Fatalf("initial state %+v", m)
			}
			var got []int
			lastChange := t0
			for i, c := range tt.results {
				ok := c == '+'
				reason := "ok"
				if !ok {
					reason = "connect refused"
				}
				at := t0.Add(time.Duration(i+1) * time.Second)
				if m.observe(ok, reason, at) {
					got = append(got, i)
					lastChange = at
					if m.up != ok {
						t.Fatalf("result %d: transition to up=%v on an ok=%v result", i, m.up, ok)
					}
				}
				if !m.known || m.reason != reason {
					t.Fatalf("result %d: known=%v reason=%q, want true %q", i, m.known, m.reason, reason)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("transitions at results %v, want %v", got, tt.want)
			}
			if m.up != tt.wantUp {
				t.Errorf("up = %v, want %v", m.up, tt.wantUp)
			}
			if !m.since.Equal(lastChange) {
				t.Errorf("since = %v, want %v", m.since, lastChange)
			}
		})
	}
}

func TestMachineRetuneKeepsState(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := newMachine(2, 3, true, t0)
	m.observe(false, "timeout", t0)
	m.observe(false, "timeout", t0)
	m.retune(2, 2)
	// The two failures counted under the old Spec do not carry over.
	if m.observe(false, "timeout", t0) {
		t.Fatal("went down on the first failure after retune")
	}
	if !m.up || !m.known {
		t.Fatalf("state %+v, want up and known", m)
	}
	if !m.observe(false, "timeout", t0) || m.up {
		t.Fatalf("did not go down on the second failure after retune (fall 2): %+v", m)
	}
}
