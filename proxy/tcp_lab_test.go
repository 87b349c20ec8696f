package proxy_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/test/lab"
)

// blockIKEUDP makes mid drop UDP 500 and 4500 in both directions: the
// path of a client whose network lets only TCP through.
func blockIKEUDP(t *testing.T, l *lab.Lab) {
	t.Helper()
	ctx := context.Background()
	for _, args := range [][]string{
		{"add", "table", "inet", "tcplab"},
		{"add", "chain", "inet", "tcplab", "blockike", "{ type filter hook forward priority 0 ; }"},
		{"add", "rule", "inet", "tcplab", "blockike", "udp", "dport", "{ 500, 4500 }", "counter", "drop"},
		{"add", "rule", "inet", "tcplab", "blockike", "udp", "sport", "{ 500, 4500 }", "counter", "drop"},
	} {
		if out, err := l.Mid.Run(ctx, "nft", args...); err != nil {
			t.Fatalf("nft %v: %v %s", args, err, out)
		}
	}
}

// TestLabLibreswanTCP: a libreswan client with enable-tcp=yes behind a
// path that drops UDP 500 and 4500 reaches a strongSwan responder (which
// has no RFC 9329) only through the proxy's TCP listener. Without the
// listener it fails. With it, on a kernel with espintcp, the IKE SA and
// CHILD SA are established on both peers and a ping crosses; on a kernel
// without (CONFIG_INET_ESPINTCP, which needs CONFIG_INET_ESP), libreswan
// cannot run RFC 9329 at all: it enables espintcp on its socket right
// after sending the IKETCP prefix and gives up when the kernel refuses,
// which the test checks and reports before skipping the rest.
func TestLabLibreswanTCP(t *testing.T) {
	lab.Require(t)
	lab.RequireLibreswan(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true})
	blockIKEUDP(t, l)
	srv := l.StartCharon(lab.Charon{Role: lab.Server, PSK: lab.LabPSK})
	gwAddr, srvAddr := l.Gw.Addr4, l.Srv.Addr4
	base := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n", gwAddr, srvAddr)

	// without the TCP listener
	g := startProxy(t, l, l.Gw, base)
	cli := l.StartLibreswan(lab.Libreswan{RemoteAddr: gwAddr, EnableTCP: "yes", RetransmitTimeout: 10 * time.Second})
	ok, out, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatalf("established without the TCP listener:\n%s", out)
	}
	t.Logf("without the listener: %s", lastLines(out, 3))
	if err := g.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	cli.Stop()

	// with it
	g = startProxy(t, l, l.Gw, base+fmt.Sprintf("  tcp:\n    listen: [\"%s:4500\"]\n", gwAddr))
	cli = l.StartLibreswan(lab.Libreswan{RemoteAddr: gwAddr, EnableTCP: "yes", RetransmitTimeout: 20 * time.Second})
	start := time.Now()
	ok, out, err = cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := g.stats(t)
	t.Logf("with the listener: ok=%v after %.1f s; proxy tcp %+v", ok, time.Since(start).Seconds(), st.TCP)
	if espOK, why := lab.EspInTCP(); !espOK {
		// libreswan connected through mid to the listener and gave up
		// after the prefix, before any IKE message
		log, _ := os.ReadFile(cli.Log())
		if ok || st.TCP == nil || st.TCP.Accepted == 0 || !strings.Contains(string(log), "espintcp") {
			t.Fatalf("kernel without espintcp: ok=%v, proxy tcp %+v; pluto log:\n%s", ok, st.TCP, lastLines(string(log), 20))
		}
		line := ""
		for _, ln := range strings.Split(string(log), "\n") {
			if strings.Contains(ln, "espintcp") {
				line = strings.TrimSpace(ln)
				break
			}
		}
		t.Skipf("libreswan reached the proxy's TCP listener (%d connections) but cannot speak RFC 9329 on this kernel (%v); pluto: %s",
			st.TCP.Accepted, why, line)
	}
	if !ok {
		t.Fatalf("not established through the TCP listener:\n%s", out)
	}
	sas, err := srv.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != 1 || sas[0].State != "ESTABLISHED" || len(sas[0].Children) != 1 || sas[0].Children[0].State != "INSTALLED" {
		t.Fatalf("responder: %+v", sas)
	}
	peers := g.peers(t)
	tcpFlows := 0
	for _, p := range peers {
		for _, f := range p.Flows {
			if f.Transport == "tcp" {
				tcpFlows++
			}
		}
	}
	if tcpFlows != 1 {
		t.Errorf("peers %+v: want one TCP flow", peers)
	}
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Errorf("ping through the tunnel: %v", err)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// inNetns runs fn on a thread in the named network namespace: sockets it
// creates stay in that namespace.
func inNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer orig.Close()
	ns, err := os.Open("/run/netns/" + name)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return err
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			panic("cannot return to the test's network namespace: " + err.Error())
		}
	}()
	return fn()
}

// tcpShim is an RFC 9329 initiator for a strongSwan client, which has
// none: it takes the client's IKE and NAT-T datagrams on UDP 500 and 4500
// of a lab node and carries them in one TCP stream to the proxy, as
// libreswan with enable-tcp would (IKE behind the non-ESP marker, ESP
// as it is), and the frames coming back to the client as datagrams from
// the port it used. NAT-T keepalives stay behind (RFC 9329 §3).
type tcpShim struct {
	t     *testing.T
	ns    string
	to    string
	udp   [2]*net.UDPConn // ports 500 and 4500
	mu    sync.Mutex
	tcp   net.Conn
	peer  netip.AddrPort
	via   int // the socket the client used last
	dials int
	fails int
}

