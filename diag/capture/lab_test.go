package capture

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// Lab topology (shared/lab/README.md): mid forwards between mid-cli
// (ifindex 2) and mid-srv (ifindex 3); `tcpdump -i any` records every
// forwarded packet as it comes in on one and goes out on the other.
var (
	labCli = netip.MustParseAddr("10.99.1.2")
	labSrv = netip.MustParseAddr("10.99.2.2")
	labMid = netip.MustParseAddr("10.99.2.1")
)

const (
	ifMidCli = 2
	ifMidSrv = 3
)

type trainSeen struct {
	ifindex int
	dir     obs.Direction
	id      uint32
}

func trainsFrom(ds []*obs.Datagram, src netip.Addr) []trainSeen {
	var out []trainSeen
	for _, d := range ds {
		if d.Src.Addr() == src {
			out = append(out, trainSeen{d.Ifindex, d.Dir, d.IPID})
		}
	}
	return out
}

// TestLabA: nothing drops fragments, so the IKE_AUTH request and response
// are each reassembled twice, once per interface of mid.
func TestLabA(t *testing.T) {
	recs, st := readAll(t, labPath(t, "a.pcap"))
	if st.Frames != 24 || st.Decoded != 24 {
		t.Fatalf("frames %d decoded %d", st.Frames, st.Decoded)
	}
	frags := fragmented(recs)
	if len(frags) != 4 {
		t.Fatalf("%d reassembled datagrams, want 4", len(frags))
	}
	req := []*obs.Datagram{}
	resp := []*obs.Datagram{}
	for _, d := range frags {
		if !d.Complete || len(d.Frags) != 4 || d.Proto != 17 || d.Src.Port() != 4500 || d.Dst.Port() != 4500 {
			t.Errorf("train %#x on %d: complete=%v frags=%d %v -> %v", d.IPID, d.Ifindex, d.Complete, len(d.Frags), d.Src, d.Dst)
		}
		for _, f := range d.Frags {
			if f.Ifindex != d.Ifindex || f.Dir != d.Dir {
				t.Errorf("train %#x mixes interfaces: %+v", d.IPID, f.Source)
			}
		}
		switch d.Src.Addr() {
		case labCli:
			req = append(req, d)
		case labSrv:
			resp = append(resp, d)
		}
	}
	// Request: UDP length 5116 (IKE 5104 + 4-byte marker + 8), IP 5136 in
	// 1500, 1500, 1500, 696.
	check := func(name string, ds []*obs.Datagram, inIf, outIf, ulen int, lastIP int) {
		t.Helper()
		if len(ds) != 2 {
			t.Fatalf("%s: %d trains, want 2", name, len(ds))
		}
		in, out := ds[0], ds[1]
		if in.Ifindex != inIf || in.Dir != obs.DirIngress || out.Ifindex != outIf || out.Dir != obs.DirEgress {
			t.Errorf("%s: trains on %d/%v and %d/%v, want %d in and %d out", name, in.Ifindex, in.Dir, out.Ifindex, out.Dir, inIf, outIf)
		}
		if in.IPID != out.IPID || !bytes.Equal(in.Payload, out.Payload) {
			t.Errorf("%s: the two copies differ", name)
		}
		for _, d := range ds {
			if d.Length != ulen-8 || len(d.Payload) != ulen-8 || d.TotalLen != ulen {
				t.Errorf("%s on %d: length %d payload %d total %d, want UDP length %d", name, d.Ifindex, d.Length, len(d.Payload), d.TotalLen, ulen)
			}
			var offs, ips []int
			for _, f := range d.Frags {
				offs = append(offs, f.Offset)
				ips = append(ips, f.IPLen)
			}
			if !slices.Equal(offs, []int{0, 1480, 2960, 4440}) || !slices.Equal(ips, []int{1500, 1500, 1500, lastIP}) {
				t.Errorf("%s on %d: offsets %v IP lengths %v", name, d.Ifindex, offs, ips)
			}
			// Non-ESP marker, then IKE_AUTH (35).
			if !bytes.Equal(d.Payload[:4], []byte{0, 0, 0, 0}) || d.Payload[4+18] != 35 {
				t.Errorf("%s on %d: not IKE_AUTH behind the non-ESP marker", name, d.Ifindex)
			}
		}
	}
	check("request", req, ifMidCli, ifMidSrv, 5116, 696)
	check("response", resp, ifMidSrv, ifMidCli, 4988, 568)
}

