package proxy_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/proxy"
	"github.com/ikefrag/ikefrag/test/lab"
)

// genFlow is one generated NAT-T client flow in cli: IKE behind the
// non-ESP marker and ESP-shaped datagrams, each answered by srv's echo
// responder (ESP with the responder's id appended).
type genFlow struct {
	t    *testing.T
	c    *net.UDPConn
	to   netip.AddrPort
	spi  uint32
	seq  uint32
	sent int // ESP datagrams sent and echoed
}

func newGenFlow(t *testing.T, l *lab.Lab, to netip.AddrPort, spi uint32) *genFlow {
	t.Helper()
	g := &genFlow{t: t, to: to, spi: spi}
	src := l.Cli.Addr4
	if to.Addr().Is6() {
		src = l.Cli.Addr6
	}
	inNS(t, l.Cli, func() (err error) {
		g.c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		return err
	})
	t.Cleanup(func() { g.c.Close() })
	return g
}

func (g *genFlow) port() uint16 { return uint16(g.c.LocalAddr().(*net.UDPAddr).Port) }

// ike sends an IKE message on the flow and waits for the answer: the
// backend's first reply, after which the proxy offers the flow to the
// fast path.
func (g *genFlow) ike() {
	g.t.Helper()
	// IKE_SA_INIT on the IKE port first (the proxy opens no flow for an
	// IKE SA the backend has not answered), then IKE_AUTH on the flow
	spiR := g.init()
	h := ike.Header{MajorVersion: 2, Exchange: ike.ExchangeIKEAuth, Flags: ike.FlagInitiator, MessageID: 1, Length: ike.HeaderLen}
	binary.BigEndian.PutUint64(h.SPIi[:], uint64(g.spi)<<32|1)
	h.SPIr = spiR
	g.send(append([]byte{0, 0, 0, 0}, h.AppendTo(nil)...))
	if r := g.recv(1); len(r) != 1 || len(r[0]) < 4+ike.HeaderLen || !bytes.Equal(r[0][:4], []byte{0, 0, 0, 0}) {
		g.t.Fatalf("flow %d: no IKE answer", g.port())
	}
}

