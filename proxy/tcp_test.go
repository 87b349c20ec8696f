package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
)

// tcpClient is an RFC 9329 initiator for tests.
type tcpClient struct {
	t *testing.T
	c *net.TCPConn
}

func dialTCP(t testing.TB, from netip.Addr, to netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if from.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
	}
	c, err := d.Dial("tcp", to.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func newTCPClient(t *testing.T, from netip.Addr, to netip.AddrPort) *tcpClient {
	t.Helper()
	c, err := dialTCP(t, from, to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(tcpPrefix)); err != nil {
		t.Fatal(err)
	}
	return &tcpClient{t: t, c: c}
}

// send writes one frame.
func (tc *tcpClient) send(payload []byte) {
	tc.t.Helper()
	if _, err := tc.c.Write(appendTCPFrame(nil, payload)); err != nil {
		tc.t.Fatal(err)
	}
}

// recv reads one frame.
func (tc *tcpClient) recv() []byte {
	tc.t.Helper()
	p, err := readFrame(tc.c, 3*time.Second)
	if err != nil {
		tc.t.Fatalf("no frame: %v", err)
	}
	return p
}

func readFrame(c net.Conn, timeout time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if n < tcpLenField {
		return nil, fmt.Errorf("length %d", n)
	}
	p := make([]byte, n-tcpLenField)
	_, err := io.ReadFull(c, p)
	return p, err
}

// marked is an IKE message behind the non-ESP marker.
func marked(msg []byte) []byte { return append([]byte{0, 0, 0, 0}, msg...) }

// tcpLab is a proxy on loopback with UDP and TCP listeners in front of
// echo backends on 127.0.0.2 (and 127.0.0.3).
type tcpLab struct {
	p        *Proxy
	tcp      netip.AddrPort
	ike      netip.AddrPort
	natt     netip.AddrPort
	backends []*echoBackend
	bePorts  [2]int
}

func startTCPLab(t testing.TB, nBackends int, tcfg TCPConfig, mod func(*Config)) *tcpLab {
	t.Helper()
	ikePort, nattPort := testPorts()
	l := &tcpLab{bePorts: [2]int{ikePort%1000 + 31000, ikePort%1000 + 35000}}
	// (half_open_per_client is not what these tests are about: every
	// IKE_SA_INIT here is answered and left half-open)
	cfg := Config{Listen: []string{"127.0.0.1"}, IKEPort: ikePort, NATTPort: nattPort, FastPath: FastPathOff, TCP: tcfg,
		HalfOpenPerClient: 1000, CookieThreshold: DefaultMaxClients}
	for i := 0; i < nBackends; i++ {
		a := netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)})
		eb := startEcho(t, byte(1+i), a, l.bePorts[0], l.bePorts[1])
		for _, c := range eb.conns {
			// hundreds of requests at once: the default receive buffer
			// (rmem_default) would drop some at the echo backend itself
			if rc, err := c.SyscallConn(); err == nil {
				_ = rc.Control(func(fd uintptr) {
					_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
				})
			}
		}
		l.backends = append(l.backends, eb)
		cfg.Backends = append(cfg.Backends, fmt.Sprintf("%s:%d/%d", a, l.bePorts[0], l.bePorts[1]))
	}
	if len(cfg.TCP.Listen) == 0 {
		cfg.TCP.Listen = []string{"127.0.0.1:0"}
	}
	if mod != nil {
		mod(&cfg)
	}
	l.p = startProxy(t, cfg, Deps{})
	l.tcp = l.p.TCPAddrs()[0]
	lo := netip.MustParseAddr("127.0.0.1")
	l.ike, l.natt = netip.AddrPortFrom(lo, uint16(ikePort)), netip.AddrPortFrom(lo, uint16(nattPort))
	return l
}

func (l *tcpLab) tcpStats(t testing.TB) TCPStats {
	t.Helper()
	st := l.p.Stats().TCP
	if st == nil {
		t.Fatal("no TCP stats")
	}
	return *st
}

