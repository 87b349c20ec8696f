package sk

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// ReassemblerConfig bounds a Reassembler. Zero values select the defaults.
type ReassemblerConfig struct {
	// MaxFragments is the largest Total Fragments accepted. Default 255,
	// strongSwan's limit (Windows has been seen sending 29).
	MaxFragments int
	// MaxMessageSize bounds the reassembled inner payload bytes of one
	// message. Default 65535, the most one IKE message can carry.
	MaxMessageSize int
	// MaxFragmentsPerSA bounds the fragments buffered for one IKE SA
	// (all its messages, both directions). Default 512.
	MaxFragmentsPerSA int
	// MaxFragmentsTotal bounds the fragments buffered in all. Default 16384.
	MaxFragmentsTotal int
	// MaxBytesTotal bounds the decrypted bytes buffered in all. Default 16 MiB.
	MaxBytesTotal int
	// MaxAge discards an incomplete message this long after its first
	// stored fragment. Default 30 s; the sender's next retransmission
	// brings every fragment again.
	MaxAge time.Duration
	// RetransmitMemory is how long a completed message is remembered, so
	// that the same fragments arriving again are reported as
	// retransmissions without decrypting them. Default 2 minutes.
	RetransmitMemory time.Duration
	// MaxRemembered bounds the completed messages remembered. Default 4096.
	MaxRemembered int
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Reassembler defaults.
const (
	DefaultMaxFragments      = 255
	DefaultMaxMessageSize    = 65535
	DefaultMaxFragmentsPerSA = 512
	DefaultMaxFragmentsTotal = 16384
	DefaultMaxBytesTotal     = 16 << 20
	DefaultMaxAge            = 30 * time.Second
	DefaultRetransmitMemory  = 2 * time.Minute
	DefaultMaxRemembered     = 4096
)

func (c *ReassemblerConfig) defaults() {
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&c.MaxFragments, DefaultMaxFragments)
	set(&c.MaxMessageSize, DefaultMaxMessageSize)
	set(&c.MaxFragmentsPerSA, DefaultMaxFragmentsPerSA)
	set(&c.MaxFragmentsTotal, DefaultMaxFragmentsTotal)
	set(&c.MaxBytesTotal, DefaultMaxBytesTotal)
	set(&c.MaxRemembered, DefaultMaxRemembered)
	if c.MaxFragments > MaxTotalFragments {
		c.MaxFragments = MaxTotalFragments
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.RetransmitMemory <= 0 {
		c.RetransmitMemory = DefaultRetransmitMemory
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DropReason says why a message or fragment was not used.
type DropReason uint8

const (
	DropNone             DropReason = iota
	DropMalformed                   // not an IKEv2 message with a well-formed SK or SKF payload
	DropIntegrity                   // ICV or AEAD tag did not verify
	DropPadding                     // verified, but the Pad Length is impossible
	DropKeysDeleted                 // the SA's keys were deleted meanwhile
	DropTooManyFragments            // Total Fragments above MaxFragments
	DropLowerTotal                  // Total Fragments below the queued set's (RFC 7383 §2.6)
	DropDuplicate                   // a fragment number already held; the first copy is kept
	DropInconsistent                // exchange type differs from the set, or unprotected payloads after fragment 1
	DropTooLarge                    // the message would exceed MaxMessageSize (the whole set is dropped)
	DropSALimit                     // MaxFragmentsPerSA reached
	DropTotalLimit                  // MaxFragmentsTotal or MaxBytesTotal reached
	DropExpired                     // held longer than MaxAge without completing
	DropRestarted                   // discarded because a verified fragment with a higher Total Fragments arrived
	DropForgotten                   // discarded because the IKE SA was forgotten
	numDropReasons
)

var dropNames = [numDropReasons]string{"none", "malformed", "integrity", "padding", "keys_deleted",
	"too_many_fragments", "lower_total", "duplicate", "inconsistent", "too_large", "sa_limit",
	"total_limit", "expired", "restarted", "forgotten"}

func (d DropReason) String() string {
	if d < numDropReasons {
		return dropNames[d]
	}
	return fmt.Sprintf("drop(%d)", uint8(d))
}

// Status is what Add did with a message.
type Status uint8

const (
	// StatusDropped: not used; Result.Drop says why.
	StatusDropped Status = iota
	// StatusStored: a verified fragment was kept; the message is not complete.
	StatusStored
	// StatusComplete: Result.Message holds the whole message.
	StatusComplete
	// StatusRetransmit: a byte-identical copy of a fragment of a message
	// completed within RetransmitMemory (RFC 7383 §2.6.1: answer only
	// when Number is 1).
	StatusRetransmit
)

func (s Status) String() string {
	return [...]string{"dropped", "stored", "complete", "retransmit"}[s]
}

// Result is the outcome of Add.
type Result struct {
	Status  Status
	Drop    DropReason
	Err     error // detail for StatusDropped
	Header  ike.Header
	Number  uint16 // SKF Fragment Number (0 for SK)
	Total   uint16 // SKF Total Fragments (0 for SK)
	Message *Decrypted
}

// ReassemblerStats counts what a Reassembler did. Drops counts fragments
// (or whole SK messages), indexed by DropReason.
type ReassemblerStats struct {
	Stored        uint64
	Completed     uint64
	Retransmits   uint64
	Drops         [numDropReasons]uint64
	Sets          int // messages being reassembled
	Fragments     int // fragments buffered
	Bytes         int // decrypted bytes buffered
	RememberedSet int // completed messages remembered
}

// DropCounts returns the non-zero drop counters by reason name.
func (s *ReassemblerStats) DropCounts() map[string]uint64 {
	m := map[string]uint64{}
	for i, n := range s.Drops {
		if n != 0 {
			m[DropReason(i).String()] = n
		}
	}
	return m
}

// MessageKey identifies one message of an IKE SA: the SPIs, the Message ID
// and the direction (I and R flags), since requests of both peers share
// the Message ID space of their own side.
type MessageKey struct {
	SPIi, SPIr ike.SPI
	MessageID  uint32
	Flags      ike.Flags // only FlagInitiator and FlagResponse
}

// KeyOf returns the MessageKey of a header.
func KeyOf(h *ike.Header) MessageKey {
	return MessageKey{SPIi: h.SPIi, SPIr: h.SPIr, MessageID: h.MessageID, Flags: h.Flags & (ike.FlagInitiator | ike.FlagResponse)}
}

type saKey struct{ i, r ike.SPI }

type fragSet struct {
	key     MessageKey
	total   uint16
	exch    ike.ExchangeType
	started time.Time
	chunks  [][]byte
	hashes  []uint64
	have    int
	bytes   int
	first   *Opened
	elem    *list.Element
}

type remembered struct {
	key     MessageKey
	total   uint16
	hashes  []uint64
	expires time.Time
	elem    *list.Element
}

// Reassembler joins SKF fragments per (SPIi, SPIr, Message ID, direction)
// following RFC 7383 §2.6: every fragment is verified before it is kept;
// a verified fragment with a higher Total Fragments restarts the set, a
// lower one is dropped, and a repeated Fragment Number keeps the first
// copy. Every limit is configurable and every drop is counted. It is safe
// for concurrent use.
type Reassembler struct {
	cfg  ReassemblerConfig
	seed maphash.Seed

	mu       sync.Mutex
	sets     map[MessageKey]*fragSet
	age      *list.List // *fragSet, oldest first
	perSA    map[saKey]int
	frags    int
	bytes    int
	done     map[MessageKey]*remembered
	doneList *list.List // *remembered, oldest first
	st       ReassemblerStats
}

// NewReassembler returns an empty Reassembler.
func NewReassembler(cfg ReassemblerConfig) *Reassembler {
	cfg.defaults()
	return &Reassembler{cfg: cfg, seed: maphash.MakeSeed(), sets: map[MessageKey]*fragSet{}, age: list.New(),
		perSA: map[saKey]int{}, done: map[MessageKey]*remembered{}, doneList: list.New()}
}

// Config returns the configuration in force (defaults filled in).
func (r *Reassembler) Config() ReassemblerConfig { return r.cfg }

// peekSKF reads the Fragment Number and Total Fragments of an SKF message
// without any cryptography, for the checks that cost nothing.
func peekSKF(msg []byte) (h ike.Header, skf bool, number, total uint16, err error) {
	h, err = ike.ParseHeader(msg)
	if err != nil {
		return h, false, 0, 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	off, typ, err := locate(msg, h.NextPayload)
	if err != nil {
		return h, false, 0, 0, err
	}
	if typ != ike.PayloadEncryptedFragment {
		return h, false, 0, 0, nil
	}
	if len(msg)-off < ike.SKFHeaderLen {
		return h, true, 0, 0, fmt.Errorf("%w: %d bytes for the SKF header", ErrMalformed, len(msg)-off)
	}
	number = binary.BigEndian.Uint16(msg[off+4:])
	total = binary.BigEndian.Uint16(msg[off+6:])
	if number == 0 || total == 0 || number > total {
		return h, true, number, total, fmt.Errorf("%w: SKF fragment %d of %d", ErrMalformed, number, total)
	}
	return h, true, number, total, nil
}

func dropFor(err error) DropReason {
	switch {
	case errors.Is(err, ErrIntegrity):
		return DropIntegrity
	case errors.Is(err, ErrPadding):
		return DropPadding
	case errors.Is(err, ErrClosed):
		return DropKeysDeleted
	}
	return DropMalformed
}

// Add takes one IKE message (without the non-ESP marker) protected with
// sa's keys. An SK message is opened and returned whole; an SKF fragment
// is verified, stored, and the whole message is returned once its last
// fragment arrives.
func (r *Reassembler) Add(sa *SA, msg []byte) Result {
	h, skf, number, total, err := peekSKF(msg)
	res := Result{Header: h, Number: number, Total: total}
	if err != nil {
		return r.drop(res, DropMalformed, err)
	}
	if sa == nil {
		return r.drop(res, DropKeysDeleted, ErrClosed)
	}
	if !skf {
		o, err := sa.Open(msg)
		if err != nil {
			return r.drop(res, dropFor(err), err)
		}
		res.Status = StatusComplete
		res.Message, _ = o.Decrypted()
		r.mu.Lock()
		r.st.Completed++
		r.mu.Unlock()
		return res
	}
	key := KeyOf(&h)
	hash := maphash.Bytes(r.seed, msg)

	r.mu.Lock()
	now := r.cfg.Now()
	r.expireLocked(now)
	if reason, err := r.precheckLocked(key, number, total, hash); reason != DropNone {
		r.mu.Unlock()
		return r.drop(res, reason, err)
	} else if err == errRetransmit {
		r.st.Retransmits++
		r.mu.Unlock()
		res.Status = StatusRetransmit
		return res
	}
	r.mu.Unlock()

	// The expensive part runs unlocked.
	o, err := sa.Open(msg)
	if err != nil {
		return r.drop(res, dropFor(err), err)
	}
	if o.Number != 1 && len(o.Unprotected) > 0 {
		return r.drop(res, DropInconsistent, fmt.Errorf("fragment %d carries unprotected payloads (RFC 7383 §2.5.3: fragment 1 only)", o.Number))
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	now = r.cfg.Now()
	set := r.sets[key]
	if set != nil {
		switch {
		case total < set.total:
			return r.dropLocked(res, DropLowerTotal, fmt.Errorf("fragment total %d below the queued %d", total, set.total))
		case total > set.total:
			// RFC 7383 §2.6: a verified fragment with a higher total
			// means the sender re-fragmented; start over with it.
			r.st.Drops[DropRestarted] += uint64(set.have)
			r.removeSetLocked(set)
			set = nil
		case set.chunks[number-1] != nil:
			return r.dropLocked(res, DropDuplicate, fmt.Errorf("fragment %d of %d already held", number, total))
		case h.Exchange != set.exch:
			return r.dropLocked(res, DropInconsistent, fmt.Errorf("exchange %s, the set has %s", h.Exchange, set.exch))
		}
	}
	sk := saKey{h.SPIi, h.SPIr}
	if r.perSA[sk] >= r.cfg.MaxFragmentsPerSA {
		return r.dropLocked(res, DropSALimit, fmt.Errorf("%d fragments buffered for this IKE SA", r.perSA[sk]))
	}
	if r.frags >= r.cfg.MaxFragmentsTotal || r.bytes+len(o.Content) > r.cfg.MaxBytesTotal {
		return r.dropLocked(res, DropTotalLimit, fmt.Errorf("%d fragments, %d bytes buffered in all", r.frags, r.bytes))
	}
	if set == nil {
		set = &fragSet{key: key, total: total, exch: h.Exchange, started: now,
			chunks: make([][]byte, total), hashes: make([]uint64, total)}
		set.elem = r.age.PushBack(set)
		r.sets[key] = set
	}
	if set.bytes+len(o.Content) > r.cfg.MaxMessageSize {
		r.st.Drops[DropTooLarge] += uint64(set.have)
		r.removeSetLocked(set)
		return r.dropLocked(res, DropTooLarge, fmt.Errorf("message exceeds %d bytes", r.cfg.MaxMessageSize))
	}
	set.chunks[number-1] = o.Content
	set.hashes[number-1] = hash
	set.have++
	set.bytes += len(o.Content)
	r.perSA[sk]++
	r.frags++
	r.bytes += len(o.Content)
	if number == 1 {
		set.first = o
	}
	r.st.Stored++
	if set.have < int(set.total) {
		res.Status = StatusStored
		return res
	}
	payloads := make([]byte, 0, set.bytes)
	for _, c := range set.chunks {
		payloads = append(payloads, c...)
	}
	f := set.first
	res.Message = &Decrypted{Header: f.Header, Unprotected: f.Unprotected, Inner: f.NextPayload,
		Payloads: payloads, Fragments: set.total}
	res.Status = StatusComplete
	r.st.Completed++
	r.removeSetLocked(set)
	r.rememberLocked(set, now)
	return res
}

var errRetransmit = errors.New("retransmission")

// precheckLocked applies the rules that need no cryptography: the
// fragment limit, and for a queued set the lower-total and duplicate
// rules (dropping these unverified is safe: they would be dropped anyway).
// It returns errRetransmit for a copy of a remembered fragment.
func (r *Reassembler) precheckLocked(key MessageKey, number, total uint16, hash uint64) (DropReason, error) {
	if int(total) > r.cfg.MaxFragments {
		return DropTooManyFragments, fmt.Errorf("fragment total %d above the limit %d", total, r.cfg.MaxFragments)
	}
	if d := r.done[key]; d != nil && d.total == total && d.hashes[number-1] == hash {
		return DropNone, errRetransmit
	}
	if set := r.sets[key]; set != nil {
		if total < set.total {
			return DropLowerTotal, fmt.Errorf("fragment total %d below the queued %d", total, set.total)
		}
		if total == set.total && set.chunks[number-1] != nil {
			return DropDuplicate, fmt.Errorf("fragment %d of %d already held", number, total)
		}
	}
	return DropNone, nil
}

func (r *Reassembler) drop(res Result, reason DropReason, err error) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropLocked(res, reason, err)
}

func (r *Reassembler) dropLocked(res Result, reason DropReason, err error) Result {
	r.st.Drops[reason]++
	res.Status, res.Drop, res.Err = StatusDropped, reason, err
	return res
}

func (r *Reassembler) removeSetLocked(set *fragSet) {
	r.age.Remove(set.elem)
	delete(r.sets, set.key)
	sk := saKey{set.key.SPIi, set.key.SPIr}
	if r.perSA[sk] -= set.have; r.perSA[sk] <= 0 {
		delete(r.perSA, sk)
	}
	r.frags -= set.have
	r.bytes -= set.bytes
}

func (r *Reassembler) rememberLocked(set *fragSet, now time.Time) {
	if old := r.done[set.key]; old != nil {
		r.doneList.Remove(old.elem)
		delete(r.done, set.key)
	}
	for len(r.done) >= r.cfg.MaxRemembered {
		old := r.doneList.Remove(r.doneList.Front()).(*remembered)
		delete(r.done, old.key)
	}
	d := &remembered{key: set.key, total: set.total, hashes: set.hashes, expires: now.Add(r.cfg.RetransmitMemory)}
	d.elem = r.doneList.PushBack(d)
	r.done[set.key] = d
}

func (r *Reassembler) expireLocked(now time.Time) int {
	n := 0
	for el := r.age.Front(); el != nil; el = r.age.Front() {
		set := el.Value.(*fragSet)
		if now.Sub(set.started) < r.cfg.MaxAge {
			break
		}
		r.st.Drops[DropExpired] += uint64(set.have)
		r.removeSetLocked(set)
		n++
	}
	for el := r.doneList.Front(); el != nil; el = r.doneList.Front() {
		d := el.Value.(*remembered)
		if now.Before(d.expires) {
			break
		}
		r.doneList.Remove(el)
		delete(r.done, d.key)
	}
	return n
}

// Expire discards incomplete messages older than MaxAge (Add does this
// too, lazily) and returns how many it discarded.
func (r *Reassembler) Expire() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.expireLocked(r.cfg.Now())
}

// Forget discards everything held for an IKE SA (it was deleted).
func (r *Reassembler) Forget(spiI, spiR ike.SPI) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, set := range r.sets {
		if k.SPIi == spiI && k.SPIr == spiR {
			r.st.Drops[DropForgotten] += uint64(set.have)
			r.removeSetLocked(set)
		}
	}
	for k, d := range r.done {
		if k.SPIi == spiI && k.SPIr == spiR {
			r.doneList.Remove(d.elem)
			delete(r.done, k)
		}
	}
}

// Stats returns the counters.
func (r *Reassembler) Stats() ReassemblerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Sets, st.Fragments, st.Bytes, st.RememberedSet = len(r.sets), r.frags, r.bytes, len(r.done)
	return st
}