// TestLabB: mid drops every fragment after the capture point, so each of the
// four IKE_AUTH sends is reassembled on mid-cli ingress and nowhere else.
func TestLabB(t *testing.T) {
	recs, st := readAll(t, labPath(t, "b.pcap"))
	if st.Frames != 20 || st.Decoded != 20 {
		t.Fatalf("frames %d decoded %d", st.Frames, st.Decoded)
	}
	frags := fragmented(recs)
	want := []trainSeen{
		{ifMidCli, obs.DirIngress, 0xb6bb},
		{ifMidCli, obs.DirIngress, 0xb73e},
		{ifMidCli, obs.DirIngress, 0xb93f},
		{ifMidCli, obs.DirIngress, 0xbba7},
	}
	if got := trainsFrom(frags, labCli); !slices.Equal(got, want) {
		t.Errorf("trains %v, want %v", got, want)
	}
	for _, d := range frags {
		if !d.Complete || len(d.Frags) != 4 || d.Length != 5108 {
			t.Errorf("train %#x: complete=%v frags=%d length=%d", d.IPID, d.Complete, len(d.Frags), d.Length)
		}
		// strongSwan retransmits the same bytes.
		if !bytes.Equal(d.Payload, frags[0].Payload) {
			t.Errorf("train %#x: payload differs from the first send", d.IPID)
		}
	}
	for _, d := range datagrams(recs) {
		if d.Ifindex == ifMidSrv && d.Src.Addr() == labCli && d.Dst.Port() == 4500 {
			t.Errorf("frame %d: IKE_AUTH request forwarded to mid-srv", d.Frame)
		}
	}
	// The IKE_SA_INIT exchange (unfragmented, DF) crosses in both directions.
	var init int
	for _, d := range datagrams(recs) {
		if d.Dst.Port() == 500 && !d.Fragmented() {
			init++
		}
	}
	if init != 4 {
		t.Errorf("%d IKE_SA_INIT datagrams, want 4 (2 messages x in/out)", init)
	}
}

// TestLabD: the responder's DF IKE fragment hits mid's 1280 MTU; mid sends
// ICMP fragmentation-needed, then the responder IP-fragments its IKE
// fragments, which mid drops.
func TestLabD(t *testing.T) {
	recs, st := readAll(t, labPath(t, "d.pcap"))
	if st.Frames != 76 || st.Decoded != 76 || st.TooBig != 1 {
		t.Fatalf("frames %d decoded %d tooBig %d", st.Frames, st.Decoded, st.TooBig)
	}
	var tb *obs.ICMPTooBig
	for _, r := range recs {
		if r.TooBig != nil {
			tb = r.TooBig
		}
	}
	if tb == nil {
		t.Fatal("no ICMPTooBig record")
	}
	if tb.Frame != 16 || tb.Ifindex != ifMidSrv || tb.Dir != obs.DirEgress || tb.From != labMid || tb.To != labSrv || tb.MTU != 1280 ||
		tb.OrigSrc != labSrv || tb.OrigDst != labCli || tb.OrigProto != 17 || tb.OrigSrcPort != 4500 || tb.OrigDstPort != 4500 {
		t.Errorf("TooBig %+v", *tb)
	}
	frags := fragmented(recs)
	if len(frags) != 11 {
		t.Fatalf("%d reassembled datagrams, want 11", len(frags))
	}
	for _, d := range frags {
		if d.Src.Addr() != labSrv || d.Ifindex != ifMidSrv || d.Dir != obs.DirIngress || !d.Complete || len(d.Frags) != 2 {
			t.Errorf("train %#x: from %v on %d/%v complete=%v frags=%d", d.IPID, d.Src, d.Ifindex, d.Dir, d.Complete, len(d.Frags))
		}
		// 1492-byte IKE fragment packets re-fragmented to 1276 + 236.
		if d.Length != 1464 || d.Frags[0].IPLen != 1276 || d.Frags[1].Offset != 1256 || d.Frags[1].IPLen != 236 {
			t.Errorf("train %#x: length %d frags %+v", d.IPID, d.Length, d.Frags)
		}
	}
}

// TestLabAll: every lab capture decodes without skips, and since mid drops
// fragments only after the capture point, no train is left incomplete.
func TestLabAll(t *testing.T) {
	for _, name := range []string{"a.pcap", "b.pcap", "c.pcap", "d.pcap", "d2.pcap", "e.pcap", "f.pcap"} {
		t.Run(name, func(t *testing.T) {
			recs, st := readAll(t, labPath(t, name))
			if st.SkippedTotal() != 0 || st.Decoded != st.Frames {
				t.Errorf("skipped %v", st.Skipped)
			}
			for _, d := range datagrams(recs) {
				if !d.Complete || d.Truncated {
					t.Errorf("frame %d: complete=%v truncated=%v", d.Frame, d.Complete, d.Truncated)
				}
				if d.Ifindex != ifMidCli && d.Ifindex != ifMidSrv {
					t.Errorf("frame %d: ifindex %d", d.Frame, d.Ifindex)
				}
			}
			// c uses IKE fragmentation only: no IP fragments at all.
			if name == "c.pcap" && len(fragmented(recs)) != 0 {
				t.Errorf("c.pcap has IP-fragmented datagrams")
			}
		})
	}
}
