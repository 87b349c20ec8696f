package ebpf

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// frames4 fragments an IPv4 UDP datagram into Ethernet frames.
func frames4(id uint16, u []byte, size int) [][]byte {
	var out [][]byte
	for _, p := range split(u, size) {
		out = append(out, cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: id, off: p.off, mf: p.mf}.build(p.data)))
	}
	return out
}

func frames6(id uint32, u []byte, size int) [][]byte {
	var out [][]byte
	for _, p := range split(u, size) {
		out = append(out, cat(eth(0x86dd), ipv6(cli6, srv6, 44, frag6(17, p.off, p.mf, id, p.data))))
	}
	return out
}

func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

func (h *harness) train(k tcTrainKey) (tcTrain, bool) {
	var v tcTrain
	err := h.o.trains.Lookup(&k, &v)
	return v, err == nil
}

func key4(id uint16) tcTrainKey {
	k := tcTrainKey{Id: uint32(id), Proto: 17, Family: 4}
	s, d := cli4.As4(), srv4.As4()
	copy(k.Saddr[:], s[:])
	copy(k.Daddr[:], d[:])
	return k
}

func checkComplete(t *testing.T, d *obs.Datagram, msg []byte, nfrags int) {
	t.Helper()
	if d == nil {
		t.Fatal("no datagram")
	}
	if !d.Complete || len(d.Frags) != nfrags || d.Length != len(msg) || d.TotalLen != len(msg)+8 || len(d.Missing) != 0 {
		t.Fatalf("complete=%v frags=%d length=%d total=%d missing=%v", d.Complete, len(d.Frags), d.Length, d.TotalLen, d.Missing)
	}
	for i, f := range d.Frags {
		if i > 0 && f.Offset <= d.Frags[i-1].Offset {
			t.Errorf("frags not in offset order: %+v", d.Frags)
		}
		if f.MF != (i < nfrags-1) {
			t.Errorf("frag %d MF=%v", i, f.MF)
		}
	}
	if !d.Truncated && !bytes.Equal(d.Payload, msg) {
		t.Errorf("payload differs")
	}
	if d.Truncated && !bytes.HasPrefix(msg, d.Payload) {
		t.Errorf("payload is not a prefix of the message")
	}
}

// Every arrival order of a three-fragment IKE_AUTH completes the train
// exactly once and yields one datagram record.
func TestFragmentTrainsEveryOrder(t *testing.T) {
	h := newHarness(t, Options{})
	msg := ike(2, 35, 1, 3500)
	u := udp(500, 500, msg)
	for n, perm := range permutations(3) {
		id := uint16(100 + n)
		fr := frames4(id, u, 1480)
		for _, i := range perm {
			h.run(fr[i])
		}
		v, ok := h.train(key4(id))
		if !ok {
			t.Fatalf("order %v: no train", perm)
		}
		if v.Flags&tcTrainFlagTF_COMPLETE == 0 || v.Flags&tcTrainFlagTF_IKE == 0 || v.Nfrags != 3 || v.Bytes != uint32(len(u)) || v.Total != uint32(len(u)) || v.EndMax != uint32(len(u)) || v.Sport != 500 || v.UdpLen != uint16(len(u)) {
			t.Fatalf("order %v: train %+v", perm, v)
		}
		if !bytes.Equal(v.Ike[:], msg[:28]) {
			t.Errorf("order %v: IKE header in train %x", perm, v.Ike)
		}
		checkComplete(t, h.records(1)[0].Datagram, msg, 3)
	}
	h.expect(map[CounterID]uint64{
		CounterFragFirst: 6, CounterFragMiddle: 6, CounterFragLast: 6,
		CounterIKEv2: 6, CounterLargeIKE: 6,
		CounterTrainsStarted: 6, CounterTrainsCompleted: 6,
	})
	h.none()
}

