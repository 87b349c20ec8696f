package diag_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/obs"
)

// A kernel drop of the IKE_AUTH request's second fragment on this host is
// tied to the request by addresses and IP ID, cited, and decisive: the
// verdict comes at the first copy, before any retransmission or settle.
func TestKernelDropDecidesAndIsCited(t *testing.T) {
	w := newWire(t)
	w.initOK(0)
	b := w.authRequest(1, 2400)
	d := w.datagram(100*time.Millisecond, true, b)
	d.IPID = 0x4d2
	d.Frags = []obs.Frag{{Offset: 0, Len: 1480, MF: true, IPLen: 1500}, {Offset: 1480, Len: len(b) + 8 - 1480, IPLen: 20 + len(b) + 8 - 1480}}
	w.e.Add(obs.Record{Datagram: d})
	// Before the drop: nothing to say yet (one copy, not settled).
	if vs := w.e.Report(false).Sessions[0].Verdicts; len(vs) != 0 {
		t.Fatalf("verdicts before the drop: %+v", vs)
	}
	// An unrelated drop (another IP ID) proves nothing.
	w.e.Add(obs.Record{Drop: &obs.Drop{Time: d.Time, Src: cliAddr, Dst: srvAddr, Proto: 17, IPID: 0x999, Fragment: true, FragOffset: 1480, Name: "NETFILTER_DROP"}})
	if vs := w.e.Report(false).Sessions[0].Verdicts; len(vs) != 0 {
		t.Fatalf("verdicts after an unrelated drop: %+v", vs)
	}
	w.e.Add(obs.Record{Drop: &obs.Drop{Time: d.Time.Add(time.Millisecond), Source: obs.Source{Ifindex: 1, Dir: obs.DirIngress},
		Reason: 6, Name: "NETFILTER_DROP", Src: cliAddr, Dst: srvAddr, Proto: 17, IPID: 0x4d2, Fragment: true, FragOffset: 1480}})
	r := w.e.Report(false)
	v := findVerdict(r, diag.FragmentsDropped)
	if v == nil || v.Provisional || v.Direction != diag.TowardServer {
		t.Fatalf("verdict %+v, want a final FRAGMENTS_DROPPED toward the server", v)
	}
	if len(v.KernelDrops) != 1 || !strings.Contains(v.KernelDrops[0], "NETFILTER_DROP") || !strings.Contains(v.KernelDrops[0], "IP ID 0x4d2") ||
		!strings.Contains(v.KernelDrops[0], "offset 1480") || !strings.Contains(v.KernelDrops[0], "interface lo (index 1) ingress") {
		t.Errorf("kernel drops %q", v.KernelDrops)
	}
}

// Retransmissions alone: provisional from the second copy, final at
// settle.
func TestProvisionalFromRetransmissions(t *testing.T) {
	w := newWire(t)
	w.initOK(0)
	b := w.authRequest(1, 2400)
	feed := func(at time.Duration) {
		d := w.datagram(at, true, b)
		d.Frags = []obs.Frag{{Offset: 0, Len: 1480, MF: true, IPLen: 1500}, {Offset: 1480, Len: len(b) + 8 - 1480, IPLen: 20 + len(b) + 8 - 1480}}
		w.e.Add(obs.Record{Datagram: d})
	}
	feed(100 * time.Millisecond)
	if vs := w.e.Report(false).Sessions[0].Verdicts; len(vs) != 0 {
		t.Fatalf("verdicts after one copy: %+v", vs)
	}
	feed(2100 * time.Millisecond)
	v := findVerdict(w.e.Report(false), diag.FragmentsDropped)
	if v == nil || !v.Provisional {
		t.Fatalf("after the second copy: %+v, want a provisional FRAGMENTS_DROPPED", v)
	}
	if r := w.e.Report(false); r.Summary.Provisional == 0 {
		t.Errorf("summary does not count provisional verdicts: %+v", r.Summary)
	}
	w.e.Advance(w.t0.Add(2100*time.Millisecond + diag.DefaultOptions.Settle))
	v = findVerdict(w.e.Report(false), diag.FragmentsDropped)
	if v == nil || v.Provisional {
		t.Fatalf("after settle: %+v, want final", v)
	}
}

// A dropped ICMP fragmentation-needed is PMTUD_BLACKHOLE_LOCAL, with the
// rule that accepts it.
func TestPMTUDBlackholeLocal(t *testing.T) {
	e := diag.New(diag.Options{})
	router := netip.MustParseAddr("10.99.1.1")
	e.Add(obs.Record{Drop: &obs.Drop{Time: time.Unix(1700000000, 0), Name: "NETFILTER_DROP", Src: router, Dst: srvAddr, Proto: 1, ICMPType: 3, ICMPCode: 4}})
	// An ICMP echo dropped is not one.
	e.Add(obs.Record{Drop: &obs.Drop{Time: time.Unix(1700000000, 0), Name: "NETFILTER_DROP", Src: router, Dst: cliAddr, Proto: 1, ICMPType: 8}})
	r := e.Report(true)
	if len(r.Findings) != 1 || r.Findings[0].Code != diag.PMTUDBlackholeLocal || r.Findings[0].Client != srvAddr.String() {
		t.Fatalf("findings %+v", r.Findings)
	}
	if !strings.Contains(strings.Join(r.Findings[0].Remedy, "\n"), "icmp code frag-needed accept") || r.Summary.Errors != 1 {
		t.Errorf("finding %+v summary %+v", r.Findings[0], r.Summary)
	}
}

// An ICMP too-big about the path to the responder, smaller than the
// request, makes the verdict final at the second copy, without waiting
// for settle.
func TestICMPTooBigDecides(t *testing.T) {
	w := newWire(t)
	w.initOK(0)
	b := w.authRequest(1, 1600)
	whole := w.datagram(100*time.Millisecond, true, b)
	w.e.Add(obs.Record{Datagram: whole})
	w.e.Add(obs.Record{TooBig: &obs.ICMPTooBig{Time: whole.Time, From: netip.MustParseAddr("192.0.2.1"), To: cliAddr, MTU: 1280,
		OrigSrc: cliAddr, OrigDst: srvAddr, OrigProto: 17, OrigSrcPort: 500, OrigDstPort: 500}})
	d := w.datagram(2100*time.Millisecond, true, b)
	d.Frags = []obs.Frag{{Offset: 0, Len: 1256, MF: true, IPLen: 1276}, {Offset: 1256, Len: len(b) + 8 - 1256, IPLen: 20 + len(b) + 8 - 1256}}
	w.e.Add(obs.Record{Datagram: d})
	v := findVerdict(w.e.Report(false), diag.FragmentsDropped)
	if v == nil || v.Provisional || !strings.Contains(strings.Join(v.Evidence, "\n"), "MTU of 1280") {
		t.Fatalf("verdict %+v, want a final FRAGMENTS_DROPPED citing the ICMP", v)
	}
}
