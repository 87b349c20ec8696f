package fastpath

import (
	"fmt"
	"net/netip"
	"testing"
)

// manyFlows maps n IPv4 flows that differ in the client's port and the
// upstream port, and sends i+1 ESP datagrams up and 2i+1 down on flow i.
func manyFlows(t testing.TB, fp *FastPath, n int, traffic bool) []Flow {
	t.Helper()
	var out []Flow
	for i := 0; i < n; i++ {
		f := flow4()
		f.Client = netip.AddrPortFrom(cli4.Addr(), uint16(20000+i))
		f.Upstream = netip.AddrPortFrom(ups4.Addr(), uint16(40000+i))
		mustPut(t, fp, f)
		out = append(out, f)
		if !traffic {
			continue
		}
		for j := 0; j <= i; j++ {
			run(t, fp, udpPacket{src: f.Client, dst: loc4, payload: espPayload(1, uint32(j), 92)}.frame(), nil)
		}
		for j := 0; j <= 2*i; j++ {
			run(t, fp, udpPacket{src: back4, dst: f.Upstream, payload: espPayload(2, uint32(j), 192)}.frame(), nil)
		}
	}
	return out
}

// The counters are read from the memory-mapped array; what it gives must
// be what a map lookup gives, flow by flow.
func TestCountersMappedEqualLookup(t *testing.T) {
	fp := newTestFP(t, Options{MaxFlows: 64})
	if fp.mem == nil {
		t.Fatal("counters map not memory-mapped (BPF_F_MMAPABLE arrays need kernel 5.5)")
	}
	flows := manyFlows(t, fp, 12, true)
	mapped, err := fp.All()
	if err != nil {
		t.Fatal(err)
	}
	mem := fp.mem
	fp.mem = nil
	looked, err := fp.All()
	fp.mem = mem
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[FlowKey]FlowCounters{}
	for _, c := range looked {
		byKey[c.Key] = c
	}
	if len(mapped) != len(flows) || len(looked) != len(flows) {
		t.Fatalf("%d mapped, %d looked up, want %d", len(mapped), len(looked), len(flows))
	}
	for i, f := range flows {
		c, err := fp.Counters(f.Key())
		if err != nil {
			t.Fatal(err)
		}
		if c.Up.Packets != uint64(i+1) || c.Down.Packets != uint64(2*i+1) || c.Up.Bytes != 100*uint64(i+1) {
			t.Errorf("flow %d: %+v", i, c)
		}
		if byKey[c.Key] != c {
			t.Errorf("flow %d: mapped %+v, lookup %+v", i, c, byKey[c.Key])
		}
	}
}

// BenchmarkAll reads the counters of every mapped flow, as the proxy does
// once a second: from the memory-mapped array, and by map lookups (two
// syscalls per flow) as the baseline, in one run.
func BenchmarkAll(b *testing.B) {
	for _, n := range []int{100, 10000} {
		fp := newTestFP(b, Options{MaxFlows: n})
		manyFlows(b, fp, n, false)
		mem := fp.mem
		for _, how := range []string{"lookup", "mmap"} {
			b.Run(fmt.Sprintf("%s/%d_flows", how, n), func(b *testing.B) {
				fp.mem = nil
				if how == "mmap" {
					fp.mem = mem
				}
				for b.Loop() {
					if _, err := fp.All(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/flow")
			})
		}
		fp.mem = mem
	}
}
