package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/ikefrag/ikefrag/ike/sk"
)

// The configuration as the daemon reads it: viper splits map keys at dots,
// so an IPv4 prefix key arrives as nested maps and must still parse.
func TestConfigViper(t *testing.T) {
	yaml := `
proxy:
  enabled: true
  listen: ["192.0.2.1", "[2001:db8::1]:4500"]
  backends: ["198.51.100.10", "198.51.100.11:1500", "[2001:db8::2]:500/4501"]
  refragment: auto
  pmtu_default: 1400
  pmtu_overrides:
    "10.0.0.0/8": 1000
    "10.1.0.0/16": 576
    "2001:db8:1::/48": 1280
  pmtu_step_down: true
  route_mtu: true
  fast_path: off
  idle_timeout: 90s
  fast_path_max_flows: 64
keys:
  strongswan_table: /run/ikefrag/ikev2_decryption_table
  socket: /run/ikefrag/keys.sock
`
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(yaml)); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Proxy Config     `mapstructure:"proxy"`
		Keys  KeysConfig `mapstructure:"keys"`
	}
	if err := v.Unmarshal(&cfg); err != nil {
		t.Fatal(err)
	}
	s, err := cfg.Proxy.parse()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Enabled || !s.RouteMTU || !s.stepDown || s.PMTUDefault != 1400 || s.IdleTimeout != 90*time.Second ||
		s.FastPath != FastPathOff || s.FastPathMaxFlows != 64 {
		t.Errorf("settings %+v", s.Config)
	}
	if cfg.Keys.StrongswanTable != "/run/ikefrag/ikev2_decryption_table" || cfg.Keys.Socket != "/run/ikefrag/keys.sock" {
		t.Errorf("keys %+v", cfg.Keys)
	}
	wantListen := []listenAddr{
		{netip.MustParseAddrPort("192.0.2.1:500"), false}, {netip.MustParseAddrPort("192.0.2.1:4500"), true},
		{netip.MustParseAddrPort("[2001:db8::1]:4500"), true},
	}
	if !slices.Equal(s.listen, wantListen) {
		t.Errorf("listen %v", s.listen)
	}
	if len(s.backends) != 3 || s.backends[1].IKE.Port() != 1500 || !s.backends[1].IKEMarker || s.backends[0].IKEMarker ||
		s.backends[2].NATT != netip.MustParseAddrPort("[2001:db8::2]:4501") {
		t.Errorf("backends %+v", s.backends)
	}
	for a, want := range map[string]int{"10.1.2.3": 576, "10.2.0.1": 1000, "2001:db8:1::5": 1280, "192.0.2.9": 0} {
		got, _ := s.override(netip.MustParseAddr(a))
		if got != want {
			t.Errorf("override %s = %d, want %d", a, got, want)
		}
	}
}

func TestConfigForms(t *testing.T) {
	base := Config{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}}
	// the list forms of overrides and step-down the daemon's file may use
	c := base
	c.PMTUOverrides = []any{map[string]any{"prefix": "198.51.100.0/24", "mtu": 1400}, "203.0.113.0/24=1200"}
	c.PMTUStepDown = []any{1400, 1200, 1000}
	s, err := c.parse()
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := s.override(netip.MustParseAddr("198.51.100.7")); m != 1400 {
		t.Errorf("object override %d", m)
	}
	if m, _ := s.override(netip.MustParseAddr("203.0.113.7")); m != 1200 {
		t.Errorf("string override %d", m)
	}
	if !s.stepDown || !slices.Equal(s.ladder, []int{1400, 1200, 1000}) {
		t.Errorf("ladder %v %v", s.stepDown, s.ladder)
	}
	if r, ok := nextRung(s.ladder, 1280, false); !ok || r != 1200 {
		t.Errorf("next rung below 1280: %d %v", r, ok)
	}
	// defaults: every address, both ports, step-down off
	c = Config{Backends: []string{"127.0.0.2"}}
	if s, err = c.parse(); err != nil || len(s.listen) != 4 || s.stepDown || s.PMTUDefault != DefaultPMTU ||
		s.FastPath != FastPathAuto || s.FastPathMaxFlows != DefaultMaxClients {
		t.Errorf("defaults: %v %+v", err, s)
	}
	bad := []Config{
		{Listen: []string{"nowhere"}, Backends: []string{"127.0.0.2"}},
		{Listen: []string{"127.0.0.1"}},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"vpn.example"}},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"0.0.0.0"}},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2:4500/4500"}},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, Refragment: "always"},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, PMTUDefault: 100},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, PMTUOverrides: map[string]any{"10.0.0.0/33": 1000}},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, PMTUOverrides: map[string]any{"10.0.0.0/8": 100}},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, PMTUStepDown: []any{1000, 1200}},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, PMTUStepDown: "maybe"},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, IKEPort: 4500},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, FastPath: "on"},
		{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}, FastPathMaxFlows: 1 << 22},
	}
	for i, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("bad config %d accepted: %+v", i, c)
		}
	}
}

