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

// wire feeds an engine IKE messages built with the ike codec, as a capture
// on the path between a client (cliAddr) and a server (srvAddr) would.
type wire struct {
	t   *testing.T
	e   *diag.Engine
	t0  time.Time
	spi uint64
	// ports of the client and the server (500 unless set)
	cport, sport uint16
}

func newWire(t *testing.T) *wire {
	return &wire{t: t, e: diag.New(diag.Options{}), t0: time.Unix(1700000000, 0), spi: 0xabc1, cport: 500, sport: 500}
}

func spiOf(v uint64) (s ike.SPI) {
	binary.BigEndian.PutUint64(s[:], v)
	return s
}

// msg encodes an IKEv2 message of the wire's SA.
func (w *wire) msg(fromClient, response bool, x ike.ExchangeType, mid uint32, spir uint64, ps ...ike.Payload) []byte {
	h := ike.Header{MajorVersion: 2, Exchange: x, MessageID: mid, SPIi: spiOf(w.spi), SPIr: spiOf(spir)}
	if fromClient {
		h.Flags |= ike.FlagInitiator
	}
	if response {
		h.Flags |= ike.FlagResponse
	}
	m := &ike.Message{Header: h, Payloads: ps}
	return m.Encode()
}

// datagram builds the observation of one UDP datagram carrying b.
func (w *wire) datagram(at time.Duration, fromClient bool, b []byte) *obs.Datagram {
	src, dst := netip.AddrPortFrom(cliAddr, w.cport), netip.AddrPortFrom(srvAddr, w.sport)
	if !fromClient {
		src, dst = dst, src
	}
	return &obs.Datagram{Time: w.t0.Add(at), IPVersion: 4, Proto: 17, Src: src, Dst: dst,
		Length: len(b), Payload: b, Complete: true, TotalLen: -1}
}

func (w *wire) send(at time.Duration, fromClient bool, b []byte) {
	w.e.Add(obs.Record{Datagram: w.datagram(at, fromClient, b)})
}

func sa(props ...ike.Proposal) ike.Payload {
	for i := range props {
		props[i].Number = uint8(i + 1)
		props[i].Protocol = ike.ProtocolIKE
	}
	s := &ike.SA{Proposals: props}
	s.SetMarkers()
	return ike.Payload{Type: ike.PayloadSA, Body: s}
}

func tr(t ike.TransformType, id uint16, keyLen int) ike.Transform {
	x := ike.Transform{Type: t, ID: id}
	if keyLen > 0 {
		x.Attributes = []ike.Attribute{{Type: ike.AttrKeyLength, TV: true, Value: []byte{byte(keyLen >> 8), byte(keyLen)}}}
	}
	return x
}

func prop(ts ...ike.Transform) ike.Proposal { return ike.Proposal{Transforms: ts} }

var baseline = prop(tr(ike.TransformENCR, uint16(ike.EncrAESCBC), 256), tr(ike.TransformPRF, uint16(ike.PRFHMACSHA2_256), 0),
	tr(ike.TransformINTEG, uint16(ike.IntegHMACSHA2_256128), 0), tr(ike.TransformDH, uint16(ike.GroupMODP2048), 0))

func ke(g ike.DHGroup, n int) ike.Payload {
	return ike.Payload{Type: ike.PayloadKE, Body: &ike.KE{Group: g, Data: make([]byte, n)}}
}

func nonce() ike.Payload {
	return ike.Payload{Type: ike.PayloadNonce, Body: &ike.Nonce{Data: make([]byte, 32)}}
}

func notify(t ike.NotifyType, data ...byte) ike.Payload {
	return ike.Payload{Type: ike.PayloadNotify, Body: &ike.Notify{Type: t, Data: data}}
}

