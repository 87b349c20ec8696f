package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ikefrag/ikefrag/ebpf/fastpath"
	"github.com/ikefrag/ikefrag/ike"
)

// echoBackend answers every datagram with its own id followed by the
// datagram, from the address it arrived on; it records the sources.
type echoBackend struct {
	id    byte
	conns []*net.UDPConn
	mu    sync.Mutex
	seen  map[netip.AddrPort]int
	echo  bool // false: swallow (a dead service)
	plain bool // true: answer the datagram unchanged
	// cookie: answer IKE_SA_INIT requests with N(COOKIE) (RFC 7296 §2.6)
	cookie bool
}

func startEcho(t testing.TB, id byte, addr netip.Addr, ports ...int) *echoBackend {
	t.Helper()
	b := &echoBackend{id: id, seen: map[netip.AddrPort]int{}, echo: true}
	for _, port := range ports {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		if err != nil {
			t.Fatal(err)
		}
		b.conns = append(b.conns, c)
		go b.serve(c)
	}
	t.Cleanup(func() {
		for _, c := range b.conns {
			c.Close()
		}
	})
	return b
}

func (b *echoBackend) serve(c *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.seen[from]++
		echo, plain, cookie := b.echo, b.plain, b.cookie
		b.mu.Unlock()
		if !echo {
			continue
		}
		in, marker := buf[:n], []byte(nil)
		if n >= 4 && bytes.Equal(in[:4], []byte{0, 0, 0, 0}) {
			in, marker = in[4:], []byte{0, 0, 0, 0}
		}
		if h, err := ike.ParseHeader(in); cookie && err == nil && h.Exchange == ike.ExchangeIKESAInit && !h.Flags.Response() {
			r := ike.Header{SPIi: h.SPIi, NextPayload: ike.PayloadNotify, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit,
				Flags: ike.FlagResponse}
			body := []byte{0, 0, 0, 16, 0, 0, 0x40, 0x06, 1, 2, 3, 4, 5, 6, 7, 8}
			r.Length = uint32(ike.HeaderLen + len(body))
			_, _ = c.WriteToUDPAddrPort(append(append(marker, r.AppendTo(nil)...), body...), from)
			continue
		}
		out := append([]byte{b.id}, buf[:n]...)
		if n >= 4 && bytes.Equal(buf[:4], []byte{0, 0, 0, 0}) {
			// keep a non-ESP marker in front
			out = append([]byte{0, 0, 0, 0, b.id}, buf[4:n]...)
		}
		if r := ikeAnswer(buf[:n], b.id); r != nil {
			out = r
		}
		if plain {
			out = buf[:n]
		}
		_, _ = c.WriteToUDPAddrPort(out, from)
	}
}

func (b *echoBackend) sources() map[netip.AddrPort]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[netip.AddrPort]int{}
	for k, v := range b.seen {
		out[k] = v
	}
	return out
}

// testPorts returns an IKE and a NAT-T port unlikely to be in use.
// testPorts picks a port pair for a proxy on loopback, below the kernel's
// ephemeral range (32768 and up) so that no client socket can hold it.
func testPorts() (int, int) {
	base := 20000 + 2*rand.IntN(4999)
	return base, base + 1
}

func startProxy(t testing.TB, cfg Config, deps Deps) *Proxy {
	t.Helper()
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}

// ikeAnswer is what a responder sends back for an IKEv2 request (after a
// non-ESP marker when there is one), nil for anything else: the request
// with the R flag set and the I flag cleared; an IKE_SA_INIT response
// gets the responder SPI id:id:...:01 and keeps the request's SA, KE and
// Nonce payloads.
func ikeAnswer(d []byte, id byte) []byte {
	// a marker unless the datagram is a whole IKE message without one
	// (an initiator SPI can start with four zero bytes)
	h0, err0 := ike.ParseHeader(d)
	marker := len(d) >= 4 && bytes.Equal(d[:4], []byte{0, 0, 0, 0}) && (err0 != nil || int(h0.Length) != len(d))
	msg := d
	if marker {
		msg = d[4:]
	}
	h, err := ike.ParseHeader(msg)
	if err != nil || !h.IsIKEv2() || int(h.Length) != len(msg) || h.Flags.Response() {
		return nil
	}
	out := append([]byte(nil), d...)
	m := out
	if marker {
		m = out[4:]
	}
	m[19] = m[19]&^byte(ike.FlagInitiator) | byte(ike.FlagResponse)
	if h.Exchange == ike.ExchangeIKESAInit {
		copy(m[8:16], []byte{id, id, id, id, id, id, id, 1})
	}
	return out
}

