package state

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/xdplb/xdplb/control/model"
	"github.com/xdplb/xdplb/internal/testutil"
)

// The state file from cached VIP encodings is byte for byte the one
// encoding/json writes of the whole state, through random changes.
func TestEncodeFileCachedIsJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	c := vipCache{}
	st := testutil.RoundTripState()
	for step := range 200 {
		next := model.State{VIPs: append([]model.VIP{}, st.VIPs...)}
		switch i := r.IntN(len(next.VIPs) + 1); {
		case i == len(next.VIPs) || len(next.VIPs) == 0:
			next.VIPs = append(next.VIPs, model.VIP{Address: netip.AddrFrom4([4]byte{10, 9, byte(step), 1}), Port: 80,
				Protocol: model.TCP, Backends: []model.Backend{{Address: netip.AddrFrom4([4]byte{10, 8, byte(step), 1}), Weight: 5}}})
		case r.IntN(3) == 0:
			next.VIPs = append(next.VIPs[:i], next.VIPs[i+1:]...)
		default:
			v := next.VIPs[i].Clone()
			if len(v.Backends) > 0 {
				v.Backends[0].Weight = uint32(r.IntN(100))
			}
			next.VIPs[i] = v
		}
		model.Normalize(&next)
		st = next
		got, err := encodeFileCached(st, c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var env envelope
		if err := json.Unmarshal(got, &env); err != nil {
			t.Fatal(err)
		}
		if string(env.State) != string(want) {
			t.Fatalf("step %d: cached encoding\n%s\nwant\n%s", step, env.State, want)
		}
		if len(c) != len(st.VIPs) {
			t.Fatalf("step %d: cache holds %d VIPs, state %d", step, len(c), len(st.VIPs))
		}
	}
}