// init sends a well-formed IKE_SA_INIT request to the proxy's IKE port
// and returns the responder SPI of the answer.
func (g *genFlow) init() ike.SPI {
	g.t.Helper()
	h := ike.Header{NextPayload: ike.PayloadSA, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit, Flags: ike.FlagInitiator}
	binary.BigEndian.PutUint64(h.SPIi[:], uint64(g.spi)<<32|1)
	body := []byte{34, 0, 0, 20, 0, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 8, 4, 0, 0, 19,
		40, 0, 0, 12, 0, 19, 0, 0, 1, 2, 3, 4,
		0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	h.Length = uint32(ike.HeaderLen + len(body))
	to := netip.AddrPortFrom(g.to.Addr(), 500)
	if _, err := g.c.WriteToUDPAddrPort(append(h.AppendTo(nil), body...), to); err != nil {
		g.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = g.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := g.c.ReadFromUDPAddrPort(buf)
	if err != nil || from != to || n < ike.HeaderLen {
		g.t.Fatalf("flow %d: no IKE_SA_INIT answer from %v: %v", g.port(), to, err)
	}
	var spiR ike.SPI
	copy(spiR[:], buf[8:16])
	return spiR
}

// esp sends n ESP datagrams and waits for their echoes.
func (g *genFlow) esp(n int) {
	g.t.Helper()
	for i := 0; i < n; i++ {
		g.seq++
		d := make([]byte, 8, 8+200)
		binary.BigEndian.PutUint32(d[0:], g.spi)
		binary.BigEndian.PutUint32(d[4:], g.seq)
		d = append(d, bytes.Repeat([]byte{byte(g.seq)}, 200)...)
		g.send(d)
	}
	if r := g.recv(n); len(r) != n {
		g.t.Fatalf("flow %d: %d of %d ESP echoes", g.port(), len(r), n)
	}
	g.sent += n
}

func (g *genFlow) send(d []byte) {
	if _, err := g.c.WriteToUDPAddrPort(d, g.to); err != nil {
		g.t.Fatal(err)
	}
}

func (g *genFlow) recv(n int) [][]byte {
	var out [][]byte
	buf := make([]byte, 2048)
	_ = g.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for len(out) < n {
		k, from, err := g.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		if from != g.to {
			g.t.Errorf("answer from %v, want %v", from, g.to)
		}
		out = append(out, append([]byte(nil), buf[:k]...))
	}
	return out
}

// genLab is cli — mid — gw (proxy) — srv with echo responders on srv's
// IKE and NAT-T ports instead of charon.
func genLab(t *testing.T, ipv6 bool) (*lab.Lab, netip.Addr, netip.Addr) {
	t.Helper()
	l := lab.New(t, lab.Topology{Gateway: true, IPv6: ipv6})
	gw, srv := l.Gw.Addr4, l.Srv.Addr4
	if ipv6 {
		gw, srv = l.Gw.Addr6, l.Srv.Addr6
	}
	e := &echoResponder{id: 1}
	inNS(t, l.Srv, func() error {
		for _, port := range []int{500, 4500} {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(srv, uint16(port))))
			if err != nil {
				return err
			}
			e.conns = append(e.conns, c)
			go e.serve(c, port == 4500)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range e.conns {
			c.Close()
		}
	})
	return l, gw, srv
}

func genConfig(gw, srv netip.Addr, extra string) string {
	b := srv.String()
	if srv.Is6() {
		b = "[" + b + "]"
	}
	return fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n%s", gw, b, extra)
}

// natt returns the proxy's NAT-T flow of a generated client.
func (g *gwProxy) natt(t *testing.T, port uint16) (proxy.FlowInfo, bool) {
	t.Helper()
	var flows []proxy.FlowInfo
	g.get(t, "flows", &flows)
	for _, f := range flows {
		if f.NATT && f.Client.Port() == port {
			return f, true
		}
	}
	return proxy.FlowInfo{}, false
}

// nattWhen polls the flow until cond holds (2 s at most): the proxy
// counts a datagram to the client after sendmmsg returns, which can be
// after the client has it.
func (g *gwProxy) nattWhen(t *testing.T, port uint16, cond func(proxy.FlowInfo) bool) (proxy.FlowInfo, bool) {
	t.Helper()
	var f proxy.FlowInfo
	var ok bool
	waitFor(2*time.Second, func() bool {
		f, ok = g.natt(t, port)
		return ok && cond(f)
	})
	return f, ok
}

func logLines(t *testing.T, g *gwProxy, s string) int {
	t.Helper()
	b, err := os.ReadFile(g.proc.Log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// waitFor polls cond every 100 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestLabFastPathFullAndExpiry: a fast path with room for one flow. The
// first flow is mapped and carries all its ESP in the kernel; the next
// ones stay in the user-space relay (map_full, one log line). A mapped
// flow whose ESP crosses only the kernel is not idle for the janitor;
// once it stops, its flow expires with its mapping, whose final counters
// are kept, and the waiting flow takes the room. A flow that comes back
// after expiry is a new flow: its first ESP datagram crosses user space.
func TestLabFastPathFullAndExpiry(t *testing.T) {
	lab.Require(t)
	kfeattest.Require(t, kfeat.CheckMTU)
	t.Parallel()
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const idle = 2 * time.Second
			l, gwAddr, srvAddr := genLab(t, v6)
			g := startProxy(t, l, l.Gw, genConfig(gwAddr, srvAddr, fmt.Sprintf("  idle_timeout: %s\n  fast_path_max_flows: 1\n", idle)))
			to := netip.AddrPortFrom(gwAddr, 4500)
			a, b, c := newGenFlow(t, l, to, 0xa0000001), newGenFlow(t, l, to, 0xb0000001), newGenFlow(t, l, to, 0xc0000001)

			a.ike()
			a.esp(20)
			b.ike()
			b.esp(20)
			c.ike()
			fa, _ := g.nattWhen(t, a.port(), func(f proxy.FlowInfo) bool { return f.ESPFastPathOut == 20 })
			fb, _ := g.nattWhen(t, b.port(), func(f proxy.FlowInfo) bool { return f.ESPOut == 20 })
			st := g.stats(t)
			t.Logf("A %+v\nB %+v\nfast path %+v", fa, fb, st.FastPath)
			if fa.FastPath != "mapped" || fa.ESPFastPathIn != 20 || fa.ESPFastPathOut != 20 || fa.ESPIn != 0 || fa.ESPOut != 0 {
				t.Errorf("first flow: want its 20 ESP each way in the kernel: %+v", fa)
			}
			if fb.FastPath != "full" || fb.ESPIn != 20 || fb.ESPOut != 20 || fb.ESPFastPathIn != 0 {
				t.Errorf("second flow: want it in user space, waiting for room: %+v", fb)
			}
			if st.FastPath.Flows != 1 || st.FastPath.MapFull != 2 || st.FastPath.Unmapped != 2 {
				t.Errorf("want one mapping and two refusals for room: %+v", st.FastPath)
			}
			if n := logLines(t, g, "ESP fast path is full"); n != 1 {
				t.Errorf("%d log lines about the full map, want 1", n)
			}

			// A and B keep going, A's ESP only through the kernel; C
			// is silent and expires.
			for end := time.Now().Add(idle + 1500*time.Millisecond); time.Now().Before(end); {
				a.esp(1)
				b.esp(1)
				time.Sleep(200 * time.Millisecond)
			}
			fa, okA := g.natt(t, a.port())
			_, okC := g.natt(t, c.port())
			if !okA || fa.FastPath != "mapped" || okC {
				t.Errorf("after %v: A (kernel ESP only) present %v %+v, want kept; C (silent) present %v, want expired", idle+1500*time.Millisecond, okA, fa, okC)
			}

			// A stops: it expires with its mapping, and B, which
			// keeps going, is mapped at the next sweep.
			var fb2 proxy.FlowInfo
			moved := waitFor(3*idle+3*time.Second, func() bool {
				b.esp(1)
				_, okA := g.natt(t, a.port())
				fb2, _ = g.natt(t, b.port())
				return !okA && fb2.FastPath == "mapped"
			})
			if !moved {
				t.Fatalf("A did not expire or B was not mapped: B %+v, fast path %+v", fb2, g.stats(t).FastPath)
			}
			b.esp(20)
			fb3, _ := g.nattWhen(t, b.port(), func(f proxy.FlowInfo) bool { return f.ESPFastPathOut-fb2.ESPFastPathOut >= 20 })
			if fb3.ESPFastPathIn-fb2.ESPFastPathIn != 20 || fb3.ESPFastPathOut-fb2.ESPFastPathOut != 20 ||
				fb3.ESPIn != fb2.ESPIn || fb3.ESPOut != fb2.ESPOut {
				t.Errorf("B after it was mapped: want its next 20 ESP in the kernel: before %+v, after %+v", fb2, fb3)
			}

			// A comes back: its mapping is gone, so its first datagram
			// reaches the proxy and makes a new flow (left in user space:
			// B holds the only room).
			a.esp(1)
			fa2, ok := g.nattWhen(t, a.port(), func(f proxy.FlowInfo) bool { return f.ESPOut == 1 })
			if !ok || fa2.ESPIn != 1 || fa2.ESPOut != 1 || fa2.FastPath != "full" {
				t.Errorf("A again: want a new flow with its ESP in user space: %v %+v", ok, fa2)
			}

			// Every ESP datagram is accounted once, on one path, the
			// expired mapping's included.
			sent := uint64(a.sent + b.sent + c.sent)
			waitFor(2*time.Second, func() bool {
				st = g.stats(t)
				return st.Total.ESPOut+st.Total.ESPFastPathOut >= sent
			})
			k := st.Total
			t.Logf("ESP sent by the clients %d; proxy user space in %d out %d, fast path in %d out %d; fast path %+v",
				sent, k.ESPIn, k.ESPOut, k.ESPFastPathIn, k.ESPFastPathOut, st.FastPath)
			if k.ESPIn+k.ESPFastPathIn != sent || k.ESPOut+k.ESPFastPathOut != sent {
				t.Errorf("accounted %d up and %d down, want %d each", k.ESPIn+k.ESPFastPathIn, k.ESPOut+k.ESPFastPathOut, sent)
			}
			if st.FastPath.Redirected != k.ESPFastPathIn+k.ESPFastPathOut {
				t.Errorf("program redirected %d, proxy read back %d", st.FastPath.Redirected, k.ESPFastPathIn+k.ESPFastPathOut)
			}
			if n := logLines(t, g, "ESP fast path is full"); n != 1 {
				t.Errorf("%d log lines about the full map, want 1", n)
			}

			// Everything idle: every flow expires, the map ends empty.
			if !waitFor(2*idle+3*time.Second, func() bool { return g.stats(t).Flows == 0 }) {
				t.Fatalf("flows left: %+v", g.stats(t))
			}
			if fp := g.stats(t).FastPath; fp.Flows != 0 || !fp.Active {
				t.Errorf("after expiry: %+v", fp)
			}
		})
	}
}