// initBody is a minimal IKE_SA_INIT payload chain after a first payload
// of type SA: SA (one IKE proposal, one DH transform), KE (group 19),
// Nonce.
var initBody = []byte{
	34, 0, 0, 20, // SA, next KE
	0, 0, 0, 16, 1, 1, 0, 1, // proposal 1, IKE, no SPI, 1 transform
	0, 0, 0, 8, 4, 0, 0, 19, // transform D-H 19
	40, 0, 0, 12, 0, 19, 0, 0, 1, 2, 3, 4, // KE, next Nonce: group 19, 4 bytes
	0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, // Nonce
}

// ikeSAInit is a well-formed IKE_SA_INIT request (SA, KE, Nonce; the
// IKEV2_FRAGMENTATION_SUPPORTED notify first when frag is set).
func ikeSAInit(spiI uint64, frag bool) []byte {
	h := ike.Header{NextPayload: ike.PayloadSA, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit, Flags: ike.FlagInitiator}
	binary.BigEndian.PutUint64(h.SPIi[:], spiI)
	var body []byte
	if frag {
		h.NextPayload = ike.PayloadNotify
		body = []byte{33, 0, 0, 8, 0, 0, 0x40, 0x2e}
	}
	body = append(body, initBody...)
	h.Length = uint32(ike.HeaderLen + len(body))
	return append(h.AppendTo(nil), body...)
}

// ikeRequest is an IKEv2 request of an established IKE SA (no payload).
func ikeRequest(spiI, spiR ike.SPI, x ike.ExchangeType, mid uint32) []byte {
	h := ike.Header{SPIi: spiI, SPIr: spiR, MajorVersion: 2, Exchange: x, Flags: ike.FlagInitiator, MessageID: mid,
		Length: ike.HeaderLen}
	return h.AppendTo(nil)
}

func roundTrip(t *testing.T, c *net.UDPConn, to netip.AddrPort, msg []byte) []byte {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(msg, to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no answer to %d bytes sent to %s: %v", len(msg), to, err)
	}
	if from != to {
		t.Fatalf("answer from %s, want %s (the address the client used)", from, to)
	}
	return buf[:n]
}

func TestRelayLoopback(t *testing.T) {
	ikePort, nattPort := testPorts()
	lo := netip.MustParseAddr("127.0.0.1")
	b1 := startEcho(t, 1, netip.MustParseAddr("127.0.0.2"), 500+ikePort%1000+30000, 4500+ikePort%1000+30000)
	p := startProxy(t, Config{
		Listen:   []string{"127.0.0.1"},
		Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", 500+ikePort%1000+30000, 4500+ikePort%1000+30000)},
		IKEPort:  ikePort, NATTPort: nattPort,
	}, Deps{})
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ikeAddr := netip.AddrPortFrom(lo, uint16(ikePort))
	nattAddr := netip.AddrPortFrom(lo, uint16(nattPort))

	init := ikeSAInit(0x1122334455667788, true)
	got := roundTrip(t, c, ikeAddr, init)
	if !bytes.Equal(got, ikeAnswer(init, 1)) {
		t.Fatalf("IKE answer %x", got)
	}
	// IKE_AUTH on the NAT-T port: the client is established there
	var spiI, spiR ike.SPI
	copy(spiI[:], got[0:8])
	copy(spiR[:], got[8:16])
	roundTrip(t, c, nattAddr, append([]byte{0, 0, 0, 0}, ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1)...))
	esp := []byte{0xc0, 1, 2, 3, 0, 0, 0, 1, 0xaa, 0xbb}
	if got := roundTrip(t, c, nattAddr, esp); !bytes.Equal(got, append([]byte{1}, esp...)) {
		t.Fatalf("ESP answer %x", got)
	}
	ka := []byte{0xff}
	if got := roundTrip(t, c, nattAddr, ka); !bytes.Equal(got, []byte{1, 0xff}) {
		t.Fatalf("keepalive answer %x", got)
	}
	// an invalid NAT-T payload (3 bytes) is dropped and counted
	if _, err := c.WriteToUDPAddrPort([]byte{1, 2, 3}, nattAddr); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	st := p.Stats()
	if st.Flows != 2 || st.Total.DatagramsIn != 4 || st.Total.DatagramsOut != 4 || st.Total.Dropped["invalid"] != 1 {
		t.Errorf("stats %+v", st)
	}
	// one upstream socket per client flow: the backend saw two sources
	if src := b1.sources(); len(src) != 2 {
		t.Errorf("backend sources %v, want 2 (one per client flow)", src)
	}
	peers := p.Peers()
	if len(peers) != 1 || peers[0].Client != lo || len(peers[0].Flows) != 2 || peers[0].PMTU.MTU != DefaultPMTU {
		t.Errorf("peers %+v", peers)
	}
}

