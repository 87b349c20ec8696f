package sk

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// FragmenterConfig configures a Fragmenter. Zero values select the defaults.
type FragmenterConfig struct {
	// MaxFragments bounds Total Fragments of an output. Default 32:
	// libreswan, the strictest receiver surveyed, drops messages of more.
	MaxFragments int
	// MaxEntries bounds the messages whose output is cached. Default 4096.
	MaxEntries int
	// MaxBytes bounds the cached datagram bytes. Default 32 MiB.
	MaxBytes int
	// TTL is how long an output is kept for retransmissions. Default 5
	// minutes, longer than the retransmission schedules of common stacks.
	TTL time.Duration
	// IVs is the source of IVs. Default crypto/rand.Reader; tests inject a
	// deterministic one. Every IV is read fresh: output is never
	// re-encrypted with an IV used before.
	IVs io.Reader
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Fragmenter defaults.
const (
	DefaultFragmenterMaxFragments = 32
	DefaultFragmenterMaxEntries   = 4096
	DefaultFragmenterMaxBytes     = 32 << 20
	DefaultFragmenterTTL          = 5 * time.Minute
)

// FragmenterStats counts what a Fragmenter did.
type FragmenterStats struct {
	Cuts      uint64 // outputs produced (each with fresh IVs)
	Hits      uint64 // outputs answered from the cache
	StepDowns uint64 // re-cuts with a higher Total Fragments
	Replaced  uint64 // a different message arrived under a cached key
	Evicted   uint64 // outputs removed for MaxEntries, MaxBytes or TTL
	Entries   int
	Bytes     int
}

// Fragmenter protects decrypted messages for a peer's path and caches the
// result per message (SPIs, Message ID, direction and content), so that a
// retransmitted message is answered with byte-identical datagrams (RFC
// 7296 §2.1) and Total Fragments stays fixed for a message (RFC 7383 §2.6:
// receivers disagree on what a changed total means). Only StepDown cuts a
// cached message again. It is safe for concurrent use.
type Fragmenter struct {
	cfg FragmenterConfig

	mu    sync.Mutex
	m     map[MessageKey]*cached
	lru   *list.List // *cached, most recent at the front
	bytes int
	st    FragmenterStats
}

type cached struct {
	key     MessageKey
	digest  [32]byte
	created time.Time
	elem    *list.Element

	mu    sync.Mutex // held while the output is being produced
	out   *Output
	bytes int // counted in Fragmenter.bytes; guarded by Fragmenter.mu
}

// NewFragmenter returns a Fragmenter with an empty cache.
func NewFragmenter(cfg FragmenterConfig) *Fragmenter {
	if cfg.MaxFragments <= 0 {
		cfg.MaxFragments = DefaultFragmenterMaxFragments
	}
	if cfg.MaxFragments > MaxTotalFragments {
		cfg.MaxFragments = MaxTotalFragments
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultFragmenterMaxEntries
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultFragmenterMaxBytes
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultFragmenterTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Fragmenter{cfg: cfg, m: map[MessageKey]*cached{}, lru: list.New()}
}

// digest identifies a message's content: everything protected or
// unprotected that ends up on the wire, except the fields the cut sets.
func digest(d *Decrypted) [32]byte {
	h := sha256.New()
	var b [16]byte
	b[0] = d.Header.MajorVersion<<4 | d.Header.MinorVersion&0x0f
	b[1] = byte(d.Header.Exchange)
	b[2] = byte(d.Header.Flags)
	b[3] = byte(d.Inner)
	b[4] = byte(d.Header.NextPayload)
	binary.BigEndian.PutUint32(b[8:], uint32(len(d.Unprotected)))
	binary.BigEndian.PutUint32(b[12:], uint32(len(d.Payloads)))
	h.Write(b[:])
	h.Write(d.Unprotected)
	h.Write(d.Payloads)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Fragment returns the datagrams for d on the path t: from the cache when
// this message was cut before (whatever t is then), else cut now with
// fresh IVs and cached. A message that fits t whole is sent as one SK
// message.
func (f *Fragmenter) Fragment(sa *SA, d *Decrypted, t Target) (*Output, error) {
	return f.get(sa, d, t, false)
}

// StepDown cuts d again for t with a higher Total Fragments than its cached
// output (at least 2 when it was sent whole), for PMTU discovery on the
// sender's behalf (RFC 7383 §2.5.2). The new output replaces the cached one.
func (f *Fragmenter) StepDown(sa *SA, d *Decrypted, t Target) (*Output, error) {
	return f.get(sa, d, t, true)
}

// Cached returns the cached output of the message with key k.
func (f *Fragmenter) Cached(k MessageKey) (*Output, bool) {
	f.mu.Lock()
	c := f.m[k]
	f.mu.Unlock()
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out, c.out != nil
}

// ErrStepDown is returned when a step-down cannot raise Total Fragments.
var ErrStepDown = errors.New("cannot step down")

func (f *Fragmenter) get(sa *SA, d *Decrypted, t Target, stepDown bool) (*Output, error) {
	key := KeyOf(&d.Header)
	dg := digest(d)
	now := f.cfg.Now()

	f.mu.Lock()
	f.expireLocked(now)
	c := f.m[key]
	if c != nil && c.digest != dg {
		f.removeLocked(c)
		f.st.Replaced++
		c = nil
	}
	if c == nil {
		c = &cached{key: key, digest: dg, created: now}
		c.elem = f.lru.PushFront(c)
		f.m[key] = c
	} else {
		f.lru.MoveToFront(c.elem)
	}
	f.mu.Unlock()

	c.mu.Lock()
	if c.out != nil && !stepDown {
		out := c.out
		c.mu.Unlock()
		f.mu.Lock()
		f.st.Hits++
		f.mu.Unlock()
		return out, nil
	}
	var out *Output
	var err error
	if c.out == nil {
		out, err = sa.Split(d, t, f.cfg.MaxFragments, f.cfg.IVs)
	} else {
		min := c.out.Total + 1
		if c.out.Total == 0 {
			min = 2
		}
		out, err = sa.SplitAtLeast(d, t, min, f.cfg.MaxFragments, f.cfg.IVs)
		if err != nil {
			err = fmt.Errorf("%w: %v", ErrStepDown, err)
		}
	}
	if err != nil {
		empty := c.out == nil
		c.mu.Unlock()
		if empty {
			f.mu.Lock()
			if f.m[key] == c {
				f.removeLocked(c)
			}
			f.mu.Unlock()
		}
		return nil, err
	}
	wasCut := c.out != nil
	c.out = out
	c.mu.Unlock()

	f.mu.Lock()
	f.st.Cuts++
	if stepDown && wasCut {
		f.st.StepDowns++
	}
	if nb := out.Bytes(); f.m[key] == c {
		f.bytes += nb - c.bytes
		c.bytes = nb
	}
	f.evictLocked(c)
	f.mu.Unlock()
	return out, nil
}

func (f *Fragmenter) removeLocked(c *cached) {
	f.lru.Remove(c.elem)
	delete(f.m, c.key)
	f.bytes -= c.bytes
}

func (f *Fragmenter) expireLocked(now time.Time) {
	// The LRU order is not creation order, so TTL is checked from the
	// back (least recently used) only; a busy entry lives until it is
	// idle or crowded out, which is what a retransmission cache needs.
	for el := f.lru.Back(); el != nil; el = f.lru.Back() {
		c := el.Value.(*cached)
		if now.Sub(c.created) < f.cfg.TTL {
			return
		}
		f.removeLocked(c)
		f.st.Evicted++
	}
}

func (f *Fragmenter) evictLocked(keep *cached) {
	for len(f.m) > f.cfg.MaxEntries || f.bytes > f.cfg.MaxBytes {
		el := f.lru.Back()
		c := el.Value.(*cached)
		if c == keep {
			return
		}
		f.removeLocked(c)
		f.st.Evicted++
	}
}

// Forget drops the cached outputs of an IKE SA (it was deleted).
func (f *Fragmenter) Forget(spiI, spiR ike.SPI) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, c := range f.m {
		if k.SPIi == spiI && k.SPIr == spiR {
			f.removeLocked(c)
		}
	}
}

// Stats returns the counters.
func (f *Fragmenter) Stats() FragmenterStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Entries, st.Bytes = len(f.m), f.bytes
	return st
}
