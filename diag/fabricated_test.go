package diag

import (
	"testing"

	"github.com/ikefrag/ikefrag/ike"
)

// An IKE_AUTH "response" that is not an encrypted IKEv2 message is
// anybody's bytes under an IKE header: it must not make the session an
// established IKE SA (and so no "IKE SA established" verdict). The same
// exchange with SK payloads does.
func TestJunkResponseEstablishesNothing(t *testing.T) {
	spiR := ike.SPI{0x22}
	for _, c := range []struct {
		name        string
		first       ike.PayloadType
		body        []byte // first payload's generic header and more
		established bool
	}{
		{"SK", ike.PayloadEncrypted, []byte{0, 0, 0, 104}, true},
		{"vendor ID in clear", ike.PayloadVendorID, []byte{0, 0, 0, 104}, false},
		{"payload length past the message", ike.PayloadEncrypted, []byte{0, 0, 0x7f, 0xff}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := New(Options{})
			spiI := ike.SPI{0x11}
			for _, m := range []struct {
				x          ike.ExchangeType
				mid        uint32
				fromClient bool
			}{{ike.ExchangeIKESAInit, 0, true}, {ike.ExchangeIKESAInit, 0, false}, {ike.ExchangeIKEAuth, 1, true}, {ike.ExchangeIKEAuth, 1, false}} {
				h := ike.Header{SPIi: spiI, NextPayload: ike.PayloadVendorID, MajorVersion: 2, Exchange: m.x, MessageID: m.mid}
				body := []byte{0, 0, 0, 104}
				if m.fromClient {
					h.Flags = ike.FlagInitiator
				} else {
					h.Flags = ike.FlagResponse
				}
				if m.x != ike.ExchangeIKESAInit || !m.fromClient {
					h.SPIr = spiR
				}
				if m.x == ike.ExchangeIKEAuth {
					h.NextPayload, body = c.first, c.body
				}
				budgetFeed(e, 0, m.fromClient, h, body, 100)
			}
			ss := e.Sessions()
			if len(ss) != 1 {
				t.Fatalf("%d sessions, want 1", len(ss))
			}
			if got := ss[0].Established(); got != c.established {
				t.Errorf("Established() = %v, want %v", got, c.established)
			}
			ok := false
			for _, v := range e.Verdicts(true) {
				ok = ok || v.Code == OK
			}
			if ok != c.established {
				t.Errorf("an %s verdict: %v, want %v", OK, ok, c.established)
			}
		})
	}
}
