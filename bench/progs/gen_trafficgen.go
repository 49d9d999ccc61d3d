package progs

import (
	"fmt"

	"github.com/cilium/ebpf"
)

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem trafficgen trafficgen trafficgen.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror

// GenHeaderLen is the size of the header template the generator writes
// into every frame: Ethernet, IPv4 without options, UDP.
const GenHeaderLen = 14 + 20 + 8

// LoadGenerator loads the live-frames traffic generator. Every frame it
// sends starts with header (with a valid IPv4 checksum and UDP checksum 0);
// with newFlows, each frame also gets its own source port and source
// address, so every frame is a new 5-tuple. The caller closes the program.
func LoadGenerator(header []byte, newFlows bool) (*ebpf.Program, error) {
	if len(header) != GenHeaderLen {
		return nil, fmt.Errorf("generator header: %d bytes, want %d", len(header), GenHeaderLen)
	}
	spec, err := loadTrafficgen()
	if err != nil {
		return nil, fmt.Errorf("load trafficgen spec: %w", err)
	}
	var hdr [GenHeaderLen]byte
	copy(hdr[:], header)
	if err := spec.Variables[trafficgenVarCfgHdr].Set(hdr); err != nil {
		return nil, fmt.Errorf("set generator header: %w", err)
	}
	var flag uint8
	if newFlows {
		flag = 1
	}
	if err := spec.Variables[trafficgenVarCfgNewFlows].Set(flag); err != nil {
		return nil, fmt.Errorf("set generator mode: %w", err)
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"gen_udp"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	return objs.Prog, nil
}

// LoadWirePass loads an XDP program that passes every frame to the stack.
func LoadWirePass() (*ebpf.Program, error) { return loadWireProg(trafficgenProgWirePass) }

// LoadWireSink loads an XDP program that drops every frame.
func LoadWireSink() (*ebpf.Program, error) { return loadWireProg(trafficgenProgWireSink) }

func loadWireProg(name string) (*ebpf.Program, error) {
	spec, err := loadTrafficgen()
	if err != nil {
		return nil, fmt.Errorf("load trafficgen spec: %w", err)
	}
	ps, ok := spec.Programs[name]
	if !ok {
		return nil, fmt.Errorf("trafficgen has no program %s", name)
	}
	p, err := ebpf.NewProgram(ps)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return p, nil
}
