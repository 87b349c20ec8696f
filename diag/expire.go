package diag

// What the engine forgets: idle sessions, the oldest over its limits.

import (
	"time"
)

// evictOldest forgets the least recently active session.
func (e *Engine) evictOldest() {
	if f := e.lru.Front(); f != nil {
		s := f.Value.(*Session)
		e.settle(s, e.now.Sub(s.Last) >= e.opt.Settle)
		e.forget(s)
		e.stats.Evicted++
	}
}

func (e *Engine) forget(s *Session) {
	e.mem.release(s)
	delete(e.sessions, s.key)
	if p := pairOf(s.Initiator.Addr(), s.Responder.Addr()); e.pairLatest[p] == s {
		delete(e.pairLatest, p)
	}
	e.lru.Remove(s.elem)
	delete(e.live.marks, s.ID)
}

// Expire forgets sessions idle for longer than Options.Idle at time now.
func (e *Engine) Expire(now time.Time) int {
	n := 0
	// Activity order is arrival order; captures may carry timestamps that
	// go backwards, so test each session rather than stop at the first
	// recent one.
	for el := e.lru.Front(); el != nil; {
		next := el.Next()
		if s := el.Value.(*Session); now.Sub(s.Last) > e.opt.Idle {
			// Fold what it proves into its peers' evidence first.
			e.settle(s, now.Sub(s.Last) >= e.opt.Settle)
			e.forget(s)
			n++
		}
		el = next
	}
	for k, o := range e.orphans {
		if now.Sub(o.Last) > e.opt.Idle {
			delete(e.orphans, k)
		}
	}
	for k, f := range e.esp {
		if now.Sub(f.last) > e.opt.Idle {
			delete(e.esp, k)
		}
	}
	for a, p := range e.peers {
		if now.Sub(p.Last) > e.opt.Idle {
			delete(e.peers, a)
		}
	}
	return n
}
