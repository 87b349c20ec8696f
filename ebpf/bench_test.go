package ebpf

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// emptyTC is the baseline: a tc program that returns TC_ACT_UNSPEC and
// does nothing else, so the BPF_PROG_TEST_RUN harness cost is measured.
func emptyTC(tb testing.TB) *ebpf.Program {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func benchHarness(b *testing.B) *harness {
	requireBPF(b)
	o, err := New(Options{NoDrops: true, TrainTimeout: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { o.Close() })
	coll, err := o.loadInstance(0, testIfindex, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { coll.Close() })
	return &harness{t: b, o: o, ingress: coll.Programs[tcProgIkefragIngress], egress: coll.Programs[tcProgIkefragEgress]}
}

// repeatNs runs frame repeat times inside the kernel and returns the
// kernel-measured time per run.
func repeatNs(b *testing.B, p *ebpf.Program, frame []byte, repeat int) float64 {
	ret, d, err := p.Benchmark(frame, repeat, nil)
	if err != nil {
		b.Fatal(err)
	}
	if ret != tcActUnspec {
		b.Fatalf("returned %#x", ret)
	}
	return float64(d.Nanoseconds())
}

// singleNs runs each frame once (repeat 1) and returns the mean kernel
// time per run: for paths that change state, such as creating a train,
// which a repeated identical packet would not exercise again.
func singleNs(b *testing.B, p *ebpf.Program, frames func(i int) []byte, n int) float64 {
	var total time.Duration
	for i := 0; i < n; i++ {
		_, d, err := p.Benchmark(frames(i), 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		total += d
	}
	return float64(total.Nanoseconds()) / float64(n)
}

func withID(frame []byte, id uint16) []byte {
	f := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(f[14+4:], id)
	return f
}

// BenchmarkTC measures ns per packet under BPF_PROG_TEST_RUN for each
// traffic class and reports it next to the empty program's cost measured
// in the same sub-benchmark (metric x_empty is the ratio).
func BenchmarkTC(b *testing.B) {
	h := benchHarness(b)
	empty := emptyTC(b)
	tcp := cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 6, id: 9}.build(make([]byte, 40)))
	esp := ikeV4(4500, 4500, cat([]byte{0, 0, 0x10, 1}, make([]byte, 120)))
	ikePkt := ikeV4(500, 500, ike(2, 34, 0, 300))
	u := udp(500, 500, ike(2, 35, 1, 3500))
	fr := frames4(1, u, 1480)

	repeated := []struct {
		name  string
		frame []byte
	}{
		{"tcp", tcp},
		{"esp_in_udp", esp},
		{"ike", ikePkt},
		{"first_fragment_seen_again", fr[0]},
		{"middle_fragment_seen_again", fr[1]},
	}
	for _, c := range repeated {
		b.Run(c.name, func(b *testing.B) {
			e := repeatNs(b, empty, c.frame, b.N)
			ns := repeatNs(b, h.ingress, c.frame, b.N)
			b.ReportMetric(ns, "ns/pkt")
			b.ReportMetric(e, "empty_ns/pkt")
			b.ReportMetric(ns/e, "x_empty")
		})
	}
	// State-changing paths, one run per packet: a new train (LRU insert),
	// and a middle fragment updating an existing train in place. Each run
	// is a separate syscall, so caches are cold and the kernel's clock
	// reads weigh in; the empty program is measured the same way. IP IDs
	// are 16 bits, so at most 20000 distinct trains are used.
	singles := func(b *testing.B) int { return min(b.N, 20000) }
	b.Run("first_fragment_new_train", func(b *testing.B) {
		n := singles(b)
		e := singleNs(b, empty, func(i int) []byte { return withID(fr[0], uint16(1000+i)) }, n)
		ns := singleNs(b, h.ingress, func(i int) []byte { return withID(fr[0], uint16(1000+i)) }, n)
		b.ReportMetric(ns, "ns/pkt")
		b.ReportMetric(e, "empty_ns/pkt")
		b.ReportMetric(ns/e, "x_empty")
	})
	b.Run("middle_fragment_update", func(b *testing.B) {
		n := singles(b)
		three := frames4(1, udp(500, 500, ike(2, 35, 1, 4000)), 1480)
		for i := 0; i < n; i++ {
			h.runOn(h.ingress, withID(three[2], uint16(30000+i)))
		}
		e := singleNs(b, empty, func(i int) []byte { return withID(three[1], uint16(30000+i)) }, n)
		ns := singleNs(b, h.ingress, func(i int) []byte { return withID(three[1], uint16(30000+i)) }, n)
		b.ReportMetric(ns, "ns/pkt")
		b.ReportMetric(e, "empty_ns/pkt")
		b.ReportMetric(ns/e, "x_empty")
	})
}
