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

var (
	cliAddr = netip.MustParseAddr("192.0.2.10")
	srvAddr = netip.MustParseAddr("198.51.100.20")
)

// handshake feeds an engine IKEv2 datagrams of chosen IP sizes between a
// client (the initiator) and a server, as a capture would.
type handshake struct {
	t   *testing.T
	e   *diag.Engine
	t0  time.Time
	spi uint64 // the initiator's SPI: one IKE SA per value
}

func newHandshake(t *testing.T) *handshake {
	return &handshake{t: t, e: diag.New(diag.Options{}), t0: time.Unix(1700000000, 0), spi: 0x1111}
}

// send feeds one unfragmented IKE datagram of ipLen bytes (IPv4, UDP 500)
// at offset at, its body a Vendor ID payload of the right length. A
// datagram sent again with the same arguments is bitwise identical: a
// retransmission.
func (h *handshake) send(at time.Duration, fromClient, response bool, x ike.ExchangeType, mid uint32, ipLen int) {
	h.t.Helper()
	h.sendPayload(at, fromClient, response, x, mid, ipLen, ike.PayloadVendorID)
}

// sendPayload is send with the first payload's type chosen (SKF marks an
// RFC 7383 fragment).
func (h *handshake) sendPayload(at time.Duration, fromClient, response bool, x ike.ExchangeType, mid uint32, ipLen int, first ike.PayloadType) {
	h.t.Helper()
	hdr := ike.Header{NextPayload: first, MajorVersion: 2, Exchange: x, MessageID: mid, Length: uint32(ipLen - 28)}
	binary.BigEndian.PutUint64(hdr.SPIi[:], h.spi)
	if x != ike.ExchangeIKESAInit || response {
		binary.BigEndian.PutUint64(hdr.SPIr[:], 0x2222)
	}
	if fromClient {
		hdr.Flags |= ike.FlagInitiator
	}
	if response {
		hdr.Flags |= ike.FlagResponse
	}
	h.feed(at, fromClient, hdr, ipLen)
}

// feed sends a datagram of ipLen bytes with header hdr, its body one
// payload filling the rest, between the client and the server on UDP 500.
func (h *handshake) feed(at time.Duration, fromClient bool, hdr ike.Header, ipLen int) {
	payload := hdr.AppendTo(make([]byte, 0, ipLen-28))
	body := ipLen - 28 - len(payload)
	payload = append(payload, 0, 0, byte(body>>8), byte(body))
	payload = append(payload, make([]byte, body-4)...)
	src, dst := netip.AddrPortFrom(cliAddr, 500), netip.AddrPortFrom(srvAddr, 500)
	if !fromClient {
		src, dst = dst, src
	}
	h.e.Add(obs.Record{Datagram: &obs.Datagram{Time: h.t0.Add(at), IPVersion: 4, Proto: 17, Src: src, Dst: dst,
		Length: len(payload), Payload: payload, Complete: true, TotalLen: -1}})
}

// init runs an answered IKE_SA_INIT: a 400-byte request toward the server
// and a 300-byte response toward the client.
func (h *handshake) init() {
	h.send(0, true, false, ike.ExchangeIKESAInit, 0, 400)
	h.send(10*time.Millisecond, false, true, ike.ExchangeIKESAInit, 0, 300)
}

// estimate returns the estimate toward a peer at the end of the capture.
func (h *handshake) estimate(a netip.Addr) diag.PMTUEstimate {
	h.t.Helper()
	h.e.Report(true)
	est, ok := h.e.PeerEstimate(a)
	if !ok {
		h.t.Fatalf("no estimate for %s", a)
	}
	return est
}

func hasEvidence(est diag.PMTUEstimate, part string) bool {
	for _, ev := range est.Evidence {
		if strings.Contains(ev, part) {
			return true
		}
	}
	return false
}

