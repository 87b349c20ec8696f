package proxy

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
)

type oneKey struct{ sa *sk.SA }

func (o oneKey) Lookup(spiI, spiR ike.SPI) (*sk.SA, error) {
	if o.sa == nil {
		return nil, keys.ErrUnknownSA
	}
	return o.sa, nil
}

func testSA(t testing.TB, s sk.Suite) *sk.SA {
	t.Helper()
	k := &sk.Keys{Suite: s}
	// lengths as NewSA wants them; values random
	for _, kk := range []*sk.Key{&k.SK_ei, &k.SK_er} {
		switch s.Encr {
		case sk.EncrAESGCM16:
			*kk = make(sk.Key, s.KeyBits/8+4)
		default:
			*kk = make(sk.Key, s.KeyBits/8)
		}
		_, _ = rand.Read(*kk)
	}
	if s.Integ == sk.AuthHMACSHA2_256_128 {
		k.SK_ai, k.SK_ar = make(sk.Key, 32), make(sk.Key, 32)
		_, _ = rand.Read(k.SK_ai)
		_, _ = rand.Read(k.SK_ar)
	}
	sa, err := sk.NewSA(k)
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// engine is a proxy without sockets: the IKE logic alone.
func engine(t testing.TB, src keys.Source, stepDown bool) (*Proxy, *Flow) {
	t.Helper()
	s, err := Config{Listen: []string{"192.0.2.1"}, Backends: []string{"198.51.100.1"}, PMTUStepDown: stepDown}.parse()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	p := &Proxy{s: s, keys: src, log: discard(), now: func() time.Time { return now }, keyed: src != nil,
		sas: newSATable(100), msgs: newMsgCache(64, 1<<20), clients: map[netip.Addr]*client{}, flows: newFlowTable(100), cookies: newCookieJar(now),
		reasm: sk.NewReassembler(sk.ReassemblerConfig{}), frag: sk.NewFragmenter(sk.FragmenterConfig{})}
	be := newBackend(0, s.backends[0])
	p.backends = []*backend{be}
	ca := netip.MustParseAddr("203.0.113.5")
	f := &Flow{p: p, key: flowKey{netip.AddrPortFrom(ca, 4500), netip.MustParseAddrPort("192.0.2.1:4500")},
		ln: &listener{p: p, natt: true}, be: be, cl: p.client(ca), natt: true}
	return p, f
}

// negotiate records an IKE_SA_INIT exchange in which both peers sent
// IKEV2_FRAGMENTATION_SUPPORTED.
func negotiate(p *Proxy, f *Flow, spiI, spiR ike.SPI, resp bool) {
	sa := p.sas.create(saKey{f.key.client.Addr(), spiI}, f.be, p.now())
	sa.fragReq, sa.fragResp = true, resp
	p.sas.setSPIr(sa, spiR)
}

// response builds the backend's IKE_AUTH response cut at 1500 bytes
// (strongSwan fragment_size 1500), with the marker.
func response(t testing.TB, sa *sk.SA, spiI, spiR ike.SPI, n int) (*sk.Decrypted, [][]byte) {
	t.Helper()
	d := &sk.Decrypted{Header: ike.Header{SPIi: spiI, SPIr: spiR, MajorVersion: 2, Exchange: ike.ExchangeIKEAuth,
		Flags: ike.FlagResponse, MessageID: 1}, Inner: 36, Payloads: make([]byte, n)}
	_, _ = rand.Read(d.Payloads)
	out, err := sa.Split(d, sk.Target{MTU: 1500, Marker: true}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d, out.Datagrams
}

// feed passes backend datagrams through the engine and returns what the
// client would get.
func feed(p *Proxy, f *Flow, ds [][]byte) [][]byte {
	var got [][]byte
	for _, d := range ds {
		fr := p.classify(f.ln, d)
		out, relay := p.backendIKE(f, d, fr, p.now())
		got = append(got, out...)
		if relay {
			got = append(got, d)
		}
	}
	return got
}

// reassemble plays the client: every datagram must fit mtu, and the set
// must give back the message.
func reassemble(t *testing.T, sa *sk.SA, r *sk.Reassembler, ds [][]byte, mtu int) *sk.Decrypted {
	t.Helper()
	var done *sk.Decrypted
	for _, d := range ds {
		if 20+8+len(d) > mtu {
			t.Errorf("datagram of %d bytes (IP %d) exceeds %d", len(d), 28+len(d), mtu)
		}
		res := r.Add(sa, d[ike.NonESPMarkerLen:])
		if res.Status == sk.StatusComplete {
			done = res.Message
		}
	}
	return done
}

func TestRefragmentReplayStepDown(t *testing.T) {
	for _, suite := range []sk.Suite{
		{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128},
		{Encr: sk.EncrAESGCM16, KeyBits: 256},
	} {
		t.Run(suite.String(), func(t *testing.T) {
			sa := testSA(t, suite)
			p, f := engine(t, oneKey{sa}, true)
			spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
			negotiate(p, f, spiI, spiR, true)
			d, in := response(t, sa, spiI, spiR, 5000)
			if len(in) != 4 {
				t.Fatalf("backend sent %d fragments, want 4", len(in))
			}
			first := feed(p, f, in)
			client := sk.NewReassembler(sk.ReassemblerConfig{})
			got := reassemble(t, sa, client, first, 1280)
			if got == nil || !bytes.Equal(got.Payloads, d.Payloads) || got.Fragments <= 4 {
				t.Fatalf("client could not rebuild the message from %d datagrams", len(first))
			}
			st := p.total.snapshot()
			if st.Refragmented != 1 || st.FragmentsEmitted != uint64(len(first)) {
				t.Errorf("counters %+v", st)
			}
			// the backend resends (the client retransmitted, say for
			// another reason): the same bytes come back, once
			again := feed(p, f, in)
			if len(again) != len(first) {
				t.Fatalf("replay of %d datagrams, want %d", len(again), len(first))
			}
			for i := range again {
				if !bytes.Equal(again[i], first[i]) {
					t.Fatalf("replay differs at datagram %d", i)
				}
			}
			if p.total.replays.Load() != 1 {
				t.Errorf("replays %d", p.total.replays.Load())
			}
			// the client retransmits its request twice: the second copy is a
			// retransmission, the next resend is cut one rung lower
			req := &sk.Decrypted{Header: ike.Header{SPIi: spiI, SPIr: spiR, MajorVersion: 2, Exchange: ike.ExchangeIKEAuth,
				Flags: ike.FlagInitiator, MessageID: 1}, Inner: 35, Payloads: make([]byte, 300)}
			rb, err := sa.Seal(req, nil)
			if err != nil {
				t.Fatal(err)
			}
			rb = append([]byte{0, 0, 0, 0}, rb...)
			for i := 0; i < 2; i++ {
				p.clientIKE(f, p.classify(f.ln, rb), p.now())
			}
			if p.total.clientRetransmits.Load() != 1 {
				t.Fatalf("client retransmissions %d", p.total.clientRetransmits.Load())
			}
			if in := p.PMTU(f.key.client.Addr()); in.MTU != 1000 || in.Source != SourceStepDown {
				t.Errorf("after step-down: %+v", in)
			}
			smaller := feed(p, f, in)
			if len(smaller) <= len(first) || p.total.stepDowns.Load() != 1 {
				t.Fatalf("step-down gave %d datagrams (before %d), step-downs %d", len(smaller), len(first), p.total.stepDowns.Load())
			}
			// a client holding part of the old set restarts on the higher
			// total (RFC 7383 §2.6), as strongSwan does
			client = sk.NewReassembler(sk.ReassemblerConfig{})
			reassemble(t, sa, client, first[:2], 1280)
			if got := reassemble(t, sa, client, smaller, 1000); got == nil || !bytes.Equal(got.Payloads, d.Payloads) {
				t.Fatalf("client could not rebuild the stepped-down message")
			}
		})
	}
}

// Without both notifies, without keys, or with refragment off, the
// oversized message goes through unchanged and the reason is counted.
func TestRefragmentPreconditions(t *testing.T) {
	sa := testSA(t, sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 128, Integ: sk.AuthHMACSHA2_256_128})
	spiI, spiR := ike.SPI{1}, ike.SPI{2}
	cases := []struct {
		name  string
		src   keys.Source
		resp  bool
		off   bool
		count func(c Counters) uint64
	}{
		{"responder_did_not_announce", oneKey{sa}, false, false, func(c Counters) uint64 { return c.NotNegotiated }},
		{"no_keys", oneKey{}, true, false, func(c Counters) uint64 { return c.KeyMisses }},
		{"keyless", nil, true, false, func(c Counters) uint64 { return c.KeyMisses }},
		{"refragment_off", oneKey{sa}, true, true, func(c Counters) uint64 { return c.Oversize }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, f := engine(t, c.src, false)
			if c.off {
				p.s.Refragment = RefragmentOff
			}
			negotiate(p, f, spiI, spiR, c.resp)
			_, in := response(t, sa, spiI, spiR, 4000)
			out := feed(p, f, in)
			if len(out) != len(in) {
				t.Fatalf("%d datagrams out, want the %d in", len(out), len(in))
			}
			for i := range in {
				if !bytes.Equal(in[i], out[i]) {
					t.Fatalf("datagram %d changed", i)
				}
			}
			if st := p.total.snapshot(); c.count(st) == 0 || st.Refragmented != 0 {
				t.Errorf("counters %+v", st)
			}
		})
	}
}

// Whatever the backend or a client sends, the engine neither panics nor
// grows without bound.
func FuzzEngine(f *testing.F) {
	sa := testSA(f, sk.Suite{Encr: sk.EncrAESGCM16, KeyBits: 128})
	spiI, spiR := ike.SPI{1}, ike.SPI{2}
	_, in := response(f, sa, spiI, spiR, 3000)
	for _, d := range in {
		f.Add(d, false)
	}
	f.Add(append([]byte{0, 0, 0, 0}, ikeSAInit(7, true)...), true)
	f.Add([]byte{0xff}, false)
	f.Add([]byte{0, 0, 0, 0, 1}, true)
	f.Fuzz(func(t *testing.T, b []byte, fromClient bool) {
		p, fl := engine(t, oneKey{sa}, true)
		negotiate(p, fl, spiI, spiR, true)
		fr := p.classify(fl.ln, b)
		if fr.Kind != ike.KindIKE {
			return
		}
		for i := 0; i < 2; i++ {
			if fromClient {
				p.clientIKE(fl, fr, p.now())
			} else {
				p.backendIKE(fl, b, fr, p.now())
			}
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
