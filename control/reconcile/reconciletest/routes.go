package reconciletest

import (
	"context"
	"net/netip"
	"slices"
	"sync"
)

// Routes is an in-memory reconcile.RouteAnnouncer (the BGP speaker): it
// keeps the last set it was given, counts the calls and fails them while
// told to.
type Routes struct {
	mu    sync.Mutex
	last  []netip.Addr
	calls int
	err   error
}

// AnnounceRoutes implements reconcile.RouteAnnouncer.
func (r *Routes) AnnounceRoutes(_ context.Context, addrs []netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return r.err
	}
	r.last = slices.Clone(addrs)
	return nil
}

// Announced is the last set taken, as strings.
func (r *Routes) Announced() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.last))
	for i, a := range r.last {
		out[i] = a.String()
	}
	return out
}

// Calls counts the calls of AnnounceRoutes, failed ones too.
func (r *Routes) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// SetErr makes the calls fail with err (nil: succeed).
func (r *Routes) SetErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}
