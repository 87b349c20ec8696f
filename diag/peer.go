package diag

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// Peer holds the passive path-MTU evidence for one address.
type Peer struct {
	Addr netip.Addr
	Last time.Time
	// MaxUnfragFrom and MaxUnfragTo are the largest unfragmented IP packets
	// seen from and to the peer: the path carried them, so the path MTU in
	// that direction is at least this (when they were not lost).
	MaxUnfragFrom, MaxUnfragTo int
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
	// Lower is a size known to pass (0 when unknown); Upper a size known not
	// to pass unfragmented (0 when unknown).
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
	if p.MaxUnfragTo > 0 {
		est.Lower = p.MaxUnfragTo
		est.Evidence = append(est.Evidence, fmt.Sprintf("largest unfragmented packet toward it: %d bytes", p.MaxUnfragTo))
	}
	if p.MaxUnfragFrom > 0 {
		est.Evidence = append(est.Evidence, fmt.Sprintf("largest unfragmented packet from it: %d bytes", p.MaxUnfragFrom))
	}
	if p.FirstFragFrom > 0 {
		est.Evidence = append(est.Evidence, fmt.Sprintf("it sent first IP fragments of %d bytes (its MTU as its stack saw it)", p.FirstFragFrom))
	}
	if p.TooBig > 0 {
		est.Upper = p.TooBig
		est.MTU = p.TooBig
		est.Evidence = append(est.Evidence, fmt.Sprintf("%d ICMP too-big message(s) on the path to it, smallest MTU %d (from %s)", p.TooBigSeen, p.TooBig, p.TooBigFrom))
		return est
	}
	switch {
	case p.FirstFragFrom > 0 && (p.FirstFragFrom >= est.Lower):
		est.MTU = p.FirstFragFrom
	case est.Lower > 0:
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
