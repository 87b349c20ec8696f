package proxy_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/proxy"
	"github.com/ikefrag/ikefrag/test/lab"
)

// TestLabProbeStrongSwan checks the health probe against a real
// strongSwan responder: an IKE_SA_INIT of major version 3 is answered
// with INVALID_MAJOR_VERSION, on the IKE port and (with the marker) on
// the NAT-T port, and leaves no IKE SA behind; an IKE_SA_INIT of version
// 2 without the I flag (what a spoofer sends to make the proxy count
// failures) is not answered at all. The answer also comes while the
// server refuses new IKE SAs from the proxy's address (block_threshold
// reached), which is when the proxy needs it.
func TestLabProbeStrongSwan(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, PKI: lab.ECDSA256})
	srv := l.StartCharon(lab.Charon{Role: lab.Server, Proposals: "aes256gcm16-prfsha256-ecp256", Extra: "\tblock_threshold = 2\n\tcookie_threshold = 1000\n\tcookie_threshold_ip = 1\n"})
	ikeAddr := netip.AddrPortFrom(l.Srv.Addr4, 500)
	nattAddr := netip.AddrPortFrom(l.Srv.Addr4, 4500)

	probe := func(to netip.AddrPort, marker bool) (ike.NotifyType, error) {
		var nt ike.NotifyType
		var perr error
		inNS(t, l.Gw, func() error {
			nt, perr = proxy.ProbeBackend(ctx, to, marker, 2*time.Second)
			return nil
		})
		return nt, perr
	}
	for _, c := range []struct {
		to     netip.AddrPort
		marker bool
	}{{ikeAddr, false}, {nattAddr, true}} {
		nt, err := probe(c.to, c.marker)
		if err != nil || nt != ike.NotifyInvalidMajorVersion {
			t.Errorf("probe of %v: notify %v, err %v; want INVALID_MAJOR_VERSION", c.to, nt, err)
		}
	}

	// version 2 without the I flag: ignored (nothing to answer, RFC 7296
	// §2.1: a response is never sent to a response)
	send := func(c *net.UDPConn, msg []byte) ([]byte, error) {
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		return buf[:n], err
	}
	init := func(spi uint64, flags ike.Flags, cookie []byte) []byte {
		h := ike.Header{NextPayload: ike.PayloadSA, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit, Flags: flags}
		binary.BigEndian.PutUint64(h.SPIi[:], spi)
		var pre []byte
		if cookie != nil {
			// RFC 7296 §2.6: N(COOKIE) first
			h.NextPayload = ike.PayloadNotify
			pre = append([]byte{33, 0, 0, byte(8 + len(cookie)), 0, 0, 0x40, 0x06}, cookie...)
		}
		// SA: aes256gcm16-prfsha256-ecp256; KE: a fresh P-256 public
		// value (X | Y); Nonce
		body := []byte{34, 0, 0, 40, 0, 0, 0, 36, 1, 1, 0, 3,
			3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 1, 0,
			3, 0, 0, 8, 2, 0, 0, 5,
			0, 0, 0, 8, 4, 0, 0, 19}
		k, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ke := append([]byte{40, 0, 0, 8 + 64, 0, 19, 0, 0}, k.PublicKey().Bytes()[1:]...)
		nonce := make([]byte, 4+32)
		nonce[3] = byte(len(nonce))
		body = append(append(append(pre, body...), ke...), nonce...)
		h.Length = uint32(ike.HeaderLen + len(body))
		return append(h.AppendTo(nil), body...)
	}
	inNS(t, l.Gw, func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ikeAddr))
		if err != nil {
			return err
		}
		defer c.Close()
		if got, err := send(c, init(0x1111, 0, nil)); err == nil {
			t.Errorf("IKE_SA_INIT without the I flag answered: %x", got)
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("IKE_SA_INIT without the I flag: %v", err)
		}
		// cookie_threshold_ip 1, block_threshold 2: the first IKE SA is
		// half-open at once (its request carrying a cookie the server
		// did not make), the second after a COOKIE round trip, then
		// the server ignores IKE_SA_INIT from this address; the probe is
		// still answered
		halfOpen := 0
		for i := range 3 {
			spi := 0x2220 + uint64(i)
			var cookie []byte
			if i == 0 {
				// a cookie the server did not make (the proxy's, in
				// its cookie mode), while the server asks for none:
				// ignored, the request answered
				cookie = []byte("proxy's cookie!!")
			}
			for try := 0; try < 2; try++ {
				got, err := send(c, init(spi, ike.FlagInitiator, cookie))
				if err != nil {
					t.Logf("IKE SA %d, try %d: %v", i+1, try+1, err)
					break
				}
				m, err := ike.Decode(got)
				if err != nil {
					t.Fatalf("answer: %v", err)
				}
				if n := m.Notify(ike.NotifyCookie); n != nil && (cookie == nil || i == 0) {
					if i == 0 {
						t.Errorf("a foreign cookie was not ignored: %s", m.Summary())
					}
					cookie = n.Data
					continue
				}
				if m.Find(ike.PayloadSA) != nil {
					halfOpen++
				}
				t.Logf("IKE SA %d, try %d: %s", i+1, try+1, m.Summary())
				break
			}
		}
		if halfOpen != 2 {
			t.Errorf("%d IKE SAs half-open, want 2 (block_threshold)", halfOpen)
		}
		return nil
	})
	if nt, err := probe(ikeAddr, false); err != nil || nt != ike.NotifyInvalidMajorVersion {
		t.Errorf("probe while blocking: notify %v, err %v", nt, err)
	}
	sas, err := srv.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) > 2 {
		t.Errorf("probes left IKE SAs: %+v", sas)
	}
	if b, err := os.ReadFile(srv.Log()); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "MAJOR_VERSION") || strings.Contains(line, "unsupported IKE version") ||
				strings.Contains(line, "threshold") || strings.Contains(line, "blocked") {
				t.Logf("charon: %s", line)
			}
		}
	}
}
