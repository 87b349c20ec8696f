package proxy

import (
	"bytes"
	"crypto/rand"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
)

// keysPair returns two copies of random AES-CBC/HMAC-SHA2-256 keys: one
// for the key store (which zeroes what it is given), one for the client.
func keysPair(t *testing.T) (store, client *sk.Keys) {
	t.Helper()
	k := &sk.Keys{Suite: sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}}
	for _, kk := range []*sk.Key{&k.SK_ei, &k.SK_er, &k.SK_ai, &k.SK_ar} {
		*kk = make(sk.Key, 32)
		_, _ = rand.Read(*kk)
	}
	c := &sk.Keys{Suite: k.Suite, SK_ei: bytes.Clone(k.SK_ei), SK_er: bytes.Clone(k.SK_er),
		SK_ai: bytes.Clone(k.SK_ai), SK_ar: bytes.Clone(k.SK_ar)}
	return k, c
}

// The cuts of a TCP client's split message are dropped with the IKE SA:
// when the key store deletes its keys (at the janitor's next sweep), and
// when the proxy's IKE SA table lets the SA go, as the backend-to-client
// state is; not when the keys are replaced under the same SPIs, and not
// before.
func TestTCPSplitCutsLeaveWithTheSA(t *testing.T) {
	spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
	// another IKE SA (of another initiator SPI) whose cut stays
	otherI, other := ike.SPI{3, 3, 3, 3, 3, 3, 3, 3}, ike.SPI{7, 7, 7, 7, 7, 7, 7, 7}
	const mtu = 1280
	setup := func(t *testing.T) (*Proxy, *Flow, *keys.Store, []byte, []byte) {
		store := keys.NewStore(keys.StoreConfig{})
		p, f, _ := splitEngine(t, store)
		var msgs [][]byte
		for _, spis := range [][2]ike.SPI{{spiI, spiR}, {otherI, other}} {
			spiI, spi := spis[0], spis[1]
			sk1, ck := keysPair(t)
			if err := store.Put(spiI, spi, sk1, "test"); err != nil {
				t.Fatal(err)
			}
			csa, err := sk.NewSA(ck)
			if err != nil {
				t.Fatal(err)
			}
			negotiate(p, f, spiI, spi, true)
			_, m := clientAuth(t, csa, spiI, spi, 1, 4500)
			if out := p2Split(t, p, f, m, mtu); len(out) < 2 {
				t.Fatalf("%d datagrams, want a split", len(out))
			}
			msgs = append(msgs, m)
		}
		if n := p.tcp.frag.Stats().Entries; n != 2 {
			t.Fatalf("%d cuts cached, want 2", n)
		}
		return p, f, store, msgs[0], msgs[1]
	}
	cached := func(p *Proxy, spi ike.SPI) bool {
		i := spiI
		if spi == other {
			i = otherI
		}
		_, ok := p.tcp.frag.Cached(sk.MessageKey{SPIi: i, SPIr: spi, MessageID: 1, Flags: ike.FlagInitiator})
		return ok
	}

	t.Run("key store delete", func(t *testing.T) {
		p, f, store, m, _ := setup(t)
		if !cached(p, spiR) {
			t.Fatal("the cut is not found under its key")
		}
		if n := p.sweepTCPCuts(p.now()); n != 0 || !cached(p, spiR) {
			t.Fatalf("a sweep with the keys held dropped %d SAs' cuts", n)
		}
		first := p2Split(t, p, f, m, mtu) // a retransmission: the same cut
		if st := p.tcp.stats(); st.SplitReplays != 1 {
			t.Fatalf("replays %d", st.SplitReplays)
		}
		if !store.Delete(spiI, spiR) {
			t.Fatal("the store held no keys")
		}
		if st := p.tcp.stats(); st.SplitCached != 2 {
			t.Errorf("before the sweep: %d split messages held, want 2", st.SplitCached)
		}
		if n := p.sweepTCPCuts(p.now()); n != 1 {
			t.Errorf("the sweep after the delete dropped %d SAs' cuts, want 1", n)
		}
		if st := p.tcp.stats(); st.SplitCached != 1 {
			t.Errorf("after the sweep: %d split messages held, want 1", st.SplitCached)
		}
		if cached(p, spiR) || !cached(p, other) || p.tcp.frag.Stats().Entries != 1 {
			t.Errorf("after the delete: cut of the deleted SA cached %v, of the other %v, %d entries",
				cached(p, spiR), cached(p, other), p.tcp.frag.Stats().Entries)
		}
		if n := p.sweepTCPCuts(p.now()); n != 0 {
			t.Errorf("a second sweep dropped %d", n)
		}
		// the message of the deleted SA is relayed whole now
		if out := p2Split(t, p, f, m, mtu); out != nil || len(first) < 2 {
			t.Errorf("%d datagrams for a message whose keys are deleted", len(out))
		}
	})

	t.Run("keys replaced", func(t *testing.T) {
		p, _, store, _, _ := setup(t)
		k, _ := keysPair(t)
		if err := store.Put(spiI, spiR, k, "test"); err != nil {
			t.Fatal(err)
		}
		if n := p.sweepTCPCuts(p.now()); n != 0 || !cached(p, spiR) {
			t.Errorf("keys replaced under the same SPIs: %d SAs' cuts dropped, cut cached %v", n, cached(p, spiR))
		}
		// past the Fragmenter's TTL the records go, the replaced keys' too
		p.sweepTCPCuts(p.now().Add(sk.DefaultFragmenterTTL + time.Second))
		p.tcp.cuts.mu.Lock()
		left := len(p.tcp.cuts.m)
		p.tcp.cuts.mu.Unlock()
		if left != 0 {
			t.Errorf("%d IKE SAs still noted past the TTL", left)
		}
	})

	t.Run("proxy IKE SA expiry", func(t *testing.T) {
		p, _, _, _, _ := setup(t)
		p.sweep(p.now().Add(p.s.IdleTimeout / 2))
		if !cached(p, spiR) || !cached(p, other) {
			t.Fatal("cuts dropped while their IKE SAs are live")
		}
		p.sweep(p.now().Add(p.s.IdleTimeout + time.Second))
		if cached(p, spiR) || cached(p, other) || p.tcp.frag.Stats().Entries != 0 {
			t.Errorf("IKE SAs expired, %d cuts left", p.tcp.frag.Stats().Entries)
		}
		p.tcp.cuts.mu.Lock()
		left := len(p.tcp.cuts.m)
		p.tcp.cuts.mu.Unlock()
		if left != 0 {
			t.Errorf("%d IKE SAs still noted", left)
		}
	})
}

// The status line shows the upstream split's counters, and why a message
// was relayed whole.
func TestTCPSplitStatus(t *testing.T) {
	spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
	sa := testSA(t, sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128})
	p, f, _ := splitEngine(t, oneKey{sa})
	negotiate(p, f, spiI, spiR, true)
	_, m := clientAuth(t, sa, spiI, spiR, 1, 4500)
	out := p2Split(t, p, f, m, 1280)
	p2Split(t, p, f, m, 1280)
	_, m2 := clientAuth(t, testSA(t, sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}), spiI, spiR, 2, 4500)
	p2Split(t, p, f, m2, 1280) // other keys: open_failed
	s := p.Status()
	for _, want := range []string{"1 split toward backends into " + itoa(2*len(out)) + " fragments (1 replays, 0 key prompts, 0 answered with keys)",
		"1 too large relayed whole (open_failed=1)"} {
		if !strings.Contains(s, want) {
			t.Errorf("status %q lacks %q", s, want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