// initOK runs an answered IKE_SA_INIT choosing the baseline suite.
func (w *wire) initOK(at time.Duration) {
	w.send(at, true, w.msg(true, false, ike.ExchangeIKESAInit, 0, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
	w.send(at+20*time.Millisecond, false, w.msg(false, true, ike.ExchangeIKESAInit, 0, 0x5150, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
}

func codesOf(r diag.Report) map[diag.Code]int {
	m := map[diag.Code]int{}
	for _, s := range r.Sessions {
		for _, v := range s.Verdicts {
			m[v.Code]++
		}
	}
	for _, v := range r.Findings {
		m[v.Code]++
	}
	return m
}

func findVerdict(r diag.Report, c diag.Code) *diag.Verdict {
	for _, s := range r.Sessions {
		for i := range s.Verdicts {
			if s.Verdicts[i].Code == c {
				return &s.Verdicts[i]
			}
		}
	}
	for i := range r.Findings {
		if r.Findings[i].Code == c {
			return &r.Findings[i]
		}
	}
	return nil
}

// authRequest is an IKE_AUTH request of n bytes in an SK payload.
func (w *wire) authRequest(mid uint32, n int) []byte {
	return w.msg(true, false, ike.ExchangeIKEAuth, mid, 0x5150,
		ike.Payload{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDi, Data: make([]byte, n)}})
}

// Item 1a: only the first IP fragment of each IKE_AUTH copy is in the
// capture (the box that drops the rest sits before the capture point or
// the capture is on the far side of a reassembling box).
func TestFirstFragmentsOnly(t *testing.T) {
	w := newWire(t)
	w.initOK(0)
	b := w.authRequest(1, 2400)
	// The trains are still open when the capture ends (it is shorter
	// than the reassembly timeout): no train timed out.
	for _, at := range []time.Duration{100, 2100, 6100} {
		d := w.datagram(at*time.Millisecond, true, b)
		d.Payload = b[:1472]
		d.Truncated = false
		d.Complete = false
		d.Missing = []obs.Range{{Start: 1480, End: -1}}
		d.Incomplete = obs.TrainEndOfInput
		d.Frags = []obs.Frag{{Offset: 0, Len: 1480, MF: true, IPLen: 1500}}
		w.e.Add(obs.Record{Datagram: d})
	}
	r := w.e.Report(true)
	if c := codesOf(r); c[diag.FragmentsDropped] != 1 || c[diag.UnansweredIKEAuth] != 0 {
		t.Fatalf("verdicts %v, want FRAGMENTS_DROPPED and no UNANSWERED_IKE_AUTH", c)
	}
	if v := findVerdict(r, diag.FragmentsDropped); v.Direction != diag.TowardServer {
		t.Errorf("direction %q", v.Direction)
	}
}

// Item 1b: only the later fragments of the IKE_AUTH request are seen.
func TestLaterFragmentsOnly(t *testing.T) {
	w := newWire(t)
	w.initOK(0)
	for _, at := range []time.Duration{100, 2100, 6100} {
		w.e.Add(obs.Record{Datagram: &obs.Datagram{Time: w.t0.Add(at * time.Millisecond), IPVersion: 4, Proto: 17,
			Src: netip.AddrPortFrom(cliAddr, 0), Dst: netip.AddrPortFrom(srvAddr, 0), Length: -1, TotalLen: 2428,
			Frags: []obs.Frag{{Offset: 1480, Len: 948, IPLen: 968}}, Missing: []obs.Range{{Start: 0, End: 1480}}, Incomplete: obs.TrainTimeout}})
	}
	r := w.e.Report(true)
	v := findVerdict(r, diag.FragmentsDropped)
	if v == nil || v.Direction != diag.TowardServer || r.Summary.Errors == 0 {
		t.Fatalf("verdicts %v, want FRAGMENTS_DROPPED toward the server", codesOf(r))
	}
	if !strings.Contains(strings.Join(v.Evidence, "\n"), "3 fragment train(s)") {
		t.Errorf("evidence does not cite the orphan trains: %q", v.Evidence)
	}
}

// Item 1c: IKE_SA_INIT completed, IKE_AUTH never appeared, observation
// went on.
func TestAuthNeverAppears(t *testing.T) {
	w := newWire(t)
	w.initOK(0)
	// Another SA's traffic carries the clock on.
	w.spi = 0x7777
	w.initOK(10 * time.Second)
	r := w.e.Report(true)
	if c := codesOf(r); c[diag.IKEAuthNotSeen] != 1 {
		t.Fatalf("verdicts %v, want IKE_AUTH_NOT_SEEN for the first SA", c)
	}
	// The second one is judged too: the capture's end is 20 ms after it,
	// too soon to say. Feed nothing more and check it is not judged.
	for _, s := range r.Sessions {
		n := 0
		for _, v := range s.Verdicts {
			if v.Code == diag.IKEAuthNotSeen {
				n++
			}
		}
		if s.SPIi == "0000000000007777" && n != 0 || s.SPIi == "000000000000abc1" && n != 1 {
			t.Errorf("session %s: %d IKE_AUTH_NOT_SEEN", s.SPIi, n)
		}
	}
}

// Item 3: a capture of one direction holds the IKE_SA_INIT request and a
// later IKE_AUTH request carrying the responder's SPI: the response
// arrived, though not in view.
func TestInitAnsweredOutOfView(t *testing.T) {
	w := newWire(t)
	w.send(0, true, w.msg(true, false, ike.ExchangeIKESAInit, 0, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
	w.send(50*time.Millisecond, true, w.authRequest(1, 600))
	r := w.e.Report(true)
	if c := codesOf(r); c[diag.UnansweredSAInit] != 0 {
		t.Fatalf("verdicts %v: UNANSWERED_SA_INIT though IKE_AUTH carries the responder's SPI", c)
	}
}

// Item 4a: an IKE_AUTH numbered 0 is its own exchange, not a resent
// IKE_SA_INIT.
func TestAuthWithMessageIDZero(t *testing.T) {
	w := newWire(t)
	w.initOK(0)
	w.send(50*time.Millisecond, true, w.authRequest(0, 600))
	w.send(80*time.Millisecond, false, w.msg(false, true, ike.ExchangeIKEAuth, 0, 0x5150,
		ike.Payload{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDr, Data: make([]byte, 300)}}))
	r := w.e.Report(true)
	for _, row := range r.Sessions[0].Ladder {
		if row.Retransmission {
			t.Errorf("row %+v marked a retransmission", row)
		}
	}
	if c := codesOf(r); c[diag.OK] != 1 {
		t.Errorf("verdicts %v, want OK", c)
	}
}

// v1 builds an IKEv1 header-only message of n bytes; its first payload is
// SA (1) when sa is set.
func v1(spii, spir uint64, mid uint32, n int, sa bool, fill byte) []byte {
	h := ike.Header{MajorVersion: 1, Exchange: ike.ExchangeType(2), MessageID: mid, SPIi: spiOf(spii), SPIr: spiOf(spir), Length: uint32(n)}
	if sa {
		h.NextPayload = 1
	} else {
		h.NextPayload = 4
	}
	b := h.AppendTo(nil)
	for len(b) < n {
		b = append(b, fill)
	}
	return b
}

func (w *wire) sendV1(at time.Duration, src, dst netip.AddrPort, b []byte) {
	w.e.Add(obs.Record{Datagram: &obs.Datagram{Time: w.t0.Add(at), IPVersion: 4, Proto: 17, Src: src, Dst: dst,
		Length: len(b), Payload: b, Complete: true, TotalLen: -1}})
}

// Item 4b: IKEv1 messages that merely have the other peer's length, or
// another port, are not retransmissions.
func TestIKEv1RetransmissionMatching(t *testing.T) {
	w := newWire(t)
	c, s := netip.AddrPortFrom(cliAddr, 500), netip.AddrPortFrom(srvAddr, 500)
	w.sendV1(0, c, s, v1(1, 0, 0, 200, true, 1))                                              // MM1
	w.sendV1(10*time.Millisecond, s, c, v1(1, 2, 0, 200, true, 2))                            // MM2, same length
	w.sendV1(20*time.Millisecond, c, s, v1(1, 2, 0, 300, false, 3))                           // MM3
	w.sendV1(30*time.Millisecond, s, c, v1(1, 2, 0, 300, false, 4))                           // MM4, same length
	w.sendV1(2*time.Second, netip.AddrPortFrom(cliAddr, 4500), s, v1(1, 2, 0, 300, false, 3)) // other port
	r := w.e.Report(true)
	for _, row := range r.Sessions[0].Ladder {
		if row.Retransmission {
			t.Errorf("row %+v marked a retransmission", row)
		}
	}
	// The same bytes between the same ports again are one.
	w.sendV1(4*time.Second, c, s, v1(1, 2, 0, 300, false, 3))
	n := 0
	for _, row := range w.e.Report(true).Sessions[0].Ladder {
		if row.Retransmission {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d retransmissions, want 1", n)
	}
}

// Item 5: every error notify in a response is a verdict named after it.
func TestErrorNotifyVerdicts(t *testing.T) {
	types := []ike.NotifyType{
		ike.NotifyUnsupportedCriticalPayload, ike.NotifyInvalidIKESPI, ike.NotifyInvalidMajorVersion, ike.NotifyInvalidSyntax,
		ike.NotifyInvalidMessageID, ike.NotifyInvalidSPI, ike.NotifySinglePairRequired, ike.NotifyNoAdditionalSAs,
		ike.NotifyInternalAddressFailure, ike.NotifyFailedCPRequired, ike.NotifyTSUnacceptable, ike.NotifyInvalidSelectors,
		ike.NotifyTemporaryFailure, ike.NotifyChildSANotFound, 40, 41,
	}
	for _, nt := range types {
		t.Run(nt.String(), func(t *testing.T) {
			w := newWire(t)
			w.send(0, true, w.msg(true, false, ike.ExchangeIKESAInit, 0, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
			w.send(20*time.Millisecond, false, w.msg(false, true, ike.ExchangeIKESAInit, 0, 0, notify(nt)))
			r := w.e.Report(true)
			v := findVerdict(r, diag.Code(nt.String()))
			if v == nil {
				t.Fatalf("no %s verdict: %v", nt, codesOf(r))
			}
			if len(v.Remedy) != 3 || !strings.HasPrefix(v.Remedy[0], "RRAS") || !strings.HasPrefix(v.Remedy[1], "Windows client") || !strings.HasPrefix(v.Remedy[2], "strongSwan") {
				t.Errorf("remedy %q, want RRAS / Windows client / strongSwan", v.Remedy)
			}
			if !strings.Contains(v.Evidence[0], srvAddr.String()) || !strings.Contains(v.Summary, "the responder") {
				t.Errorf("does not say who sent it: %q / %q", v.Summary, v.Evidence)
			}
			if c := codesOf(r); c[diag.UnansweredSAInit] != 0 || c[diag.OK] != 0 {
				t.Errorf("verdicts %v", c)
			}
		})
	}
}

// Item 6: two bytes after the last payload cost nothing: the notify still
// names group 14, and the quirk is noted.
func TestTrailingBytesInvalidKE(t *testing.T) {
	w := newWire(t)
	w.send(0, true, w.msg(true, false, ike.ExchangeIKESAInit, 0, 0, sa(baseline), ke(ike.GroupMODP3072, 384), nonce()))
	b := w.msg(false, true, ike.ExchangeIKESAInit, 0, 0, notify(ike.NotifyInvalidKEPayload, 0, 14))
	b = append(b, 0, 0)
	binary.BigEndian.PutUint32(b[24:], uint32(len(b)))
	w.send(20*time.Millisecond, false, b)
	r := w.e.Report(true)
	v := findVerdict(r, diag.InvalidKEPayload)
	if v == nil || !strings.Contains(v.Summary, "MODP_2048") {
		t.Fatalf("INVALID_KE_PAYLOAD verdict %+v, want group 14 (MODP_2048)", v)
	}
	if q := r.Sessions[0].Quirks; len(q) != 1 || !strings.Contains(q[0], "2 byte(s) after the last payload") {
		t.Errorf("quirks %q", q)
	}
}

// Item 7: the NO_PROPOSAL_CHOSEN fix comes from the offer.
func TestNoProposalRemedyFromOffer(t *testing.T) {
	weak := prop(
		tr(ike.TransformENCR, uint16(ike.EncrAESCBC), 128), tr(ike.TransformENCR, uint16(ike.Encr3DES), 0),
		tr(ike.TransformPRF, uint16(ike.PRFHMACSHA1), 0), tr(ike.TransformPRF, uint16(ike.PRFHMACMD5), 0),
		tr(ike.TransformINTEG, uint16(ike.IntegHMACSHA1_96), 0), tr(ike.TransformINTEG, uint16(ike.IntegHMACMD5_96), 0),
		tr(ike.TransformDH, uint16(ike.GroupMODP2048), 0), tr(ike.TransformDH, uint16(ike.GroupMODP1536), 0), tr(ike.TransformDH, uint16(ike.GroupMODP1024), 0))
	brainpool := prop(tr(ike.TransformENCR, uint16(ike.EncrAESCBC), 256), tr(ike.TransformPRF, uint16(ike.PRFHMACSHA2_256), 0),
		tr(ike.TransformINTEG, uint16(ike.IntegHMACSHA2_256128), 0), tr(ike.TransformDH, 28, 0))
	cases := []struct {
		name    string
		offer   ike.Proposal
		want    []string
		weak    bool
		rrasCan bool
	}{
		{"weak", weak, []string{`"aes128-sha1-prfsha1-modp2048"`, "-EncryptionMethod AES128 -IntegrityCheckMethod SHA1 -DHGroup Group14"}, true, true},
		{"brainpool", brainpool, []string{`"aes256-sha256-prfsha256-ecp256bp"`, "Windows RRAS cannot accept"}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWire(t)
			w.send(0, true, w.msg(true, false, ike.ExchangeIKESAInit, 0, 0, sa(c.offer), ke(ike.GroupMODP2048, 256), nonce()))
			w.send(20*time.Millisecond, false, w.msg(false, true, ike.ExchangeIKESAInit, 0, 0, notify(ike.NotifyNoProposalChosen)))
			v := findVerdict(w.e.Report(true), diag.NoProposalChosen)
			if v == nil {
				t.Fatal("no NO_PROPOSAL_CHOSEN")
			}
			all := strings.Join(v.Remedy, "\n")
			for _, s := range c.want {
				if !strings.Contains(all, s) {
					t.Errorf("remedy lacks %q:\n%s", s, all)
				}
			}
			if strings.Contains(all, "matches what the peer offers") {
				t.Errorf("remedy claims a match it did not check:\n%s", all)
			}
			if got := strings.Contains(all, "below the baseline"); got != c.weak {
				t.Errorf("weak flag %v, want %v:\n%s", got, c.weak, all)
			}
			if !strings.Contains(all, "strongSwan initiator") || !strings.Contains(all, "Set-VpnConnectionIPsecConfiguration") {
				t.Errorf("no client-side change to the baseline:\n%s", all)
			}
		})
	}
}

// Item 8: INVALID_KE_PAYLOAD answered by a retry under the same initiator
// SPI (RFC 7296 §1.2; strongSwan) is still reported.
func TestInvalidKERetrySameSPI(t *testing.T) {
	w := newWire(t)
	w.send(0, true, w.msg(true, false, ike.ExchangeIKESAInit, 0, 0, sa(baseline), ke(ike.GroupMODP3072, 384), nonce()))
	w.send(20*time.Millisecond, false, w.msg(false, true, ike.ExchangeIKESAInit, 0, 0, notify(ike.NotifyInvalidKEPayload, 0, 14)))
	w.initOK(40 * time.Millisecond)
	w.send(100*time.Millisecond, true, w.authRequest(1, 600))
	w.send(130*time.Millisecond, false, w.msg(false, true, ike.ExchangeIKEAuth, 1, 0x5150,
		ike.Payload{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDr, Data: make([]byte, 300)}}))
	r := w.e.Report(true)
	v := findVerdict(r, diag.InvalidKEPayload)
	if v == nil || v.Severity != diag.Info || !strings.Contains(strings.Join(v.Evidence, " "), "same SPI") {
		t.Fatalf("INVALID_KE_PAYLOAD %+v (all %v)", v, codesOf(r))
	}
	if !strings.Contains(v.Evidence[0], "MODP_3072") {
		t.Errorf("evidence %q does not name the group first sent", v.Evidence)
	}
	if c := codesOf(r); c[diag.OK] != 1 {
		t.Errorf("verdicts %v, want OK too", c)
	}
}

// Item 9: reflected IKEv1 Main Mode responses from many sources to one
// address are one finding, not sessions with the roles reversed.
func TestUnsolicitedResponses(t *testing.T) {
	w := newWire(t)
	victim := netip.AddrPortFrom(cliAddr, 500)
	for i := 0; i < 5; i++ {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}), 500)
		for j := 0; j < 2; j++ {
			w.sendV1(time.Duration(i*10+j)*time.Second, src, victim, v1(uint64(100+i), uint64(200+i), 0, 180, true, byte(j)))
		}
	}
	// And an IKEv2 one from the server, to the same target.
	w.cport = 500
	w.send(time.Second, false, w.msg(false, true, ike.ExchangeIKESAInit, 0, 0x42, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()))
	r := w.e.Report(true)
	if len(r.Sessions) != 0 {
		t.Errorf("%d sessions, want none", len(r.Sessions))
	}
	if len(r.Findings) != 1 || r.Findings[0].Code != diag.UnsolicitedResponses || r.Findings[0].Client != cliAddr.String() {
		t.Fatalf("findings %+v, want one UNSOLICITED_IKE_RESPONSES for %s", r.Findings, cliAddr)
	}
	f := r.Findings[0]
	ev := strings.Join(f.Evidence, "\n")
	if !strings.Contains(f.Summary, "11 IKEv1 and IKEv2 response(s) from 6 source(s)") || !strings.Contains(ev, "203.0.113.10") {
		t.Errorf("finding %q / %q", f.Summary, ev)
	}
	if c := codesOf(r); c[diag.IKEv1] != 0 {
		t.Errorf("verdicts %v: IKEV1 advice for a reflection", c)
	}
	if r.Summary.UnsolicitedSessions != 6 || r.Summary.Warnings != 1 {
		t.Errorf("summary %+v", r.Summary)
	}
}

// Item 10: an IKEv1 Main Mode request sent 7 times over 190 s, never
// answered, is an error.
func TestIKEv1Silence(t *testing.T) {
	w := newWire(t)
	c, s := netip.AddrPortFrom(cliAddr, 500), netip.AddrPortFrom(srvAddr, 500)
	b := v1(1, 0, 0, 200, true, 1)
	for _, at := range []int{0, 10, 30, 60, 100, 140, 190} {
		w.sendV1(time.Duration(at)*time.Second, c, s, b)
	}
	r := w.e.Report(true)
	v := findVerdict(r, diag.UnansweredIKEv1)
	if v == nil || v.Severity != diag.Error || v.Direction != diag.TowardServer || !strings.Contains(v.Summary, "7 time(s) over 3m10s") {
		t.Fatalf("verdict %+v (all %v)", v, codesOf(r))
	}
}

// Item 9 at scale: an edge box receiving reflected Main Mode responses
// from many sources gets one finding, not a session per source (bytes
// are IP bytes: 2767 × (20 + 8 + 180)).
func TestUnsolicitedResponsesAtScale(t *testing.T) {
	w := newWire(t)
	victim := netip.AddrPortFrom(cliAddr, 500)
	const n = 2767
	for i := 0; i < n; i++ {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, byte(i >> 8), byte(i), 1}), 500)
		w.sendV1(time.Duration(i)*10*time.Millisecond, src, victim, v1(uint64(1000+i), uint64(5000+i), 0, 180, true, 7))
	}
	r := w.e.Report(true)
	if len(r.Sessions) != 0 || len(r.Findings) != 1 || r.Summary.UnsolicitedSessions != n {
		t.Fatalf("%d sessions, %d findings, summary %+v", len(r.Sessions), len(r.Findings), r.Summary)
	}
	f := r.Findings[0]
	if !strings.Contains(f.Summary, "2767 IKEv1 response(s) from 2767 source(s)") || !strings.Contains(f.Evidence[0], "and 2762 more") ||
		!strings.Contains(f.Evidence[1], "575536 bytes") {
		t.Errorf("finding %q / %q", f.Summary, f.Evidence)
	}
}
