package api

import (
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/control/reconcile/reconciletest"
	"github.com/xdplb/xdplb/control/state"
)

// A dry run checks the state as an apply does, the store's extra check
// (the network's, in the daemon) included, answers the diff against the
// running state, and changes nothing.
func TestApplyDryRun(t *testing.T) {
	refused := netip.MustParseAddr("10.0.0.66")
	st, err := state.Open(t.TempDir(), func(s model.State) error {
		for _, v := range s.VIPs {
			for _, b := range v.Backends {
				if b.Address == refused {
					return model.Invalidf("vip %s: backend %s is refused", v.ID(), b.Address)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := serveTest(t, &Server{Store: st, Datapath: reconciletest.NewDatapath(testTableSize, 16, 64)})
	c := NewClient(sock)
	ctx := t.Context()
	cur := model.State{VIPs: []model.VIP{{Address: vip1.Addr, Port: 80, Protocol: model.TCP, Backends: []model.Backend{be("10.0.0.1", 100)}}}}
	if err := c.Apply(ctx, cur, false); err != nil {
		t.Fatal(err)
	}
	gen := st.Generation()

	next := cur.Clone()
	next.VIPs[0].Backends = append(next.VIPs[0].Backends, be("10.0.0.2", 5))
	d, err := c.DryRun(ctx, next, false)
	if err != nil {
		t.Fatal(err)
	}
	want := model.StateDiff{VIPs: []model.VIPChange{{VIP: "10.0.0.100:80/tcp", Change: model.Changed,
		Backends: []model.BackendChange{{Backend: "10.0.0.2", Change: model.Added, Fields: []model.FieldChange{{Field: "weight", New: "5"}}}}}}}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("dry run: %+v, want %+v", d, want)
	}
	if d, err = c.DryRun(ctx, cur, false); err != nil || len(d.VIPs) != 0 {
		t.Errorf("dry run of the state itself: %+v, %v", d, err)
	}

	next.VIPs[0].Backends = append(next.VIPs[0].Backends, model.Backend{Address: refused, Weight: 1})
	if _, err := c.DryRun(ctx, next, false); err == nil || !strings.Contains(err.Error(), "backend 10.0.0.66 is refused") {
		t.Errorf("dry run of a state the extra check refuses: %v", err)
	}
	if st.Generation() != gen || !model.EqualState(ptr(st.State()), ptr(mustNormalized(cur))) {
		t.Errorf("dry runs changed the state: %+v", st.State())
	}
	if code, body := rawRequest(t, sock, "PUT", "/v1/state?dry_run=maybe", `{"vips":[]}`); code != http.StatusBadRequest || !strings.Contains(body, "dry_run") {
		t.Errorf("dry_run=maybe: %d %s", code, body)
	}
}

func ptr[T any](v T) *T { return &v }

func mustNormalized(s model.State) model.State {
	s = s.Clone()
	model.Normalize(&s)
	return s
}
