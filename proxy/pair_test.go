package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

func TestAdoptConfig(t *testing.T) {
	base := Config{Listen: []string{"192.0.2.1"}, Backends: []string{"198.51.100.1"}}
	for _, c := range []struct {
		adopt, source, want string
	}{
		{"", "", ""},
		{"off", "", ""},
		{"transparent", "client", ""},
		{"transparent", "", `proxy.adopt "transparent": needs proxy.source client`},
		{"transparent", "proxy", `proxy.adopt "transparent": needs proxy.source client`},
		{"keys", "client", `proxy.adopt "keys": want off or transparent`},
	} {
		cfg := base
		cfg.Adopt, cfg.Source = c.adopt, c.source
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("adopt %q source %q: %v", c.adopt, c.source, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("adopt %q source %q: error %v, want %q", c.adopt, c.source, err, c.want)
		}
	}
}

// withSK is an IKEv2 request of an established IKE SA whose first payload
// is SK (an empty one: the header is all adoption looks at).
func withSK(spiI, spiR ike.SPI, x ike.ExchangeType, np ike.PayloadType) []byte {
	h := ike.Header{SPIi: spiI, SPIr: spiR, NextPayload: np, MajorVersion: 2, Exchange: x, Flags: ike.FlagInitiator,
		MessageID: 3, Length: ike.HeaderLen}
	return h.AppendTo(nil)
}

// The first datagram of an SA the other box carried opens a flow only
// with proxy.adopt transparent, and only when it is ESP of a real SPI or
// a well-formed IKEv2 message of an established IKE SA; with a key
// source, only of an SPI pair it knows.
func TestAdoptable(t *testing.T) {
	spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
	esp := append([]byte{0xc0, 0, 0, 1, 0, 0, 0, 7}, make([]byte, 40)...)
	marker := []byte{0, 0, 0, 0}
	cases := []struct {
		name string
		d    []byte
		natt bool
		want bool
	}{
		{"esp", esp, true, true},
		{"esp on the IKE port", esp, false, false},
		{"esp reserved spi", append([]byte{0, 0, 0, 0xff}, esp[4:]...), true, false},
		{"esp too short", esp[:12], true, false},
		{"keepalive", []byte{0xff}, true, false},
		{"informational", withSK(spiI, spiR, ike.ExchangeInformational, ike.PayloadEncrypted), false, true},
		{"informational natt", append(marker, withSK(spiI, spiR, ike.ExchangeInformational, ike.PayloadEncrypted)...), true, true},
		{"create_child_sa skf", append(marker, withSK(spiI, spiR, ike.ExchangeCreateChildSA, ike.PayloadEncryptedFragment)...), true, true},
		{"ike_sa_init", ikeSAInit(0x55, false), false, false},
		{"no responder spi", withSK(spiI, ike.SPI{}, ike.ExchangeInformational, ike.PayloadEncrypted), false, false},
		{"not encrypted", withSK(spiI, spiR, ike.ExchangeInformational, ike.PayloadNotify), false, false},
		{"ike_sa_init exchange", withSK(spiI, spiR, ike.ExchangeIKESAInit, ike.PayloadEncrypted), false, false},
		{"bad length", append(withSK(spiI, spiR, ike.ExchangeInformational, ike.PayloadEncrypted), 0), false, false},
		{"garbage", []byte("hello, world, hello, world"), false, false},
	}
	for _, mode := range []string{AdoptOff, AdoptTransparent} {
		p, fl := engine(t, nil, false)
		p.s.Adopt, p.s.Source = mode, SourceClient
		for _, c := range cases {
			fl.ln.natt = c.natt
			want := c.want && mode == AdoptTransparent
			if got := p.adoptable(fl.ln, c.d); got != want {
				t.Errorf("%s, adopt %s: %v, want %v", c.name, mode, got, want)
			}
		}
		if mode == AdoptTransparent {
			if st := p.Stats(); st.Pair.AdoptedESP != 1 || st.Pair.AdoptedIKE != 3 {
				t.Errorf("counters %+v", st.Pair)
			}
		}
	}

	// with a key source: the SPI pair must be known
	suite := sk.Suite{Encr: sk.EncrAESGCM16, KeyBits: 256}
	for _, known := range []bool{false, true} {
		var sa *sk.SA
		if known {
			sa = testSA(t, suite)
		}
		p, fl := engine(t, oneKey{sa}, false)
		p.s.Adopt, p.s.Source = AdoptTransparent, SourceClient
		fl.ln.natt = true
		got := p.adoptable(fl.ln, append(marker, withSK(spiI, spiR, ike.ExchangeInformational, ike.PayloadEncrypted)...))
		if got != known {
			t.Errorf("key source knows the SA %v: adopted %v", known, got)
		}
		if st := p.Stats(); known == (st.Pair.AdoptUnknownSA == 1) {
			t.Errorf("key source knows the SA %v: counters %+v", known, st.Pair)
		}
		// ESP carries no IKE SPIs: the key source is not asked
		if !p.adoptable(fl.ln, esp) {
			t.Errorf("key source knows the SA %v: ESP not adopted", known)
		}
	}
}

// The watch reports which listen addresses the host holds, counts changes
// and leaves wildcard addresses out.
func TestVIPWatchSet(t *testing.T) {
	s, err := Config{Listen: []string{"192.0.2.10", "0.0.0.0", "[2001:db8::10]:4500"}, Backends: []string{"198.51.100.1"}}.parse()
	if err != nil {
		t.Fatal(err)
	}
	w := newVIPWatch(s.listen)
	if w == nil || len(w.state) != 2 {
		t.Fatalf("watch %+v: want the two specific addresses once each", w)
	}
	v4, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	t0 := time.Unix(100, 0)
	if ch := w.set(map[netip.Addr]bool{v6: true}, t0, true); len(ch) != 0 {
		t.Errorf("first read reported changes %+v", ch)
	}
	if got := vipsHeld(w.snapshot()); got != 1 {
		t.Errorf("held %d, want 1", got)
	}
	ch := w.set(map[netip.Addr]bool{v4: true, v6: true}, t0.Add(time.Second), false)
	if len(ch) != 1 || ch[0].Address != v4 || !ch[0].Held || ch[0].Changes != 1 || !ch[0].Since.Equal(t0.Add(time.Second)) {
		t.Errorf("arrival: %+v", ch)
	}
	ch = w.set(map[netip.Addr]bool{}, t0.Add(2*time.Second), false)
	if len(ch) != 2 || vipsHeld(w.snapshot()) != 0 {
		t.Errorf("departure: %+v", ch)
	}
	if newVIPWatch([]listenAddr{{ap: netip.MustParseAddrPort("0.0.0.0:500")}}) != nil {
		t.Error("a wildcard listener alone is watched")
	}
	var nilWatch *vipWatch
	if nilWatch.snapshot() != nil {
		t.Error("nil watch has a snapshot")
	}
}
