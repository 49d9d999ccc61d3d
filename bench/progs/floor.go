package progs

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// LoadFloor loads the floor program: swap the Ethernet MACs, XDP_TX. It
// has no maps; the caller closes the program.
func LoadFloor() (*ebpf.Program, error) {
	var objs floorObjects
	if err := loadFloorObjects(&objs, nil); err != nil {
		return nil, fmt.Errorf("load floor program: %w", err)
	}
	return objs.FloorTx, nil
}
