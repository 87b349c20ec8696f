package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/proxy"
	"github.com/ikefrag/ikefrag/test/lab"
)

// tunMTU is the MTU of kernel-libipsec's TUN device in the traffic
// tests: an inner packet, once encrypted (AES-CBC with HMAC-SHA2-256-128
// adds at most 57 bytes of ESP) and encapsulated in UDP and IPv6 (48),
// must still fit the lab's 1280-byte link, where mid drops every IP
// fragment. strongSwan 5.9 has no setting for it (1400).
const tunMTU = 1160

// bulkBytes is what the TCP transfer sends each way through the tunnel.
const bulkBytes = 3 << 20

// tunnelTraffic sends pings of 1200 bytes (fragmented inside the tunnel:
// two ESP datagrams each way) and a bulk TCP transfer between the inner
// addresses: srv echoes every byte cli sends, so both directions carry
// full-size ESP.
func tunnelTraffic(t *testing.T, l *lab.Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, n := range []*lab.Node{l.Cli, l.Srv} {
		if out, err := n.Run(ctx, "ip", "link", "set", "dev", "ipsec0", "mtu", strconv.Itoa(tunMTU)); err != nil {
			t.Fatalf("TUN MTU in %s: %v %s", n.Role, err, out)
		}
	}
	start := time.Now()
	out, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", "200", "-i", "0.01", "-s", "1200", "-W", "2",
		"-I", l.Cli.Inner4.String(), l.Srv.Inner4.String())
	if err != nil {
		t.Errorf("ping -s 1200 through the tunnel: %v\n%s", err, out)
	} else if !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping -s 1200 lost packets:\n%s", out)
	}
	t.Logf("200 pings of 1200 bytes in %.1f s", time.Since(start).Seconds())

	var ln net.Listener
	inNS(t, l.Srv, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.Srv.Inner4, 5001).String())
		return err
	})
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	var c net.Conn
	inNS(t, l.Cli, func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(l.Cli.Inner4, 0)), Timeout: 10 * time.Second}
		c, err = d.Dial("tcp4", netip.AddrPortFrom(l.Srv.Inner4, 5001).String())
		return err
	})
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	start = time.Now()
	want := make([]byte, bulkBytes)
	for i := range want {
		want[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		errc <- err
	}()
	got := make([]byte, bulkBytes)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("bulk transfer: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("bulk transfer: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("bulk transfer: the echo differs from what was sent")
	}
	t.Logf("bulk TCP: %d bytes each way in %.1f s", bulkBytes, time.Since(start).Seconds())
	c.Close()
	// let the closing segments cross before counters are compared
	time.Sleep(300 * time.Millisecond)
}

