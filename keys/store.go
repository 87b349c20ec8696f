package keys

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// Source gives the protection keys of an IKE SA, ready to use, by its SPIs.
type Source interface {
	// Lookup returns the SA's keys. It fails with ErrUnknownSA when no key
	// source has announced the SA, and with an *UnsupportedError (which
	// matches sk.ErrUnsupportedSuite) when the SA is known but its suite
	// is not one the engine can use. The returned SA stops working
	// (sk.ErrClosed) once the keys are deleted or expire.
	Lookup(spiI, spiR ike.SPI) (*sk.SA, error)
}

// ErrUnknownSA is returned by Lookup for an SPI pair with no keys.
var ErrUnknownSA = errors.New("no keys for this IKE SA")

// UnsupportedError reports an IKE SA whose keys were announced with a suite
// the engine cannot use.
type UnsupportedError struct {
	SPIi, SPIr ike.SPI
	Suite      string // as the key source named it
	Err        error
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("IKE SA %s/%s: unsupported suite %s: %v", e.SPIi, e.SPIr, e.Suite, e.Err)
}

// Unwrap lets errors.Is match sk.ErrUnsupportedSuite.
func (e *UnsupportedError) Unwrap() error { return e.Err }

// StoreConfig bounds a Store. Zero values select the defaults.
type StoreConfig struct {
	// IdleTimeout removes an SA whose keys have not been looked up (or
	// re-announced) for this long. Default 10 minutes: re-fragmentation
	// matters for IKE_AUTH, seconds after the keys appear; an SA that
	// comes back later is relayed without keys.
	IdleTimeout time.Duration
	// MaxAge removes an SA this long after its keys were announced,
	// however busy. Default 0: no limit.
	MaxAge time.Duration
	// MaxEntries bounds the number of SAs held; the least recently used
	// is removed to make room. Default 65536.
	MaxEntries int
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Defaults for StoreConfig.
const (
	DefaultIdleTimeout = 10 * time.Minute
	DefaultMaxEntries  = 65536
)

// StoreStats counts what a Store did.
type StoreStats struct {
	Entries     int
	Added       uint64 // Put (a new key line or message for an SA)
	Replaced    uint64 // Put for an SA already held (the last line wins)
	Unsupported uint64 // SAs announced with an unsupported suite
	Deleted     uint64 // removed by Delete
	Rekeys      uint64 // rekey links recorded (LinkRekey)
	Expired     uint64 // removed for idleness or age
	Evicted     uint64 // removed to respect MaxEntries
	Hits        uint64
	Misses      uint64
}

type pair struct{ i, r ike.SPI }

type entry struct {
	key         pair
	sa          *sk.SA
	unsupported *UnsupportedError
	origin      string
	prev        *pair // the IKE SA this one replaced (rekey, RFC 7296 §2.18)
	// RFC 7383 §2.3 as the IKE daemon concluded: both peers sent
	// IKEV2_FRAGMENTATION_SUPPORTED (fragKnown: the source said)
	frag, fragKnown bool
	added, used     time.Time
	elem            *list.Element // in Store.lru, most recent at the front
}

// Store holds the keys of the IKE SAs key sources announce, and implements
// Source. It is safe for concurrent use.
type Store struct {
	cfg StoreConfig

	mu         sync.Mutex
	m          map[pair]*entry
	lru        *list.List
	st         StoreStats
	refreshers []func()
	// links announced before the new SA's keys, by new pair
	pendingLinks map[pair]pair
}

// NewStore returns an empty Store.
func NewStore(cfg StoreConfig) *Store {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, m: make(map[pair]*entry), lru: list.New()}
}

// Put installs the keys of one IKE SA, replacing any earlier keys for the
// same SPIs (their SA is closed and wiped). Put takes ownership of k and
// zeroes it before returning, whatever the outcome. origin says where the
// keys came from, for status output. A suite the engine cannot use is
// recorded as unsupported (and returned as an *UnsupportedError); bad key
// lengths are an error and change nothing.
func (s *Store) Put(spiI, spiR ike.SPI, k *sk.Keys, origin string) error {
	defer k.Zero()
	var e *entry
	if !k.Suite.Supported() {
		_, err := sk.NewSA(k)
		e = &entry{unsupported: &UnsupportedError{SPIi: spiI, SPIr: spiR, Suite: k.Suite.String(), Err: err}}
	} else {
		sa, err := sk.NewSA(k)
		if err != nil {
			return fmt.Errorf("IKE SA %s/%s: %w", spiI, spiR, err)
		}
		e = &entry{sa: sa}
	}
	s.install(pair{spiI, spiR}, e, origin)
	if e.unsupported != nil {
		return e.unsupported
	}
	return nil
}