// A response proves its request arrived, and the requester's next request
// proves the response arrived: both raise the lower bound.
func TestPMTUAnsweredRaisesLower(t *testing.T) {
	h := newHandshake(t)
	h.init()
	// The client moving on to IKE_AUTH shows that the 300-byte response
	// reached it; the server answering shows the 1200-byte request did.
	h.send(20*time.Millisecond, true, false, ike.ExchangeIKEAuth, 1, 1200)
	if est, _ := h.e.PeerEstimate(cliAddr); est.Lower != 300 {
		t.Errorf("client after IKE_AUTH request: lower %d, want 300 (the IKE_SA_INIT response): %v", est.Lower, est.Evidence)
	}
	h.send(40*time.Millisecond, false, true, ike.ExchangeIKEAuth, 1, 1100)
	if est, _ := h.e.PeerEstimate(srvAddr); est.Lower != 1200 || est.MTU != 1200 {
		t.Errorf("server: lower %d mtu %d, want 1200 (the answered IKE_AUTH request): %v", est.Lower, est.MTU, est.Evidence)
	}
	// A 1400-byte INFORMATIONAL request from the server, answered by the
	// client.
	h.send(5*time.Second, false, false, ike.ExchangeInformational, 0, 1400)
	h.send(5*time.Second+10*time.Millisecond, true, true, ike.ExchangeInformational, 0, 100)
	est := h.estimate(cliAddr)
	if est.Lower != 1400 || est.MTU != 1400 || est.Upper != 0 {
		t.Errorf("client: lower %d mtu %d upper %d, want 1400/1400/0: %v", est.Lower, est.MTU, est.Upper, est.Evidence)
	}
	if !hasEvidence(est, "known to have arrived: 1400 bytes") || hasEvidence(est, "not confirmed") {
		t.Errorf("client evidence %v", est.Evidence)
	}
}

// A datagram seen on the way but never answered is not a lower bound.
func TestPMTULostDoesNotRaiseLower(t *testing.T) {
	h := newHandshake(t)
	h.init()
	h.send(20*time.Millisecond, true, false, ike.ExchangeIKEAuth, 1, 600)
	h.send(30*time.Millisecond, false, true, ike.ExchangeIKEAuth, 1, 500)
	// The server's 1400-byte request is never answered and the client
	// never moves on.
	h.send(5*time.Second, false, false, ike.ExchangeInformational, 0, 1400)
	est := h.estimate(cliAddr)
	if est.Lower != 500 || est.MTU != 500 {
		t.Errorf("client: lower %d mtu %d, want 500 (the IKE_AUTH response; the 1400-byte request was not answered): %v", est.Lower, est.MTU, est.Evidence)
	}
	if !hasEvidence(est, "seen toward it: 1400 bytes, not confirmed") {
		t.Errorf("the unanswered size is not kept as unconfirmed evidence: %v", est.Evidence)
	}
	// Sent once: a single loss is no upper bound.
	if est.Upper != 0 {
		t.Errorf("upper %d from a datagram sent once", est.Upper)
	}
}

