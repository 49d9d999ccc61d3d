package healthcheck

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFakeClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := NewFakeClock(t0)
	a := c.NewTimer(3 * time.Second)
	b := c.NewTimer(time.Second)
	d := c.NewTimer(2 * time.Second)
	now := c.NewTimer(0)
	select {
	case at := <-now.C():
		if !at.Equal(t0) {
			t.Errorf("zero timer fired at %v", at)
		}
	default:
		t.Error("a zero timer has not fired at once")
	}
	if c.Pending() != 3 {
		t.Fatalf("pending %d, want 3", c.Pending())
	}
	if !d.Stop() || d.Stop() {
		t.Error("Stop: want true then false")
	}
	if next, ok := c.Next(); !ok || !next.Equal(t0.Add(time.Second)) {
		t.Errorf("Next = %v %v", next, ok)
	}
	c.Advance(500 * time.Millisecond)
	select {
	case <-b.C():
		t.Fatal("fired early")
	default:
	}
	c.Advance(2 * time.Second) // to t0+2.5s: b fires at its deadline, a not yet
	if at := <-b.C(); !at.Equal(t0.Add(time.Second)) {
		t.Errorf("b fired at %v, want its deadline", at)
	}
	if !c.Now().Equal(t0.Add(2500 * time.Millisecond)) {
		t.Errorf("now %v", c.Now())
	}
	if at, ok := c.AdvanceToNext(); !ok || !at.Equal(t0.Add(3*time.Second)) {
		t.Errorf("AdvanceToNext = %v %v", at, ok)
	}
	<-a.C()
	if b.Stop() {
		t.Error("Stop of a fired timer returned true")
	}
	if _, ok := c.AdvanceToNext(); ok {
		t.Error("AdvanceToNext with nothing pending")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := c.WaitTimers(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitTimers with no timer coming: %v", err)
	}
	go c.NewTimer(time.Minute)
	if err := c.WaitTimers(t.Context(), 1); err != nil {
		t.Error(err)
	}
}
