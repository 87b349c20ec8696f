package diag_test

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

// established runs an IKE SA to OK on the NAT-T port.
func established(t *testing.T) *wire {
	w := newWire(t)
	w.initOK(0)
	w.cport, w.sport = 4500, 4500
	w.send(50*time.Millisecond, true, append([]byte{0, 0, 0, 0}, w.authRequest(1, 600)...))
	w.send(80*time.Millisecond, false, append([]byte{0, 0, 0, 0}, w.msg(false, true, ike.ExchangeIKEAuth, 1, 0x5150,
		ike.Payload{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDr, Data: make([]byte, 300)}})...))
	return w
}

// espUDP feeds one ESP-in-UDP datagram of n payload bytes; fragmented
// ones go in two IP fragments of a 1280-byte link.
func (w *wire) espUDP(at time.Duration, fromClient bool, n int, ipid uint32) *obs.Datagram {
	b := make([]byte, n)
	spi := uint32(0xc0ffee01)
	if !fromClient {
		spi = 0xc0ffee02
	}
	binary.BigEndian.PutUint32(b, spi)
	d := w.datagram(at, fromClient, b)
	d.IPID = ipid
	if 28+n > 1280 {
		d.Frags = []obs.Frag{{Offset: 0, Len: 1256, MF: true, IPLen: 1276}, {Offset: 1256, Len: n + 8 - 1256, IPLen: 20 + n + 8 - 1256}}
	}
	return d
}

func TestESPExceedsPMTU(t *testing.T) {
	w := established(t)
	w.e.Add(obs.Record{Datagram: w.espUDP(time.Second, true, 1400, 7)})
	w.e.Add(obs.Record{TooBig: &obs.ICMPTooBig{Time: w.t0.Add(time.Second), From: netip.MustParseAddr("192.0.2.1"), To: cliAddr, MTU: 1280,
		OrigSrc: cliAddr, OrigDst: srvAddr, OrigProto: 17, OrigSrcPort: 4500, OrigDstPort: 4500}})
	r := w.e.Report(true)
	v := findVerdict(r, diag.ESPExceedsPMTU)
	if v == nil || v.Direction != diag.TowardServer || findVerdict(r, diag.OK) == nil {
		t.Fatalf("verdicts %v, want OK and ESP_EXCEEDS_PMTU toward the server", codesOf(r))
	}
	// 1280 - 20 - 8 - 8 - 16 - 16 = 1212 → 1200 - 2.
	if all := strings.Join(v.Remedy, "\n"); !strings.Contains(all, "kernel-libipsec.mtu = 1198") || !strings.Contains(all, "maxseg size set 1158") {
		t.Errorf("remedy:\n%s", all)
	}
}

func TestESPFragmentDropLocal(t *testing.T) {
	w := established(t)
	w.e.Add(obs.Record{Datagram: w.espUDP(time.Second, true, 100, 1)})
	w.e.Add(obs.Record{Datagram: w.espUDP(time.Second+20*time.Millisecond, false, 100, 2)})
	d := w.espUDP(2*time.Second, true, 1400, 3)
	w.e.Add(obs.Record{Datagram: d})
	if v := findVerdict(w.e.Report(false), diag.ESPFragmentsDropped); v != nil {
		t.Fatalf("verdict before any evidence: %+v", v)
	}
	w.e.Add(obs.Record{Drop: &obs.Drop{Time: d.Time, Name: "NETFILTER_DROP", Src: cliAddr, Dst: srvAddr, Proto: 17, IPID: 3, Fragment: true, FragOffset: 1256}})
	v := findVerdict(w.e.Report(false), diag.ESPFragmentsDropped)
	if v == nil || v.Direction != diag.TowardServer || len(v.KernelDrops) != 1 {
		t.Fatalf("verdict %+v, want ESP_FRAGMENTS_DROPPED citing the drop", v)
	}
	// The first fragment of 1276 bytes bounds the path: 1276 - 20 - 8 -
	// 8 - 16 - 16 = 1208, to 16-byte blocks 1200, less the trailer 1198.
	if all := strings.Join(v.Remedy, "\n"); !strings.Contains(all, "mtu = 1198") {
		t.Errorf("remedy:\n%s", all)
	}
}

// Live, ESP never reaches the engine, only the kernel's drops of its
// fragments do: they alone make the verdict, sized from the dropped
// fragment's offset.
func TestESPDropsOnly(t *testing.T) {
	w := established(t)
	for i, at := range []time.Duration{time.Second, 2 * time.Second} {
		w.e.Add(obs.Record{Drop: &obs.Drop{Time: w.t0.Add(at), Name: "NETFILTER_DROP", Src: cliAddr, Dst: srvAddr, Proto: 17,
			IPID: uint32(100 + i), Fragment: true, FragOffset: 1256}})
		w.e.Add(obs.Record{Drop: &obs.Drop{Time: w.t0.Add(at), Name: "NETFILTER_DROP", Src: cliAddr, Dst: srvAddr, Proto: 17,
			SrcPort: 4500, DstPort: 4500, IPID: uint32(100 + i), Fragment: true}})
	}
	r := w.e.Report(false)
	v := findVerdict(r, diag.ESPFragmentsDropped)
	if v == nil || v.Direction != diag.TowardServer || len(v.KernelDrops) != 4 || findVerdict(r, diag.OK) == nil {
		t.Fatalf("verdicts %v / %+v", codesOf(r), v)
	}
	if all := strings.Join(v.Remedy, "\n"); !strings.Contains(all, "kernel-libipsec.mtu = 1198") {
		t.Errorf("remedy:\n%s", all)
	}
	// Host-wide drops between addresses with no IKE SA in view are not
	// taken for ESP.
	e := diag.New(diag.Options{})
	e.Add(obs.Record{Drop: &obs.Drop{Time: w.t0, Src: cliAddr, Dst: srvAddr, Proto: 17, SrcPort: 4500, DstPort: 4500, IPID: 9, Fragment: true}})
	if r := e.Report(true); len(r.Sessions)+len(r.Findings) != 0 {
		t.Errorf("report %+v", r)
	}
}

// A capture taken long after the tunnel came up holds no IKE: the ESP
// black hole is a report-level finding.
func TestESPWithoutIKE(t *testing.T) {
	w := newWire(t)
	w.cport, w.sport = 4500, 4500
	for i := 0; i < 3; i++ {
		at := time.Duration(i) * 2 * time.Second
		w.e.Add(obs.Record{Datagram: w.espUDP(at, true, 100, uint32(10*i+1))})
		w.e.Add(obs.Record{Datagram: w.espUDP(at+20*time.Millisecond, false, 100, uint32(10*i+2))})
		w.e.Add(obs.Record{Datagram: w.espUDP(at+300*time.Millisecond, true, 1400, uint32(10*i+3))})
	}
	r := w.e.Report(true)
	if len(r.Sessions) != 0 || len(r.Findings) != 1 || r.Findings[0].Code != diag.ESPFragmentsDropped || r.Summary.Errors != 1 {
		t.Fatalf("sessions %d findings %+v", len(r.Sessions), r.Findings)
	}
	if all := strings.Join(r.Findings[0].Remedy, "\n"); !strings.Contains(all, "kernel-libipsec.mtu = 1198") {
		t.Errorf("remedy:\n%s", all)
	}
}