// childPackets returns the ESP packets of the daemon's CHILD SA as charon
// counts them (kernel-libipsec: every ESP-in-UDP datagram it sent or
// accepted).
func childPackets(t *testing.T, d *lab.Daemon) (in, out uint64) {
	t.Helper()
	txt, err := d.Swanctl(context.Background(), "--list-sas")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s+(in|out)\s+[0-9a-f]{8}.*?(\d+) packets`)
	ms := re.FindAllStringSubmatch(txt, -1)
	if len(ms) != 2 {
		t.Fatalf("CHILD SA counters not found in:\n%s", txt)
	}
	for _, m := range ms {
		n, _ := strconv.ParseUint(m[2], 10, 64)
		if m[1] == "in" {
			in = n
		} else {
			out = n
		}
	}
	return in, out
}

// checkESPAccounting compares what the peers' CHILD SAs sent and received
// with what the proxy says it relayed, on each path.
//
// On a new NAT-T flow the proxy maps the flow while it handles the
// backend's first reply there (the IKE_AUTH response), before relaying
// it: the client can only send ESP after that response, and the server
// only in answer to the client's. With the fast path on, every ESP
// datagram of the tunnel must therefore cross the kernel and none the
// proxy's sockets; without it, all of them cross the sockets.
func checkESPAccounting(t *testing.T, g *gwProxy, cli, srv *lab.Daemon, fastPath bool) {
	t.Helper()
	cliIn, cliOut := childPackets(t, cli)
	srvIn, srvOut := childPackets(t, srv)
	var st proxy.Stats
	// the proxy counts a datagram to the client after sendmmsg returns
	waitFor(2*time.Second, func() bool {
		st = g.stats(t)
		return st.Total.ESPOut+st.Total.ESPFastPathOut >= srvOut
	})
	k := st.Total
	t.Logf("ESP packets: cli out %d in %d, srv in %d out %d; proxy user space in %d out %d, fast path in %d out %d; fast path %+v",
		cliOut, cliIn, srvIn, srvOut, k.ESPIn, k.ESPOut, k.ESPFastPathIn, k.ESPFastPathOut, st.FastPath)
	// Every datagram a peer sent reaches gw and is relayed there. The
	// receiving charon may count fewer: during the bulk transfer its
	// socket buffer overflows now and then (also with the fast path off)
	// and TCP retransmits.
	up, down := k.ESPIn+k.ESPFastPathIn, k.ESPOut+k.ESPFastPathOut
	if up != cliOut || down != srvOut {
		t.Errorf("proxy accounted %d ESP datagrams up and %d down; cli sent %d, srv sent %d", up, down, cliOut, srvOut)
	}
	if srvIn > up || cliIn > down {
		t.Errorf("peers received more ESP than the proxy relayed: srv %d of %d, cli %d of %d", srvIn, up, cliIn, down)
	}
	// 200 pings in two ESP datagrams each, bulkBytes in segments below
	// the TUN MTU, each way
	if least := uint64(400 + bulkBytes/tunMTU); cliOut < least || srvOut < least {
		t.Errorf("too little ESP for the traffic sent: %d up, %d down", cliOut, srvOut)
	}
	if !fastPath {
		if st.FastPath.Active || k.ESPFastPathIn+k.ESPFastPathOut != 0 || st.FastPath.Redirected != 0 {
			t.Errorf("fast path off, yet %+v / %+v", st.FastPath, k)
		}
		return
	}
	if !st.FastPath.Active || len(st.FastPath.Interfaces) != 2 {
		t.Fatalf("fast path not active on both gw interfaces: %+v", st.FastPath)
	}
	if k.ESPIn != 0 || k.ESPOut != 0 {
		t.Errorf("user-space ESP counters: in %d out %d, want 0 (the flow is mapped before the client can send ESP)", k.ESPIn, k.ESPOut)
	}
	// Only this flow is mapped, and the program counts what it redirected.
	if st.FastPath.Redirected != k.ESPFastPathIn+k.ESPFastPathOut || st.FastPath.Flows != 1 {
		t.Errorf("program redirected %d datagrams for %d flows; proxy read back %d", st.FastPath.Redirected, st.FastPath.Flows,
			k.ESPFastPathIn+k.ESPFastPathOut)
	}
	// `ikefragctl peers` and the flows show it too.
	ps := g.peers(t)
	if len(ps) != 1 || ps[0].Counters.ESPFastPathIn != k.ESPFastPathIn || ps[0].Counters.ESPFastPathOut != k.ESPFastPathOut ||
		ps[0].Counters.DatagramsIn < up || ps[0].Counters.DatagramsOut < down {
		t.Errorf("peers %+v", ps)
	}
	var flows []proxy.FlowInfo
	g.get(t, "flows", &flows)
	mapped := 0
	for _, f := range flows {
		if f.NATT {
			mapped++
			if f.FastPath != "mapped" || f.ESPFastPathIn != k.ESPFastPathIn || f.ESPFastPathOut != k.ESPFastPathOut ||
				f.PktsIn < f.ESPFastPathIn || f.PktsOut < f.ESPFastPathOut {
				t.Errorf("NAT-T flow %+v", f)
			}
		} else if f.FastPath != "" {
			t.Errorf("IKE port flow offered to the fast path: %+v", f)
		}
	}
	if mapped != 1 {
		t.Errorf("want one NAT-T flow, got %+v", flows)
	}
	// and the metrics
	m := g.metrics(t)
	for _, e := range []struct {
		series string
		want   uint64
	}{
		{`ikefrag_proxy_esp_datagrams_total{backend="` + st.Backends[0].Name + `",direction="in",path="fast_path"}`, k.ESPFastPathIn},
		{`ikefrag_proxy_esp_datagrams_total{backend="` + st.Backends[0].Name + `",direction="out",path="fast_path"}`, k.ESPFastPathOut},
		{`ikefrag_proxy_esp_datagrams_total{backend="` + st.Backends[0].Name + `",direction="in",path="user_space"}`, 0},
		{`ikefrag_fastpath_flows`, 1},
		{`ikefrag_fastpath_active`, 1},
	} {
		if v, ok := m[e.series]; !ok || v != e.want {
			t.Errorf("metric %s = %v (present %v), want %d", e.series, v, ok, e.want)
		}
	}
}

// metrics reads the proxy's Prometheus text into series → value.
func (g *gwProxy) metrics(t *testing.T) map[string]uint64 {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", g.ctl)
	}}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://proxy/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = uint64(v)
	}
	return out
}

// checkRouteMTUFastPath: the fast path does not see the proxy's policy
// route, so the mapping carries its MTU. Pings whose ESP exceeds 1000
// bytes cross user space both ways: from the client as IP fragments (the
// client's link is 1000 bytes), which the program leaves to the stack;
// from the server whole, above the mapping's MTU, so that the proxy's
// socket fragments them at the route's size. Small ESP stays in the
// kernel.
func checkRouteMTUFastPath(t *testing.T, l *lab.Lab, g *gwProxy) {
	t.Helper()
	var flows []proxy.FlowInfo
	g.get(t, "flows", &flows)
	var natt *proxy.FlowInfo
	for i := range flows {
		if flows[i].NATT {
			natt = &flows[i]
		}
	}
	if natt == nil || natt.FastPath != "mapped" || natt.FastPathMTU != 1000 {
		t.Fatalf("want the NAT-T flow mapped with the route's MTU 1000: %+v", flows)
	}
	before := g.stats(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 20
	out, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(n), "-i", "0.05", "-s", "1100", "-W", "2",
		"-I", l.Cli.Inner4.String(), l.Srv.Inner4.String())
	if err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping -s 1100 through the tunnel: %v\n%s", err, out)
	}
	var after proxy.Stats
	waitFor(2*time.Second, func() bool {
		after = g.stats(t)
		return after.Total.ESPOut-before.Total.ESPOut >= n
	})
	d := func(a, b uint64) uint64 { return a - b }
	t.Logf("large pings: user space ESP in %d out %d, fast path in %d out %d, passed too_big %d, fragment %d",
		d(after.Total.ESPIn, before.Total.ESPIn), d(after.Total.ESPOut, before.Total.ESPOut),
		d(after.Total.ESPFastPathIn, before.Total.ESPFastPathIn), d(after.Total.ESPFastPathOut, before.Total.ESPFastPathOut),
		d(after.FastPath.Passed["too_big"], before.FastPath.Passed["too_big"]),
		d(after.FastPath.Passed["fragment"], before.FastPath.Passed["fragment"]))
	if d(after.Total.ESPIn, before.Total.ESPIn) != n || d(after.Total.ESPOut, before.Total.ESPOut) != n ||
		d(after.FastPath.Passed["too_big"], before.FastPath.Passed["too_big"]) != n ||
		after.Total.ESPFastPathOut != before.Total.ESPFastPathOut {
		t.Errorf("want every large ESP datagram in user space, the server's passed as too big")
	}
	if before.Total.ESPFastPathIn == 0 || before.Total.ESPIn != 0 {
		t.Errorf("the small pings before: want them in the kernel: %+v", before.Total)
	}
}
