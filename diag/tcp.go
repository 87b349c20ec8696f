package diag

// IKE and ESP over TCP (RFC 9329). A frame of a TCP stream reaches the
// engine as an obs.Datagram of Proto 6 whose Payload is what a UDP
// datagram on the NAT-T port would carry: IKE behind the non-ESP marker,
// or ESP (diag/capture's EncapReader decodes them from captures; the
// daemon hands over the frames its proxy relays). Its IKE messages join
// the session of their SPIs like any other, so a client that moves an
// IKE SA between UDP and TCP keeps one session, and each datagram says
// which transport carried it (Datagram.TCP).
//
// Nothing on a TCP leg is IP-fragmented, and TCP segments say nothing of
// the sizes the path carries: a frame gives no path-MTU evidence, no
// fragment verdict (FRAGMENTS_DROPPED, IKE_FRAGMENTS_EXCEED_PMTU,
// FRAGMENTATION_NOT_NEGOTIATED) is drawn from it, and its ESP joins no ESP
// flow. A session established over TCP after IKE over UDP between the
// same peers failed (in the same IKE SA, or in the client's earlier
// attempt) gets TCP_FALLBACK: the VPN works, the UDP path still does not.

import (
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

// Transports of a session (SessionReport.Transport).
const (
	TransportTCP    = "tcp"     // every IKE datagram over RFC 9329 TCP
	TransportUDPTCP = "udp+tcp" // some over UDP, some over TCP
)

// tcpFallbackWindow is how long after a failed attempt over UDP a session
// over TCP between the same peers counts as its fallback: a client gives
// up on UDP after its retransmissions (libreswan's retransmit-timeout is
// 60 s, strongSwan's five retransmissions take 165 s), then tries TCP.
const tcpFallbackWindow = 5 * time.Minute

// tcpAnswerGrace is how long after its last send a request over TCP must
// go unanswered, in a settled session, before it counts as unanswered
// without a retransmission: over a stream the initiator may not
// retransmit at all, and responders answer within a fraction of it.
const tcpAnswerGrace = 5 * time.Second

// addTCPFrame takes one RFC 9329 frame.
func (e *Engine) addTCPFrame(d *obs.Datagram) {
	e.stats.TCPFrames++
	fr := ike.ClassifyNATT(d.Payload)
	switch fr.Kind {
	case ike.KindIKE:
		e.addIKE(d, fr, true)
	case ike.KindESP:
		// Counted only: no IP fragment of it can be lost on the TCP
		// leg, and its size says nothing of the path (esp.go judges
		// ESP over UDP and IP).
		e.stats.ESP++
	default:
		// RFC 9329 §3: no keepalives on a stream; a frame shorter than
		// a marker or an SPI is junk.
		e.stats.Undecodable++
	}
}

// Transport returns TransportTCP or TransportUDPTCP for a session whose
// IKE datagrams went over TCP, "" for UDP only.
func (s *Session) Transport() string {
	switch {
	case s.TCPDatagrams == 0:
		return ""
	case s.UDPDatagrams == 0:
		return TransportTCP
	}
	return TransportUDPTCP
}

// anyTCP reports whether a datagram of the transmissions went over TCP.
func anyTCP(tss ...[]*Transmission) bool {
	f := false
	for _, ts := range tss {
		datagrams(ts, func(d *Datagram) { f = f || d.TCP })
	}
	return f
}

// overUDP returns the transmissions sent over UDP before at (all of them
// when at is zero).
func overUDP(ts []*Transmission, at time.Time) []*Transmission {
	var out []*Transmission
	for _, t := range ts {
		if !t.Datagrams[0].TCP && (at.IsZero() || t.Time.Before(at)) {
			out = append(out, t)
		}
	}
	return out
}

// firstTCP returns the time of the session's first datagram over TCP.
func firstTCP(s *Session) time.Time {
	var at time.Time
	for _, x := range s.Exchanges {
		for _, ts := range [][]*Transmission{x.Requests, x.Responses} {
			datagrams(ts, func(d *Datagram) {
				if d.TCP && (at.IsZero() || d.Time.Before(at)) {
					at = d.Time
				}
			})
		}
	}
	return at
}

// tcpAnsweredLast reports whether the last response of x went over TCP
// and no request came after it: a response on a stream arrives, or the
// stream breaks.
func tcpAnsweredLast(x *Exchange) bool {
	if len(x.Responses) == 0 {
		return false
	}
	r := x.Responses[len(x.Responses)-1]
	if !r.Datagrams[0].TCP {
		return false
	}
	for _, q := range x.Requests {
		if q.Time.After(r.Time) {
			return false
		}
	}
	return true
}

// authTCP judges an IKE_AUTH (or IKE_INTERMEDIATE) exchange carried over
// TCP, wholly or after UDP: no IP fragment is lost on a TCP leg, so an
// exchange that still fails is UNANSWERED_IKE_AUTH, never a fragment
// verdict.
func (v *evaluator) authTCP(x *Exchange) {
	s := v.s
	name := x.Type.String()
	tcp := "carried over TCP (RFC 9329): nothing of it was IP-fragmented, so no IP fragment was lost"
	if !x.Answered() {
		if len(x.Requests) == 0 {
			return
		}
		last := x.Requests[len(x.Requests)-1].Time
		if x.Retransmissions() == 0 && (!v.settled || v.e.now.Sub(last) < tcpAnswerGrace) {
			return
		}
		n := len(v.out)
		defer func() { v.mark(n, !v.settled, nil) }()
		ev := []string{v.sendsString(x.Requests), "no response", tcp}
		v.add(UnansweredIKEAuth, Error, TowardServer, x,
			sprintf("%s request over TCP (RFC 9329) was never answered", name), ev, v.frames(x)).Remedy = remediesTCP[UnansweredIKEAuth]
		return
	}
	if !responseLost(s, x) {
		return
	}
	n := len(v.out)
	defer func() { v.mark(n, !v.settled, nil) }()
	ev := []string{v.sendsString(x.Requests), "responses: " + v.sendsString(x.Responses),
		"the initiator retransmitted after the response was sent: the response does not arrive", tcp}
	v.add(UnansweredIKEAuth, Error, TowardClient, x,
		sprintf("%s response was sent but the initiator kept retransmitting over TCP (RFC 9329): it does not reach the client", name), ev, v.frames(x)).Remedy = remediesTCP[UnansweredIKEAuth]
}

// tcpFallback adds TCP_FALLBACK to a session established over TCP after
// IKE over UDP between the same peers failed: requests of this IKE SA
// sent over UDP and never answered over UDP, or the client's previous
// session, over UDP only, not established and ended shortly before.
func (v *evaluator) tcpFallback() {
	s := v.s
	if s.TCPDatagrams == 0 || !s.Established() {
		return
	}
	var ev []string
	var frames []int
	at := firstTCP(s)
	for _, x := range s.Exchanges {
		if !x.ByInitiator {
			continue
		}
		u := overUDP(x.Requests, at)
		if len(u) == 0 || len(overUDP(x.Responses, time.Time{})) > 0 {
			continue
		}
		ev = append(ev, "over UDP first: "+v.sendsString(u)+"; no response over UDP")
		datagrams(u, func(d *Datagram) {
			if len(frames) < 64 {
				frames = append(frames, d.Frames...)
			}
		})
	}
	if p := v.e.fallbackFrom(s); len(ev) == 0 && p != nil {
		line := sprintf("session %d (SPIs %s/%s) between the same peers, over UDP only, was not established", p.ID, p.SPIi, p.SPIr)
		for i := len(p.Exchanges) - 1; i >= 0; i-- {
			if x := p.Exchanges[i]; x.ByInitiator && len(x.Requests) > 0 {
				line += ": " + v.sendsString(x.Requests)
				if !x.Answered() {
					line += "; no response"
				} else {
					line += "; responses: " + v.sendsString(x.Responses)
				}
				datagrams(x.Requests, func(d *Datagram) {
					if len(frames) < 64 {
						frames = append(frames, d.Frames...)
					}
				})
				break
			}
		}
		ev = append(ev, line, sprintf("this session began %s after it, over TCP", s.First.Sub(p.Last).Round(10*time.Millisecond)))
	}
	if len(ev) == 0 {
		return
	}
	if x := s.Find(ike.ExchangeIKEAuth); x != nil {
		ev = append(ev, "IKE_AUTH answered over TCP (RFC 9329): "+v.sendsString(x.Requests)+" → "+v.sendsString(x.Responses))
	}
	v.add(TCPFallback, Warning, "", nil,
		"IKE over UDP failed and the client fell back to TCP (RFC 9329), where the IKE SA was established: the UDP path still fails", ev, frames)
}

// fallbackFrom returns the session a TCP session is the fallback of: the
// latest session between the same peers when it began, in the same roles,
// over UDP only, not established, ended at most tcpFallbackWindow before.
func (e *Engine) fallbackFrom(s *Session) *Session {
	if !s.hasPrev || s.UDPDatagrams > 0 || s.TCPDatagrams == 0 {
		return nil
	}
	p := e.sessions[s.prev]
	if p == nil || p == s || p.IKEv1 || p.TCPDatagrams > 0 || p.UDPDatagrams == 0 || p.Established() ||
		p.Initiator.Addr() != s.Initiator.Addr() || p.Responder.Addr() != s.Responder.Addr() ||
		p.Last.After(s.First) || s.First.Sub(p.Last) > tcpFallbackWindow {
		return nil
	}
	return p
}