func TestFragmentTrainsIPv6(t *testing.T) {
	h := newHarness(t, Options{})
	msg := cat([]byte{0, 0, 0, 0}, ike(2, 35, 1, 5000))
	u := udp(4500, 4500, msg)
	fr := frames6(0xdeadbeef, u, 1232)
	order := []int{3, 1, 4, 0, 2}
	for _, i := range order {
		h.run(fr[i])
	}
	d := h.records(1)[0].Datagram
	checkComplete(t, d, msg, 5)
	if d.IPVersion != 6 || d.IPID != 0xdeadbeef || d.Dst.Port() != 4500 || !d.Truncated || len(d.Payload) != 1232-8 {
		t.Errorf("v6 record: version %d id %#x port %d truncated %v payload %d", d.IPVersion, d.IPID, d.Dst.Port(), d.Truncated, len(d.Payload))
	}
	h.expect(map[CounterID]uint64{
		CounterFragFirst: 1, CounterFragMiddle: 3, CounterFragLast: 1,
		CounterIKEv2: 1, CounterLargeIKE: 1, CounterTrainsStarted: 1, CounterTrainsCompleted: 1,
	})
}

func TestFragmentDuplicatesOverlapsAndLate(t *testing.T) {
	h := newHarness(t, Options{})
	msg := ike(2, 35, 1, 2900)
	u := udp(500, 500, msg)
	fr := frames4(200, u, 1480) // [0,1480) [1480,2908)
	h.run(fr[0])
	h.run(fr[0]) // duplicate
	// A middle piece overlapping both: [1000, 2000).
	over := cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 200, off: 1000, mf: true}.build(u[1000:2000]))
	h.run(over)
	h.run(fr[1]) // covers the rest, but receivers discard a partially overlapping train
	h.run(fr[1]) // a duplicate of the last fragment
	v, _ := h.train(key4(200))
	if v.Flags&(tcTrainFlagTF_COMPLETE|tcTrainFlagTF_OVERLAP|tcTrainFlagTF_DUP) != tcTrainFlagTF_OVERLAP|tcTrainFlagTF_DUP || v.Nfrags != 3 {
		t.Fatalf("train flags %#x nfrags %d", v.Flags, v.Nfrags)
	}

	// A fragment inside a recorded one is a duplicate, not an overlap: the
	// train completes as a receiver would reassemble it.
	fr3 := frames4(202, u, 1480)
	h.run(fr3[0])
	h.run(cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 202, off: 8, mf: true}.build(u[8:800])))
	h.run(fr3[1])
	v3, _ := h.train(key4(202))
	if v3.Flags&(tcTrainFlagTF_COMPLETE|tcTrainFlagTF_OVERLAP|tcTrainFlagTF_DUP) != tcTrainFlagTF_COMPLETE|tcTrainFlagTF_DUP || v3.Nfrags != 2 {
		t.Fatalf("contained fragment: train flags %#x nfrags %d", v3.Flags, v3.Nfrags)
	}
	checkComplete(t, h.records(1)[0].Datagram, msg, 2)
	h.run(fr3[1]) // late

	// Overlap plus a hole: [0,1480) [1000,2000) last [2400, 2908) never completes.
	fr2 := frames4(201, u, 1200) // [0,1200) [1200,2400) [2400,2908)
	h.run(fr2[0])
	h.run(cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 201, off: 800, mf: true}.build(u[800:1600])))
	h.run(fr2[2])
	v2, _ := h.train(key4(201))
	if v2.Flags&tcTrainFlagTF_COMPLETE != 0 || v2.Flags&tcTrainFlagTF_OVERLAP == 0 {
		t.Fatalf("gapped train flags %#x", v2.Flags)
	}
	h.expect(map[CounterID]uint64{
		CounterFragFirst: 4, CounterFragMiddle: 3, CounterFragLast: 5,
		CounterIKEv2: 4, CounterLargeIKE: 4,
		CounterTrainsStarted: 3, CounterTrainsCompleted: 1,
		CounterDupFrags: 3, CounterOverlapFrags: 3, CounterLateFrags: 1,
	})
}

func TestFragmentBogus(t *testing.T) {
	h := newHarness(t, Options{})
	u := udp(500, 500, ike(2, 35, 1, 3000))
	// Non-last fragment whose length is not a multiple of 8.
	h.run(cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 300, off: 0, mf: true}.build(u[:1001])))
	// Fragment reaching past 64 KiB.
	h.run(cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 301, off: 65000, mf: false}.build(u[:1000])))
	// First fragment whose UDP length is shorter than the fragment.
	bad := append([]byte{}, u[:1480]...)
	bad[4], bad[5] = 0, 100
	h.run(cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 302, mf: true}.build(bad)))
	// Two "last" fragments with different ends.
	h.run(cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 303, off: 1480}.build(u[1480:2000])))
	h.run(cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 303, off: 2000}.build(u[2000:2400])))
	h.expect(map[CounterID]uint64{
		CounterFragFirst: 2, CounterFragLast: 3, CounterMalformed: 4, CounterTrainsStarted: 1,
	})
	if v, _ := h.train(key4(303)); v.Flags&tcTrainFlagTF_BAD == 0 {
		t.Errorf("second last fragment not flagged: %#x", v.Flags)
	}
	h.none()
}

