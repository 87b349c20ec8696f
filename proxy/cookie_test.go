package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// withCookie puts N(COOKIE) first in an IKE_SA_INIT request (RFC 7296
// §2.6).
func withCookie(init, cookie []byte) []byte {
	h, _ := ike.ParseHeader(init)
	first := h.NextPayload
	h.NextPayload = ike.PayloadNotify
	n := append([]byte{byte(first), 0, 0, byte(8 + len(cookie)), 0, 0, 0x40, 0x06}, cookie...)
	body := append(n, init[ike.HeaderLen:]...)
	h.Length = uint32(ike.HeaderLen + len(body))
	return append(h.AppendTo(nil), body...)
}

// In cookie mode an IKE_SA_INIT request of no flow gets the proxy's own
// COOKIE and opens nothing; the same request with that cookie opens a
// flow (ahead of unverified ones for eviction) and reaches the backend
// with the cookie; a wrong or another source's cookie opens nothing.
func TestCookieMode(t *testing.T) {
	ikePort, nattPort := testPorts()
	bp := 30000 + ikePort%1000
	be := startEcho(t, 1, netip.MustParseAddr("127.0.0.2"), bp, bp+1)
	be.mu.Lock()
	be.echo = false
	be.mu.Unlock()
	p := startProxy(t, Config{Listen: []string{"127.0.0.1"}, Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bp, bp+1)},
		IKEPort: ikePort, NATTPort: nattPort, CookieThreshold: 2}, Deps{})
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ikePort))
	conn := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for i := range 2 {
		_, _ = conn().WriteToUDPAddrPort(ikeSAInit(uint64(0x7100000000000000+i), false), to)
	}
	waitFor(t, "2 flows", func() bool { return p.Stats().Flows == 2 })
	c := conn()
	init := ikeSAInit(0x7200000000000001, false)
	resp := roundTrip(t, c, to, init)
	m, err := ike.Decode(resp)
	if err != nil || !m.Flags.Response() || !m.SPIr.IsZero() || m.SPIi != ike.SPI(init[0:8]) || m.Notify(ike.NotifyCookie) == nil {
		t.Fatalf("want an IKE_SA_INIT response with N(COOKIE): %x %v", resp, err)
	}
	cookie := m.Notify(ike.NotifyCookie).Data
	if st := p.Stats(); st.Flows != 2 || st.CookiesSent != 1 {
		t.Fatalf("stats %+v", st)
	}
	// a wrong cookie, and this cookie from another source: nothing
	bad := append([]byte(nil), cookie...)
	bad[5] ^= 1
	_, _ = c.WriteToUDPAddrPort(withCookie(init, bad), to)
	_, _ = conn().WriteToUDPAddrPort(withCookie(init, cookie), to)
	waitFor(t, "two more COOKIEs", func() bool { return p.Stats().CookiesSent == 3 })
	// the right one opens a flow, and the backend gets the request as sent
	_, _ = c.WriteToUDPAddrPort(withCookie(init, cookie), to)
	waitFor(t, "3 flows", func() bool { return p.Stats().Flows == 3 })
	st := p.Stats()
	if st.CookiesVerified != 1 || st.Unestablished != 3 {
		t.Errorf("stats %+v", st)
	}
	for _, f := range p.Flows() {
		if f.Client == addrOf(c) {
			return
		}
	}
	t.Errorf("no flow for the client that sent the cookie back")
}

// Under a spoofed flood the COOKIE responses carry at most
// maxAmplificationPct % of the request bytes (after a burst), and a request repeated by its source
// (a client retransmitting) is answered even when the share is used up.
func TestCookieAmplification(t *testing.T) {
	now := time.Unix(1000, 0)
	j := newCookieJar(now)
	const req, resp, n = 176, 52, 100000
	answered := 0
	for i := range n {
		if j.mayAnswer(uint64(i)*0x9e3779b97f4a7c15, req, resp, now) {
			answered++
		}
	}
	out, in := float64(answered*resp), float64(n*req)
	t.Logf("%d of %d answered: %.3f of the request bytes", answered, n, out/in)
	if out > maxAmplificationPct/100.0*in+cookieBurst {
		t.Errorf("responses %.0f bytes for %.0f bytes of requests", out, in)
	}
	// credit used up: a new request is not answered, its retransmission
	// is (a response larger than two requests' credit: only the repeat
	// rule can let it through)
	j.credit = 0
	h := uint64(42)
	if j.mayAnswer(h, req, 200, now) {
		t.Fatal("answered without credit")
	}
	if !j.mayAnswer(h, req, 200, now.Add(time.Second)) {
		t.Error("retransmission not answered")
	}
	if j.mayAnswer(h, req, 200, now.Add(time.Second+repeatWindow+time.Second)) {
		t.Error("answered a repeat after the window")
	}
}
