package diag

import "time"

// Live use. The daemon feeds observations (Add), moves the clock on a
// timer (Advance) and asks for verdicts on every tick (Judge); these are
// the rules of when a verdict is reported, so that package main only wires.
// Verdicts themselves come from the same code as for a capture (judge in
// verdict.go).

// Advance moves the engine's clock forward to now. Live use calls it on a
// timer: the clock otherwise moves only with observations, so a session
// whose last packet was a lost request would never settle and be judged.
func (e *Engine) Advance(now time.Time) {
	e.advance(now)
	// ESP datagrams still waiting for traffic back are judged by the
	// clock, not only by the next datagram.
	e.expireESPAll()
}

// LiveVerdict is what Judge reports: a verdict not reported before, or a
// provisional verdict withdrawn.
type LiveVerdict struct {
	Verdict
	// Withdrawn is set when a provisional verdict reported earlier no
	// longer holds (a late response arrived) and was never made final.
	// Verdict then carries its code, session, peers, direction, exchange
	// and Message ID.
	Withdrawn bool
}

// liveMark is what the live judge remembers of a session between calls.
type liveMark struct {
	last    time.Time // the session's Last when it was judged
	changes uint64    // the session's Changes when it was judged
	settled bool
	seen    map[verdictKey]struct{}
}

// verdictKey identifies a verdict within a session, so that it is
// reported once.
type verdictKey struct {
	code     Code
	dir      string
	exchange string
	mid      uint32
	// provisional: a verdict reported as provisional is reported again
	// when it becomes final.
	provisional bool
}

func keyOf(v *Verdict) verdictKey {
	k := verdictKey{code: v.Code, dir: v.Direction, exchange: v.Exchange, provisional: v.Provisional}
	if v.MessageID != nil {
		k.mid = *v.MessageID
	}
	return k
}

// findingKey identifies a report-level finding.
type findingKey struct {
	code   Code
	target string
}

// maxFindingKeys bounds the findings remembered; past it they may be
// reported again, which is harmless.
const maxFindingKeys = 4096

// liveState is the live judge's memory. Marks are dropped with their
// session (forget), so it holds no more than the engine's sessions.
type liveState struct {
	marks    map[int]*liveMark
	findings map[findingKey]struct{}
}

// Judge evaluates, at the engine's clock, the sessions that changed or
// settled since the last call and returns the verdicts not reported before
// (each once per session; a provisional one again when it becomes final),
// the provisional verdicts withdrawn, and the report-level findings not
// reported before (once per target and code). The verdicts are those a
// capture of the same traffic gives (Verdicts), from the same code.
func (e *Engine) Judge() []LiveVerdict {
	if e.live.marks == nil {
		e.live.marks = map[int]*liveMark{}
		e.live.findings = map[findingKey]struct{}{}
	}
	var changed []*Session
	for _, s := range e.Sessions() {
		settled := e.settled(s, false)
		m := e.live.marks[s.ID]
		if m == nil {
			m = &liveMark{seen: map[verdictKey]struct{}{}}
			e.live.marks[s.ID] = m
		} else if s.Last.Equal(m.last) && m.settled == settled && m.changes == s.Changes {
			continue
		}
		m.last, m.settled, m.changes = s.Last, settled, s.Changes
		changed = append(changed, s)
	}
	var out []LiveVerdict
	e.judge(changed, false, func(s *Session, vs []Verdict) {
		m := e.live.marks[s.ID]
		for i := range vs {
			k := keyOf(&vs[i])
			if _, ok := m.seen[k]; !ok {
				m.seen[k] = struct{}{}
				out = append(out, LiveVerdict{Verdict: vs[i]})
			}
		}
		out = withdrawn(out, s, m, vs)
	})
	for _, v := range e.Findings(false) {
		k := findingKey{code: v.Code, target: v.Client}
		if _, ok := e.live.findings[k]; !ok {
			if len(e.live.findings) >= maxFindingKeys {
				clear(e.live.findings)
			}
			e.live.findings[k] = struct{}{}
			out = append(out, LiveVerdict{Verdict: v})
		}
	}
	return out
}

// withdrawn appends the provisional verdicts of a session that no longer
// hold and were never made final, once each.
func withdrawn(out []LiveVerdict, s *Session, m *liveMark, vs []Verdict) []LiveVerdict {
	for k := range m.seen {
		if !k.provisional {
			continue
		}
		final := k
		final.provisional = false
		if _, ok := m.seen[final]; ok {
			continue
		}
		still := false
		for i := range vs {
			h := keyOf(&vs[i])
			still = still || h.code == k.code && h.dir == k.dir && h.exchange == k.exchange && h.mid == k.mid
		}
		if still {
			continue
		}
		delete(m.seen, k)
		v := Verdict{Code: k.code, Direction: k.dir, Session: s.ID, Client: s.Initiator.String(), Server: s.Responder.String(),
			Exchange: k.exchange, Provisional: true, Evidence: []string{}}
		if k.exchange != "" {
			mid := k.mid
			v.MessageID = &mid
		}
		out = append(out, LiveVerdict{Verdict: v, Withdrawn: true})
	}
	return out
}

// Judged returns how many sessions the live judge remembers: never more
// than the sessions the engine holds.
func (e *Engine) Judged() int { return len(e.live.marks) }

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
