package diag

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// Peer holds the passive path-MTU evidence for one address: a few
// integers, whatever the traffic. Which datagrams it received is decided
// from the sessions (delivery.go) and folded in here.
type Peer struct {
	Addr netip.Addr
	Last time.Time
	// MaxUnfragFrom and MaxUnfragTo are the largest unfragmented IP packets
	// seen from and to the peer. Seen is not received: a datagram toward
	// the peer may have been lost after the observation point, so
	// MaxUnfragTo is evidence only.
	MaxUnfragFrom, MaxUnfragTo int
	// AnsweredTo is the largest unfragmented IP packet toward the peer that
	// it is known to have received (it answered the request, or moved on
	// after the response): the lower bound.
	AnsweredTo int
	// LostTo is the smallest unfragmented IP packet size toward the peer
	// that was sent LostSends times and never answered, in a session where
	// the answered ones toward it were smaller (the largest LostBelow): a
	// passive upper bound. 0 when none.
	LostTo, LostSends, LostBelow int
	// FirstFragFrom is the largest first-fragment IP length the peer sent:
	// its own MTU toward us, as its stack believed.
	FirstFragFrom int
	// TooBig is the smallest MTU an ICMP "fragmentation needed" or "packet
	// too big" message reported on the path to the peer, 0 when none.
	TooBig     int
	TooBigFrom netip.Addr
	TooBigSeen int
}

// PMTUEstimate is a path-MTU estimate with the evidence it rests on.
type PMTUEstimate struct {
	Peer string `json:"peer"`
	// MTU is the best estimate in bytes (0 when there is no evidence).
	MTU int `json:"mtu"`
	// Lower is a size known to pass (0 when unknown). Upper bounds the path
	// from above (0 when unknown): the MTU an ICMP too-big message
	// reported, or else the smallest size sent repeatedly and never
	// answered, which did not pass.
	Lower    int      `json:"lower,omitempty"`
	Upper    int      `json:"upper,omitempty"`
	Evidence []string `json:"evidence"`
}

func (e *Engine) peer(a netip.Addr) *Peer {
	p := e.peers[a]
	if p == nil {
		if len(e.peers) >= 4*e.opt.MaxSessions {
			// Bounded: keep evidence for the peers already known.
			return &Peer{Addr: a}
		}
		p = &Peer{Addr: a}
		e.peers[a] = p
	}
	p.Last = e.now
	return p
}

func (p *Peer) addTooBig(t *obs.ICMPTooBig) {
	if t.MTU <= 0 {
		return
	}
	p.TooBigSeen++
	if p.TooBig == 0 || t.MTU < p.TooBig {
		p.TooBig, p.TooBigFrom = t.MTU, t.From
	}
}

// peerEvidence records the sizes of an IKE datagram for both of its peers.
func (e *Engine) peerEvidence(g *Datagram) {
	from, to := e.peer(g.Src.Addr()), e.peer(g.Dst.Addr())
	if g.Fragmented() {
		if len(g.FragLens) > 0 && g.FragLens[0] > from.FirstFragFrom && g.Complete {
			from.FirstFragFrom = g.FragLens[0]
		}
		return
	}
	if g.IPLen > from.MaxUnfragFrom {
		from.MaxUnfragFrom = g.IPLen
	}
	if g.IPLen > to.MaxUnfragTo {
		to.MaxUnfragTo = g.IPLen
	}
}

// Estimate returns the path-MTU estimate toward a peer.
func (p *Peer) Estimate() PMTUEstimate {
	est := PMTUEstimate{Peer: p.Addr.String(), Evidence: []string{}}
	if p.AnsweredTo > 0 {
		est.Lower = p.AnsweredTo
		est.Evidence = append(est.Evidence, fmt.Sprintf("largest unfragmented packet toward it known to have arrived: %d bytes (answered, or followed by its next request)", p.AnsweredTo))
	}
	if p.MaxUnfragTo > p.AnsweredTo {
		est.Evidence = append(est.Evidence, fmt.Sprintf("largest unfragmented packet seen toward it: %d bytes, not confirmed (nothing showed that it arrived)", p.MaxUnfragTo))
	}
	if p.MaxUnfragFrom > 0 {
		est.Evidence = append(est.Evidence, fmt.Sprintf("largest unfragmented packet from it: %d bytes", p.MaxUnfragFrom))
	}
	if p.FirstFragFrom > 0 {
		est.Evidence = append(est.Evidence, fmt.Sprintf("it sent first IP fragments of %d bytes (its MTU as its stack saw it)", p.FirstFragFrom))
	}
	// A loss at or below a size known to pass was not the path's size
	// limit.
	lost := p.LostTo > est.Lower && est.Lower > 0
	if lost {
		re := "retransmissions"
		if p.LostSends == 2 {
			re = "retransmission"
		}
		est.Evidence = append(est.Evidence, fmt.Sprintf("%d-byte datagrams toward it went unanswered after %d %s while %d-byte ones were answered", p.LostTo, p.LostSends-1, re, p.LostBelow))
	}
	if p.TooBig > 0 {
		est.Upper = p.TooBig
		est.MTU = p.TooBig
		est.Evidence = append(est.Evidence, fmt.Sprintf("%d ICMP too-big message(s) on the path to it, smallest MTU %d (from %s)", p.TooBigSeen, p.TooBig, p.TooBigFrom))
		return est
	}
	if lost {
		est.Upper = p.LostTo
	}
	switch {
	case p.FirstFragFrom > 0 && p.FirstFragFrom >= est.Lower && (est.Upper == 0 || p.FirstFragFrom < est.Upper):
		est.MTU = p.FirstFragFrom
	case est.Lower > 0:
		// Between the bounds the exact size is unknown; the lower one is
		// known to pass.
		est.MTU = est.Lower
	}
	return est
}

// Peers returns the path-MTU estimates for every peer with evidence, sorted
// by address.
func (e *Engine) Peers() []PMTUEstimate {
	out := make([]PMTUEstimate, 0, len(e.peers))
	for _, p := range e.peers {
		out = append(out, p.Estimate())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// PeerEstimate returns the estimate for one address.
func (e *Engine) PeerEstimate(a netip.Addr) (PMTUEstimate, bool) {
	p := e.peers[a]
	if p == nil {
		return PMTUEstimate{}, false
	}
	return p.Estimate(), true
}
