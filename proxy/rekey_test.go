package proxy

import (
	"crypto/rand"
	"testing"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
)

// pairKeys is a key source with keys per SPI pair and, optionally, what a
// key feed says about rekeys and negotiation.
type pairKeys struct {
	m     map[[2]ike.SPI]*sk.SA
	links map[[2]ike.SPI][2]ike.SPI
	frag  map[[2]ike.SPI]bool
}

func (k *pairKeys) Lookup(spiI, spiR ike.SPI) (*sk.SA, error) {
	if sa := k.m[[2]ike.SPI{spiI, spiR}]; sa != nil {
		return sa, nil
	}
	return nil, keys.ErrUnknownSA
}

func (k *pairKeys) Rekeyed(spiI, spiR ike.SPI) (ike.SPI, ike.SPI, bool) {
	o, ok := k.links[[2]ike.SPI{spiI, spiR}]
	return o[0], o[1], ok
}

func (k *pairKeys) Fragmentation(spiI, spiR ike.SPI) (bool, bool) {
	v, ok := k.frag[[2]ike.SPI{spiI, spiR}]
	return v, ok
}

// plainKeys hides the saLinks methods: a key source that gives keys only.
type plainKeys struct{ k *pairKeys }

func (p plainKeys) Lookup(spiI, spiR ike.SPI) (*sk.SA, error) { return p.k.Lookup(spiI, spiR) }

var (
	rkOldI = ike.SPI{1, 1, 1, 1, 1, 1, 1, 1}
	rkOldR = ike.SPI{2, 2, 2, 2, 2, 2, 2, 2}
	rkNewI = ike.SPI{3, 3, 3, 3, 3, 3, 3, 3} // chosen by the backend, the rekey's initiator
	rkNewR = ike.SPI{4, 4, 4, 4, 4, 4, 4, 4}
)

// rekeyMessage seals a CREATE_CHILD_SA message of an IKE SA rekey: an SA
// payload with one IKE proposal carrying spi, a nonce and a KE.
func rekeyMessage(t *testing.T, sa *sk.SA, h ike.Header, spi ike.SPI) []byte {
	t.Helper()
	nonce := make([]byte, 32)
	ke := make([]byte, 384)
	_, _ = rand.Read(nonce)
	_, _ = rand.Read(ke)
	ps := []ike.Payload{
		{Type: ike.PayloadSA, Body: &ike.SA{Proposals: []ike.Proposal{{Number: 1, Protocol: ike.ProtocolIKE, SPI: spi[:],
			Transforms: []ike.Transform{{Type: ike.TransformType(1), ID: 12, Attributes: []ike.Attribute{{Type: 14, TV: true, Value: []byte{1, 0}}}},
				{Type: ike.TransformType(2), ID: 5}, {Type: ike.TransformType(3), ID: 12}, {Type: ike.TransformType(4), ID: 15}}}}}},
		{Type: ike.PayloadNonce, Body: &ike.Nonce{Data: nonce}},
		{Type: ike.PayloadKE, Body: &ike.KE{Group: 15, Data: ke}},
	}
	d := &sk.Decrypted{Header: h, Inner: ike.PayloadSA, Payloads: ike.AppendPayloads(nil, ps)}
	out, err := sa.Split(d, sk.Target{MTU: 1500, Marker: true}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Datagrams) != 1 {
		t.Fatalf("rekey message in %d datagrams", len(out.Datagrams))
	}
	return out.Datagrams[0]
}

