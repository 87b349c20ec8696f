package proxy_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/test/lab"
)

func blockIKEUDP(t *testing.T, l *lab.Lab) {
	t.Helper()
	if err := l.BlockIKEUDP(); err != nil {
		t.Fatal(err)
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

// TestLabStrongSwanOverTCP is the RFC 9329 path end to end with real
// peers on this kernel (no espintcp, so no libreswan): mid forwards no UDP
// 500 or 4500, and a strongSwan client's datagrams reach a strongSwan
// responder only as an RFC 9329 stream (lab.TCPShim in mid) through the
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
	shim := lab.StartTCPShim(t, l.Mid, l.Mid.Addr4, netip.AddrPortFrom(gwAddr, 4500))
	cli, srv := l.StartPair(lab.Charon{RemoteAddr: l.Mid.Addr4}, lab.Charon{SaveKeys: true})
	base := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\nkeys:\n  strongswan_table: %s\n",
		gwAddr, srvAddr, srv.KeysFile())

	g := startProxy(t, l, l.Gw, base)
	ok, _, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if dials, fails := shim.Counts(); ok || dials == 0 || fails != dials {
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
	// 200 pings of 1200 bytes and a bulk TCP transfer echoed back, all
	// as ESP inside the RFC 9329 stream
	tunnelTraffic(t, l)
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