// PutUnsupported records an SA whose suite a key source could name but
// the engine has no cipher for (no keys are kept).
func (s *Store) PutUnsupported(spiI, spiR ike.SPI, suite string, origin string) {
	s.install(pair{spiI, spiR}, &entry{unsupported: &UnsupportedError{SPIi: spiI, SPIr: spiR, Suite: suite,
		Err: sk.ErrUnsupportedSuite}}, origin)
}

func (s *Store) install(key pair, e *entry, origin string) {
	now := s.cfg.Now()
	e.key, e.origin, e.added, e.used = key, origin, now, now
	var closeSA []*sk.SA
	s.mu.Lock()
	if prev, ok := s.pendingLinks[key]; ok {
		e.prev = &prev
		delete(s.pendingLinks, key)
	}
	if old, ok := s.m[key]; ok {
		if e.prev == nil {
			e.prev = old.prev
		}
		s.lru.Remove(old.elem)
		delete(s.m, key)
		if old.sa != nil {
			closeSA = append(closeSA, old.sa)
		}
		s.st.Replaced++
	} else {
		s.st.Added++
	}
	if e.unsupported != nil {
		s.st.Unsupported++
	}
	for len(s.m) >= s.cfg.MaxEntries {
		back := s.lru.Back()
		old := back.Value.(*entry)
		s.removeLocked(old)
		if old.sa != nil {
			closeSA = append(closeSA, old.sa)
		}
		s.st.Evicted++
	}
	e.elem = s.lru.PushFront(e)
	s.m[key] = e
	s.mu.Unlock()
	for _, sa := range closeSA {
		sa.Close()
	}
}

func (s *Store) removeLocked(e *entry) {
	s.lru.Remove(e.elem)
	delete(s.m, e.key)
}

// maxPendingLinks bounds the rekey links held for SAs whose keys have not
// arrived (yet): a key feed that only ever sends links cannot grow memory.
const maxPendingLinks = 1024

// LinkRekey records that the IKE SA newI/newR replaced oldI/oldR (an IKE
// SA rekey, RFC 7296 §2.18), so that the proxy can carry what it knows of
// the old SA over to the new one. The link may come before or after the
// new SA's keys.
func (s *Store) LinkRekey(oldI, oldR, newI, newR ike.SPI) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Rekeys++
	np, op := pair{newI, newR}, pair{oldI, oldR}
	if e, ok := s.m[np]; ok {
		e.prev = &op
		return
	}
	if s.pendingLinks == nil {
		s.pendingLinks = map[pair]pair{}
	}
	if len(s.pendingLinks) >= maxPendingLinks {
		for k := range s.pendingLinks {
			delete(s.pendingLinks, k)
			break
		}
	}
	s.pendingLinks[np] = op
}

// Rekeyed returns the SPIs of the IKE SA that spiI/spiR replaced, when a
// key source said so.
func (s *Store) Rekeyed(spiI, spiR ike.SPI) (oldI, oldR ike.SPI, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, found := s.m[pair{spiI, spiR}]; found && e.prev != nil {
		return e.prev.i, e.prev.r, true
	}
	if p, found := s.pendingLinks[pair{spiI, spiR}]; found {
		return p.i, p.r, true
	}
	return ike.SPI{}, ike.SPI{}, false
}

// SetFragmentation records whether, as the key source says, both peers of
// the SA agreed to RFC 7383 fragmentation in IKE_SA_INIT.
func (s *Store) SetFragmentation(spiI, spiR ike.SPI, negotiated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[pair{spiI, spiR}]; ok {
		e.frag, e.fragKnown = negotiated, true
	}
}

// Fragmentation reports what the key source said about RFC 7383
// negotiation for the SA: known is false when it said nothing.
func (s *Store) Fragmentation(spiI, spiR ike.SPI) (negotiated, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[pair{spiI, spiR}]; ok {
		return e.frag, e.fragKnown
	}
	return false, false
}