// Sizes sent again and again without an answer, above the sizes that were
// answered, bound the path from above.
func TestPMTUUnansweredRetransmittedIsUpper(t *testing.T) {
	t.Run("request", func(t *testing.T) {
		h := newHandshake(t)
		h.init()
		// IKE_AUTH of 1420 bytes, sent four times, never answered.
		for i := range 4 {
			h.send(20*time.Millisecond+time.Duration(i)*2*time.Second, true, false, ike.ExchangeIKEAuth, 1, 1420)
		}
		// Not settled yet (live, 10 s after the last send): no bound.
		h.e.Advance(h.t0.Add(16 * time.Second))
		h.e.Report(false)
		if est, _ := h.e.PeerEstimate(srvAddr); est.Upper != 0 {
			t.Errorf("upper %d before the session settled: %v", est.Upper, est.Evidence)
		}
		// Quiet for longer than Options.Settle: judged live.
		h.e.Advance(h.t0.Add(40 * time.Second))
		h.e.Report(false)
		if est, _ := h.e.PeerEstimate(srvAddr); est.Upper != 1420 {
			t.Errorf("upper %d once the session settled, want 1420: %v", est.Upper, est.Evidence)
		}
		est := h.estimate(srvAddr)
		if est.Lower != 400 || est.Upper != 1420 || est.MTU != 400 {
			t.Errorf("server: lower %d upper %d mtu %d, want 400/1420/400: %v", est.Lower, est.Upper, est.MTU, est.Evidence)
		}
		if !hasEvidence(est, "1420-byte datagrams toward it went unanswered after 3 retransmissions while 400-byte ones were answered") {
			t.Errorf("server evidence %v", est.Evidence)
		}
	})
	t.Run("response", func(t *testing.T) {
		h := newHandshake(t)
		h.init()
		// The server answers each IKE_AUTH request with 1380 bytes; the
		// client keeps retransmitting, so none arrives.
		for i := range 4 {
			at := 20*time.Millisecond + time.Duration(i)*2*time.Second
			h.send(at, true, false, ike.ExchangeIKEAuth, 1, 700)
			h.send(at+10*time.Millisecond, false, true, ike.ExchangeIKEAuth, 1, 1380)
		}
		est := h.estimate(cliAddr)
		if est.Lower != 300 || est.Upper != 1380 || est.MTU != 300 {
			t.Errorf("client: lower %d upper %d mtu %d, want 300/1380/300: %v", est.Lower, est.Upper, est.MTU, est.Evidence)
		}
		if !hasEvidence(est, "1380-byte datagrams toward it went unanswered after 3 retransmissions while 300-byte ones were answered") {
			t.Errorf("client evidence %v", est.Evidence)
		}
		// The requests reached the server: it answered every one.
		if est := h.estimate(srvAddr); est.Lower != 700 || est.Upper != 0 {
			t.Errorf("server: lower %d upper %d, want 700/0: %v", est.Lower, est.Upper, est.Evidence)
		}
	})
	t.Run("answered elsewhere", func(t *testing.T) {
		h := newHandshake(t)
		h.init()
		for i := range 4 {
			h.send(20*time.Millisecond+time.Duration(i)*2*time.Second, true, false, ike.ExchangeIKEAuth, 1, 1420)
		}
		// A later IKE SA shows a larger datagram toward the server
		// arriving: the loss was not about size.
		h2 := &handshake{t: t, e: h.e, t0: h.t0.Add(time.Minute), spi: 0x3333}
		h2.send(0, true, false, ike.ExchangeIKESAInit, 0, 1480)
		h2.send(10*time.Millisecond, false, true, ike.ExchangeIKESAInit, 0, 300)
		est := h.estimate(srvAddr)
		if est.Lower != 1480 || est.Upper != 0 || est.MTU != 1480 {
			t.Errorf("server: lower %d upper %d mtu %d, want 1480/0/1480: %v", est.Lower, est.Upper, est.MTU, est.Evidence)
		}
	})
}

// ICMP too-big reports stay the strongest upper bound.
func TestPMTUICMPWins(t *testing.T) {
	h := newHandshake(t)
	h.init()
	for i := range 4 {
		h.send(20*time.Millisecond+time.Duration(i)*2*time.Second, true, false, ike.ExchangeIKEAuth, 1, 1420)
	}
	h.e.Add(obs.Record{TooBig: &obs.ICMPTooBig{Time: h.t0.Add(30 * time.Millisecond), From: netip.MustParseAddr("203.0.113.1"),
		To: cliAddr, MTU: 1300, OrigSrc: cliAddr, OrigDst: srvAddr, OrigProto: 17, OrigSrcPort: 500, OrigDstPort: 500}})
	est := h.estimate(srvAddr)
	if est.Upper != 1300 || est.MTU != 1300 || est.Lower != 400 {
		t.Errorf("server: lower %d upper %d mtu %d, want 400/1300/1300 (ICMP): %v", est.Lower, est.Upper, est.MTU, est.Evidence)
	}
	// The passive bound is still shown as evidence.
	if !hasEvidence(est, "ICMP too-big") || !hasEvidence(est, "1420-byte datagrams toward it went unanswered") {
		t.Errorf("server evidence %v", est.Evidence)
	}
}