// TestFollowRekey: after an IKE SA rekey the backend's large messages of
// the new SA are cut like the old SA's, whether the proxy learnt the new
// SPIs from the CREATE_CHILD_SA exchange it opened with the old keys, from
// the key feed's link, or from the feed's frag flag; with none of these it
// relays them (RFC 7383 §2.4: it cannot know the SA negotiated
// fragmentation).
func TestFollowRekey(t *testing.T) {
	suite := sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}
	for _, c := range []struct {
		name     string
		exchange bool // the CREATE_CHILD_SA exchange passes the proxy
		byClient bool // the client starts the rekey (else the backend)
		link     bool // the key feed links new to old
		frag     bool // the key feed says frag for the new SA
		plain    bool // the key source gives keys only
		wantCut  bool
	}{
		{name: "exchange", exchange: true, plain: true, wantCut: true},
		{name: "exchange_started_by_client", exchange: true, byClient: true, plain: true, wantCut: true},
		{name: "key_feed_link", link: true, wantCut: true},
		{name: "key_feed_frag", frag: true, wantCut: true},
		{name: "nothing_relays", plain: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			oldSA, newSA := testSA(t, suite), testSA(t, suite)
			src := &pairKeys{m: map[[2]ike.SPI]*sk.SA{{rkOldI, rkOldR}: oldSA, {rkNewI, rkNewR}: newSA},
				links: map[[2]ike.SPI][2]ike.SPI{}, frag: map[[2]ike.SPI]bool{}}
			if c.link {
				src.links[[2]ike.SPI{rkNewI, rkNewR}] = [2]ike.SPI{rkOldI, rkOldR}
			}
			if c.frag {
				src.frag[[2]ike.SPI{rkNewI, rkNewR}] = true
			}
			var ks keys.Source = src
			if c.plain {
				ks = plainKeys{src}
			}
			p, f := engine(t, ks, false)
			negotiate(p, f, rkOldI, rkOldR, true)
			if c.exchange && !c.byClient {
				// the backend (the old SA's responder) starts the rekey
				req := rekeyMessage(t, oldSA, ike.Header{SPIi: rkOldI, SPIr: rkOldR, MajorVersion: 2,
					Exchange: ike.ExchangeCreateChildSA, MessageID: 7}, rkNewI)
				if got := feed(p, f, [][]byte{req}); len(got) != 1 {
					t.Fatalf("rekey request: %d datagrams to the client", len(got))
				}
				resp := rekeyMessage(t, oldSA, ike.Header{SPIi: rkOldI, SPIr: rkOldR, MajorVersion: 2,
					Exchange: ike.ExchangeCreateChildSA, Flags: ike.FlagInitiator | ike.FlagResponse, MessageID: 7}, rkNewR)
				p.clientIKE(f, p.classify(f.ln, resp), p.now())
			}
			if c.exchange && c.byClient {
				// the client (the old SA's initiator) starts it: its SPI is
				// the new SA's initiator SPI
				req := rekeyMessage(t, oldSA, ike.Header{SPIi: rkOldI, SPIr: rkOldR, MajorVersion: 2,
					Exchange: ike.ExchangeCreateChildSA, Flags: ike.FlagInitiator, MessageID: 3}, rkNewI)
				p.clientIKE(f, p.classify(f.ln, req), p.now())
				resp := rekeyMessage(t, oldSA, ike.Header{SPIi: rkOldI, SPIr: rkOldR, MajorVersion: 2,
					Exchange: ike.ExchangeCreateChildSA, Flags: ike.FlagResponse, MessageID: 3}, rkNewR)
				if got := feed(p, f, [][]byte{resp}); len(got) != 1 {
					t.Fatalf("rekey response: %d datagrams to the client", len(got))
				}
			}
			if c.exchange {
				if oi, or, ok := p.sas.rekeyOf(rkNewI, rkNewR); !ok || oi != rkOldI || or != rkOldR {
					t.Fatalf("rekey not learnt from the exchange: %v %v %v", ok, oi, or)
				}
			}
			// a large request of the new SA from the backend: with the I
			// flag when it started the rekey (it is the new SA's initiator)
			var fl ike.Flags
			if !c.byClient {
				fl = ike.FlagInitiator
			}
			d := &sk.Decrypted{Header: ike.Header{SPIi: rkNewI, SPIr: rkNewR, MajorVersion: 2,
				Exchange: ike.ExchangeCreateChildSA, Flags: fl, MessageID: 0}, Inner: 41, Payloads: make([]byte, 3000)}
			_, _ = rand.Read(d.Payloads)
			out, err := newSA.Split(d, sk.Target{MTU: 1500, Marker: true}, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := feed(p, f, out.Datagrams)
			cut := p.total.refragmented.Load()
			if c.wantCut {
				if cut != 1 {
					t.Fatalf("new SA's message not cut (refragmented %d, not negotiated %d)", cut, p.total.notNegotiated.Load())
				}
				if m := reassemble(t, newSA, sk.NewReassembler(sk.ReassemblerConfig{}), got, 1280); m == nil {
					t.Fatal("the client cannot reassemble the cut")
				}
			} else if cut != 0 || p.total.notNegotiated.Load() == 0 {
				t.Fatalf("without knowing the rekey: refragmented %d, not negotiated %d", cut, p.total.notNegotiated.Load())
			}
		})
	}
}

// TestIKEProposalSPI: only an IKE proposal with an 8-byte SPI counts; a
// CHILD_SA rekey's ESP proposal is not an IKE SA rekey.
func TestIKEProposalSPI(t *testing.T) {
	esp := ike.AppendPayloads(nil, []ike.Payload{{Type: ike.PayloadSA, Body: &ike.SA{Proposals: []ike.Proposal{
		{Number: 1, Protocol: ike.ProtocolID(3), SPI: []byte{1, 2, 3, 4}, Transforms: []ike.Transform{{Type: 1, ID: 12}}}}}}})
	if _, ok := ikeProposalSPI(ike.PayloadSA, esp); ok {
		t.Fatal("ESP proposal taken for an IKE SA rekey")
	}
	if _, ok := ikeProposalSPI(ike.PayloadSA, []byte{0, 0, 0, 3}); ok {
		t.Fatal("malformed chain accepted")
	}
	spi := ike.SPI{9, 8, 7, 6, 5, 4, 3, 2}
	ikeSA := ike.AppendPayloads(nil, []ike.Payload{{Type: ike.PayloadSA, Body: &ike.SA{Proposals: []ike.Proposal{
		{Number: 1, Protocol: ike.ProtocolIKE, SPI: spi[:], Transforms: []ike.Transform{{Type: 1, ID: 12}}}}}}})
	if got, ok := ikeProposalSPI(ike.PayloadSA, ikeSA); !ok || got != spi {
		t.Fatalf("IKE proposal SPI %v %v", got, ok)
	}
}