func startShim(t *testing.T, n *lab.Node, addr netip.Addr, to netip.AddrPort) *tcpShim {
	s := &tcpShim{t: t, ns: n.Name, to: to.String()}
	if err := inNetns(n.Name, func() error {
		for i, port := range []uint16{500, 4500} {
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
			if err != nil {
				return err
			}
			s.udp[i] = c
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range s.udp {
			if c != nil {
				c.Close()
			}
		}
		s.mu.Lock()
		if s.tcp != nil {
			s.tcp.Close()
		}
		s.mu.Unlock()
	})
	go s.run(0)
	go s.run(1)
	return s
}

func (s *tcpShim) run(i int) {
	buf := make([]byte, 65536)
	for {
		n, from, err := s.udp[i].ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if n == 1 && buf[0] == 0xff {
			continue
		}
		c := s.conn(from, i)
		if c == nil {
			continue
		}
		d := buf[:n]
		if i == 0 {
			// IKE on port 500 has no marker; a stream frames IKE
			// behind one
			d = append([]byte{0, 0, 0, 0}, d...)
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(d)+2)), d...)); err != nil {
			s.drop(c)
		}
	}
}

func (s *tcpShim) drop(c net.Conn) {
	s.mu.Lock()
	if s.tcp == c {
		s.tcp = nil
	}
	s.mu.Unlock()
	c.Close()
}

// conn returns the stream, opening it (with the IKETCP prefix) if needed.
func (s *tcpShim) conn(from netip.AddrPort, via int) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peer, s.via = from, via
	if s.tcp != nil {
		return s.tcp
	}
	s.dials++
	var c net.Conn
	err := inNetns(s.ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", s.to, 2*time.Second)
		return err
	})
	if err == nil {
		_, err = c.Write([]byte("IKETCP"))
	}
	if err != nil {
		s.fails++
		return nil
	}
	s.tcp = c
	go func() {
		var h [2]byte
		for {
			if _, err := io.ReadFull(c, h[:]); err != nil {
				s.drop(c)
				return
			}
			p := make([]byte, int(binary.BigEndian.Uint16(h[:]))-2)
			if _, err := io.ReadFull(c, p); err != nil {
				s.drop(c)
				return
			}
			s.mu.Lock()
			to, via := s.peer, s.via
			s.mu.Unlock()
			if via == 0 {
				if len(p) < 4 || p[0]|p[1]|p[2]|p[3] != 0 {
					continue // ESP toward a client on port 500: none
				}
				p = p[4:]
			}
			_, _ = s.udp[via].WriteToUDPAddrPort(p, to)
		}
	}()
	return c
}

func (s *tcpShim) counts() (dials, fails int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials, s.fails
}

// TestLabStrongSwanOverTCP is the RFC 9329 path end to end with real
// peers on this kernel (no espintcp, so no libreswan): mid forwards no UDP
// 500 or 4500, and a strongSwan client's datagrams reach a strongSwan
// responder only as an RFC 9329 stream (tcpShim in mid) through the
// proxy's TCP listener. Without the listener it fails; with it the IKE SA and CHILD
// SA come up on both peers, a ping crosses the tunnel (ESP in the
// stream), and, with the responder's keys, its fragmented IKE_AUTH
// response reaches the client as one SK message.
func TestLabStrongSwanOverTCP(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true})
	blockIKEUDP(t, l)
	// The shim runs in mid, whose own sockets the forward filter does not
	// touch: the client's datagrams end there, and only the stream goes on
	// toward gw.
	gwAddr, srvAddr := l.Gw.Addr4, l.Srv.Addr4
	shim := startShim(t, l.Mid, l.Mid.Addr4, netip.AddrPortFrom(gwAddr, 4500))
	cli, srv := l.StartPair(lab.Charon{RemoteAddr: l.Mid.Addr4}, lab.Charon{SaveKeys: true})
	base := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\nkeys:\n  strongswan_table: %s\n",
		gwAddr, srvAddr, srv.KeysFile())

	g := startProxy(t, l, l.Gw, base)
	ok, _, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if dials, fails := shim.counts(); ok || dials == 0 || fails != dials {
		t.Fatalf("without the TCP listener: ok=%v, %d dials, %d failed", ok, dials, fails)
	}
	if err := g.proc.Stop(); err != nil {
		t.Logf("stopping the first proxy: %v", err)
	}

	g = startProxy(t, l, l.Gw, strings.Replace(base, "keys:", fmt.Sprintf("  tcp:\n    listen: [\"%s:4500\"]\nkeys:", gwAddr), 1))
	start := time.Now()
	ok, out, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := g.stats(t)
	t.Logf("with the listener: ok=%v after %.1f s; proxy tcp %+v", ok, time.Since(start).Seconds(), st.TCP)
	if !ok {
		t.Fatalf("not established over TCP:\n%s", out)
	}
	established(t, cli)
	established(t, srv)
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Errorf("ping through the tunnel: %v", err)
	}
	st = g.stats(t)
	if st.TCP == nil || st.TCP.Connections != 1 || st.TCP.Joined == 0 || st.TCP.FramesIn < 3 || st.Total.ESPIn == 0 || st.Total.ESPOut == 0 {
		t.Errorf("proxy: tcp %+v, total %+v", st.TCP, st.Total)
	}
	tcpFlows := 0
	for _, p := range g.peers(t) {
		for _, f := range p.Flows {
			if f.Transport == "tcp" && f.Backend.Addr() == srvAddr && f.Backend.Port() == 4500 {
				tcpFlows++
			}
		}
	}
	if tcpFlows != 1 {
		t.Errorf("want one TCP flow to %s:4500, peers %+v", srvAddr, g.peers(t))
	}
}