// A wildcard listener answers from the address the client used. The flow
// table is bounded: a new flow takes the place of the oldest unanswered
// flow, then of the oldest half-open one, never of an established one;
// with only established flows a new one is a counted drop.
func TestRelayWildcardAndEviction(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	be := startEcho(t, 1, netip.MustParseAddr("127.0.0.2"), bp, bp+1)
	p := startProxy(t, Config{
		Listen:   []string{"0.0.0.0"},
		Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1)},
		IKEPort:  ikePort, NATTPort: nattPort, MaxClients: 3,
		CookieThreshold: 1000, // eviction alone, no cookies
	}, Deps{})
	conn := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	to := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("127.0.0.%d", 3+i)), uint16(ikePort))
	}
	// A: established (IKE_SA_INIT, then IKE_AUTH answered on the flow)
	a := conn()
	initA := ikeSAInit(0xa1, false)
	resp := roundTrip(t, a, to(0), initA)
	var spiI, spiR ike.SPI
	copy(spiI[:], resp[0:8])
	copy(spiR[:], resp[8:16])
	roundTrip(t, a, to(0), ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1))
	// B: half-open (IKE_SA_INIT answered with an SA payload)
	b := conn()
	roundTrip(t, b, to(1), ikeSAInit(0xb1, false))
	// C: pending (the backend is silent)
	be.mu.Lock()
	be.echo = false
	be.mu.Unlock()
	c := conn()
	send := func(c *net.UDPConn, d []byte, to netip.AddrPort) {
		if _, err := c.WriteToUDPAddrPort(d, to); err != nil {
			t.Fatal(err)
		}
	}
	send(c, ikeSAInit(0xc1, false), to(2))
	waitFor(t, "3 flows", func() bool { return p.Stats().Flows == 3 })
	levels := func() map[netip.AddrPort]bool {
		out := map[netip.AddrPort]bool{}
		for _, f := range p.Flows() {
			out[f.Client] = true
		}
		return out
	}
	// D evicts C (pending goes before half-open)
	d := conn()
	send(d, ikeSAInit(0xd1, false), to(2))
	waitFor(t, "C evicted", func() bool { return p.Stats().FlowEnds["evicted_unanswered"] == 1 })
	if l := levels(); !l[addrOf(a)] || !l[addrOf(b)] || l[addrOf(c)] || !l[addrOf(d)] {
		t.Errorf("after D: flows %v", l)
	}
	// E evicts D (pending), F evicts E, ...: B and A stay
	for i := 0; i < 5; i++ {
		send(conn(), ikeSAInit(uint64(0xe0+i), false), to(2))
	}
	waitFor(t, "pending flows evicted", func() bool { return p.Stats().FlowEnds["evicted_unanswered"] == 6 })
	if l := levels(); !l[addrOf(a)] || !l[addrOf(b)] {
		t.Errorf("established or half-open flow evicted by pending ones: %v", l)
	}
	st := p.Stats()
	if st.Flows != 3 || st.Unestablished != 2 || st.FlowEnds["evicted_half_open"] != 0 {
		t.Errorf("stats %+v", st)
	}
	// ESP from a source the backend never answered opens nothing
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	send(other, []byte{0xc0, 0, 0, 1, 0, 0, 0, 1}, netip.AddrPortFrom(to(0).Addr(), uint16(nattPort)))
	waitFor(t, "unsolicited ESP counted", func() bool { return p.Stats().Total.Dropped["unsolicited"] == 1 })

	// a table of established flows only: a new flow is a counted drop
	ikePort2, nattPort2 := testPorts()
	p2 := startProxy(t, Config{Listen: []string{"127.0.0.1"}, Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1)},
		IKEPort: ikePort2, NATTPort: nattPort2, MaxClients: 1}, Deps{})
	be.mu.Lock()
	be.echo = true
	be.mu.Unlock()
	to2 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort2))
	x := conn()
	resp = roundTrip(t, x, to2, ikeSAInit(0xf1, false))
	copy(spiI[:], resp[0:8])
	copy(spiR[:], resp[8:16])
	roundTrip(t, x, to2, ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1))
	send(conn(), ikeSAInit(0xf2, false), to2)
	waitFor(t, "table_full", func() bool { return p2.Stats().Total.Dropped["table_full"] == 1 })
	if st := p2.Stats(); st.Flows != 1 || len(st.FlowEnds) != 0 {
		t.Errorf("stats %+v", st)
	}
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// waitFor polls cond for up to 3 s (the proxy counts after its system
// calls return, which can be after the client has its answer).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A backend whose port is closed answers with ICMP port unreachable; after
// health_failures of them it is down and new IKE SAs go to the other one.
func TestBackendHealth(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	startEcho(t, 2, netip.MustParseAddr("127.0.0.2"), bp, bp+1)
	p := startProxy(t, Config{
		Listen:   []string{"127.0.0.1"},
		Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1), fmt.Sprintf("127.0.0.4:%d/%d", bp, bp+1)},
		IKEPort:  ikePort, NATTPort: nattPort, HealthFailures: 2, HealthHold: time.Minute,
	}, Deps{})
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort))
	answered := 0
	for i := 0; i < 40; i++ {
		// distinct client addresses: each may have half_open_per_client
		// IKE SAs half-open
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(1+i))})
		if err != nil {
			t.Fatal(err)
		}
		msg := ikeSAInit(uint64(i+1)<<32|0xabcd, false)
		_, _ = c.WriteToUDPAddrPort(msg, to)
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 2048)
		if _, _, err := c.ReadFromUDPAddrPort(buf); err == nil {
			answered++
		}
		c.Close()
	}
	st := p.Stats()
	if st.Backends[1].Up || !st.Backends[0].Up {
		t.Errorf("backend states %+v", st.Backends)
	}
	// at most the requests placed before the failures counted were lost
	if answered < 40-2*2 {
		t.Errorf("answered %d of 40", answered)
	}
	t.Logf("answered %d of 40; dead backend: %s", answered, st.Backends[1].LastError)
}