// SKF responses sent whole and lost while smaller datagrams toward the
// client were answered: without ICMP, the passive bound names the cause.
func TestPassiveBoundNamesOversizedIKEFragments(t *testing.T) {
	h := newHandshake(t)
	h.init()
	for i := range 4 {
		at := 20*time.Millisecond + time.Duration(i)*2*time.Second
		h.send(at, true, false, ike.ExchangeIKEAuth, 1, 700)
		h.sendPayload(at+10*time.Millisecond, false, true, ike.ExchangeIKEAuth, 1, 1380, ike.PayloadEncryptedFragment)
	}
	got := verdictsOf(h.e.Report(true))
	want := verdict{diag.IKEFragmentsExceedPMTU, diag.TowardClient}
	if got[want] != 1 || len(got) != 1 {
		t.Errorf("verdicts %v, want exactly %v", got, want)
	}
}

// A request sent again cut into other IKE fragments has another length, so
// it is no retransmission by its bytes; it still says the response before
// it did not arrive.
func TestPMTURefragmentedResendIsNoAnswer(t *testing.T) {
	h := newHandshake(t)
	h.init()
	h.send(20*time.Millisecond, true, false, ike.ExchangeIKEAuth, 1, 700)
	h.send(30*time.Millisecond, false, true, ike.ExchangeIKEAuth, 1, 1380)
	h.send(2*time.Second, true, false, ike.ExchangeIKEAuth, 1, 600)
	h.send(2*time.Second+10*time.Millisecond, false, true, ike.ExchangeIKEAuth, 1, 1380)
	if est := h.estimate(cliAddr); est.Lower != 300 {
		t.Errorf("client: lower %d, want 300 (the 1380-byte responses were followed by a resend): %v", est.Lower, est.Evidence)
	}
}

// sendV1 feeds one unfragmented IKEv1 Main Mode datagram of ipLen bytes;
// the same arguments give the same bytes (a resend).
func (h *handshake) sendV1(at time.Duration, fromClient bool, ipLen int) {
	h.t.Helper()
	hdr := ike.Header{NextPayload: 13, MajorVersion: 1, Exchange: 2, Length: uint32(ipLen - 28)}
	binary.BigEndian.PutUint64(hdr.SPIi[:], h.spi)
	binary.BigEndian.PutUint64(hdr.SPIr[:], 0x2222)
	h.feed(at, fromClient, hdr, ipLen)
}

// IKEv1 exchanges are lock-step: a peer's next new message confirms the one
// sent to it before; its resend confirms nothing.
func TestPMTUIKEv1LockStep(t *testing.T) {
	ms := time.Millisecond
	h := newHandshake(t)
	h.sendV1(0, true, 300)
	h.sendV1(10*ms, false, 250)
	h.sendV1(20*ms, true, 400)
	h.sendV1(30*ms, false, 350)
	h.sendV1(40*ms, true, 1200)
	h.sendV1(50*ms, false, 100) // confirms the 1200 toward the server
	if est := h.estimate(srvAddr); est.Lower != 1200 {
		t.Errorf("toward the server: lower %d, want 1200 (%v)", est.Lower, est.Evidence)
	}
	if est := h.estimate(cliAddr); est.Lower != 350 {
		t.Errorf("toward the client: lower %d, want 350, the last message it answered (%v)", est.Lower, est.Evidence)
	}

	// The client resends message 3 instead of answering a 1400-byte
	// message 4: that one did not arrive.
	h = newHandshake(t)
	h.sendV1(0, true, 300)
	h.sendV1(10*ms, false, 250)
	h.sendV1(20*ms, true, 400)
	h.sendV1(30*ms, false, 1400)
	h.sendV1(1030*ms, true, 400)
	h.sendV1(2030*ms, true, 400)
	if est := h.estimate(cliAddr); est.Lower != 250 {
		t.Errorf("toward the client after resends: lower %d, want 250 (%v)", est.Lower, est.Evidence)
	}
}

// An IKE_AUTH response whose request was never seen (observation started
// in the middle of the exchange) is judged without one; it once made the
// engine index an empty request list.
func TestResponseWithoutRequest(t *testing.T) {
	h := newHandshake(t)
	h.init()
	h.send(20*time.Millisecond, false, true, ike.ExchangeIKEAuth, 1, 900)
	h.e.Report(true)
	if est := h.estimate(cliAddr); est.Lower != 300 {
		t.Errorf("toward the client: lower %d, want 300 (%v)", est.Lower, est.Evidence)
	}
}