// TestLabFastPathCannotLoad: without CAP_BPF and CAP_SYS_ADMIN the
// program cannot load; the proxy says so once, counts it and relays ESP
// in user space.
func TestLabFastPathCannotLoad(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	l, gwAddr, srvAddr := genLab(t, false)
	g := startProxy(t, l, l.Gw, genConfig(gwAddr, srvAddr, ""), "setpriv", "--bounding-set=-bpf,-sys_admin,-perfmon", "--")
	a := newGenFlow(t, l, netip.AddrPortFrom(gwAddr, 4500), 0xa0000001)
	a.ike()
	a.esp(20)
	fa, _ := g.nattWhen(t, a.port(), func(f proxy.FlowInfo) bool { return f.ESPOut == 20 })
	st := g.stats(t)
	t.Logf("fast path %+v; flow %+v", st.FastPath, fa)
	if st.FastPath.Active || st.FastPath.LoadFailures != 1 || !strings.Contains(st.FastPath.Reason, "not loaded") {
		t.Errorf("want an inactive fast path with one load failure: %+v", st.FastPath)
	}
	if fa.ESPIn != 20 || fa.ESPOut != 20 || fa.FastPath != "" || st.Total.ESPFastPathIn != 0 {
		t.Errorf("want the ESP in user space: %+v", fa)
	}
	if n := logLines(t, g, "ESP fast path unavailable"); n != 1 {
		t.Errorf("%d log lines about the fast path, want 1", n)
	}
}
