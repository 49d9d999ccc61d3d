package bench

// One BPF_PROG_TEST_RUN with everything the per-packet section needs at
// once: a context (the ingress interface, which NAT's FIB lookup starts
// from), the output frame (to check what the timed runs did) and the
// kernel's own duration. cilium/ebpf's Run gives the first two and
// Benchmark only the last, so the command is issued here.

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// pktXDPMD is struct xdp_md as BPF_PROG_TEST_RUN takes it. DataEnd is the
// frame's length; IngressIfindex must name an interface of the calling
// thread's network namespace.
type pktXDPMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// pktTestRunAttr is the test-run member of union bpf_attr, up to the
// last field the command reads.
type pktTestRunAttr struct {
	ProgFD      uint32
	Retval      uint32
	DataSizeIn  uint32
	DataSizeOut uint32
	DataIn      uint64
	DataOut     uint64
	Repeat      uint32
	Duration    uint32
	CtxSizeIn   uint32
	CtxSizeOut  uint32
	CtxIn       uint64
	CtxOut      uint64
	Flags       uint32
	CPU         uint32
	BatchSize   uint32
	_           uint32
}

// pktTestRun runs prog repeat times on in (the kernel reruns on the frame
// the previous run left) and returns the verdict of the last run, the
// kernel's mean duration per run in whole nanoseconds and the frame the
// last run left. An interrupted run (EINTR) is run again whole.
func pktTestRun(prog *ebpf.Program, in []byte, ctx *pktXDPMD, repeat int) (verdict, ns uint32, out []byte, err error) {
	if len(in) == 0 {
		return 0, 0, nil, errors.New("test run: no frame")
	}
	out = make([]byte, len(in)+256)
	attr := pktTestRunAttr{
		ProgFD:      uint32(prog.FD()),
		DataSizeIn:  uint32(len(in)),
		DataSizeOut: uint32(len(out)),
		DataIn:      uint64(uintptr(unsafe.Pointer(&in[0]))),
		DataOut:     uint64(uintptr(unsafe.Pointer(&out[0]))),
		Repeat:      uint32(repeat),
	}
	if ctx != nil {
		attr.CtxSizeIn = uint32(unsafe.Sizeof(*ctx))
		attr.CtxIn = uint64(uintptr(unsafe.Pointer(ctx)))
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno == unix.EINTR {
			continue
		}
		runtime.KeepAlive(in)
		runtime.KeepAlive(out)
		runtime.KeepAlive(ctx)
		runtime.KeepAlive(prog)
		if errno != 0 {
			return 0, 0, nil, fmt.Errorf("test run: %w", errno)
		}
		if attr.DataSizeOut > uint32(len(out)) {
			return 0, 0, nil, fmt.Errorf("test run: %d bytes out, more than the %d-byte buffer", attr.DataSizeOut, len(out))
		}
		return attr.Retval, attr.Duration, out[:attr.DataSizeOut], nil
	}
}
