package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/netcfg"
	"github.com/ikefrag/ikefrag/proxy"
	"github.com/ikefrag/ikefrag/test/lab"
)

// Load-generator traffic carries 0xeeee in the first 16 bits of the IKE
// SPIi and of the ESP SPI; nftables on srv sends it to echo responders
// instead of charon, so one backend address serves both.
const magic = 0xeeee

// echoResponder answers generator datagrams for one backend: an
// IKE_SA_INIT-shaped request gets a response with SPIr naming the backend,
// any other IKE message gets its header with the R flag, ESP comes back
// with the backend's id appended.
type echoResponder struct {
	id    byte
	conns []*net.UDPConn
	mu    sync.Mutex
	got   int
}

func (e *echoResponder) serve(c *net.UDPConn, natt bool) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		e.mu.Lock()
		e.got++
		e.mu.Unlock()
		d := append([]byte(nil), buf[:n]...)
		msg := d
		if natt {
			if len(d) > 4 && binary.BigEndian.Uint32(d) != 0 { // ESP
				_, _ = c.WriteToUDPAddrPort(append(d, e.id), from)
				continue
			}
			msg = d[4:]
		}
		if len(msg) < ike.HeaderLen {
			continue
		}
		msg[19] |= byte(ike.FlagResponse)
		if msg[18] == byte(ike.ExchangeIKESAInit) {
			copy(msg[8:16], []byte{0xee, 0xee, e.id, 0, msg[4], msg[5], msg[6], msg[7]})
		}
		msg = append(msg, e.id)
		binary.BigEndian.PutUint32(msg[24:28], uint32(len(msg)))
		if natt {
			msg = append([]byte{0, 0, 0, 0}, msg...)
		}
		_, _ = c.WriteToUDPAddrPort(msg, from)
	}
}

func forceRcvBuf(c *net.UDPConn) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
	}
}

// inNS runs fn in a lab node's namespace (sockets made there stay there).
func inNS(t *testing.T, n *lab.Node, fn func() error) {
	t.Helper()
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netcfg.Do(h, fn); err != nil {
		t.Fatal(err)
	}
}

