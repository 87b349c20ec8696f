package diag_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

// tcpWire feeds RFC 9329 frames (records of Proto 6, as capture's
// EncapReader and the daemon hand them over) and UDP datagrams of IKE
// SAs between cliAddr and srvAddr.
type tcpWire struct {
	e    *diag.Engine
	t0   time.Time
	sink func(obs.Record) // when set, records go here instead of e
}

func newTCPWire() *tcpWire {
	return &tcpWire{e: diag.New(diag.Options{}), t0: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)}
}

// send adds one message of SA spii (with the non-ESP marker over TCP and
// on port 4500), over TCP when tcp is set.
func (w *tcpWire) send(at time.Duration, tcp, fromClient bool, b []byte) {
	src, dst := synCliN, synSrvN
	proto := uint8(17)
	if tcp {
		src, dst, proto = synCliT, synSrvT, 6
	}
	if !fromClient {
		src, dst = dst, src
	}
	b = natt(b)
	r := obs.Record{Datagram: &obs.Datagram{Time: w.t0.Add(at), Last: w.t0.Add(at), IPVersion: 4, Proto: proto, Src: src, Dst: dst,
		Length: len(b), Payload: b, Complete: true, TotalLen: -1}}
	if w.sink != nil {
		w.sink(r)
		return
	}
	w.e.Add(r)
}