// The relay: IKE behind the marker and ESP cross a stream to the
// backend's NAT-T port as UDP and come back framed; the flow is in the
// table as TCP, toward the configured backend only, and counted.
func TestTCPRelay(t *testing.T) {
	l := startTCPLab(t, 1, TCPConfig{}, nil)
	tc := newTCPClient(t, netip.Addr{}, l.tcp)
	init := ikeSAInit(0x0102030405060708, true)
	tc.send(marked(init))
	got := tc.recv()
	if !bytes.Equal(got, ikeAnswer(marked(init), 1)) {
		t.Fatalf("IKE_SA_INIT answer %x", got)
	}
	var spiI, spiR ike.SPI
	copy(spiI[:], got[4:12])
	copy(spiR[:], got[12:20])
	auth := marked(ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1))
	tc.send(auth)
	if got := tc.recv(); !bytes.Equal(got, ikeAnswer(auth, 1)) {
		t.Fatalf("IKE_AUTH answer %x", got)
	}
	esp := []byte{0xc0, 1, 2, 3, 0, 0, 0, 1, 0xaa, 0xbb}
	tc.send(esp)
	if got := tc.recv(); !bytes.Equal(got, append([]byte{1}, esp...)) {
		t.Fatalf("ESP answer %x", got)
	}
	// the backend saw one source, and on its NAT-T port only
	src := l.backends[0].sources()
	if len(src) != 1 {
		t.Fatalf("backend sources %v", src)
	}
	fs := l.p.Flows()
	if len(fs) != 1 || fs[0].Transport != "tcp" || fs[0].Backend != netip.MustParseAddrPort(fmt.Sprintf("127.0.0.2:%d", l.bePorts[1])) ||
		!fs[0].NATT || fs[0].Local != l.tcp || fs[0].PktsIn != 3 || fs[0].PktsOut != 3 || fs[0].ESPIn != 1 || fs[0].ESPOut != 1 {
		t.Fatalf("flows %+v", fs)
	}
	if _, ok := src[fs[0].Upstream]; !ok {
		t.Errorf("backend sources %v, flow upstream %s", src, fs[0].Upstream)
	}
	peers := l.p.Peers()
	if len(peers) != 1 || len(peers[0].Flows) != 1 || peers[0].Flows[0].Transport != "tcp" || peers[0].Counters.DatagramsIn != 3 {
		t.Errorf("peers %+v", peers)
	}
	st := l.tcpStats(t)
	if st.Accepted != 1 || st.Connections != 1 || st.NoFlow != 0 || st.FramesIn != 3 || st.FramesOut != 3 {
		t.Errorf("tcp stats %+v", st)
	}
	if s := l.p.Stats(); s.Total.DatagramsIn != 3 || s.Total.ESPIn != 1 || s.Unestablished != 0 {
		t.Errorf("stats %+v", s.Total)
	}
	if !bytes.Contains([]byte(l.p.Status()), []byte("TCP (RFC 9329) 1 connections")) {
		t.Errorf("status %q", l.p.Status())
	}
	// the metrics: a pedantic registry checks every series is described
	series := gatherSeries(t, l.p.Collector())
	for k, want := range map[string]float64{
		"ikefrag_proxy_tcp_connections,state=flow": 1, "ikefrag_proxy_tcp_accepted_total": 1,
		"ikefrag_proxy_tcp_frames_total,direction=in": 3, "ikefrag_proxy_tcp_frames_total,direction=out": 3,
		"ikefrag_proxy_tcp_ended_total,reason=client_closed": 0,
	} {
		if v, ok := series[k]; !ok || v != want {
			t.Errorf("metric %s = %v (present %v), want %v", k, v, ok, want)
		}
	}
	// the client closes: the flow ends with it, counted
	tc.c.Close()
	waitFor(t, "flow end", func() bool { return l.p.Stats().Flows == 0 })
	s := l.p.Stats()
	if s.FlowEnds["tcp_closed"] != 1 || s.TCP.Ended["client_closed"] != 1 || s.TCP.Connections != 0 {
		t.Errorf("after close: flow ends %v, tcp %+v", s.FlowEnds, s.TCP)
	}
}

// A client that moves from UDP to TCP keeps its IKE SA's backend, and a
// message of that IKE SA earns the TCP connection its flow.
func TestTCPKeepsBackendFromUDP(t *testing.T) {
	l := startTCPLab(t, 2, TCPConfig{}, nil)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := uint64(1); i <= 8; i++ {
		init := ikeSAInit(0x1000+i, false)
		got := roundTrip(t, c, l.ike, init)
		var spiI, spiR ike.SPI
		copy(spiI[:], got[0:8])
		copy(spiR[:], got[8:16])
		id := got[8] // the backend's id in its SPI
		// the IKE SA's backend is now down for new IKE SAs: only the
		// affinity keeps the TCP flow on it
		be := l.p.backends[id-1]
		be.mu.Lock()
		be.down, be.downUntil = true, time.Now().Add(time.Hour)
		be.mu.Unlock()
		tc := newTCPClient(t, netip.Addr{}, l.tcp)
		req := marked(ikeRequest(spiI, spiR, ike.ExchangeInformational, 2))
		tc.send(req)
		if got := tc.recv(); !bytes.Equal(got, ikeAnswer(req, id)) {
			t.Fatalf("SA %d: answer %x, want backend %d's", i, got, id)
		}
		be.mu.Lock()
		be.down, be.downUntil = false, time.Time{}
		be.mu.Unlock()
		tc.c.Close()
	}
}

