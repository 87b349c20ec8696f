package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

func TestIsInitRequest(t *testing.T) {
	good := ikeSAInit(0x1234, true)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	bare := ike.Header{SPIi: ike.SPI{1}, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit, Flags: ike.FlagInitiator,
		Length: ike.HeaderLen}
	v1 := ike.Header{SPIi: ike.SPI{1}, MajorVersion: 1, Exchange: 2, Length: ike.HeaderLen}
	v1quick := v1
	v1quick.Exchange = 32
	for name, c := range map[string]struct {
		msg  []byte
		want bool
	}{
		"well-formed":       {good, true},
		"no frag notify":    {ikeSAInit(0x1234, false), true},
		"IKEv1 main mode":   {v1.AppendTo(nil), true},
		"IKEv1 quick mode":  {v1quick.AppendTo(nil), false},
		"no I flag":         {mod(func(b []byte) []byte { b[19] &^= byte(ike.FlagInitiator); return b }), false},
		"R flag":            {mod(func(b []byte) []byte { b[19] |= byte(ike.FlagResponse); return b }), false},
		"message ID 1":      {mod(func(b []byte) []byte { b[23] = 1; return b }), false},
		"responder SPI":     {mod(func(b []byte) []byte { b[15] = 1; return b }), false},
		"zero SPIi":         {mod(func(b []byte) []byte { clear(b[0:8]); return b }), false},
		"IKE_AUTH":          {mod(func(b []byte) []byte { b[18] = byte(ike.ExchangeIKEAuth); return b }), false},
		"major version 3":   {mod(func(b []byte) []byte { b[17] = 0x30; return b }), false},
		"length too long":   {mod(func(b []byte) []byte { b[27]++; return b }), false},
		"trailing byte":     {append(append([]byte(nil), good...), 0), false},
		"broken chain":      {mod(func(b []byte) []byte { b[31] = 200; return b }), false},
		"no SA, KE, Nonce":  {bare.AppendTo(nil), false},
		"header only, 27 B": {good[:27], false},
		"empty":             {nil, false},
	} {
		if got := isInitRequest(c.msg); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

// Datagrams that are neither a well-formed IKE_SA_INIT request nor of a
// flow, IKE SA or client the backend answered open no flow, socket or
// goroutine; each is counted.
func TestFlowsEarned(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	startEcho(t, 1, netip.MustParseAddr("127.0.0.2"), bp, bp+1)
	p := startProxy(t, Config{Listen: []string{"127.0.0.1"}, Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1)},
		IKEPort: ikePort, NATTPort: nattPort}, Deps{})
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ikeTo := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort))
	nattTo := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(nattPort))
	good := ikeSAInit(0x55, false)
	noI := append([]byte(nil), good...)
	noI[19] = 0
	mid := append([]byte(nil), good...)
	mid[23] = 7
	marked := append([]byte{0, 0, 0, 0}, ikeRequest(ike.SPI{9}, ike.SPI{8}, ike.ExchangeIKEAuth, 1)...)
	cases := []struct {
		d  []byte
		to netip.AddrPort
	}{
		{[]byte("hello"), ikeTo},
		{noI, ikeTo},
		{mid, ikeTo},
		{ikeRequest(ike.SPI{9}, ike.SPI{8}, ike.ExchangeIKEAuth, 1), ikeTo}, // an IKE SA nobody answered
		{[]byte{0xc0, 0, 0, 1, 0, 0, 0, 1}, nattTo},                         // ESP of no client
		{[]byte{0xff}, nattTo},                                              // keepalive of no client
		{marked, nattTo},
	}
	// the listeners run once the first datagram is counted
	_, _ = c.WriteToUDPAddrPort([]byte("x"), ikeTo)
	waitFor(t, "listener", func() bool { return p.Stats().Total.Dropped["unsolicited"] == 1 })
	before := runtime.NumGoroutine()
	for range 50 {
		for _, k := range cases {
			if _, err := c.WriteToUDPAddrPort(k.d, k.to); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := uint64(50*len(cases)) + 1
	waitFor(t, "unsolicited datagrams counted", func() bool { return p.Stats().Total.Dropped["unsolicited"] == want })
	st := p.Stats()
	if st.Flows != 0 || st.Total.DatagramsIn != 0 || st.Clients != 0 {
		t.Errorf("unsolicited datagrams made state: %+v", st)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines %d → %d", before, n)
	}
	// the well-formed request opens one; its IKE SA, answered, opens one
	// on the NAT-T port; then the client's ESP is of an established client
	got := roundTrip(t, c, ikeTo, good)
	if !bytes.Equal(got, ikeAnswer(good, 1)) {
		t.Fatalf("answer %x", got)
	}
	var spiI, spiR ike.SPI
	copy(spiI[:], got[0:8])
	copy(spiR[:], got[8:16])
	roundTrip(t, c, nattTo, append([]byte{0, 0, 0, 0}, ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1)...))
	roundTrip(t, c, nattTo, []byte{0xc0, 0, 0, 1, 0, 0, 0, 1})
	if st := p.Stats(); st.Flows != 2 || st.Total.Dropped["unsolicited"] != want {
		t.Errorf("stats %+v", st)
	}
}