// Fragments of other UDP traffic and of other protocols are counted; only
// UDP creates trains, and non-IKE ones are never reported.
func TestFragmentsOfOtherTraffic(t *testing.T) {
	// The test sweeps by hand with a clock it chooses; an hour keeps the
	// observer's own sweeper, which runs on real time, out of it however
	// slow the machine (an emulated guest).
	h := newHarness(t, Options{TrainTimeout: time.Hour})
	u := udp(5353, 53, make([]byte, 3000))
	fr := frames4(400, u, 1480)
	for _, f := range fr {
		h.run(f)
	}
	// ESP-in-UDP fragments: a train, but not IKE.
	esp := udp(4500, 4500, cat([]byte{0, 0, 0x10, 1}, make([]byte, 2000)))
	for _, f := range frames4(401, esp, 1480)[:1] {
		h.run(f)
	}
	icmp := cat([]byte{8, 0, 0, 0, 0, 1, 0, 1}, make([]byte, 2000))
	for _, p := range split(icmp, 1480) {
		h.run(cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 1, id: 402, off: p.off, mf: p.mf}.build(p.data)))
	}
	h.expect(map[CounterID]uint64{
		CounterFragFirst: 3, CounterFragMiddle: 1, CounterFragLast: 2,
		CounterESPInUDP: 1, CounterTrainsStarted: 2, CounterTrainsCompleted: 1,
	})
	// A sweep as if the timeout had passed: no sleeping, so a slow machine
	// (an emulated guest) cannot change what the test sees.
	h.o.sweep(monoNow() + uint64(2*time.Hour))
	h.none()
	if c := h.counters(0); c[CounterTrainsIncomplete].Packets != 1 {
		t.Errorf("incomplete %d, want the ESP train", c[CounterTrainsIncomplete].Packets)
	}
}

// A train missing its middle fragment is reported by the sweep after the
// timeout, with the missing range; one missing its first fragment too,
// with unknown length.
func TestIncompleteTrains(t *testing.T) {
	// Swept by hand (see TestFragmentsOfOtherTraffic).
	h := newHarness(t, Options{TrainTimeout: time.Hour})
	msg := cat([]byte{0, 0, 0, 0}, ike(2, 35, 1, 5000))
	u := udp(4500, 4500, msg)
	fr := frames4(500, u, 1480) // 4 fragments, last ends at 5012
	h.run(fr[0])
	h.run(fr[2])
	h.run(fr[3])
	fr2 := frames4(501, u, 1480)
	h.run(fr2[1])
	h.run(fr2[3])
	h.o.sweep(monoNow())
	h.none() // not yet timed out
	h.o.sweep(monoNow() + uint64(2*time.Hour))
	recs := h.records(2)
	byID := map[uint32]*obs.Datagram{}
	for _, r := range recs {
		byID[r.Datagram.IPID] = r.Datagram
	}
	d := byID[500]
	if d == nil || d.Complete || d.Length != len(msg) || d.TotalLen != len(u) || len(d.Frags) != 3 ||
		fmt.Sprint(d.Missing) != "[{1480 2960}]" || len(d.Payload) != 1472 || !d.Truncated || d.Src.Port() != 4500 {
		t.Fatalf("incomplete train with first: %+v", d)
	}
	d2 := byID[501]
	if d2 == nil || d2.Length != -1 || d2.Payload != nil || fmt.Sprint(d2.Missing) != "[{0 1480} {2960 4440}]" || d2.Src.Port() != 0 {
		t.Fatalf("incomplete train without first: %+v", d2)
	}
	if _, ok := h.train(key4(500)); ok {
		t.Error("swept train still in the map")
	}
	c := h.counters(0)
	if c[CounterTrainsIncomplete].Packets != 2 || c[CounterTrainsStarted].Packets != 2 {
		t.Errorf("incomplete %d started %d", c[CounterTrainsIncomplete].Packets, c[CounterTrainsStarted].Packets)
	}
}