// A stream whose first message is not a well-formed IKE_SA_INIT request
// (nor of a known IKE SA or client) opens no flow: nothing is sent
// anywhere, and the refusal is counted.
func TestTCPUnsolicitedReachesNothing(t *testing.T) {
	l := startTCPLab(t, 1, TCPConfig{}, nil)
	for _, first := range [][]byte{
		{0xc0, 1, 2, 3, 0, 0, 0, 1, 0xaa},                                  // ESP of no flow
		marked(ikeRequest(ike.SPI{1}, ike.SPI{2}, ike.ExchangeIKEAuth, 1)), // IKE_AUTH of no IKE SA
		marked([]byte("not IKE at all, just text long enough to look")),    // junk behind a marker
	} {
		tc := newTCPClient(t, netip.Addr{}, l.tcp)
		tc.send(first)
		if _, err := readFrame(tc.c, 2*time.Second); err == nil {
			t.Fatalf("first message %x answered", first)
		}
	}
	if src := l.backends[0].sources(); len(src) != 0 {
		t.Errorf("backend saw %v", src)
	}
	st := l.tcpStats(t)
	if st.Ended["unsolicited"] != 3 || l.p.Stats().Flows != 0 || l.p.Stats().Total.Dropped["unsolicited"] != 3 {
		t.Errorf("tcp %+v, stats %+v", st, l.p.Stats().Total)
	}
}

func TestTCPConfig(t *testing.T) {
	base := Config{Backends: []string{"192.0.2.1"}}
	for _, c := range []struct {
		tcp  TCPConfig
		want string
	}{
		{TCPConfig{Listen: []string{"nonsense"}}, `proxy.tcp.listen[0] "nonsense"`},
		{TCPConfig{MaxMessage: 70000}, "proxy.tcp.max_message 70000"},
		{TCPConfig{MaxIKEMessage: 65533}, "proxy.tcp.max_ike_message 65533"},
		{TCPConfig{SendBuffer: 1000}, "proxy.tcp.send_buffer 1000"},
		{TCPConfig{BackendMTU: 500}, "proxy.tcp.backend_mtu 500"},
		{TCPConfig{BackendMTU: 70000}, "proxy.tcp.backend_mtu 70000"},
	} {
		cfg := base
		cfg.TCP = c.tcp
		err := cfg.Validate()
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%+v: %v, want %q", c.tcp, err, c.want)
		}
	}
	cfg := base
	cfg.TCP.Listen = []string{"0.0.0.0", "[::]:443"}
	cfg.TCP.BackendMTU = 1400
	s, err := cfg.parse()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:4500"), netip.MustParseAddrPort("[::]:443")}
	if fmt.Sprint(s.tcpListen) != fmt.Sprint(want) || s.TCP.MaxIKEMessage != 10000 || s.TCP.MaxMessage != 65533 ||
		s.TCP.MaxConnections != DefaultMaxClients || s.TCP.MessageTimeout != 10*time.Second || s.TCP.BackendMTU != 1400 {
		t.Errorf("parsed %v %+v", s.tcpListen, s.TCP)
	}
}

// Keyed: the backend's RFC 7383 fragments of a response go onto the
// stream as one SK message that opens to the same payloads; the backend's
// resend of the set gets that message again once; without keys the
// fragments are relayed as they are.
func TestTCPJoinsFragments(t *testing.T) {
	sa := testSA(t, sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128})
	spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
	for _, keyed := range []bool{true, false} {
		var src keys.Source = oneKey{sa}
		if !keyed {
			src = oneKey{}
		}
		p, f := engine(t, src, false)
		p.tcp = &tcpServer{p: p}
		f.ln = &listener{p: p, natt: true, tcp: &tcpConn{}}
		d, in := response(t, sa, spiI, spiR, 5000)
		run := func() [][]byte {
			b := newUpBufs(1)
			for _, dg := range in {
				p.tcpFromBackend(f, b, dg, p.now())
			}
			var out [][]byte
			for _, m := range b.out {
				out = append(out, m.Buffers[0])
			}
			return out
		}
		got := run()
		if !keyed {
			if len(got) != len(in) || p.total.keyMisses.Load() != uint64(len(in)) {
				t.Errorf("keyless: %d datagrams out of %d, key misses %d", len(got), len(in), p.total.keyMisses.Load())
			}
			continue
		}
		if len(got) != 1 || !bytes.Equal(got[0][:4], []byte{0, 0, 0, 0}) {
			t.Fatalf("keyed: %d messages out of %d fragments", len(got), len(in))
		}
		r := sk.NewReassembler(sk.ReassemblerConfig{})
		res := r.Add(sa, got[0][4:])
		if res.Status != sk.StatusComplete || res.Number != 0 || !bytes.Equal(res.Message.Payloads, d.Payloads) {
			t.Fatalf("joined message: status %v, number %d", res.Status, res.Number)
		}
		if again := run(); len(again) != 1 || !bytes.Equal(again[0], got[0]) {
			t.Errorf("resend: %d messages", len(again))
		}
		if n := p.tcp.ctr.joined.Load(); n != 1 {
			t.Errorf("joined %d", n)
		}
	}
}

// gatherSeries gathers c through a pedantic registry (every series must be
// described) and returns each sample by name and labels
// ("name,label=value,..."), counters and gauges alike.
func gatherSeries(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			k := mf.GetName()
			for _, lp := range m.GetLabel() {
				k += "," + lp.GetName() + "=" + lp.GetValue()
			}
			series[k] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return series
}