// New flows are limited per address and per prefix; unanswered flows
// (also those answered only with COOKIE) expire after unreplied_timeout,
// half-open ones after half_open_timeout, established ones only when idle.
func TestNewFlowLimitsAndExpiry(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	be := startEcho(t, 1, netip.MustParseAddr("127.0.0.2"), bp, bp+1)
	be.cookie = true
	p := startProxy(t, Config{Listen: []string{"127.0.0.1"}, Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1)},
		IKEPort: ikePort, NATTPort: nattPort, NewFlowsPerAddress: 4, NewFlowsPerPrefix: 6}, Deps{})
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort))
	conn := func(a string) *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a+":0")))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// every request is answered with COOKIE: the flows stay unanswered
	for i := range 4 {
		got := roundTrip(t, conn("127.0.0.1"), to, ikeSAInit(uint64(0x100+i), false))
		if !bytes.Contains(got, []byte{0x40, 0x06}) {
			t.Fatalf("no COOKIE: %x", got)
		}
	}
	// a fifth gets no flow
	_, _ = conn("127.0.0.1").WriteToUDPAddrPort(ikeSAInit(0x104, false), to)
	waitFor(t, "address_limit", func() bool { return p.Stats().Total.Dropped["address_limit"] == 1 })
	for i := range 3 {
		_, _ = conn("127.0.0.7").WriteToUDPAddrPort(ikeSAInit(uint64(0x200+i), false), to)
	}
	waitFor(t, "prefix_limit", func() bool { return p.Stats().Total.Dropped["prefix_limit"] == 1 })
	if st := p.Stats(); st.Flows != 6 || st.Unestablished != 6 {
		t.Fatalf("stats %+v", st)
	}
	// one half-open flow and one established flow from another prefix
	be.mu.Lock()
	be.cookie = false
	be.mu.Unlock()
	roundTrip(t, conn("127.1.0.1"), to, ikeSAInit(0x300, false))
	est := conn("127.1.0.1")
	resp := roundTrip(t, est, to, ikeSAInit(0x301, false))
	var spiI, spiR ike.SPI
	copy(spiI[:], resp[0:8])
	copy(spiR[:], resp[8:16])
	roundTrip(t, est, to, ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1))
	waitFor(t, "8 flows", func() bool { return p.Stats().Flows == 8 })

	now := time.Now()
	p.sweep(now.Add(DefaultUnrepliedTimeout + time.Second))
	if st := p.Stats(); st.Flows != 2 || st.FlowEnds["unanswered"] != 6 || st.Unestablished != 1 {
		t.Errorf("after unreplied_timeout: %+v", st)
	}
	p.sweep(now.Add(DefaultHalfOpenTimeout + time.Second))
	if st := p.Stats(); st.Flows != 1 || st.FlowEnds["half_open"] != 1 || st.HalfOpenSAs != 0 {
		t.Errorf("after half_open_timeout: %+v", st)
	}
	// room again for the address that was at its limit
	roundTrip(t, conn("127.0.0.1"), to, ikeSAInit(0x400, false))
}

