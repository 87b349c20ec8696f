package capture

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/test/packet"
)

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

// feed decodes raw IP packets and adds them; packet i gets frame i+1 and
// time t0 + i ms unless times is given.
func feed(t *testing.T, d *Defragmenter, pkts [][]byte, order []int) []*obs.Datagram {
	t.Helper()
	var out []*obs.Datagram
	for n, i := range order {
		p := rawPacket(t, pkts[i], t0.Add(time.Duration(n)*time.Millisecond), i+1)
		out = d.Add(&p, out)
	}
	return out
}

func TestDefragAllOrders(t *testing.T) {
	payload := pattern(3000, 9)
	udp := packet.UDPBytes(4500, 4500, payload, 0)
	base4 := packet.IPv4{Src: addrA, Dst: addrB, ID: 0x1b1e, Proto: 17}
	base6 := packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment}
	sets := map[string][][]byte{
		"v4x3": packet.SplitIPv4(base4, udp, 1440, 2880),
		"v4x4": packet.SplitIPv4(base4, udp, 800, 1600, 2400),
		"v6x3": packet.SplitIPv6(base6, nil, protoUDP, 0x11223344, udp, 1232, 2464),
		"v6x4 with HbH": packet.SplitIPv6(packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoHopByHop}, packet.OptionsHeader(protoFragment, 0),
			protoUDP, 7, udp, 1000, 2000, 2504),
	}
	for name, pkts := range sets {
		for _, order := range permutations(len(pkts)) {
			t.Run(fmt.Sprintf("%s/%v", name, order), func(t *testing.T) {
				d := NewDefragmenter(DefragOptions{})
				out := feed(t, d, pkts, order)
				if len(out) != 1 {
					t.Fatalf("%d datagrams", len(out))
				}
				dg := out[0]
				if !dg.Complete || dg.Length != len(payload) || !bytes.Equal(dg.Payload, payload) || dg.TotalLen != len(udp) ||
					dg.Proto != 17 || dg.Src.Port() != 4500 || dg.Dst.Port() != 4500 || len(dg.Missing) != 0 || dg.Truncated {
					t.Fatalf("datagram complete=%v len=%d payload ok=%v total=%d proto=%d missing=%v",
						dg.Complete, dg.Length, bytes.Equal(dg.Payload, payload), dg.TotalLen, dg.Proto, dg.Missing)
				}
				// Source is the first fragment's (frame 1), times are those of
				// the first and last packets fed.
				if dg.Frame != 1 || !dg.Time.Equal(t0) || !dg.Last.Equal(t0.Add(time.Duration(len(pkts)-1)*time.Millisecond)) {
					t.Errorf("frame %d time %v last %v", dg.Frame, dg.Time, dg.Last)
				}
				if len(dg.Frags) != len(pkts) {
					t.Fatalf("%d frags", len(dg.Frags))
				}
				for i, f := range dg.Frags {
					if f.Frame != i+1 || (i > 0 && f.Offset <= dg.Frags[i-1].Offset) || f.MF != (i < len(pkts)-1) || f.IPLen != len(pkts[i]) {
						t.Errorf("frag %d: %+v", i, f)
					}
				}
				st := d.Stats()
				if st.Reassembled != 1 || st.InFlight != 0 || st.Buffered != 0 || st.Fragments != len(pkts) {
					t.Errorf("stats %+v", st)
				}
			})
		}
	}
}

