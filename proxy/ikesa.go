package proxy

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// saKey identifies an IKE SA as the proxy learns it from the cleartext
// IKE_SA_INIT request: the client address and the initiator's SPI.
type saKey struct {
	client netip.Addr
	spiI   ike.SPI
}

// ikeSA is what the proxy knows about one IKE SA.
type ikeSA struct {
	mu   sync.Mutex // guards everything below but key and elem
	key  saKey
	spiR ike.SPI
	be   *backend
	// initFlow carried the IKE_SA_INIT request (guarded by mu): when the
	// IKE SA goes on over another flow (the NAT-T port, RFC 7296 §2.23)
	// it has nothing more to carry.
	initFlow *Flow

	// RFC 7383 §2.3: IKEV2_FRAGMENTATION_SUPPORTED in the IKE_SA_INIT
	// request and in the response. Re-fragmentation needs both.
	fragReq, fragResp bool

	// health: an IKE_SA_INIT request forwarded and not yet answered
	initAt      time.Time
	initPending bool

	// half-open (RFC 7296 §2.6, strongSwan's block_threshold): the
	// backend answered IKE_SA_INIT with an SA payload at halfOpenAt and
	// has sent nothing of the IKE SA since; counted in
	// saTable.halfOpen while halfOpen is set. Guarded by the table's mu.
	halfOpenAt time.Time
	halfOpen   bool
	authed     bool // the backend sent more than IKE_SA_INIT

	// an IKE SA rekey (RFC 7296 §2.18) in progress on this SA, from its
	// CREATE_CHILD_SA request: the Message ID, who sent it and the new
	// SA's SPI the requester chose (its initiator SPI)
	rekeyMID      uint32
	rekeyByClient bool
	rekeySPI      ike.SPI
	rekeyPending  bool

	// the latest request from the client, to recognise its
	// retransmissions (RFC 7296 §2.1: bitwise identical)
	reqMID   uint32
	reqHash  uint64
	reqValid bool

	last time.Time
	elem *list.Element
}

func (s *ikeSA) negotiated() bool { return s.fragReq && s.fragResp }

// saTable holds the IKE SAs seen, bounded and LRU-evicted.
type saTable struct {
	mu    sync.Mutex
	m     map[saKey]*ikeSA
	bySPI map[[2]ike.SPI]*ikeSA
	lru   *list.List // front: most recent
	max   int
	// half-open IKE SAs per client address, and in all
	halfOpen  map[netip.Addr]int
	halfOpenN int
	// rekeys seen in CREATE_CHILD_SA exchanges: new SPI pair → old pair
	// (bounded by max; cleared entry by entry when the new SA is taken on)
	rekeys map[[2]ike.SPI][2]ike.SPI
}

func newSATable(max int) *saTable {
	return &saTable{m: map[saKey]*ikeSA{}, bySPI: map[[2]ike.SPI]*ikeSA{}, lru: list.New(), max: max,
		halfOpen: map[netip.Addr]int{}, rekeys: map[[2]ike.SPI][2]ike.SPI{}}
}

// adopt returns the SA (k, spiR), making it when new as an SA past
// IKE_SA_INIT whose negotiation the proxy learnt elsewhere: from the SA it
// replaced (rekey) or from the key feed.
func (t *saTable) adopt(k saKey, spiR ike.SPI, be *backend, negotiated bool, now time.Time) *ikeSA {
	t.mu.Lock()
	s := t.m[k]
	if s == nil {
		for len(t.m) >= t.max {
			t.removeLocked(t.lru.Back().Value.(*ikeSA))
		}
		s = &ikeSA{key: k, be: be, last: now, authed: true, fragReq: negotiated, fragResp: negotiated}
		s.elem = t.lru.PushFront(s)
		t.m[k] = s
	}
	delete(t.rekeys, [2]ike.SPI{k.spiI, spiR})
	t.mu.Unlock()
	t.setSPIr(s, spiR)
	return s
}

// noteRekey records that the IKE SA newI/newR replaces oldI/oldR.
func (t *saTable) noteRekey(oldI, oldR, newI, newR ike.SPI) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.rekeys) >= t.max {
		for k := range t.rekeys {
			delete(t.rekeys, k)
			break
		}
	}
	t.rekeys[[2]ike.SPI{newI, newR}] = [2]ike.SPI{oldI, oldR}
}