// One client address cannot hold more than half_open_per_client IKE SAs
// half-open through the proxy (the backend counts them all as the
// proxy's); a retransmission of a known IKE SA's request still passes,
// other clients are not affected, and an IKE SA that goes on to IKE_AUTH
// frees its place.
func TestHalfOpenPerClient(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	startEcho(t, 1, netip.MustParseAddr("127.0.0.2"), bp, bp+1)
	p := startProxy(t, Config{Listen: []string{"127.0.0.1"}, Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1)},
		IKEPort: ikePort, NATTPort: nattPort, HalfOpenPerClient: 3}, Deps{})
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort))
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var first []byte
	for i := range 3 {
		r := roundTrip(t, c, to, ikeSAInit(uint64(0x10+i), false))
		if i == 0 {
			first = r
		}
	}
	waitFor(t, "3 half-open", func() bool { return p.Stats().HalfOpenSAs == 3 })
	_, _ = c.WriteToUDPAddrPort(ikeSAInit(0x20, false), to)
	waitFor(t, "half_open_limit", func() bool { return p.Stats().Total.Dropped["half_open_limit"] == 1 })
	// a retransmission of a known IKE SA's request is answered
	roundTrip(t, c, to, ikeSAInit(0x10, false))
	// another client is not affected
	o, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 8)})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	roundTrip(t, o, to, ikeSAInit(0x30, false))
	// IKE_AUTH of the first IKE SA frees a place
	var spiI, spiR ike.SPI
	copy(spiI[:], first[0:8])
	copy(spiR[:], first[8:16])
	roundTrip(t, c, to, ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1))
	roundTrip(t, c, to, ikeSAInit(0x21, false))
	if st := p.Stats(); st.Total.Dropped["half_open_limit"] != 1 || st.HalfOpenSAs != 4 {
		t.Errorf("stats %+v", st)
	}
}

// Sources that cannot be clients are refused, each with its reason, and
// proxy.clients allows and denies prefixes.
func TestRefuseSources(t *testing.T) {
	s, err := Config{Listen: []string{"192.0.2.1"}, Backends: []string{"198.51.100.1", "[2001:db8::5]"},
		Clients: ClientsConfig{Allow: []string{"203.0.113.0/24", "2001:db8:1::/48", "::ffff:198.18.0.0/112"},
			Deny: []string{"203.0.113.128/25", "2001:db8:1:2::7"}}}.parse()
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{s: s}
	for _, b := range s.backends {
		p.backends = append(p.backends, newBackend(len(p.backends), b))
	}
	now := time.Now()
	ls := readLocals(now)
	var local netip.Addr
	for a := range ls.local {
		if !a.IsLoopback() {
			local = a
			break
		}
	}
	wan := netip.MustParseAddr("192.0.2.1")
	lo := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		src    string
		mapped bool
		dst    netip.Addr
		want   DropReason // 0: accepted
	}{
		{"203.0.113.5", false, wan, 0},
		{"2001:db8:1::9", false, wan, 0},
		{"198.18.0.1", false, wan, 0},
		{"203.0.113.200", false, wan, DropClientDenied},
		{"2001:db8:1:2::7", false, wan, DropClientDenied},
		{"198.19.0.1", false, wan, DropClientNotAllowed},
		{"198.51.100.1", false, wan, DropSourceBackend},
		{"2001:db8::5", false, wan, DropSourceBackend},
		{"127.0.0.1", false, wan, DropSourceLoopback},
		{"::1", false, wan, DropSourceLoopback},
		{"224.0.0.251", false, wan, DropSourceMulticast},
		{"ff02::fb", false, wan, DropSourceMulticast},
		{"255.255.255.255", false, wan, DropSourceBroadcast},
		{"0.0.0.0", false, wan, DropSourceUnspecified},
		{"::", false, wan, DropSourceUnspecified},
		{"203.0.113.5", true, wan, DropSourceMapped},
		// to a loopback address: from this host
		{"127.0.0.1", false, lo, DropClientNotAllowed},
	}
	if local.IsValid() {
		cases = append(cases, struct {
			src    string
			mapped bool
			dst    netip.Addr
			want   DropReason
		}{local.String(), false, wan, DropSourceLocal})
	}
	for _, c := range cases {
		why, refused := p.refuseSource(netip.MustParseAddr(c.src), c.mapped, c.dst, now)
		if !refused {
			why = 0
		}
		if refused != (c.want != 0) || why != c.want {
			t.Errorf("%s (mapped %v) to %s: refused %v %v, want %v", c.src, c.mapped, c.dst, refused, why, c.want)
		}
	}
	// without proxy.clients a loopback client of a loopback listener passes
	s2, _ := Config{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"}}.parse()
	p2 := &Proxy{s: s2, backends: []*backend{newBackend(0, s2.backends[0])}}
	if why, refused := p2.refuseSource(lo, false, lo, now); refused {
		t.Errorf("loopback client to a loopback listener refused: %v", why)
	}
	if _, err := (Config{Listen: []string{"127.0.0.1"}, Backends: []string{"127.0.0.2"},
		Clients: ClientsConfig{Deny: []string{"10.0.0.0/33"}}}).parse(); err == nil ||
		!bytes.Contains([]byte(err.Error()), []byte("proxy.clients.deny[0]")) {
		t.Errorf("bad prefix: %v", err)
	}
}

