package diag

import (
	"fmt"
	"time"
)

// One memory budget for what the engine keeps of sessions: exchanges,
// transmissions, datagrams (with their decoded messages, SKF payloads and
// decryptions) and the signatures that tell copies from retransmissions.
// Per-session caps alone multiply out (64 exchanges × 16 transmissions ×
// 256 fragments) to half a million datagrams for one IKE SA; the budget
// is charged on every insert, so what is kept never exceeds it.

// Budget defaults.
const (
	// DefaultMaxMemory is Options.MaxMemory: 256 MiB holds about 100,000
	// sessions of a full IKE_SA_INIT and IKE_AUTH with certificates.
	DefaultMaxMemory = 256 << 20
	// saShareDiv: one IKE SA may hold at most MaxMemory/saShareDiv bytes
	// (4 MiB of the default): a few hundred fragments of every message of
	// a normal IKE SA, nowhere near what a flood of one SPI pair can send.
	saShareDiv = 64
	// minSAShare keeps a small budget usable for one IKE SA.
	minSAShare = 256 << 10
	// datagramOverhead approximates the bookkeeping of one kept datagram
	// (Datagram, Transmission, signature entry, slices) beyond its bytes.
	datagramOverhead = 512
	// evictScan bounds the sessions looked at for a less useful victim
	// before the least recently active one is taken: eviction stays O(1)
	// per insert under a flood.
	evictScan = 32
	// degradedFor is how long after the budget last had to act the
	// engine reports itself degraded.
	degradedFor = time.Minute
)

// BudgetReason says why the budget dropped or evicted state.
type BudgetReason uint8

const (
	// BudgetEvictedUnestablished: a session with no IKE SA established,
	// least recently active first, made room.
	BudgetEvictedUnestablished BudgetReason = iota
	// BudgetEvictedOldest: the least recently active session made room
	// (no unestablished one among the oldest).
	BudgetEvictedOldest
	// BudgetSAShare: a datagram not kept because its IKE SA holds its
	// share of the budget.
	BudgetSAShare
	// BudgetNoRoom: a datagram not kept because nothing else could be
	// evicted (its own session holds the rest).
	BudgetNoRoom
	numBudgetReasons
)

var budgetReasonNames = [numBudgetReasons]string{"evicted_unestablished", "evicted_oldest", "sa_share", "no_room"}

func (r BudgetReason) String() string {
	if r < numBudgetReasons {
		return budgetReasonNames[r]
	}
	return "unknown"
}

// MemoryStats describe the budget.
type MemoryStats struct {
	// Used and Max are the bytes charged now and the budget
	// (Options.MaxMemory); SAShare is one IKE SA's limit.
	Used    int64 `json:"used"`
	Max     int64 `json:"max"`
	SAShare int64 `json:"sa_share"`
	// Largest is the most one session holds.
	Largest int64 `json:"largest_session"`
	// Acted counts evictions and drops by reason (BudgetReason names).
	Acted map[string]uint64 `json:"acted,omitempty"`
	// Degraded is set while the budget acted within the last minute;
	// Why says what it did.
	Degraded bool   `json:"degraded"`
	Why      string `json:"why,omitempty"`
}

// budget is the engine's memory account.
type budget struct {
	max, share int64
	used       int64
	bySession  map[*Session]int64
	acted      [numBudgetReasons]uint64
	lastAct    time.Time
	lastReason BudgetReason
}

func newBudget(max int64) *budget {
	share := max / saShareDiv
	if share < minSAShare {
		share = min(minSAShare, max)
	}
	return &budget{max: max, share: share, bySession: map[*Session]int64{}}
}

// datagramCost estimates what keeping g (raw: its IKE bytes) costs: the
// bytes themselves (the decoded message's payload bodies are slices of or
// copies no larger than them), a decryption's inner payloads as much
// again, and the bookkeeping.
func datagramCost(g *Datagram, raw []byte) int64 {
	c := int64(datagramOverhead + len(raw) + 8*len(g.FragLens) + 16*len(g.Missing))
	if g.Message != nil {
		c += int64(len(raw)) + 64*int64(len(g.Message.Payloads))
	}
	return c
}

// charge accounts a datagram about to be kept in s and reports whether it
// may be: over the session's share it may not; over the budget, other
// sessions are evicted first (the least useful, then the oldest).
func (e *Engine) charge(s *Session, g *Datagram, raw []byte) bool {
	b := e.mem
	c := datagramCost(g, raw)
	if b.bySession[s]+c > b.share {
		b.act(BudgetSAShare, e.now)
		return false
	}
	for b.used+c > b.max {
		v, why := e.budgetVictim(s)
		if v == nil {
			b.act(BudgetNoRoom, e.now)
			return false
		}
		b.act(why, e.now)
		e.settle(v, e.now.Sub(v.Last) >= e.opt.Settle)
		e.forget(v)
		e.stats.Evicted++
	}
	b.used += c
	b.bySession[s] += c
	return true
}

// budgetVictim picks the session to evict for s: among the evictScan
// least recently active, the first with no IKE SA established; else the
// least recently active one; never s.
func (e *Engine) budgetVictim(s *Session) (*Session, BudgetReason) {
	var oldest *Session
	i := 0
	for el := e.lru.Front(); el != nil && i < evictScan; el, i = el.Next(), i+1 {
		v := el.Value.(*Session)
		if v == s {
			continue
		}
		if oldest == nil {
			oldest = v
		}
		if !v.Established() {
			return v, BudgetEvictedUnestablished
		}
	}
	return oldest, BudgetEvictedOldest
}

// release returns a forgotten session's bytes.
func (b *budget) release(s *Session) {
	b.used -= b.bySession[s]
	delete(b.bySession, s)
}

func (b *budget) act(r BudgetReason, now time.Time) {
	b.acted[r]++
	b.lastAct, b.lastReason = now, r
}

// Memory returns the budget's state. Degraded holds for a minute (of the
// engine's clock: observation time) after the budget last evicted or
// dropped anything; status and health checks report it with Why.
func (e *Engine) Memory() MemoryStats {
	b := e.mem
	st := MemoryStats{Used: b.used, Max: b.max, SAShare: b.share}
	for _, n := range b.bySession {
		st.Largest = max(st.Largest, n)
	}
	for r := BudgetReason(0); r < numBudgetReasons; r++ {
		if b.acted[r] != 0 {
			if st.Acted == nil {
				st.Acted = map[string]uint64{}
			}
			st.Acted[r.String()] = b.acted[r]
		}
	}
	if !b.lastAct.IsZero() && e.now.Sub(b.lastAct) < degradedFor {
		st.Degraded = true
		st.Why = fmt.Sprintf("diagnosis memory budget of %d bytes reached (%d in use): %d sessions evicted, %d datagrams not kept (%d over one IKE SA's share of %d bytes); latest: %s",
			b.max, b.used, b.acted[BudgetEvictedUnestablished]+b.acted[BudgetEvictedOldest],
			b.acted[BudgetSAShare]+b.acted[BudgetNoRoom], b.acted[BudgetSAShare], b.share, b.lastReason)
	}
	return st
}
