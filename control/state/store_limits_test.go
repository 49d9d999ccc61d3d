package state

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/control/model"
)

// A state larger than the maps is refused when it is configured, and the
// store keeps what it had.
func TestStoreCheckRefusesStatesLargerThanTheMaps(t *testing.T) {
	networkCalls := 0
	st, err := Open(t.TempDir(), func(model.State) error { networkCalls++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	st.SetLimits(3, 4) // ids 1..2 and 1..3
	vip := func(i int) model.VIPID {
		return model.VIPID{Addr: netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", i)), Port: 80, Protocol: model.TCP}
	}
	addVIP(t, st, vip(1), be("10.0.0.1", 100), be("10.0.0.2", 100))
	addVIP(t, st, vip(2), be("10.0.0.3", 100)) // 2 VIPs, 3 backends: ids 1..2 and 1..3 fit
	err = st.AddVIP(model.VIP{Address: vip(3).Addr, Port: 80, Protocol: model.TCP})
	if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "vip") {
		t.Fatalf("third VIP with room for two: %v, want a clear ErrInvalid", err)
	}
	err = st.AddBackend(vip(2), be("10.0.0.4", 100))
	if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "backend") {
		t.Fatalf("fourth backend with room for three: %v, want a clear ErrInvalid", err)
	}
	if n := len(st.State().VIPs); n != 2 {
		t.Fatalf("%d VIPs stored after refused changes, want 2", n)
	}
	// apply goes through the same check.
	big := st.State()
	big.VIPs = append(big.VIPs, model.VIP{Address: vip(3).Addr, Port: 80, Protocol: model.TCP})
	if err := st.Replace(big); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("apply of three VIPs with room for two: %v, want ErrInvalid", err)
	}
	if networkCalls == 0 {
		t.Fatal("the network check was never consulted")
	}
}

func be(a string, w uint32) model.Backend {
	return model.Backend{Address: netip.MustParseAddr(a), Weight: w}
}

func addVIP(t *testing.T, s *Store, id model.VIPID, backends ...model.Backend) {
	t.Helper()
	if err := s.AddVIP(model.VIP{Address: id.Addr, Port: id.Port, Protocol: id.Protocol, Backends: backends}); err != nil {
		t.Fatal(err)
	}
}
