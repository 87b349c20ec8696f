package fastpath

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
	"github.com/ikefrag/ikefrag/netcfg"
	"github.com/ikefrag/ikefrag/test/netns"
)

// nsAddrs are the lab's addresses of one family: client, proxy client
// side, proxy backend side, backend.
type nsAddrs struct{ cli, pc, pb, bk netip.Addr }

func labAddrs(v6 bool) nsAddrs {
	if v6 {
		return nsAddrs{netip.MustParseAddr("fd00:201:1::2"), netip.MustParseAddr("fd00:201:1::1"),
			netip.MustParseAddr("fd00:201:2::1"), netip.MustParseAddr("fd00:201:2::2")}
	}
	return nsAddrs{netip.MustParseAddr("10.201.1.2"), netip.MustParseAddr("10.201.1.1"),
		netip.MustParseAddr("10.201.2.1"), netip.MustParseAddr("10.201.2.2")}
}

// listen opens a UDP socket on ap inside namespace ns.
func (l *lab) listen(ns string, ap netip.AddrPort) *net.UDPConn {
	l.t.Helper()
	var c *net.UDPConn
	var err error
	l.do(ns, func() { c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap)) })
	if err != nil {
		l.t.Fatalf("listen %v in %s: %v", ap, ns, err)
	}
	l.t.Cleanup(func() { c.Close() })
	return c
}

func localAP(c *net.UDPConn) netip.AddrPort {
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

type dgram struct {
	from netip.AddrPort
	data []byte
}

// recvN reads n datagrams, failing the test when they do not arrive in
// time.
func recvN(t testing.TB, c *net.UDPConn, n int, what string) []dgram {
	t.Helper()
	out := make([]dgram, 0, n)
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(out) < n {
		k, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%s: got %d of %d datagrams: %v", what, len(out), n, err)
		}
		out = append(out, dgram{netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), append([]byte(nil), buf[:k]...)})
	}
	return out
}

// expectNothing checks that no datagram arrives at c within d.
func expectNothing(t testing.TB, c *net.UDPConn, d time.Duration, what string) {
	t.Helper()
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(d))
	if k, from, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Errorf("%s: unexpected datagram of %d bytes from %v", what, k, from)
	}
}

func send(t testing.TB, c *net.UDPConn, to netip.AddrPort, payloads ...[]byte) {
	t.Helper()
	for _, p := range payloads {
		if _, err := c.WriteToUDPAddrPort(p, to); err != nil {
			t.Fatalf("send to %v: %v", to, err)
		}
	}
}

func udpInCsumErrors(l *lab, ns string, v6 bool) int {
	l.t.Helper()
	if v6 {
		for _, line := range strings.Split(l.in(ns, "cat", "/proc/net/snmp6"), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Udp6InCsumErrors" {
				n, _ := strconv.Atoi(f[1])
				return n
			}
		}
		return 0
	}
	var names []string
	for _, line := range strings.Split(l.in(ns, "cat", "/proc/net/snmp"), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i := range names {
			if names[i] == "InCsumErrors" && i < len(f) {
				n, _ := strconv.Atoi(f[i])
				return n
			}
		}
	}
	return 0
}

// TestNamespaceFastPath: client ── proxy ── backend, the fast path on both
// proxy interfaces, one flow mapped and no relay running. ESP-shaped
// datagrams cross both ways with the proxy's addresses and ports; IKE and
// keepalives stop at the proxy namespace's sockets.
func TestNamespaceFastPath(t *testing.T) {
	for _, c := range []struct {
		name string
		mode netcfg.TCMode
		v6   bool
		csum csumMode
	}{
		{"tcx/v4", netcfg.TCX, false, csumOffload},
		{"tcx/v6", netcfg.TCX, true, csumOffload},
		{"tc/v4", netcfg.TCLegacy, false, csumOffload},
		{"tc/v6", netcfg.TCLegacy, true, csumOffload},
		{"tcx/v4/full-checksums", netcfg.TCX, false, csumFull},
		{"tcx/v6/full-checksums", netcfg.TCX, true, csumFull},
		{"tcx/v4/partial-checksums", netcfg.TCX, false, csumPartial},
		{"tcx/v6/partial-checksums", netcfg.TCX, true, csumPartial},
	} {
		t.Run(c.name, func(t *testing.T) { runNamespace(t, c.mode, c.v6, c.csum) })
	}
}