// TestLabTwoBackends200Clients: two backends (strongSwan on 500/4500 and
// on 10500/14500 in srv, each with an echo responder for the load
// generator), two real strongSwan clients and 198 generated ones, each
// with an IKE_SA_INIT-shaped exchange on 500 and IKE plus ESP-in-UDP on
// 4500. Every datagram must come back from the address the client used,
// from the backend its IKE SA was placed on, and none may be lost.
func TestLabTwoBackends200Clients(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, PKI: lab.ECDSA256})
	srvA := l.StartCharon(lab.Charon{Role: lab.Server})
	srvB := l.StartCharon(lab.Charon{Role: lab.Server, Port: 10500, PortNATT: 14500})
	cliA := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4})
	cliB := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4, Port: 10500, PortNATT: 14500})

	// generator traffic to each backend goes to its echo responder
	nat := fmt.Sprintf(`table ip lbtest {
	chain pre {
		type nat hook prerouting priority -100; policy accept;
		udp dport 500 @th,64,16 %#x redirect to :20500
		udp dport 4500 @th,64,16 %#x redirect to :24500
		udp dport 4500 @th,96,16 %#x redirect to :24500
		udp dport 10500 @th,96,16 %#x redirect to :21500
		udp dport 14500 @th,64,16 %#x redirect to :25500
		udp dport 14500 @th,96,16 %#x redirect to :25500
	}
}
`, magic, magic, magic, magic, magic, magic)
	cmd := l.Srv.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nat)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	echos := []*echoResponder{{id: 1}, {id: 2}}
	inNS(t, l.Srv, func() error {
		for i, e := range echos {
			for j, port := range []int{20500 + 1000*i, 24500 + 1000*i} {
				c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
				if err != nil {
					return err
				}
				forceRcvBuf(c)
				e.conns = append(e.conns, c)
				// strongSwan frames every port but 500 like NAT-T
				go e.serve(c, j == 1 || i == 1)
			}
		}
		return nil
	})
	t.Cleanup(func() {
		for _, e := range echos {
			for _, c := range e.conns {
				c.Close()
			}
		}
	})

	// The 198 generated clients share one address, as clients behind a
	// large NAT do: the per-address limits are raised as docs/proxy.md
	// says to for such a NAT (at the defaults, at most 2 of them could be
	// half-open at once).
	cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q, \"%s:10500/14500\"]\n  max_clients: 1000\n"+
		"  half_open_per_client: 256\n  new_flows_per_address: 512\n",
		l.Gw.Addr4, l.Srv.Addr4, l.Srv.Addr4)
	g := startProxy(t, l, l.Gw, cfg)

	// the real clients first: their IKE SAs land on one backend each
	for _, c := range []*lab.Daemon{cliA, cliB} {
		if ok, out, err := c.Initiate(ctx); err != nil || !ok {
			t.Fatalf("real client (port %d): ok=%v err=%v\n%s", c.Config.Port, ok, err, out)
		}
	}
	// Affinity of the real clients, from the proxy's flow table: the IKE
	// flow and the NAT-T flow of each client go to one backend.
	var flows []proxy.FlowInfo
	g.get(t, "flows", &flows)
	backendOf := map[uint16]netip.AddrPort{} // client IKE port → backend IKE address
	for _, f := range flows {
		if f.Client.Addr() == l.Cli.Addr4 && !f.NATT {
			backendOf[f.Client.Port()] = f.Backend
		}
	}
	for _, f := range flows {
		if f.Client.Addr() != l.Cli.Addr4 || !f.NATT {
			continue
		}
		want := map[uint16]uint16{4500: 500, 14500: 10500}[f.Client.Port()]
		be := backendOf[want]
		natt := map[uint16]uint16{500: 4500, 10500: 14500}[be.Port()]
		if f.Backend != netip.AddrPortFrom(be.Addr(), natt) {
			t.Errorf("client %v: NAT-T flow to %v, IKE flow to %v", f.Client, f.Backend, be)
		}
	}
	srvOf := map[uint16]*lab.Daemon{500: srvA, 10500: srvB}
	sameBackend := backendOf[500] == backendOf[10500]
	for _, c := range []*lab.Daemon{cliA, cliB} {
		sa := established(t, c)
		port := uint16(c.Config.Port)
		if port == 0 {
			port = 500
		}
		srv := srvOf[backendOf[port].Port()]
		sas, err := srv.SAs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range sas {
			found = found || s.SPIi == sa.SPIi
		}
		switch {
		case found:
			t.Logf("real client on port %d: IKE SA %s on backend %v", port, sa.SPIi, backendOf[port])
		case sameBackend:
			// one identity for both clients: the second IKE_AUTH's
			// INITIAL_CONTACT made the server delete the first SA
			t.Logf("real client on port %d: both clients on %v; its SA was replaced by the other's INITIAL_CONTACT", port, backendOf[port])
		default:
			t.Errorf("real client on port %d: IKE SA %s not on its backend %v", port, sa.SPIi, backendOf[port])
		}
	}

	// 198 generated clients on ten addresses of cli
	const genClients, espPerClient = 198, 20
	var extra []string
	for i := 0; i < 10; i++ {
		a := fmt.Sprintf("10.99.1.%d", 100+i)
		if _, err := l.Cli.Run(ctx, "ip", "addr", "add", a+"/24", "dev", "cli-mid"); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, a)
	}
	type genClient struct {
		ike, natt *net.UDPConn
		spiI      uint64
	}
	gens := make([]genClient, genClients)
	inNS(t, l.Cli, func() error {
		for i := range gens {
			la := netip.MustParseAddr(extra[i%len(extra)])
			var err error
			if gens[i].ike, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(la, 0))); err != nil {
				return err
			}
			if gens[i].natt, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(la, 0))); err != nil {
				return err
			}
			gens[i].spiI = uint64(magic)<<48 | uint64(i+1)<<16 | 0x1234
		}
		return nil
	})
	t.Cleanup(func() {
		for _, gc := range gens {
			gc.ike.Close()
			gc.natt.Close()
		}
	})
	ikeAddr := netip.AddrPortFrom(l.Gw.Addr4, 500)
	nattAddr := netip.AddrPortFrom(l.Gw.Addr4, 4500)

	var mu sync.Mutex
	var lost, wrongBackend, wrongSource, sent, received, cookies int
	perBackend := map[byte]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range gens {
		wg.Add(1)
		sem <- struct{}{}
		go func(gc genClient) {
			defer wg.Done()
			defer func() { <-sem }()
			buf := make([]byte, 4096)
			recv := func(c *net.UDPConn, from netip.AddrPort) ([]byte, bool) {
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, src, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return nil, false
				}
				if src != from {
					mu.Lock()
					wrongSource++
					mu.Unlock()
				}
				return buf[:n], true
			}
			h := ike.Header{MajorVersion: 2, Exchange: ike.ExchangeIKESAInit, Flags: ike.FlagInitiator, NextPayload: 41}
			binary.BigEndian.PutUint64(h.SPIi[:], gc.spiI)
			// N(IKEV2_FRAGMENTATION_SUPPORTED), SA, KE, Nonce: a
			// well-formed request (the proxy opens no flow for less)
			body := []byte{33, 0, 0, 8, 0, 0, 0x40, 0x2e,
				34, 0, 0, 20, 0, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 8, 4, 0, 0, 19,
				40, 0, 0, 12, 0, 19, 0, 0, 1, 2, 3, 4,
				0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
			h.Length = uint32(ike.HeaderLen + len(body))
			init := append(h.AppendTo(nil), body...)
			_, _ = gc.ike.WriteToUDPAddrPort(init, ikeAddr)
			mu.Lock()
			sent++
			mu.Unlock()
			resp, ok := recv(gc.ike, ikeAddr)
			if ok {
				// the proxy asks for a cookie when many flows wait for
				// the backend (these echo answers carry no SA payload,
				// so their flows stay unanswered): answer it as an IKE
				// client does (RFC 7296 §2.6), the round trip not counted
				if m, err := ike.Decode(resp); err == nil && m.SPIr.IsZero() && m.Notify(ike.NotifyCookie) != nil {
					c := m.Notify(ike.NotifyCookie).Data
					h2 := h
					h2.NextPayload = ike.PayloadNotify
					n := append([]byte{byte(h.NextPayload), 0, 0, byte(8 + len(c)), 0, 0, 0x40, 0x06}, c...)
					b2 := append(n, body...)
					h2.Length = uint32(ike.HeaderLen + len(b2))
					_, _ = gc.ike.WriteToUDPAddrPort(append(h2.AppendTo(nil), b2...), ikeAddr)
					mu.Lock()
					cookies++
					mu.Unlock()
					resp, ok = recv(gc.ike, ikeAddr)
				}
			}
			if !ok || len(resp) < ike.HeaderLen+1 {
				mu.Lock()
				lost++
				mu.Unlock()
				return
			}
			be := resp[len(resp)-1]
			var spiR [8]byte
			copy(spiR[:], resp[8:16])
			mu.Lock()
			received++
			perBackend[be]++
			mu.Unlock()
			// IKE on 4500 (marker), then ESP, in windows of 10
			h2 := ike.Header{SPIi: h.SPIi, SPIr: spiR, MajorVersion: 2, Exchange: ike.ExchangeIKEAuth, Flags: ike.FlagInitiator, MessageID: 1, Length: ike.HeaderLen}
			auth := append([]byte{0, 0, 0, 0}, h2.AppendTo(nil)...)
			msgs := [][]byte{auth}
			for k := 0; k < espPerClient; k++ {
				esp := make([]byte, 8, 108)
				binary.BigEndian.PutUint32(esp[0:], uint32(magic)<<16|uint32(gc.spiI>>16&0xffff))
				binary.BigEndian.PutUint32(esp[4:], uint32(k+1))
				esp = append(esp, bytes.Repeat([]byte{byte(k)}, 100)...)
				msgs = append(msgs, esp)
			}
			for len(msgs) > 0 {
				w := min(10, len(msgs))
				for _, m := range msgs[:w] {
					_, _ = gc.natt.WriteToUDPAddrPort(m, nattAddr)
				}
				mu.Lock()
				sent += w
				mu.Unlock()
				for k := 0; k < w; k++ {
					r, ok := recv(gc.natt, nattAddr)
					mu.Lock()
					if !ok {
						lost += w - k
						mu.Unlock()
						break
					}
					received++
					if len(r) == 0 || r[len(r)-1] != be {
						wrongBackend++
					}
					mu.Unlock()
				}
				msgs = msgs[w:]
			}
		}(gens[i])
	}
	wg.Wait()
	st := g.stats(t)
	t.Logf("generated: sent %d, received %d, lost %d, wrong backend %d, wrong source %d; IKE SAs per backend %v; %d cookie round trips",
		sent, received, lost, wrongBackend, wrongSource, perBackend, cookies)
	for _, b := range st.Backends {
		t.Logf("backend %s: flows %d, in %d, out %d, dropped %v", b.Name, b.Flows, b.Counters.DatagramsIn, b.Counters.DatagramsOut, b.Counters.Dropped)
	}
	if lost != 0 || wrongBackend != 0 || wrongSource != 0 || sent != received || sent != genClients*(2+espPerClient) {
		t.Errorf("want every datagram back from the right backend and the right address")
	}
	if perBackend[1] < 50 || perBackend[2] < 50 {
		t.Errorf("placement uneven: %v", perBackend)
	}
	if st.Flows < 2*genClients || len(g.peers(t)) != 11 {
		t.Errorf("flows %d (want ≥ %d), peers %d (want 11 addresses)", st.Flows, 2*genClients, len(g.peers(t)))
	}
	// the real clients still have their SAs after the load
	for _, c := range []*lab.Daemon{cliA, cliB} {
		established(t, c)
	}
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Logf("ping through a tunnel (two tunnels share one selector pair here): %v", err)
	}
}
