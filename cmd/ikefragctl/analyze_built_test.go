package main

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/test/packet"
)

// An IPv6 path that drops IPv6 fragments beyond the capture point: the
// client's IKE_AUTH request, 3000 bytes, leaves in 1280-byte IPv6 fragments
// three times, the capture sees each train whole, and no answer comes. analyze names FRAGMENTS_DROPPED toward the
// server and shows the IPv6 fragments in the ladder; the capture is built
// with test/packet, as no lab recording has IPv6.
func TestAnalyzeIPv6FragmentsDropped(t *testing.T) {
	cli := netip.MustParseAddrPort("[2001:db8:1::10]:500")
	srv := netip.MustParseAddrPort("[2001:db8:2::20]:500")
	spi := func(v uint64) (s ike.SPI) { binary.BigEndian.PutUint64(s[:], v); return s }
	msg := func(fromClient, response bool, x ike.ExchangeType, mid uint32, ps ...ike.Payload) []byte {
		h := ike.Header{MajorVersion: 2, Exchange: x, MessageID: mid, SPIi: spi(0x6001)}
		if x != ike.ExchangeIKESAInit || response {
			h.SPIr = spi(0x7001)
		}
		if fromClient {
			h.Flags |= ike.FlagInitiator
		}
		if response {
			h.Flags |= ike.FlagResponse
		}
		return (&ike.Message{Header: h, Payloads: ps}).Encode()
	}
	nonce := ike.Payload{Type: ike.PayloadNonce, Body: &ike.Nonce{Data: make([]byte, 32)}}
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	var frames []packet.Frame
	id := uint32(0)
	send := func(at time.Duration, src, dst netip.AddrPort, b []byte) {
		id++
		for _, p := range packet.UDPPackets(src, dst, id, b, 1280) {
			frames = append(frames, packet.Frame{Time: t0.Add(at), Data: p})
		}
	}
	send(0, cli, srv, msg(true, false, ike.ExchangeIKESAInit, 0, nonce))
	send(20*time.Millisecond, srv, cli, msg(false, true, ike.ExchangeIKESAInit, 0, nonce))
	auth := msg(true, false, ike.ExchangeIKEAuth, 1, ike.Payload{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDi, Data: make([]byte, 3000)}})
	for _, at := range []time.Duration{50 * time.Millisecond, 2050 * time.Millisecond, 5050 * time.Millisecond} {
		send(at, cli, srv, auth)
	}
	path := filepath.Join(t.TempDir(), "v6.pcap")
	if err := os.WriteFile(path, packet.Pcap(packet.LinkTypeRaw, frames), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := runCtl(t, "analyze", path)
	if code != 1 || !strings.Contains(out, "ERROR FRAGMENTS_DROPPED (toward server)") || !strings.Contains(out, "[2001:db8:1::10]:500") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	r, _ := analyzeJSON(t, path)
	if len(r.Sessions) != 1 || len(r.Sessions[0].Ladder) != 5 {
		t.Fatalf("sessions %+v", r.Sessions)
	}
	if row := r.Sessions[0].Ladder[2]; row.IPFragments != 3 {
		t.Errorf("IKE_AUTH request row %+v, want 3 IPv6 fragments", row)
	}
}
