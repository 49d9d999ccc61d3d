package loader

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// schedBenchFrames sets up one VIP per scheduler on vipAddr4 (ports 82-87,
// ids 6-11, one backend each of the same id, a set of four members for the
// set schedulers) and returns, for BenchmarkProgram, a new-flow and an
// established frame of each, beside maglev's ("new flow ipv4 tcp").
func schedBenchFrames(b *testing.B, d *Datapath) []struct {
	name    string
	prog    *ebpf.Program
	in      []byte
	verdict uint32
} {
	b.Helper()
	var out []struct {
		name    string
		prog    *ebpf.Program
		in      []byte
		verdict uint32
	}
	for i, tc := range []struct {
		name string
		h    HashKind
	}{{"sh", HashSource}, {"rr", SchedRR}, {"wrr", SchedWRR}, {"random", SchedRand}, {"lc", SchedLC}, {"wlc", SchedWLC}} {
		id := uint32(6 + i)
		k := VIPKey{Addr: vipAddr4, Port: uint16(82 + i), Proto: ProtoTCP}
		must(b, d.PutVIP(k, VIPMeta{ID: id, Mode: ModeDR, Hash: tc.h}))
		putBackend(b, d, id, id, netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", id)), loIfindex)
		must(b, d.PutLookupTable(id, fill(d.LookupTableSize(), id)))
		if tc.h.UsesSet() {
			// Four members, all this VIP's one backend: the scans and
			// walks run over four.
			must(b, d.PutSchedSet(id, []SchedMember{{id, 1}, {id, 2}, {id, 3}, {id, 4}}))
		}
		syn := flow{src: client4, dst: vipAddr4, dport: k.Port, syn: true}.build(b)
		est := flow{src: client4, dst: vipAddr4, dport: k.Port, ack: true}.build(b)
		out = append(out, struct {
			name    string
			prog    *ebpf.Program
			in      []byte
			verdict uint32
		}{"new flow ipv4 tcp " + tc.name, newFlowWrapper(b, d.Program(), sport4, srcLastByte4), syn, xdpTX},
			struct {
				name    string
				prog    *ebpf.Program
				in      []byte
				verdict uint32
			}{"established ipv4 tcp " + tc.name, d.Program(), est, xdpTX})
	}
	return out
}
