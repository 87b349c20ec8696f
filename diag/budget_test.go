package diag

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

var (
	budgetCli = netip.MustParseAddrPort("198.51.100.7:4500")
	budgetSrv = netip.MustParseAddrPort("203.0.113.1:4500")
	budgetT0  = time.Unix(1700000000, 0)
)

// budgetFeed gives the engine one IKE datagram (NAT-T framing) of hdr
// with a body of n bytes after the first payload header.
func budgetFeed(e *Engine, at time.Duration, fromClient bool, hdr ike.Header, first []byte, n int) {
	body := append(first, make([]byte, n)...)
	for i := len(first); i < len(body); i++ {
		body[i] = byte(rand.Uint32())
	}
	hdr.Length = uint32(ike.HeaderLen + len(body))
	payload := append([]byte{0, 0, 0, 0}, hdr.AppendTo(nil)...)
	payload = append(payload, body...)
	src, dst := budgetCli, budgetSrv
	if !fromClient {
		src, dst = dst, src
	}
	e.Add(obs.Record{Datagram: &obs.Datagram{Time: budgetT0.Add(at), IPVersion: 4, Proto: 17, Src: src, Dst: dst,
		Length: len(payload), Payload: payload, Complete: true, TotalLen: -1}})
}

// skf is the header of an SKF payload (RFC 7383 §2.5) of n bytes after it.
func skf(number, total uint16, n int) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[2:], uint16(8+n))
	binary.BigEndian.PutUint16(b[4:], number)
	binary.BigEndian.PutUint16(b[6:], total)
	return b
}

func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The flood: one UDP socket sends distinct SKF fragments of one
// SPI pair (64 message IDs × 256 fragments × retransmissions). The IKE SA
// holds at most its share of the budget, the budget is never exceeded,
// the heap does not grow with the flood, and the engine says it is
// degraded and why.
func TestBudgetOneSAFlood(t *testing.T) {
	const budget = 8 << 20
	e := New(Options{MaxMemory: budget})
	before := heapNow()
	spiI, spiR := ike.SPI{1, 2, 3}, ike.SPI{4, 5, 6}
	n := 0
	for mid := uint32(1); mid <= 64 && n < 30000; mid++ {
		for frag := uint16(1); frag <= 256 && n < 30000; frag++ {
			for rep := 0; rep < 2; rep++ {
				h := ike.Header{SPIi: spiI, SPIr: spiR, NextPayload: ike.PayloadEncryptedFragment, MajorVersion: 2,
					Exchange: ike.ExchangeIKEAuth, Flags: ike.FlagInitiator, MessageID: mid}
				budgetFeed(e, time.Duration(n)*time.Millisecond, true, h, skf(frag, 256, 1000), 1000)
				n++
			}
		}
		if m := e.Memory(); m.Used > m.Max || m.Largest > m.SAShare {
			t.Fatalf("after %d datagrams: %+v", n, m)
		}
	}
	grown := int64(heapNow()) - int64(before)
	m := e.Memory()
	t.Logf("%d datagrams: heap grew %d bytes; %+v", n, grown, m)
	if m.Acted["sa_share"] == 0 || !m.Degraded || m.Why == "" {
		t.Errorf("want drops over the IKE SA's share and a degraded engine: %+v", m)
	}
	if grown > 4*budget {
		t.Errorf("heap grew %d bytes for a budget of %d", grown, budget)
	}
	// a minute later (observation time) the engine is no longer degraded
	h := ike.Header{SPIi: ike.SPI{9}, NextPayload: ike.PayloadVendorID, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit,
		Flags: ike.FlagInitiator}
	budgetFeed(e, time.Duration(n)*time.Millisecond+2*time.Minute, true, h, []byte{0, 0, 0, 104}, 100)
	if m := e.Memory(); m.Degraded {
		t.Errorf("still degraded: %+v", m)
	}
}

// A flood of new sessions against a small budget evicts sessions with no
// IKE SA established, and never the established one.
func TestBudgetManySessions(t *testing.T) {
	const budget = 1 << 20
	e := New(Options{MaxMemory: budget, MaxSessions: 1 << 20})
	// an established IKE SA: IKE_SA_INIT and IKE_AUTH answered
	spiI, spiR := ike.SPI{0x11}, ike.SPI{0x22}
	vid := func(n int) []byte { return []byte{0, 0, byte((n + 4) >> 8), byte(n + 4)} }
	for i, m := range []struct {
		x          ike.ExchangeType
		mid        uint32
		fromClient bool
	}{{ike.ExchangeIKESAInit, 0, true}, {ike.ExchangeIKESAInit, 0, false}, {ike.ExchangeIKEAuth, 1, true}, {ike.ExchangeIKEAuth, 1, false}} {
		h := ike.Header{SPIi: spiI, NextPayload: ike.PayloadVendorID, MajorVersion: 2, Exchange: m.x, MessageID: m.mid}
		if m.fromClient {
			h.Flags = ike.FlagInitiator
		} else {
			h.Flags = ike.FlagResponse
		}
		if m.x != ike.ExchangeIKESAInit || !m.fromClient {
			h.SPIr = spiR
		}
		if m.x == ike.ExchangeIKEAuth {
			// IKE_AUTH is encrypted: in clear it would be junk, which
			// establishes nothing
			h.NextPayload = ike.PayloadEncrypted
		}
		budgetFeed(e, time.Duration(i)*time.Millisecond, m.fromClient, h, vid(1000), 1000)
	}
	for i := range 20000 {
		h := ike.Header{NextPayload: ike.PayloadVendorID, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit, Flags: ike.FlagInitiator}
		binary.BigEndian.PutUint64(h.SPIi[:], uint64(i)+1000)
		budgetFeed(e, time.Second+time.Duration(i)*time.Microsecond, true, h, vid(400), 400)
		if i%1000 == 0 {
			if m := e.Memory(); m.Used > m.Max {
				t.Fatalf("after %d: %+v", i, m)
			}
		}
	}
	m := e.Memory()
	t.Logf("%+v, sessions %d", m, len(e.sessions))
	found := false
	for _, s := range e.Sessions() {
		found = found || (s.SPIi == spiI && s.Established())
	}
	if !found {
		t.Errorf("the established session was evicted")
	}
	if m.Acted["evicted_unestablished"] == 0 || m.Acted["evicted_oldest"] != 0 || m.Used > m.Max {
		t.Errorf("budget %+v", m)
	}
}