// probeResponder answers an IKE_SA_INIT of major version 3 with
// INVALID_MAJOR_VERSION, as RFC 7296 §2.5 asks, and every IKEv2 request
// only when answer is set: a backend that refuses new IKE SAs (its
// half-open limit reached) but is alive.
type probeResponder struct {
	c      *net.UDPConn
	answer bool
}

func startProbeResponder(t *testing.T, ap netip.AddrPort, answer bool) *probeResponder {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &probeResponder{c: c, answer: answer}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			d := buf[:n]
			var marker []byte
			if n >= 4 && bytes.Equal(d[:4], []byte{0, 0, 0, 0}) {
				d, marker = d[4:], []byte{0, 0, 0, 0}
			}
			if len(d) >= ike.HeaderLen && d[17]>>4 == 3 {
				h := ike.Header{SPIi: ike.SPI(d[0:8]), NextPayload: ike.PayloadNotify, MajorVersion: 2,
					Exchange: ike.ExchangeIKESAInit, Flags: ike.FlagResponse}
				body := []byte{0, 0, 0, 9, 0, 0, 0, byte(ike.NotifyInvalidMajorVersion), 0x20}
				h.Length = uint32(ike.HeaderLen + len(body))
				_, _ = c.WriteToUDPAddrPort(append(append(marker, h.AppendTo(nil)...), body...), from)
				continue
			}
			if r.answer {
				if a := ikeAnswer(buf[:n], 1); a != nil {
					_, _ = c.WriteToUDPAddrPort(a, from)
				}
			}
		}
	}()
	return r
}

// Unanswered requests from health_failures distinct clients only raise a
// doubt; a backend that answers the probe stays up, one that does not
// goes down, and one that answers again comes back.
func TestHealthNotSpoofable(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	alive := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.2:%d", bp))
	dead := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.3:%d", bp))
	startProbeResponder(t, alive, false)
	// the dead one: a socket that swallows everything (no ICMP)
	sw, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(dead))
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()

	nt, err := ProbeBackend(context.Background(), alive, false, time.Second)
	if err != nil || nt != ike.NotifyInvalidMajorVersion {
		t.Fatalf("probe of a live backend: %v %v", nt, err)
	}
	if _, err := ProbeBackend(context.Background(), dead, false, 300*time.Millisecond); err != ErrProbeUnanswered {
		t.Fatalf("probe of a silent backend: %v", err)
	}

	for _, c := range []struct {
		name   string
		be     netip.AddrPort
		wantUp bool
	}{{"alive", alive, true}, {"silent", dead, false}} {
		t.Run(c.name, func(t *testing.T) {
			ikePort, nattPort = testPorts()
			p := startProxy(t, Config{Listen: []string{"127.0.0.1"}, Backends: []string{c.be.String() + fmt.Sprintf("/%d", bp+1)},
				IKEPort: ikePort, NATTPort: nattPort, HealthFailures: 3}, Deps{})
			to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort))
			// one client retransmitting many times is one source
			for i := range 5 {
				cl, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 3, byte(1+i))})
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				_, _ = cl.WriteToUDPAddrPort(ikeSAInit(uint64(0x900+i), false), to)
				if i == 0 {
					// The flow exists before its IKE_SA_INIT is recorded
					// as waiting for an answer: sweep until the request
					// has been relayed and found unanswered.
					later := time.Now().Add(initUnanswered + time.Second)
					waitFor(t, "first request unanswered", func() bool {
						p.sweep(later)
						return p.Stats().Backends[0].Doubt == 1
					})
					if st := p.Stats(); st.Backends[0].Doubt != 1 || st.Probes != 0 || !st.Backends[0].Up {
						t.Fatalf("one source: %+v", st.Backends[0])
					}
				}
			}
			waitFor(t, "5 flows", func() bool { return p.Stats().Flows == 5 })
			later := time.Now().Add(initUnanswered + time.Second)
			waitFor(t, "probe done", func() bool {
				p.sweep(later)
				st := p.Stats()
				return st.Probes == 1 && (st.ProbesAnswered == 1 || !st.Backends[0].Up)
			})
			st := p.Stats()
			if st.Backends[0].Up != c.wantUp {
				t.Errorf("backend up %v, want %v: %+v", st.Backends[0].Up, c.wantUp, st.Backends[0])
			}
			t.Logf("backend %+v, probes %d answered %d", st.Backends[0], st.Probes, st.ProbesAnswered)
		})
	}
}