// The collector passes the pedantic registry (consistent descriptions and
// labels) and exports the per-backend counters.
func TestCollector(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	startEcho(t, 1, netip.MustParseAddr("127.0.0.2"), bp, bp+1)
	p := startProxy(t, Config{Listen: []string{"127.0.0.1"}, Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1)},
		IKEPort: ikePort, NATTPort: nattPort, MetricsPerClient: true,
		PMTUOverrides: map[netip.Prefix]int{netip.MustParsePrefix("127.0.0.0/8"): 1400}}, Deps{})
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp := roundTrip(t, c, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort)), ikeSAInit(0x77, false))
	var spiI, spiR ike.SPI
	copy(spiI[:], resp[0:8])
	copy(spiR[:], resp[8:16])
	nattTo := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(nattPort))
	roundTrip(t, c, nattTo, append([]byte{0, 0, 0, 0}, ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1)...))
	roundTrip(t, c, nattTo, []byte{0xc0, 0, 0, 1, 0, 0, 0, 1})
	// the reply is counted once sendmmsg returns, which can be after the
	// client has it
	for end := time.Now().Add(2 * time.Second); p.Stats().Total.ESPOut == 0 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(p.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, mf := range mfs {
		series[mf.GetName()] = len(mf.GetMetric())
		if mf.GetName() == "ikefrag_proxy_esp_datagrams_total" {
			// the ESP-shaped round trip crossed user space; the backend
			// is local, so no fast path
			for _, m := range mf.GetMetric() {
				l := m.GetLabel()
				want := 0.0
				if l[2].GetName() == "path" && l[2].GetValue() == "user_space" {
					want = 1
				}
				if m.GetCounter().GetValue() != want {
					t.Errorf("ESP metric %v", m)
				}
			}
		}
		if mf.GetName() == "ikefrag_proxy_client_pmtu_bytes" {
			m := mf.GetMetric()[0]
			if m.GetGauge().GetValue() != 1400 || len(m.GetLabel()) != 2 || m.GetLabel()[0].GetValue() != "127.0.0.1" ||
				m.GetLabel()[1].GetValue() != SourceOverride {
				t.Errorf("client PMTU metric %v", m)
			}
		}
	}
	if series["ikefrag_proxy_datagrams_total"] != 2 || series["ikefrag_proxy_dropped_total"] != int(numDropReasons) ||
		series["ikefrag_proxy_backend_up"] != 1 || series["ikefrag_proxy_client_pmtu_bytes"] != 1 ||
		series["ikefrag_proxy_esp_datagrams_total"] != 4 || series["ikefrag_fastpath_passed_total"] != len(fastpath.PassReasons()) ||
		series["ikefrag_fastpath_active"] != 1 {
		t.Errorf("series %v", series)
	}
	if s := p.Status(); !strings.Contains(s, "1/1 backends up") {
		t.Errorf("status %q", s)
	}
}
