package healthcheck

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// FakeClock is a Clock that moves only when told to. Timers fire in
// deadline order (then creation order) inside Advance, with Now set to
// their deadline, so a test sees every event at its exact simulated time.
// It is exported for the tests of packages that drive a Manager.
//
// Code woken by a timer runs on its own goroutine; WaitTimers lets a test
// wait until that code has armed its next timer before advancing again. A
// FakeClock is safe for concurrent use.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	pending []*fakeTimer
	changed chan struct{} // closed and replaced whenever pending changes
}

// NewFakeClock returns a FakeClock reading start.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start, changed: make(chan struct{})}
}

// Now returns the simulated time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock reaches Now()+d; one
// with d <= 0 has fired already.
func (c *FakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{clock: c, ch: make(chan time.Time, 1), at: c.now.Add(d), seq: c.seq}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.pending = append(c.pending, t)
	c.notify()
	return t
}

// Advance moves the clock forward by d, firing every timer due on the way.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	end := c.now.Add(d)
	for {
		i := c.earliest()
		if i < 0 || c.pending[i].at.After(end) {
			break
		}
		t := c.pending[i]
		c.pending = slices.Delete(c.pending, i, i+1)
		c.now = t.at
		t.ch <- t.at // never blocks: buffer 1, fires once
	}
	c.now = end
	c.notify()
}

// AdvanceToNext moves the clock to the earliest pending deadline and fires
// the timers due then. It returns the new time, or false with no timer
// pending (the clock does not move).
func (c *FakeClock) AdvanceToNext() (time.Time, bool) {
	next, ok := c.Next()
	if !ok {
		return time.Time{}, false
	}
	c.Advance(next.Sub(c.Now()))
	return next, true
}

// Next returns the earliest pending deadline.
func (c *FakeClock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.earliest()
	if i < 0 {
		return time.Time{}, false
	}
	return c.pending[i].at, true
}

// Pending returns how many timers wait to fire.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// WaitTimers blocks until exactly n timers are pending or ctx is done.
// After an Advance, it is how a test knows that the code woken by it has
// done its work and armed its next timer (or stopped).
func (c *FakeClock) WaitTimers(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		have, changed := len(c.pending), c.changed
		c.mu.Unlock()
		if have == n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d timers, have %d: %w", n, have, ctx.Err())
		}
	}
}

func (c *FakeClock) earliest() int {
	best := -1
	for i, t := range c.pending {
		if best < 0 || t.at.Before(c.pending[best].at) || (t.at.Equal(c.pending[best].at) && t.seq < c.pending[best].seq) {
			best = i
		}
	}
	return best
}

func (c *FakeClock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

type fakeTimer struct {
	clock *FakeClock
	ch    chan time.Time
	at    time.Time
	seq   uint64
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.pending, t)
	if i < 0 {
		return false
	}
	c.pending = slices.Delete(c.pending, i, i+1)
	c.notify()
	return true
}
