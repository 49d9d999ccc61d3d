package loader

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The connection table stamps flows with bpf_jiffies64 (bpf/conntrack.h):
// kernel ticks, which no user-space clock reads. A tiny program run through
// BPF_PROG_TEST_RUN reads them, and two readings against CLOCK_MONOTONIC
// give the tick rate (CONFIG_HZ).

// tickRates are the values CONFIG_HZ can take.
var tickRates = []uint64{100, 250, 300, 1000}

// tickClock reads the kernel's jiffies.
type tickClock struct {
	prog *ebpf.Program
	hz   uint64 // 0 until measured
}

// newTickClock loads the program that writes bpf_jiffies64() into the
// first 8 bytes of its test frame.
func newTickClock() (*tickClock, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdplb_jiffies", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.FnJiffies64.Call(),
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // ctx->data
			asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // ctx->data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 8),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.StoreMem(asm.R2, 0, asm.R0, asm.DWord),
			asm.Mov.Imm(asm.R0, xdpPassVerdict).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load jiffies program: %w", err)
	}
	return &tickClock{prog: p}, nil
}

const xdpPassVerdict = 2 // XDP_PASS

func (c *tickClock) Close() error { return c.prog.Close() }

// now returns the kernel's jiffies.
func (c *tickClock) now() (uint64, error) {
	out := make([]byte, 64)
	_, err := c.prog.Run(&ebpf.RunOptions{Data: make([]byte, 64), DataOut: out})
	if err != nil {
		return 0, fmt.Errorf("read jiffies: %w", err)
	}
	return binary.NativeEndian.Uint64(out), nil
}

// rate measures the tick rate once (50 ms), and returns it from then on.
func (c *tickClock) rate() (uint64, error) {
	if c.hz != 0 {
		return c.hz, nil
	}
	j0, t0, err := c.sample()
	if err != nil {
		return 0, err
	}
	time.Sleep(50 * time.Millisecond)
	j1, t1, err := c.sample()
	if err != nil {
		return 0, err
	}
	c.hz = nearestRate(float64(j1-j0) / (t1 - t0).Seconds())
	return c.hz, nil
}

func (c *tickClock) sample() (uint64, time.Duration, error) {
	j, err := c.now()
	if err != nil {
		return 0, 0, err
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, 0, fmt.Errorf("read monotonic clock: %w", err)
	}
	return j, time.Duration(ts.Nano()), nil
}

// nearestRate is the value of CONFIG_HZ closest to a measured rate.
func nearestRate(measured float64) uint64 {
	best := tickRates[0]
	for _, r := range tickRates[1:] {
		if abs(float64(r)-measured) < abs(float64(best)-measured) {
			best = r
		}
	}
	return best
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