// Has reports whether keys (or an unsupported suite) are held for the SA,
// without counting a lookup.
func (s *Store) Has(spiI, spiR ike.SPI) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[pair{spiI, spiR}]
	return ok
}

// AddRefresher registers a function Lookup calls (outside its lock) when
// an SPI pair is unknown, before it gives up: a file source reads lines
// written since its last poll, so that keys written a moment before the
// first protected message are found.
func (s *Store) AddRefresher(f func()) {
	s.mu.Lock()
	s.refreshers = append(s.refreshers, f)
	s.mu.Unlock()
}

// Lookup implements Source.
func (s *Store) Lookup(spiI, spiR ike.SPI) (*sk.SA, error) {
	sa, err, found := s.lookup(spiI, spiR)
	if found {
		return sa, err
	}
	s.mu.Lock()
	refs := append([]func(){}, s.refreshers...)
	s.mu.Unlock()
	if len(refs) == 0 {
		return nil, ErrUnknownSA
	}
	for _, f := range refs {
		f()
	}
	sa, err, found = s.lookup(spiI, spiR)
	if found {
		return sa, err
	}
	s.mu.Lock()
	s.st.Misses++
	s.mu.Unlock()
	return nil, ErrUnknownSA
}

func (s *Store) lookup(spiI, spiR ike.SPI) (*sk.SA, error, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[pair{spiI, spiR}]
	if !ok {
		return nil, nil, false
	}
	e.used = s.cfg.Now()
	s.lru.MoveToFront(e.elem)
	s.st.Hits++
	if e.unsupported != nil {
		return nil, e.unsupported, true
	}
	return e.sa, nil, true
}

// Delete removes an SA (its IKE SA was deleted) and wipes its keys. It
// reports whether the SA was held.
func (s *Store) Delete(spiI, spiR ike.SPI) bool {
	s.mu.Lock()
	e, ok := s.m[pair{spiI, spiR}]
	if ok {
		s.removeLocked(e)
		s.st.Deleted++
	}
	delete(s.pendingLinks, pair{spiI, spiR})
	s.mu.Unlock()
	if ok && e.sa != nil {
		e.sa.Close()
	}
	return ok
}

// Expire removes SAs idle for longer than IdleTimeout or older than
// MaxAge, wiping their keys, and returns how many it removed.
func (s *Store) Expire() int {
	now := s.cfg.Now()
	var gone []*entry
	s.mu.Lock()
	for _, e := range s.m {
		if now.Sub(e.used) > s.cfg.IdleTimeout || (s.cfg.MaxAge > 0 && now.Sub(e.added) > s.cfg.MaxAge) {
			gone = append(gone, e)
		}
	}
	for _, e := range gone {
		s.removeLocked(e)
	}
	s.st.Expired += uint64(len(gone))
	s.mu.Unlock()
	for _, e := range gone {
		if e.sa != nil {
			e.sa.Close()
		}
	}
	return len(gone)
}

// Run calls Expire every interval (default: a tenth of IdleTimeout, at
// least one second) until ctx is done, then removes every SA.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = max(s.cfg.IdleTimeout/10, time.Second)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Clear()
			return
		case <-t.C:
			s.Expire()
		}
	}
}

// Clear removes every SA and wipes their keys.
func (s *Store) Clear() {
	s.mu.Lock()
	old := s.m
	s.m = make(map[pair]*entry)
	s.pendingLinks = nil
	s.lru.Init()
	s.st.Deleted += uint64(len(old))
	s.mu.Unlock()
	for _, e := range old {
		if e.sa != nil {
			e.sa.Close()
		}
	}
}

// SAInfo describes a held SA for status output; it carries no keys.
type SAInfo struct {
	SPIi, SPIr  ike.SPI
	Suite       string
	Supported   bool
	Origin      string
	Added, Used time.Time
}

// List returns what the Store holds, most recently used first.
func (s *Store) List() []SAInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SAInfo, 0, len(s.m))
	for el := s.lru.Front(); el != nil; el = el.Next() {
		e := el.Value.(*entry)
		in := SAInfo{SPIi: e.key.i, SPIr: e.key.r, Origin: e.origin, Added: e.added, Used: e.used}
		if e.unsupported != nil {
			in.Suite = e.unsupported.Suite
		} else {
			in.Suite, in.Supported = e.sa.Suite().String(), true
		}
		out = append(out, in)
	}
	return out
}

// Stats returns the counters.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Entries = len(s.m)
	return st
}
