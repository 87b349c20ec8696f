package diag

import (
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// Which datagrams toward a peer the peer is known to have received. Seeing a
// datagram on the wire does not prove it arrived: only the peer's reaction
// does. The proof comes from the pairing sessions already keep (Exchange):
//
//   - a response proves that the request sent last before it reached the
//     responder;
//   - a new request from the requester — the first request of an exchange
//     with a higher Message ID in the same direction, or a new IKE_SA_INIT
//     message (a retry after COOKIE or INVALID_KE_PAYLOAD) — proves that it
//     got the response sent last before it;
//   - once the session has settled, a response after which the requester
//     never retransmitted arrived, unless an identical-sized response before
//     it was followed by a retransmission (then the requester may have given
//     up, and the answer is unknown).
//
// Datagrams sent again and again and never answered, in a session where
// every answered datagram toward the same peer was smaller, bound the path
// from above. IKEv1 has no request/response flag to pair on; its exchanges
// are lock-step instead (deliveredV1), and give no upper bound.

// sizeOf returns the largest unfragmented IP packet of a transmission (0
// when all were IP-fragmented) and whether none of them was fragmented.
func sizeOf(t *Transmission) (size int, unfragmented bool) {
	unfragmented = true
	for _, d := range t.Datagrams {
		if d.Fragmented() {
			unfragmented = false
			continue
		}
		size = max(size, d.IPLen)
	}
	return size, unfragmented
}

// lastBefore returns the latest transmission sent at or before t, or nil.
// Transmissions are kept in arrival order; captures may carry timestamps
// that go backwards, so every one is looked at.
func lastBefore(ts []*Transmission, t time.Time) *Transmission {
	var last *Transmission
	for _, x := range ts {
		if !x.Time.After(t) && (last == nil || !x.Time.Before(last.Time)) {
			last = x
		}
	}
	return last
}

// credit records that the peer a transmission went to received it, and
// returns its largest unfragmented IP packet.
func (e *Engine) credit(t *Transmission) int {
	if t == nil {
		return 0
	}
	n := 0
	for _, d := range t.Datagrams {
		if d.Fragmented() {
			continue
		}
		n = max(n, d.IPLen)
		if p := e.peers[d.Dst.Addr()]; p != nil && d.IPLen > p.AnsweredTo {
			p.AnsweredTo = d.IPLen
		}
	}
	return n
}

// newMessage reports whether request transmission t of x is a new message
// under the same Message ID rather than a resend. Only IKE_SA_INIT has
// those (a retry after COOKIE or INVALID_KE_PAYLOAD); elsewhere a request
// that differs from the first is the same message cut into other IKE
// fragments (RFC 7383 §2.5.2), which the requester sends for want of an
// answer.
func newMessage(x *Exchange, t *Transmission) bool {
	return x.Type == ike.ExchangeIKESAInit && !t.Retransmission && len(x.Requests) > 0 && x.Requests[0] != t
}

// resent reports whether request transmission t of x sends its request
// again.
func resent(x *Exchange, t *Transmission) bool {
	return len(x.Requests) > 0 && x.Requests[0] != t && !newMessage(x, t)
}

// movedOn returns when the requester of x first sent a request of a later
// exchange in the same direction after x's first response, or zero. With
// the default window of one outstanding request (RFC 7296 §2.3), it could
// not have done so without a response to x.
func movedOn(s *Session, x *Exchange) time.Time {
	if !x.Answered() {
		return time.Time{}
	}
	first := x.FirstResponse()
	var at time.Time
	for _, y := range s.Exchanges {
		if y.ByInitiator != x.ByInitiator || y.MessageID <= x.MessageID || len(y.Requests) == 0 {
			continue
		}
		if t := y.Requests[0].Time; !t.Before(first) && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	return at
}

// delivered credits what a new transmission t of exchange x proves arrived.
// It runs as datagrams are placed, so that estimates handed to the proxy
// during a handshake already rest on answered sizes.
func (e *Engine) delivered(s *Session, x *Exchange, t *Transmission) {
	if s.IKEv1 {
		e.deliveredV1(x, t)
		return
	}
	if t.Datagrams[0].Header.Flags.Response() {
		e.credit(lastBefore(x.Requests, t.Time))
		return
	}
	if newMessage(x, t) {
		e.credit(lastBefore(x.Responses, t.Time))
		return
	}
	if len(x.Requests) > 1 {
		return
	}
	for _, y := range s.Exchanges {
		if y != x && y.ByInitiator == x.ByInitiator && y.MessageID < x.MessageID {
			if at := movedOn(s, y); !at.IsZero() {
				e.credit(lastBefore(y.Responses, at))
			}
		}
	}
}

// deliveredV1 credits what a new IKEv1 message proves. ISAKMP exchanges
// (Main, Aggressive and Quick Mode) are lock-step under one Message ID: a
// peer sends its next message only after it received the other's, so a
// new message from a peer proves that the message sent to it last before,
// in the same exchange, arrived. A resend proves nothing; a new message the
// same length as an earlier one is taken for a resend, which only ever
// credits less.
func (e *Engine) deliveredV1(x *Exchange, t *Transmission) {
	if t.Retransmission {
		return
	}
	from := t.Datagrams[0].Src.Addr()
	var last *Transmission
	for _, u := range x.Requests {
		if u != t && u.Datagrams[0].Dst.Addr() == from && !u.Time.After(t.Time) && (last == nil || !u.Time.Before(last.Time)) {
			last = u
		}
	}
	e.credit(last)
}

// exchangeDelivery is what one exchange shows about the datagrams toward
// each of its two peers.
type exchangeDelivery struct {
	// answered: the largest unfragmented packet known to have arrived.
	answered int
	// lost: the smallest unfragmented size sent at least twice and never
	// answered, and how many times it was sent; 0 when none.
	lost, sends int
}

// settle credits everything a session proves arrived, including what only a
// quiet session proves (settled), and folds a passive upper bound into the
// peers' evidence. Folding takes maxima and minima, so settling a session
// again is harmless.
func (e *Engine) settle(s *Session, settled bool) {
	if s.IKEv1 {
		return
	}
	// A loss counts only against the answers toward the same peer in the
	// whole session, so answers are gathered first.
	type pair struct{ req, resp exchangeDelivery }
	var buf [8]pair // most sessions hold a handful of exchanges
	got := buf[:0]
	var ansInit, ansResp int
	for _, x := range s.Exchanges {
		req, resp := e.deliveries(s, x, settled)
		got = append(got, pair{req, resp})
		if x.ByInitiator {
			ansResp, ansInit = max(ansResp, req.answered), max(ansInit, resp.answered)
		} else {
			ansInit, ansResp = max(ansInit, req.answered), max(ansResp, resp.answered)
		}
	}
	if !settled {
		return
	}
	for i, x := range s.Exchanges {
		if x.ByInitiator {
			e.lostToward(s.Responder.Addr(), got[i].req, ansResp)
			e.lostToward(s.Initiator.Addr(), got[i].resp, ansInit)
		} else {
			e.lostToward(s.Initiator.Addr(), got[i].req, ansInit)
			e.lostToward(s.Responder.Addr(), got[i].resp, ansResp)
		}
	}
}

// lostToward folds a loss into a peer's evidence when smaller datagrams
// toward it were answered in the same session and none as large.
func (e *Engine) lostToward(a netip.Addr, d exchangeDelivery, answered int) {
	if d.lost == 0 || answered == 0 || d.lost <= answered {
		return
	}
	p := e.peers[a]
	if p == nil {
		return
	}
	// Ties go to more sends, then to the larger answered size, so that
	// the result does not depend on the order sessions are folded in.
	if p.LostTo == 0 || d.lost < p.LostTo || d.lost == p.LostTo && (d.sends > p.LostSends || d.sends == p.LostSends && answered > p.LostBelow) {
		p.LostTo, p.LostSends, p.LostBelow = d.lost, d.sends, answered
	}
}

// deliveries credits the transmissions of x known to have arrived and
// reports, for the requests (toward the responder) and the responses
// (toward the requester), the largest answered size and, when settled, the
// smallest size that was sent repeatedly and never answered.
func (e *Engine) deliveries(s *Session, x *Exchange, settled bool) (req, resp exchangeDelivery) {
	// Requests: each response proves the request sent last before it.
	var reqOK [maxTracked]bool
	for _, r := range x.Responses {
		if t := lastBefore(x.Requests, r.Time); t != nil {
			req.answered = max(req.answered, e.credit(t))
			if i := index(x.Requests, t); i >= 0 && i < maxTracked {
				reqOK[i] = true
			}
		}
	}
	// Responses: a new request from the requester proves the response
	// sent last before it.
	var respOK [maxTracked]bool
	creditResp := func(at time.Time) {
		if t := lastBefore(x.Responses, at); t != nil {
			resp.answered = max(resp.answered, e.credit(t))
			if i := index(x.Responses, t); i >= 0 && i < maxTracked {
				respOK[i] = true
			}
		}
	}
	if at := movedOn(s, x); !at.IsZero() {
		creditResp(at)
	}
	for _, t := range x.Requests {
		if newMessage(x, t) {
			creditResp(t.Time)
		}
	}
	if !settled || len(x.Requests) == 0 {
		// Without the requests in view, nothing says whether the
		// requester retransmitted.
		return req, resp
	}
	// A response followed by a resent request did not arrive (or arrived
	// too late); one never followed by a resend did, unless a same-sized
	// response was lost before it.
	var respLost [maxTracked]bool
	for i, r := range x.Responses {
		if i >= maxTracked {
			break
		}
		for _, q := range x.Requests {
			if resent(x, q) && q.Time.After(r.Time) {
				respLost[i] = true
				break
			}
		}
	}
	for i, r := range x.Responses {
		if i >= maxTracked || respLost[i] || respOK[i] {
			continue
		}
		n, _ := sizeOf(r)
		if !sameSizeAs(x.Responses, respLost[:], n) {
			resp.answered = max(resp.answered, e.credit(r))
			respOK[i] = true
		}
	}
	req.lost, req.sends = unanswered(x.Requests, reqOK[:], nil)
	resp.lost, resp.sends = unanswered(x.Responses, respOK[:], respLost[:])
	return req, resp
}

// maxTracked bounds the per-exchange scratch arrays; Options.MaxTransmissions
// defaults to 16, and transmissions beyond this are left out of the bound.
const maxTracked = 64

func index(ts []*Transmission, t *Transmission) int {
	for i, x := range ts {
		if x == t {
			return i
		}
	}
	return -1
}

// sameSizeAs reports whether a transmission marked in mark has size n.
func sameSizeAs(ts []*Transmission, mark []bool, n int) bool {
	for i, t := range ts {
		if i < len(mark) && mark[i] {
			if m, _ := sizeOf(t); m == n {
				return true
			}
		}
	}
	return false
}

// unanswered returns the smallest size among transmissions that were sent
// whole (no IP fragments), not answered and never matched in size by an
// answered one, and how often that size was sent. A size counts only when
// at least two of its sends went unanswered; followed, when given, narrows
// "unanswered" to the sends a retransmitted request came after (for
// responses: the last one may have arrived, or the requester gave up).
func unanswered(ts []*Transmission, ok, followed []bool) (size, sends int) {
	for i, t := range ts {
		if i >= len(ok) || ok[i] {
			continue
		}
		n, whole := sizeOf(t)
		if !whole || n == 0 || size != 0 && n >= size || sameSizeAs(ts, ok, n) {
			continue
		}
		c, f := 0, 0
		for j, u := range ts {
			if j >= len(ok) || ok[j] {
				continue
			}
			if m, w := sizeOf(u); w && m == n {
				c++
				if followed == nil || followed[j] {
					f++
				}
			}
		}
		if f >= 2 {
			size, sends = n, c
		}
	}
	return size, sends
}