func (w *tcpWire) initOK(at time.Duration, tcp bool, spii, spir uint64) {
	w.send(at, tcp, true, ikeMsg(spii, 0, true, false, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
	w.send(at+20*time.Millisecond, tcp, false, ikeMsg(spii, spir, false, true, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
}

func sessionVerdicts(r diag.Report) []string {
	var out []string
	for _, s := range r.Sessions {
		for _, v := range s.Verdicts {
			out = append(out, fmt.Sprintf("%d:%s:%s", s.ID, v.Code, v.Direction))
		}
	}
	return out
}

// tcpUnansweredAuth are the records of an IKE SA over TCP whose
// IKE_AUTH request, 3000 bytes, is sent three times and never answered.
func tcpUnansweredAuth() []obs.Record {
	w := newTCPWire()
	var out []obs.Record
	w.sink = func(r obs.Record) { out = append(out, r) }
	w.initOK(0, true, 0x7005, 0x8005)
	req := ikeMsg(0x7005, 0x8005, true, false, ike.ExchangeIKEAuth, 1, sk(3000))
	for _, at := range []time.Duration{50 * time.Millisecond, 2 * time.Second, 6 * time.Second} {
		w.send(at, true, true, req)
	}
	return out
}

// An IKE_AUTH request over TCP, 3000 bytes, sent three times and never
// answered: nothing of it was IP-fragmented, so the verdict is
// UNANSWERED_IKE_AUTH with the TCP remedies, never FRAGMENTS_DROPPED; the
// frames give the peers no path-MTU evidence, and ESP frames are counted.
func TestTCPNoFragmentVerdicts(t *testing.T) {
	w := newTCPWire()
	w.initOK(0, true, 0x7001, 0x8001)
	req := ikeMsg(0x7001, 0x8001, true, false, ike.ExchangeIKEAuth, 1, sk(3000))
	for _, at := range []time.Duration{50 * time.Millisecond, 2 * time.Second, 6 * time.Second} {
		w.send(at, true, true, req)
	}
	w.e.Add(obs.Record{Datagram: &obs.Datagram{Time: w.t0.Add(7 * time.Second), IPVersion: 4, Proto: 6, Src: synCliT, Dst: synSrvT,
		Length: 8, Payload: []byte{0xc1, 0, 0, 1, 0, 0, 0, 1}, Complete: true, TotalLen: -1}})
	r := w.e.Report(true)
	if got := strings.Join(sessionVerdicts(r), " "); got != "1:UNANSWERED_IKE_AUTH:toward_server" {
		t.Fatalf("verdicts %s, want 1:UNANSWERED_IKE_AUTH:toward_server", got)
	}
	s := r.Sessions[0]
	v := s.Verdicts[0]
	if s.Transport != diag.TransportTCP || !strings.Contains(strings.Join(v.Evidence, " "), "over TCP (RFC 9329)") ||
		len(v.Remedy) != 2 || !strings.Contains(v.Remedy[1], "ikefrag's proxy") {
		t.Errorf("session %s, verdict %+v", s.Transport, v)
	}
	for _, row := range s.Ladder {
		if !row.TCP || row.IPFragments != 1 {
			t.Errorf("ladder row %+v", row)
		}
	}
	if len(r.Peers) != 0 {
		t.Errorf("TCP frames gave path-MTU evidence: %+v", r.Peers)
	}
	if st := w.e.Stats(); st.TCPFrames != 6 || st.ESP != 1 || st.Datagrams != 5 {
		t.Errorf("stats %+v", st)
	}
}

// A client resends its unanswered IKE_SA_INIT over TCP under the same
// SPI (one IKE SA moving to TCP): the resend is a retransmission, the
// session "udp+tcp", established, with TCP_FALLBACK and no
// UNANSWERED_SA_INIT.
func TestTCPSAInitMoves(t *testing.T) {
	w := newTCPWire()
	init := ikeMsg(0x7006, 0, true, false, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce())
	w.send(0, false, true, init)
	w.send(2*time.Second, false, true, init)
	w.send(5*time.Second, true, true, init)
	w.send(5020*time.Millisecond, true, false, ikeMsg(0x7006, 0x8006, false, true, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
	w.send(5050*time.Millisecond, true, true, ikeMsg(0x7006, 0x8006, true, false, ike.ExchangeIKEAuth, 1, sk(3000)))
	w.send(5090*time.Millisecond, true, false, ikeMsg(0x7006, 0x8006, false, true, ike.ExchangeIKEAuth, 1, sk(2000)))
	r := w.e.Report(true)
	if got := strings.Join(sessionVerdicts(r), " "); got != "1:TCP_FALLBACK: 1:OK:" {
		t.Fatalf("verdicts %s", got)
	}
	s := r.Sessions[0]
	if s.Transport != diag.TransportUDPTCP || len(s.Ladder) != 6 || !s.Ladder[2].TCP || !s.Ladder[2].Retransmission || s.Ladder[1].TCP {
		t.Errorf("session %s, ladder %+v", s.Transport, s.Ladder)
	}
	if ev := strings.Join(s.Verdicts[0].Evidence, " "); !strings.Contains(ev, "over UDP first: IKE_SA_INIT request (Message ID 0)") {
		t.Errorf("evidence %s", ev)
	}
}

// IKE_SA_INIT over TCP never answered: UNANSWERED_SA_INIT with the TCP
// remedies (not "UDP 500 and 4500").
func TestTCPUnansweredSAInit(t *testing.T) {
	w := newTCPWire()
	w.send(0, true, true, ikeMsg(0x7002, 0, true, false, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
	r := w.e.Report(true)
	if got := strings.Join(sessionVerdicts(r), " "); got != "1:UNANSWERED_SA_INIT:toward_server" {
		t.Fatalf("verdicts %s", got)
	}
	rem := strings.Join(r.Sessions[0].Verdicts[0].Remedy, " ")
	if !strings.Contains(rem, "RFC 9329") || strings.Contains(rem, "UDP 500 and 4500") {
		t.Errorf("remedy %q", rem)
	}
}

// A client whose IKE_SA_INIT over UDP is never answered (UDP blocked)
// starts again over TCP and is established: TCP_FALLBACK on the TCP
// session, citing the UDP one. Not when the UDP attempt ended more than 5
// minutes before, nor when it came from another client.
func TestTCPFallbackWindow(t *testing.T) {
	for _, c := range []struct {
		name  string
		after time.Duration
		other bool
		want  string
	}{
		{"20s later", 20 * time.Second, false, "1:UNANSWERED_SA_INIT:toward_server 2:TCP_FALLBACK: 2:OK:"},
		{"6 min later", 6 * time.Minute, false, "1:UNANSWERED_SA_INIT:toward_server 2:OK:"},
		{"another client", 20 * time.Second, true, "1:UNANSWERED_SA_INIT:toward_server 2:OK:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTCPWire()
			from := synCliN
			if c.other {
				from = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.99"), 4500)
			}
			init := natt(ikeMsg(0x7003, 0, true, false, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
			for _, at := range []time.Duration{0, time.Second, 3 * time.Second} {
				w.e.Add(obs.Record{Datagram: &obs.Datagram{Time: w.t0.Add(at), IPVersion: 4, Proto: 17, Src: from, Dst: synSrvN,
					Length: len(init), Payload: init, Complete: true, TotalLen: -1}})
			}
			at := 3*time.Second + c.after
			w.initOK(at, true, 0x7004, 0x8004)
			w.send(at+50*time.Millisecond, true, true, ikeMsg(0x7004, 0x8004, true, false, ike.ExchangeIKEAuth, 1, sk(3000)))
			w.send(at+90*time.Millisecond, true, false, ikeMsg(0x7004, 0x8004, false, true, ike.ExchangeIKEAuth, 1, sk(2000)))
			r := w.e.Report(true)
			if got := strings.Join(sessionVerdicts(r), " "); got != c.want {
				t.Errorf("verdicts %s, want %s", got, c.want)
			}
			fallback := strings.Contains(c.want, "TCP_FALLBACK")
			if len(r.Sessions) != 2 || (r.Sessions[1].FallbackFrom == 1) != fallback || r.Sessions[0].FallbackFrom != 0 {
				t.Errorf("fallback_from of the sessions: %+v", r.Sessions)
			}
		})
	}
}