// csumMode says where UDP checksums are computed in the namespace test.
type csumMode int

const (
	// csumOffload: veth offloads all the way, nobody computes or checks
	// a checksum (CHECKSUM_PARTIAL end to end).
	csumOffload csumMode = iota
	// csumFull: the senders compute full checksums (no tx offload on
	// their veths), the program updates them incrementally, the
	// receivers verify them.
	csumFull
	// csumPartial: the senders leave a pseudo-header seed
	// (CHECKSUM_PARTIAL), the program updates the seed, and the proxy's
	// veths, without tx offload, complete the checksum in software; the
	// receivers verify it.
	csumPartial
)

func runNamespace(t *testing.T, mode netcfg.TCMode, v6 bool, csum csumMode) {
	if mode == netcfg.TCX {
		kfeattest.Require(t, kfeat.TCX)
	}
	l := proxyLab(t)
	switch csum {
	case csumFull:
		netns.RequireTools(t, "ethtool")
		l.in("cli", "ethtool", "-K", "c0", "tx", "off")
		l.in("bk", "ethtool", "-K", "b0", "tx", "off")
	case csumPartial:
		netns.RequireTools(t, "ethtool")
		l.in("px", "ethtool", "-K", "pc", "tx", "off")
		l.in("px", "ethtool", "-K", "pb", "tx", "off")
	}
	a := labAddrs(v6)
	var fp *FastPath
	var err error
	l.do("px", func() { fp, err = New(Options{AttachMode: mode, Logger: slog.New(slog.DiscardHandler)}) })
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	for _, ifc := range []string{"pc", "pb"} {
		if err := fp.Attach(ifc); err != nil {
			t.Fatal(err)
		}
		if got := fp.AttachedMode(ifc); got != mode {
			t.Fatalf("%s attached with %q, want %q", ifc, got, mode)
		}
	}

	listen := l.listen("px", netip.AddrPortFrom(a.pc, 4500))
	up := l.listen("px", netip.AddrPortFrom(a.pb, 0))
	back := l.listen("bk", netip.AddrPortFrom(a.bk, 4500))
	cl := l.listen("cli", netip.AddrPortFrom(a.cli, 0))
	f := Flow{Client: localAP(cl), Local: localAP(listen), Upstream: localAP(up), Backend: localAP(back)}
	var perr error
	l.do("px", func() { perr = fp.Put(f) }) // interfaces from the proxy namespace's routes
	if perr != nil {
		t.Fatal(perr)
	}
	// Put from a thread in another namespace resolves in the namespace
	// New ran in just the same.
	if err := fp.Put(f); err != nil {
		t.Fatalf("Put again: %v", err)
	}

	// ESP both ways, in rounds small enough for the default socket
	// buffers.
	const rounds, per = 6, 50
	var upBytes, downBytes uint64
	seq := uint32(0)
	for r := 0; r < rounds; r++ {
		var sent [][]byte
		for i := 0; i < per; i++ {
			seq++
			p := espPayload(0xc0de0001, seq, int(seq*37%1400))
			sent = append(sent, p)
			upBytes += uint64(len(p))
		}
		send(t, cl, f.Local, sent...)
		got := recvN(t, back, per, "backend")
		var replies [][]byte
		for i, d := range got {
			if d.from != f.Upstream {
				t.Fatalf("backend got a datagram from %v, want the proxy's upstream %v", d.from, f.Upstream)
			}
			if !bytes.Equal(d.data, sent[i]) {
				t.Fatalf("datagram %d changed or reordered", i)
			}
			rp := espPayload(0xbacc0001, seq+uint32(i), int((seq+uint32(i))*53%1400))
			replies = append(replies, rp)
			downBytes += uint64(len(rp))
		}
		send(t, back, f.Upstream, replies...)
		for i, d := range recvN(t, cl, per, "client") {
			if d.from != f.Local {
				t.Fatalf("client got a reply from %v, want the proxy's %v", d.from, f.Local)
			}
			if !bytes.Equal(d.data, replies[i]) {
				t.Fatalf("reply %d changed or reordered", i)
			}
		}
	}
	expectNothing(t, listen, 100*time.Millisecond, "proxy listen socket during ESP")
	expectNothing(t, up, 10*time.Millisecond, "proxy upstream socket during ESP")

	// IKE and a keepalive from the client, IKE from the backend: all to
	// the proxy's sockets, nothing relayed.
	ikeMsg, ka := ikePayload(400), []byte{0xff}
	send(t, cl, f.Local, ka, ikeMsg)
	got := recvN(t, listen, 2, "proxy listen socket")
	if got[0].from != f.Client || !bytes.Equal(got[0].data, ka) || !bytes.Equal(got[1].data, ikeMsg) {
		t.Errorf("proxy got %+v", got)
	}
	send(t, back, f.Upstream, ikeMsg)
	if got := recvN(t, up, 1, "proxy upstream socket"); got[0].from != f.Backend || !bytes.Equal(got[0].data, ikeMsg) {
		t.Errorf("proxy upstream got %+v", got)
	}
	expectNothing(t, back, 100*time.Millisecond, "backend after IKE")
	expectNothing(t, cl, 10*time.Millisecond, "client after IKE")

	c, err := fp.Counters(f.Key())
	if err != nil {
		t.Fatal(err)
	}
	if c.Up.Packets != rounds*per || c.Down.Packets != rounds*per || c.Up.Bytes != upBytes || c.Down.Bytes != downBytes {
		t.Errorf("counters %+v; want %d datagrams each way, %d bytes up, %d down", c, rounds*per, upBytes, downBytes)
	}
	s := stats(t, fp)
	if s.Redirected != 2*rounds*per || s.Passed[PassIKE] != 2 || s.Passed[PassKeepalive] != 1 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
	if csum != csumOffload {
		for _, ns := range []string{"cli", "bk"} {
			if n := udpInCsumErrors(l, ns, v6); n != 0 {
				t.Errorf("%s: %d UDP checksum errors", ns, n)
			}
		}
	}

	// Larger than the backend side's MTU: left to the proxy, which can
	// fragment or refuse it.
	l.in("px", "ip", "link", "set", "pb", "mtu", "1280")
	big := espPayload(0xc0de0001, 9999, 1300)
	send(t, cl, f.Local, big)
	if got := recvN(t, listen, 1, "proxy listen socket (too big)"); !bytes.Equal(got[0].data, big) {
		t.Errorf("too big datagram changed")
	}
	if s := stats(t, fp); s.Passed[PassTooBig] != 1 {
		t.Errorf("too_big = %d", s.Passed[PassTooBig])
	}

	// Detached from the client side: ESP goes to the proxy again.
	if err := fp.Detach("pc"); err != nil {
		t.Fatal(err)
	}
	small := espPayload(0xc0de0001, 10000, 100)
	send(t, cl, f.Local, small)
	recvN(t, listen, 1, "proxy listen socket after Detach")
	if err := fp.Close(); err != nil {
		t.Fatal(err)
	}
	send(t, back, f.Upstream, small)
	recvN(t, up, 1, "proxy upstream socket after Close")
	expectNothing(t, cl, 50*time.Millisecond, "client after Close")
	if mode == netcfg.TCLegacy {
		l.do("px", func() { err = checkNoFilters("pc", "pb") })
		if err != nil {
			t.Error(err)
		}
	}
}

// checkNoFilters runs in the proxy namespace: Close removed the filters
// and the clsact qdiscs it added.
func checkNoFilters(names ...string) error {
	for _, n := range names {
		l, err := netcfg.LinkByName(n)
		if err != nil {
			return err
		}
		fs, _ := netcfg.BPFFilters(l, netcfg.Ingress)
		if len(fs) != 0 {
			return errors.New(n + ": filters left: " + strings.Join(fs, ","))
		}
		created, err := netcfg.EnsureClsact(l)
		if err != nil {
			return err
		}
		if !created {
			return errors.New(n + ": clsact qdisc left behind")
		}
		_ = netcfg.DeleteClsact(l)
	}
	return nil
}