// A restart keeps the backend's view of each established flow: the state
// file holds the client ↔ upstream port mapping, and the next proxy opens
// the same upstream ports, so the client's ESP reaches the backend from
// the address and port it knows.
func TestStateReadopt(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	be := startEcho(t, 1, netip.MustParseAddr("127.0.0.2"), bp, bp+1)
	state := t.TempDir() + "/proxy-state.json"
	cfg := Config{Listen: []string{"127.0.0.1"}, Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1)},
		IKEPort: ikePort, NATTPort: nattPort, StateFile: state}
	run := func() (*Proxy, func()) {
		p, err := New(cfg, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		return p, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	p1, stop1 := run()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ikeTo := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort))
	nattTo := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(nattPort))
	resp := roundTrip(t, c, ikeTo, ikeSAInit(0x5151000000000001, false))
	var spiI, spiR ike.SPI
	copy(spiI[:], resp[0:8])
	copy(spiR[:], resp[8:16])
	roundTrip(t, c, nattTo, append([]byte{0, 0, 0, 0}, ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1)...))
	esp := []byte{0xc0, 0, 0, 1, 0, 0, 0, 1}
	roundTrip(t, c, nattTo, esp)
	var nattUp netip.AddrPort
	for _, f := range p1.Flows() {
		if f.NATT {
			nattUp = f.Upstream
		}
	}
	before := be.sources()
	stop1()
	b, err := os.ReadFile(state)
	if err != nil || !bytes.Contains(b, []byte(nattUp.String())) {
		t.Fatalf("state file %s: %v", b, err)
	}

	p2, stop2 := run()
	defer stop2()
	roundTrip(t, c, nattTo, esp)
	after := be.sources()
	if len(after) != len(before) || after[nattUp] != before[nattUp]+1 {
		t.Errorf("backend sources before the restart %v, after %v: want the ESP from %v again", before, after, nattUp)
	}
	if st := p2.Stats(); st.Adopted != 2 || st.AdoptSkipped != 0 || st.Flows != 2 {
		t.Errorf("stats %+v", st)
	}
}

// FuzzAdmit: whatever a datagram of no known flow holds, judging it costs
// no panic, and only a well-formed IKE_SA_INIT request earns a flow from
// a client the proxy knows nothing about.
func FuzzAdmit(f *testing.F) {
	f.Add(ikeSAInit(0x1234, true), false)
	f.Add(append([]byte{0, 0, 0, 0}, ikeSAInit(0x99, false)...), true)
	f.Add([]byte{0xc0, 0, 0, 1, 0, 0, 0, 1}, true)
	f.Add([]byte{0xff}, true)
	f.Fuzz(func(t *testing.T, b []byte, natt bool) {
		p, fl := engine(t, nil, false)
		fl.ln.natt = natt
		ok, _ := p.earned(fl.ln, netip.MustParseAddr("198.51.100.9"), b, p.now())
		fr := p.classify(fl.ln, b)
		if ok != (fr.Kind == ike.KindIKE && isInitRequest(fr.IKE)) {
			t.Errorf("earned %v for %x", ok, b)
		}
		_ = p.halfOpenRefused(netip.MustParseAddr("198.51.100.9"), fr)
	})
}