// rekeyOf returns the SA a rekey seen in an exchange replaced.
func (t *saTable) rekeyOf(newI, newR ike.SPI) (oldI, oldR ike.SPI, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.rekeys[[2]ike.SPI{newI, newR}]
	return o[0], o[1], ok
}

// known reports whether the IKE SA (client, spiI) is in the table.
func (t *saTable) known(client netip.Addr, spiI ike.SPI) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[saKey{client, spiI}] != nil
}

// halfOpenOf is the number of half-open IKE SAs of a client address.
func (t *saTable) halfOpenOf(client netip.Addr) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.halfOpen[client]
}

func (t *saTable) halfOpenTotal() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.halfOpenN
}

// setHalfOpen marks s half-open (its IKE_SA_INIT answered with an SA
// payload), once, unless the backend already went further.
func (t *saTable) setHalfOpen(s *ikeSA, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.halfOpen || s.authed || t.m[s.key] != s {
		return
	}
	s.halfOpen, s.halfOpenAt = true, now
	t.halfOpen[s.key.client]++
	t.halfOpenN++
}

// setAuthed records that the backend sent more than IKE_SA_INIT on s.
func (t *saTable) setAuthed(s *ikeSA) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.authed = true
	t.clearHalfOpenLocked(s)
}

func (t *saTable) clearHalfOpenLocked(s *ikeSA) {
	if !s.halfOpen {
		return
	}
	s.halfOpen = false
	if t.halfOpen[s.key.client]--; t.halfOpen[s.key.client] <= 0 {
		delete(t.halfOpen, s.key.client)
	}
	t.halfOpenN--
}

// expireHalfOpen stops counting IKE SAs half-open for longer than d (the
// backend has dropped them by now: strongSwan's half_open_timeout).
func (t *saTable) expireHalfOpen(now time.Time, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.halfOpenN == 0 {
		return
	}
	for _, s := range t.m {
		if s.halfOpen && now.Sub(s.halfOpenAt) > d {
			t.clearHalfOpenLocked(s)
		}
	}
}

// get returns the SA by client and SPIi, else by the SPI pair (a client
// that moved address keeps its SA).
func (t *saTable) get(client netip.Addr, spiI, spiR ike.SPI, now time.Time) *ikeSA {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.m[saKey{client, spiI}]
	if s == nil && !spiR.IsZero() {
		s = t.bySPI[[2]ike.SPI{spiI, spiR}]
	}
	if s != nil {
		s.last = now
		t.lru.MoveToFront(s.elem)
	}
	return s
}

// create returns the SA for key, making it with backend be when new.
func (t *saTable) create(k saKey, be *backend, now time.Time) *ikeSA {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.m[k]; s != nil {
		s.last = now
		t.lru.MoveToFront(s.elem)
		return s
	}
	for len(t.m) >= t.max {
		t.removeLocked(t.lru.Back().Value.(*ikeSA))
	}
	s := &ikeSA{key: k, be: be, last: now}
	s.elem = t.lru.PushFront(s)
	t.m[k] = s
	return s
}

func (t *saTable) setSPIr(s *ikeSA, spiR ike.SPI) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if spiR.IsZero() || t.bySPI[[2]ike.SPI{s.key.spiI, spiR}] == s {
		return
	}
	if !s.spiR.IsZero() {
		delete(t.bySPI, [2]ike.SPI{s.key.spiI, s.spiR})
	}
	s.spiR = spiR
	t.bySPI[[2]ike.SPI{s.key.spiI, spiR}] = s
}

func (t *saTable) removeLocked(s *ikeSA) {
	t.clearHalfOpenLocked(s)
	t.lru.Remove(s.elem)
	delete(t.m, s.key)
	if !s.spiR.IsZero() && t.bySPI[[2]ike.SPI{s.key.spiI, s.spiR}] == s {
		delete(t.bySPI, [2]ike.SPI{s.key.spiI, s.spiR})
	}
}

