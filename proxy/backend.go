package proxy

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// backend is one VPN server with its health and counters.
type backend struct {
	idx int
	cfg Backend
	key uint64 // stable per backend, for rendezvous hashing
	ctr counters

	// mu guards the health state below (flows is atomic).
	mu        sync.Mutex
	down      bool
	downUntil time.Time
	failures  int
	lastReply time.Time
	lastFail  string
	flows     atomic.Int64
	// doubt holds the distinct client addresses whose well-formed
	// IKE_SA_INIT went unanswered since the backend last answered
	// (health.go); probing and lastProbe pace the active probe.
	doubt     map[netip.Addr]time.Time
	probing   bool
	lastProbe time.Time
}

// mix64 is SplitMix64's finaliser: a cheap, well-distributed 64-bit mix.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func hashBytes(h uint64, b []byte) uint64 {
	for len(b) >= 8 {
		h = mix64(h ^ binary.BigEndian.Uint64(b))
		b = b[8:]
	}
	var tail [8]byte
	copy(tail[:], b)
	return mix64(h ^ binary.BigEndian.Uint64(tail[:]) ^ uint64(len(b)))
}

func newBackend(idx int, cfg Backend) *backend {
	// The key depends on the configured address only, so reordering the
	// list or adding a backend moves only the clients that must move.
	a := cfg.IKE.Addr().As16()
	k := hashBytes(0x696b656672616700, a[:])
	k = mix64(k ^ uint64(cfg.IKE.Port())<<16 ^ uint64(cfg.NATT.Port()))
	return &backend{idx: idx, cfg: cfg, key: k}
}

// placementKey is what a new IKE SA is placed by: the client address and
// the initiator's SPI. Clients behind one NAT spread over the backends; a
// retransmitted IKE_SA_INIT lands where the first went.
func placementKey(client netip.Addr, spiI ike.SPI) uint64 {
	a := client.As16()
	h := hashBytes(0x1ce5a, a[:])
	return hashBytes(h, spiI[:])
}

// clientKey places datagrams that carry no IKE SPI (ESP, keepalives) of a
// client the proxy knows nothing about.
func clientKey(client netip.Addr) uint64 {
	a := client.As16()
	return hashBytes(0xe5b, a[:])
}

// usable reports whether new IKE SAs may be placed on the backend.
func (b *backend) usable(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down && now.After(b.downUntil) {
		// hold time over: try again (half-open); one more failure puts
		// it back down at once
		b.down = false
		b.failures = max(0, b.failures-1)
	}
	return !b.down
}

// replied records a datagram from the backend: it is alive.
func (b *backend) replied(now time.Time) {
	b.mu.Lock()
	b.lastReply = now
	b.failures = 0
	b.down = false
	clear(b.doubt)
	b.mu.Unlock()
}

// markDown puts the backend down for hold (again), and reports whether it
// was up.
func (b *backend) markDown(now time.Time, why string, hold time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastFail = why
	b.failures++
	was := !b.down
	b.down, b.downUntil = true, now.Add(hold)
	clear(b.doubt)
	return was
}

// failed records a failure; after threshold consecutive ones the backend
// is down for hold.
func (b *backend) failed(now time.Time, why string, threshold int, hold time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	b.lastFail = why
	if b.failures >= threshold && !b.down {
		b.down, b.downUntil = true, now.Add(hold)
		return true
	}
	if b.down {
		b.downUntil = now.Add(hold)
	}
	return false
}

// pick chooses a backend by rendezvous (highest random weight) hashing
// over the usable backends, or over all when none is usable.
func pick(bs []*backend, key uint64, now time.Time) *backend {
	var best *backend
	var bestW uint64
	for _, b := range bs {
		if !b.usable(now) {
			continue
		}
		if w := mix64(key ^ b.key); best == nil || w > bestW {
			best, bestW = b, w
		}
	}
	if best != nil {
		return best
	}
	for _, b := range bs {
		if w := mix64(key ^ b.key); best == nil || w > bestW {
			best, bestW = b, w
		}
	}
	return best
}