func TestDefragDuplicates(t *testing.T) {
	payload := pattern(2000, 1)
	pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 5, Proto: 17}, packet.UDPBytes(500, 500, payload, 0), 800, 1600)
	d := NewDefragmenter(DefragOptions{})
	// Every fragment twice, the first one three times.
	out := feed(t, d, pkts, []int{0, 0, 1, 0, 1, 2})
	if len(out) != 1 || !out[0].Complete || !bytes.Equal(out[0].Payload, payload) || len(out[0].Frags) != 3 {
		t.Fatalf("got %d datagrams", len(out))
	}
	if st := d.Stats(); st.Duplicates != 3 || st.Fragments != 3 {
		t.Errorf("stats %+v", st)
	}
	// A copy arriving after completion starts a new train, which ends
	// incomplete.
	out = feed(t, d, pkts, []int{2})
	out = d.Flush(out)
	if len(out) != 1 || out[0].Complete || !slices.Equal(out[0].Missing, []obs.Range{{Start: 0, End: 1600}}) || out[0].Length != -1 {
		t.Errorf("late copy: %+v", out)
	}
}

func TestDefragOverlap(t *testing.T) {
	udp := packet.UDPBytes(500, 500, pattern(64, 3), 0) // 72 bytes
	base := packet.IPv4{Src: addrA, Dst: addrB, ID: 77, Proto: 17}
	mk := func(off, end int, mf bool, data []byte) []byte {
		h := base
		h.Offset, h.MF, h.Payload = off, mf, data[off:end]
		return h.Bytes()
	}
	t.Run("same bytes", func(t *testing.T) {
		d := NewDefragmenter(DefragOptions{})
		out := feed(t, d, [][]byte{mk(0, 32, true, udp), mk(16, 48, true, udp), mk(48, 72, false, udp)}, []int{0, 1, 2})
		if len(out) != 1 || !out[0].Complete || !bytes.Equal(out[0].Payload, udp[8:]) {
			t.Fatalf("out %v", out)
		}
		if st := d.Stats(); st.Overlapping != 1 || st.OverlapDropped != 0 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("different bytes", func(t *testing.T) {
		evil := slices.Clone(udp)
		evil[28] ^= 0xff // inside the overlap [24, 32)
		d := NewDefragmenter(DefragOptions{})
		out := feed(t, d, [][]byte{mk(0, 32, true, udp), mk(24, 48, true, evil), mk(48, 72, false, udp)}, []int{0, 1, 2})
		out = d.Flush(out)
		// The train is dropped at the overlap; the last fragment starts a
		// fresh train that never completes.
		if st := d.Stats(); st.OverlapDropped != 1 || st.Reassembled != 0 {
			t.Errorf("stats %+v", st)
		}
		if len(out) != 1 || out[0].Complete || len(out[0].Frags) != 1 || out[0].Frags[0].Offset != 48 {
			t.Errorf("out %+v", out)
		}
	})
	t.Run("different bytes outside the overlap are fine", func(t *testing.T) {
		other := slices.Clone(udp)
		other[60] ^= 0xff // beyond the first fragment's end
		d := NewDefragmenter(DefragOptions{})
		out := feed(t, d, [][]byte{mk(0, 32, true, udp), mk(24, 72, false, other)}, []int{0, 1})
		if len(out) != 1 || !out[0].Complete || out[0].Payload[52] != other[60] {
			t.Errorf("out %v", out)
		}
	})
	t.Run("two last fragments", func(t *testing.T) {
		d := NewDefragmenter(DefragOptions{})
		feed(t, d, [][]byte{mk(16, 40, false, udp), mk(16, 48, false, udp)}, []int{0, 1})
		if st := d.Stats(); st.ConflictDropped != 1 || st.InFlight != 0 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("data past the last fragment", func(t *testing.T) {
		d := NewDefragmenter(DefragOptions{})
		feed(t, d, [][]byte{mk(48, 72, false, udp), mk(64, 80, true, slices.Concat(udp, make([]byte, 8)))}, []int{0, 1})
		if st := d.Stats(); st.ConflictDropped != 1 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestDefragMissing leaves out each fragment of four and checks the
// incomplete datagram at Flush.
func TestDefragMissing(t *testing.T) {
	payload := pattern(3992, 4) // UDP length 4000
	udp := packet.UDPBytes(4500, 4500, payload, 0)
	pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17}, udp, 1000, 2000, 3000)
	cases := []struct {
		drop    int
		missing []obs.Range
		length  int
		prefix  int // UDP payload bytes known
		total   int
	}{
		{0, []obs.Range{{Start: 0, End: 1000}}, -1, 0, 4000},
		{1, []obs.Range{{Start: 1000, End: 2000}}, 3992, 992, 4000},
		{2, []obs.Range{{Start: 2000, End: 3000}}, 3992, 1992, 4000},
		{3, []obs.Range{{Start: 3000, End: -1}}, 3992, 2992, -1},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint("missing ", c.drop), func(t *testing.T) {
			var order []int
			for i := range pkts {
				if i != c.drop {
					order = append(order, i)
				}
			}
			d := NewDefragmenter(DefragOptions{})
			if out := feed(t, d, pkts, order); len(out) != 0 {
				t.Fatalf("emitted before the end: %v", out)
			}
			out := d.Flush(nil)
			if len(out) != 1 {
				t.Fatalf("%d datagrams", len(out))
			}
			dg := out[0]
			if dg.Complete || !slices.Equal(dg.Missing, c.missing) || dg.Length != c.length || dg.TotalLen != c.total ||
				!bytes.Equal(dg.Payload, payload[:c.prefix]) || len(dg.Frags) != 3 || dg.Truncated {
				t.Errorf("complete=%v missing=%v length=%d total=%d prefix=%d frags=%d",
					dg.Complete, dg.Missing, dg.Length, dg.TotalLen, len(dg.Payload), len(dg.Frags))
			}
			wantSrc := 1
			if c.drop == 0 {
				wantSrc = 2 // first seen when the header is missing
			}
			if dg.Frame != wantSrc {
				t.Errorf("source frame %d, want %d", dg.Frame, wantSrc)
			}
			if c.drop == 0 && (dg.Src.Port() != 0 || dg.Proto != 17) {
				t.Errorf("ports without a UDP header: %v proto %d", dg.Src, dg.Proto)
			}
			if st := d.Stats(); st.Flushed != 1 || st.InFlight != 0 || st.Buffered != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	// Only the last fragment: both ends unknown before it.
	d := NewDefragmenter(DefragOptions{})
	feed(t, d, pkts, []int{3})
	dg := d.Flush(nil)[0]
	if !slices.Equal(dg.Missing, []obs.Range{{Start: 0, End: 3000}}) || dg.TotalLen != 4000 || dg.Length != -1 {
		t.Errorf("last only: missing %v total %d", dg.Missing, dg.TotalLen)
	}
	// First and last with a gap in between.
	d = NewDefragmenter(DefragOptions{})
	feed(t, d, pkts, []int{0, 2})
	dg = d.Flush(nil)[0]
	if !slices.Equal(dg.Missing, []obs.Range{{Start: 1000, End: 2000}, {Start: 3000, End: -1}}) {
		t.Errorf("0,2: missing %v", dg.Missing)
	}
	if dg.Incomplete != obs.TrainEndOfInput {
		t.Errorf("flushed train: reason %v, want end of input", dg.Incomplete)
	}
}

func TestDefragTimeout(t *testing.T) {
	pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17}, packet.UDPBytes(500, 500, pattern(100, 1), 0), 64)
	other := packet.IPv4{Src: addrB, Dst: addrA, ID: 2, Proto: 17, Payload: packet.UDPBytes(500, 500, nil, 0)}.Bytes()
	add := func(d *Defragmenter, b []byte, ts time.Time) []*obs.Datagram {
		p := rawPacket(t, b, ts, 1)
		return d.Add(&p, nil)
	}

	d := NewDefragmenter(DefragOptions{})
	add(d, pkts[0], t0)
	if out := add(d, other, t0.Add(30*time.Second)); len(out) != 1 {
		t.Fatalf("expired at exactly the timeout: %d", len(out))
	}
	out := add(d, other, t0.Add(30*time.Second+time.Nanosecond))
	if len(out) != 2 || out[0].Complete || out[0].IPID != 1 || out[1].IPID != 2 {
		t.Fatalf("timeout: %+v", out)
	}
	if out[0].Incomplete != obs.TrainTimeout || out[1].Incomplete != obs.NotIncomplete {
		t.Errorf("reasons %v, %v; want timeout, none", out[0].Incomplete, out[1].Incomplete)
	}
	if st := d.Stats(); st.TimedOut != 1 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
	// The second fragment, late, makes a new train.
	if out := add(d, pkts[1], t0.Add(31*time.Second)); len(out) != 0 || d.Stats().InFlight != 1 {
		t.Errorf("late fragment: %v", out)
	}

	// Time going backwards neither expires nor breaks anything; the clock
	// stays at its latest value.
	d = NewDefragmenter(DefragOptions{Timeout: time.Second})
	add(d, other, t0.Add(time.Hour))
	add(d, pkts[0], t0)
	add(d, other, t0.Add(-time.Hour))
	if d.Stats().InFlight != 1 {
		t.Error("expired by a backwards timestamp")
	}
	out = add(d, pkts[1], t0.Add(-2*time.Hour))
	if len(out) != 1 || !out[0].Complete || out[0].Time != t0 || out[0].Last != t0.Add(-2*time.Hour) {
		t.Errorf("backwards completion: %+v", out)
	}
	out = d.Advance(t0.Add(time.Hour+2*time.Second), nil)
	if len(out) != 0 {
		t.Errorf("advance: %v", out)
	}
	add(d, pkts[0], time.Time{})
	if out = d.Advance(t0.Add(time.Hour+2*time.Second), nil); len(out) != 0 {
		t.Errorf("deadline counts from the clock at creation, not the packet's own time")
	}
	if out = d.Advance(t0.Add(time.Hour+4*time.Second), nil); len(out) != 1 {
		t.Errorf("advance past deadline: %v", out)
	}

	// All-zero timestamps: nothing ever times out.
	d = NewDefragmenter(DefragOptions{})
	for i := range 100 {
		h := packet.IPv4{Src: addrA, Dst: addrB, ID: uint16(i), Proto: 17, MF: true, Payload: make([]byte, 8)}
		add(d, h.Bytes(), time.Unix(0, 0))
	}
	if st := d.Stats(); st.TimedOut != 0 || st.InFlight != 100 {
		t.Errorf("zero timestamps: %+v", st)
	}
}

// TestDefragFlood: 100k distinct trains that never complete stay within
// MaxTrains; every eviction is counted and reported.
func TestDefragFlood(t *testing.T) {
	d := NewDefragmenter(DefragOptions{})
	var out []*obs.Datagram
	evicted := 0
	b := packet.IPv4{Src: addrA, Dst: addrB, Proto: 17, MF: true, Payload: make([]byte, 16)}.Bytes()
	p := rawPacket(t, b, time.Time{}, 1)
	for i := range 100_000 {
		p.IPID = uint32(i) // distinct trains; the ID field is 16 bits, the key is not
		p.Frame = i + 1
		out = d.Add(&p, out[:0])
		evicted += len(out)
		if n := d.Stats().InFlight; n > DefaultMaxTrains {
			t.Fatalf("%d trains in flight", n)
		}
	}
	st := d.Stats()
	if st.Evicted != 100_000-DefaultMaxTrains || evicted != st.Evicted || st.PeakInFlight != DefaultMaxTrains || st.Buffered != 16*DefaultMaxTrains {
		t.Errorf("stats %+v, %d emitted", st, evicted)
	}
	if out[0].Incomplete != obs.TrainEvicted {
		t.Errorf("evicted train: reason %v", out[0].Incomplete)
	}
	if out = d.Flush(out[:0]); len(out) != DefaultMaxTrains || out[0].Frame != 100_000-DefaultMaxTrains+1 {
		t.Errorf("flush: %d, first frame %d", len(out), out[0].Frame)
	}
}

func TestDefragLimits(t *testing.T) {
	t.Run("max fragments", func(t *testing.T) {
		d := NewDefragmenter(DefragOptions{MaxFragments: 4})
		var pkts [][]byte
		for i := range 6 {
			pkts = append(pkts, packet.IPv4{Src: addrA, Dst: addrB, ID: 3, Proto: 17, Offset: 8 * i, MF: true, Payload: make([]byte, 8)}.Bytes())
		}
		feed(t, d, pkts, []int{0, 1, 2, 3, 4, 5})
		if st := d.Stats(); st.TooManyFragments != 1 || st.InFlight != 1 || st.Buffered != 8 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("buffered bytes", func(t *testing.T) {
		d := NewDefragmenter(DefragOptions{MaxBufferedBytes: 5000})
		var out []*obs.Datagram
		for i := range 10 {
			b := packet.IPv4{Src: addrA, Dst: addrB, ID: uint16(i), Proto: 50, MF: true, Payload: make([]byte, 1480)}.Bytes()
			p := rawPacket(t, b, t0, i+1)
			out = d.Add(&p, out)
			if st := d.Stats(); st.Buffered > 5000 {
				t.Fatalf("buffered %d", st.Buffered)
			}
		}
		if st := d.Stats(); st.Evicted != 7 || st.InFlight != 3 || len(out) != 7 || out[0].IPID != 0 {
			t.Errorf("stats %+v, %d out", st, len(out))
		}
	})
	t.Run("one fragment over budget", func(t *testing.T) {
		d := NewDefragmenter(DefragOptions{MaxBufferedBytes: 100})
		feed(t, d, [][]byte{packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 50, MF: true, Payload: make([]byte, 200)}.Bytes()}, []int{0})
		if st := d.Stats(); st.InFlight != 0 || st.Buffered != 0 || st.Evicted != 1 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("max datagram", func(t *testing.T) {
		d := NewDefragmenter(DefragOptions{MaxDatagram: 2000})
		pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17}, packet.UDPBytes(500, 500, pattern(3000, 1), 0), 1480)
		feed(t, d, pkts, []int{0, 1})
		if st := d.Stats(); st.Oversize != 1 || st.InFlight != 0 || st.Reassembled != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestDefragInterfaces: the same train captured in and out of a router
// reassembles twice; direction and interface both separate trains.
func TestDefragInterfaces(t *testing.T) {
	payload := pattern(2000, 5)
	pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 42, Proto: 17}, packet.UDPBytes(4500, 4500, payload, 0), 1480)
	d := NewDefragmenter(DefragOptions{})
	var out []*obs.Datagram
	srcs := []obs.Source{{Ifindex: 2, Dir: obs.DirIngress}, {Ifindex: 3, Dir: obs.DirEgress}, {Ifindex: 2, Dir: obs.DirEgress}}
	for i, b := range [][]byte{pkts[0], pkts[0], pkts[0], pkts[1], pkts[1], pkts[1]} {
		p := rawPacket(t, b, t0, i+1)
		p.Ifindex, p.Dir = srcs[i%3].Ifindex, srcs[i%3].Dir
		out = d.Add(&p, out)
	}
	if len(out) != 3 {
		t.Fatalf("%d datagrams", len(out))
	}
	for i, dg := range out {
		if !dg.Complete || !bytes.Equal(dg.Payload, payload) || dg.Source.Ifindex != srcs[i].Ifindex || dg.Dir != srcs[i].Dir || dg.Frame != i+1 {
			t.Errorf("train %d: %+v", i, dg.Source)
		}
	}
}

// TestDefragIPv6 covers IPv6 specifics: a Destination Options header after
// the Fragment header, proto left out of the key, and ESP fragments.
func TestDefragIPv6(t *testing.T) {
	payload := pattern(2500, 8)
	part := packet.Cat(packet.OptionsHeader(protoUDP, 1), packet.UDPBytes(500, 500, payload, 0))
	pkts := packet.SplitIPv6(packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment}, nil, protoDestOpts, 99, part, 1232)
	// RFC 8200: Next Header of non-first fragments may differ; only the
	// first fragment's counts.
	pkts[1][40] = 253
	d := NewDefragmenter(DefragOptions{})
	out := feed(t, d, pkts, []int{1, 0})
	if len(out) != 1 {
		t.Fatalf("%d datagrams", len(out))
	}
	dg := out[0]
	if dg.IPVersion != 6 || dg.Proto != 17 || dg.IPID != 99 || dg.Src.Port() != 500 || !bytes.Equal(dg.Payload, payload) || dg.TotalLen != len(part) || dg.Frame != 1 {
		t.Errorf("v6 datagram: proto %d id %d %v payload ok %v total %d frame %d", dg.Proto, dg.IPID, dg.Src, bytes.Equal(dg.Payload, payload), dg.TotalLen, dg.Frame)
	}

	esp := pattern(3000, 2)
	pkts = packet.SplitIPv6(packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment}, nil, protoESP, 100, esp, 1448)
	out = feed(t, NewDefragmenter(DefragOptions{}), pkts, []int{0, 1})
	if len(out) != 1 || out[0].Proto != protoESP || !bytes.Equal(out[0].Payload, esp) || out[0].Length != 3000 {
		t.Errorf("ESP: %+v", out)
	}
}

// TestDefragSnapped: a capture snapped every fragment; the train completes by
// the headers and reports what it knows.
func TestDefragSnapped(t *testing.T) {
	payload := pattern(2000, 6)
	pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17}, packet.UDPBytes(4500, 4500, payload, 0), 1480)
	d := NewDefragmenter(DefragOptions{})
	var out []*obs.Datagram
	for i, b := range pkts {
		ci := gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 96, Length: len(b)}
		p, err := DecodeFrame(layers.LinkTypeRaw, b[:96], ci)
		if err != nil || !p.Snapped {
			t.Fatalf("decode: %v", err)
		}
		p.Frame = i + 1
		out = d.Add(&p, out)
	}
	if len(out) != 1 {
		t.Fatalf("%d datagrams", len(out))
	}
	dg := out[0]
	if !dg.Complete || !dg.Truncated || dg.Length != 2000 || !bytes.Equal(dg.Payload, payload[:96-20-8]) || dg.Frags[1].Len != 528 {
		t.Errorf("complete=%v truncated=%v length=%d payload=%d frags=%+v", dg.Complete, dg.Truncated, dg.Length, len(dg.Payload), dg.Frags)
	}
}

// TestDefragBadUDP: a reassembled UDP header whose length does not fit is
// dropped and counted.
func TestDefragBadUDP(t *testing.T) {
	udp := packet.UDPBytes(500, 500, pattern(2000, 1), 3000)
	pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17}, udp, 1480)
	d := NewDefragmenter(DefragOptions{})
	if out := feed(t, d, pkts, []int{0, 1}); len(out) != 0 {
		t.Errorf("emitted %v", out)
	}
	if st := d.Stats(); st.BadUDP != 1 || st.Reassembled != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestDefragAllocs: the steady state recycles trains; allocations per
// reassembled datagram are the datagram itself, its fragment list and
// payload.
func TestDefragAllocs(t *testing.T) {
	pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17}, packet.UDPBytes(4500, 4500, pattern(4000, 1), 0), 1480, 2960)
	ps := make([]Packet, len(pkts))
	for i, b := range pkts {
		ps[i] = rawPacket(t, b, t0, i+1)
	}
	d := NewDefragmenter(DefragOptions{})
	out := make([]*obs.Datagram, 0, 4)
	n := testing.AllocsPerRun(200, func() {
		out = out[:0]
		for i := range ps {
			out = d.Add(&ps[i], out)
		}
		if len(out) != 1 {
			t.Fatal("no datagram")
		}
	})
	if n > 3 {
		t.Errorf("%v allocations per reassembly", n)
	}
}
