package diag

import "time"

// Advance moves the engine's clock forward to now. Live use calls it on a
// timer: the clock otherwise moves only with observations, so a session
// whose last packet was a lost request would never settle and be judged.
func (e *Engine) Advance(now time.Time) {
	e.advance(now)
	// ESP datagrams still waiting for traffic back are judged by the
	// clock, not only by the next datagram.
	for _, f := range e.esp {
		e.expireESP(f, e.now)
	}
}

// Counts returns how many sessions and peers the engine holds, without
// building them.
func (e *Engine) Counts() (sessions, peers int) { return len(e.sessions), len(e.peers) }

// PeerMTUs appends the path-MTU estimate of every peer with one to dst.
func (e *Engine) PeerMTUs(dst []int) []int {
	for _, p := range e.peers {
		if m := p.Estimate().MTU; m > 0 {
			dst = append(dst, m)
		}
	}
	return dst
}