// expire removes SAs idle for longer than idle and returns them.
func (t *saTable) expire(now time.Time, idle time.Duration) []*ikeSA {
	t.mu.Lock()
	defer t.mu.Unlock()
	var gone []*ikeSA
	for el := t.lru.Back(); el != nil; el = t.lru.Back() {
		s := el.Value.(*ikeSA)
		if now.Sub(s.last) <= idle {
			break
		}
		t.removeLocked(s)
		gone = append(gone, s)
	}
	return gone
}

// pendingInits returns SAs whose IKE_SA_INIT has waited longer than d,
// clearing their pending mark (each is reported once).
func (t *saTable) pendingInits(now time.Time, d time.Duration) []*ikeSA {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*ikeSA
	for _, s := range t.m {
		// initPending and initAt are the SA's (its mu; taken inside the
		// table's, never the other way round)
		s.mu.Lock()
		if s.initPending && now.Sub(s.initAt) > d {
			s.initPending = false
			out = append(out, s)
		}
		s.mu.Unlock()
	}
	return out
}

func (t *saTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// msgMode says what the proxy does with one server→client message.
type msgMode uint8

const (
	modeRelay msgMode = iota + 1 // pass every datagram unchanged
	modeRecut                    // decrypt, reassemble, cut for the client
)

// msgState is one server→client IKE message the proxy decided about,
// per (SPIs, Message ID, direction).
type msgState struct {
	mu        sync.Mutex // guards everything below but key, client, bytes and elem
	key       sk.MessageKey
	client    netip.Addr
	mode      msgMode
	origTotal uint16            // Total Fragments the backend used (0: SK)
	inputs    map[uint64]uint16 // hashes of the backend's datagrams → fragment number (0: SK)
	dec       *sk.Decrypted     // kept for a step-down
	out       *sk.Output        // what the client was sent last
	outMTU    int
	stepDown  bool     // the client retransmitted: cut smaller at the next backend resend
	relayed   uint16   // Total Fragments of a set already relayed unchanged (a later cut must exceed it)
	raw       [][]byte // the backend's datagrams while a set is incomplete, to relay them if the cut fails
	bytes     int
	elem      *list.Element
}

// msgCache bounds the message states by count and by decrypted bytes.
type msgCache struct {
	mu       sync.Mutex
	m        map[sk.MessageKey]*msgState
	lru      *list.List
	bytes    int
	maxN     int
	maxBytes int
}

func newMsgCache(n, bytes int) *msgCache {
	return &msgCache{m: map[sk.MessageKey]*msgState{}, lru: list.New(), maxN: n, maxBytes: bytes}
}

// get returns the state of k for client, creating it when create is set.
// A state recorded for another client under the same key is replaced.
func (c *msgCache) get(k sk.MessageKey, client netip.Addr, create bool) *msgState {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.m[k]
	if m != nil && m.client != client {
		c.removeLocked(m)
		m = nil
	}
	if m != nil {
		c.lru.MoveToFront(m.elem)
		return m
	}
	if !create {
		return nil
	}
	for len(c.m) >= c.maxN {
		c.removeLocked(c.lru.Back().Value.(*msgState))
	}
	m = &msgState{key: k, client: client, inputs: map[uint64]uint16{}}
	m.elem = c.lru.PushFront(m)
	c.m[k] = m
	return m
}

// account records the decrypted bytes a state holds and evicts the least
// recently used states beyond the byte budget (never m itself).
func (c *msgCache) account(m *msgState, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[m.key] != m {
		return
	}
	c.bytes += bytes - m.bytes
	m.bytes = bytes
	for c.bytes > c.maxBytes {
		back := c.lru.Back().Value.(*msgState)
		if back == m {
			break
		}
		c.removeLocked(back)
	}
}

func (c *msgCache) removeLocked(m *msgState) {
	c.lru.Remove(m.elem)
	delete(c.m, m.key)
	c.bytes -= m.bytes
}

// forget drops the states of an IKE SA.
func (c *msgCache) forget(spiI, spiR ike.SPI) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, m := range c.m {
		if k.SPIi == spiI && k.SPIr == spiR {
			c.removeLocked(m)
		}
	}
}