// Evidence combines as documented: override or observation is the base,
// ICMP and step-down only lower it, nothing goes below the family minimum,
// and evidence expires.
func TestPMTUEstimate(t *testing.T) {
	s, err := Config{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"},
		PMTUOverrides: map[string]any{"192.0.2.0/24": 1400}}.parse()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	a := netip.MustParseAddr("198.51.100.1")
	var c clientPMTU
	if in := c.estimate(s, a, now); in.MTU != DefaultPMTU || in.Source != SourceDefault {
		t.Errorf("nothing known: %+v", in)
	}
	c.unfrag.setMax(1400, now, s.PMTUExpiry)
	if in := c.estimate(s, a, now); in.MTU != 1400 || in.Source != SourceUnfragmented {
		t.Errorf("a 1400-byte datagram came through: %+v", in)
	}
	c.frags.setMax(1000, now, s.PMTUExpiry)
	if in := c.estimate(s, a, now); in.MTU != 1000 || in.Source != SourceFragments {
		t.Errorf("client fragments at 1000: %+v", in)
	}
	c.stepDown.setMin(576, now, s.PMTUExpiry)
	if in := c.estimate(s, a, now); in.MTU != 576 || in.Source != SourceStepDown {
		t.Errorf("step-down: %+v", in)
	}
	if in := c.estimate(s, a, now.Add(s.PMTUExpiry+time.Second)); in.MTU != DefaultPMTU {
		t.Errorf("expired evidence still used: %+v", in)
	}
	var o clientPMTU
	ov := netip.MustParseAddr("192.0.2.7")
	o.frags.setMax(1000, now, s.PMTUExpiry)
	if in := o.estimate(s, ov, now); in.MTU != 1400 || in.Source != SourceOverride {
		t.Errorf("override wins over observation: %+v", in)
	}
	o.icmp.setMin(1200, now, s.PMTUExpiry)
	if in := o.estimate(s, ov, now); in.MTU != 1200 || in.Source != SourceICMP {
		t.Errorf("ICMP lowers the override: %+v", in)
	}
	var v6 clientPMTU
	v6.icmp.setMin(600, now, s.PMTUExpiry)
	if in := v6.estimate(s, netip.MustParseAddr("2001:db8::1"), now); in.MTU != 1280 {
		t.Errorf("IPv6 below 1280: %+v", in)
	}
	if r, ok := nextRung(stepLadder, 1280, true); ok || r != 1280 {
		t.Errorf("IPv6 cannot step below 1280: %d %v", r, ok)
	}
	if r, ok := nextRung(stepLadder, 1280, false); !ok || r != 1000 {
		t.Errorf("IPv4 1280 → %d %v", r, ok)
	}
	if r, ok := nextRung(stepLadder, 1000, false); !ok || r != 576 {
		t.Errorf("IPv4 1000 → %d %v", r, ok)
	}
}

// Rendezvous placement is stable, spreads, and moves only the clients of
// a backend that goes down.
func TestPlacement(t *testing.T) {
	mk := func(addrs ...string) []*backend {
		var bs []*backend
		for i, a := range addrs {
			b, err := ParseBackend(a)
			if err != nil {
				t.Fatal(err)
			}
			bs = append(bs, newBackend(i, b))
		}
		return bs
	}
	bs := mk("192.0.2.1", "192.0.2.2", "192.0.2.3")
	now := time.Unix(1000, 0)
	count := map[int]int{}
	first := map[uint64]int{}
	for i := 0; i < 3000; i++ {
		k := placementKey(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), [8]byte{byte(i)})
		b := pick(bs, k, now)
		count[b.idx]++
		first[k] = b.idx
		if pick(mk("192.0.2.3", "192.0.2.1", "192.0.2.2"), k, now).cfg.Name != b.cfg.Name {
			t.Fatalf("placement depends on the list order")
		}
	}
	for i := range bs {
		if count[i] < 800 {
			t.Errorf("uneven placement %v", count)
		}
	}
	for i := 0; i < 3; i++ {
		bs[1].failed(now, "test", 3, time.Minute)
	}
	moved := 0
	for k, idx := range first {
		b := pick(bs, k, now)
		if b.idx == 1 {
			t.Fatalf("placed on a backend that is down")
		}
		if b.idx != idx {
			moved++
			if idx != 1 {
				t.Fatalf("a client of a healthy backend moved")
			}
		}
	}
	if moved != count[1] {
		t.Errorf("moved %d, want the %d of the failed backend", moved, count[1])
	}
	// after the hold time the backend takes new SAs again
	if !bs[1].usable(now.Add(2 * time.Minute)) {
		t.Errorf("backend still down after its hold time")
	}
}

func TestMsgCacheBounds(t *testing.T) {
	c := newMsgCache(4, 1000)
	a := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < 10; i++ {
		m := c.get(keyN(i), a, true)
		c.account(m, 300)
	}
	c.mu.Lock()
	n, b := len(c.m), c.bytes
	c.mu.Unlock()
	if n > 4 || b > 1000 {
		t.Errorf("cache holds %d states, %d bytes", n, b)
	}
	if c.get(keyN(9), a, false) == nil {
		t.Errorf("the newest state was evicted")
	}
	// the same key from another client is another message
	if c.get(keyN(9), netip.MustParseAddr("192.0.2.2"), false) != nil {
		t.Errorf("state shared between clients")
	}
}

func keyN(i int) (k sk.MessageKey) {
	k.MessageID = uint32(i)
	return k
}
