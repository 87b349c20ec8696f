package ike

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// handMadeMessages are seeds that reach every typed decoder, built here so
// the fuzzer starts from valid structure even without the corpus seeds in
// testdata/fuzz.
func handMadeMessages(tb testing.TB) [][]byte {
	sa := unhex(tb, saTwoProposals)
	return [][]byte{
		buildMessage(ExchangeIKESAInit, FlagInitiator, 0,
			rawPayload{t: PayloadSA, body: sa},
			rawPayload{t: PayloadKE, body: unhex(tb, "000e 0000"+strings.Repeat("5a", 32))},
			rawPayload{t: PayloadNonce, body: bytes.Repeat([]byte{7}, 32)},
			rawPayload{t: PayloadNotify, body: unhex(tb, "00 00 4004 "+strings.Repeat("11", 20))},
			rawPayload{t: PayloadNotify, body: unhex(tb, "00 00 402e")},
			rawPayload{t: PayloadVendorID, body: unhex(tb, "4048b7d56ebce88525e7de7f00d6c2d3")}),
		buildMessage(ExchangeIKEAuth, FlagInitiator, 1,
			rawPayload{t: PayloadIDi, body: unhex(tb, "09 000000 3016311430120603550403130b76706e2e6578616d706c65")},
			rawPayload{t: PayloadCERT, body: unhex(tb, "04 3003020100")},
			rawPayload{t: PayloadCERTREQ, body: unhex(tb, "04"+strings.Repeat("ab", 20))},
			rawPayload{t: PayloadAUTH, body: unhex(tb, "02 000000 0102")},
			rawPayload{t: PayloadCP, body: unhex(tb, "01 000000 0001 0000 000d 0008 0a000000ffffff00 0007 0002 6869")},
			rawPayload{t: PayloadTSi, body: unhex(tb, "02 000000 07 00 0010 0000ffff 00000000 ffffffff 0a 00 0006 6162")},
			rawPayload{t: PayloadTSr, body: unhex(tb, "01 000000 08 11 0028 01bb01bb"+strings.Repeat("00", 15)+"01"+strings.Repeat("ff", 16))},
			rawPayload{t: PayloadEAP, body: unhex(tb, "02 07 0006 01 61")},
			rawPayload{t: PayloadDelete, body: unhex(tb, "03 04 0001 01020304")},
			rawPayload{t: PayloadNotify, body: unhex(tb, "00 00 4017 01 04 c0000201")}),
		buildMessage(ExchangeIKEAuth, FlagResponse, 2,
			rawPayload{t: PayloadEncryptedFragment, np: PayloadIDr, body: unhex(tb, "0001 0002"+strings.Repeat("ee", 24))}),
		buildMessage(ExchangeInformational, 0, 3,
			rawPayload{t: PayloadEncrypted, np: PayloadDelete, body: bytes.Repeat([]byte{0xee}, 28)}),
	}
}

func TestHandMadeSeeds(t *testing.T) {
	for _, b := range handMadeMessages(t) {
		m := mustRoundTrip(t, b)
		if id, ok := m.Payloads[0].Body.(*ID); ok && id.String() != "CN=vpn.example" {
			t.Errorf("IDi %q", id.String())
		}
		if n := m.Notify(NotifyRedirect); n != nil {
			if gw, ok := n.Gateway(); !ok || gw != "192.0.2.1" {
				t.Errorf("REDIRECT gateway %q", gw)
			}
		}
	}
}

// FuzzDecode decodes arbitrary bytes as an IKE message. When decoding
// succeeds, the encoding must reproduce the input byte for byte and decode
// to the same message, and none of the display helpers may panic.
func FuzzDecode(f *testing.F) {
	for _, b := range handMadeMessages(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if m != nil {
				t.Fatal("message and error both returned")
			}
			return
		}
		exercise(m)
		if !m.IsIKEv2() {
			return
		}
		enc := m.Encode()
		if !bytes.Equal(enc, b) {
			t.Fatalf("round trip differs\n in %x\nout %x", b, enc)
		}
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatal("decoding the re-encoding gives a different message")
		}
	})
}

// exercise calls the helpers that interpret decoded bodies.
func exercise(m *Message) {
	_ = m.Summary()
	_ = m.Header.String()
	_ = ExchangeName(m.Header)
	_ = m.PayloadTypes()
	_ = m.Fragment()
	for _, n := range m.Notifies() {
		_, _ = n.AcceptedGroup()
		_, _ = n.Gateway()
	}
	for _, v := range m.VendorIDs() {
		_ = v.Name()
	}
	for i := range m.Payloads {
		switch b := m.Payloads[i].Body.(type) {
		case *SA:
			_, _ = b.Chosen()
			for j := range b.Proposals {
				p := &b.Proposals[j]
				_ = p.Suite().String()
				_ = p.Strength()
			}
		case *ID:
			_ = b.String()
		case *Cert:
			_, _ = b.Subject()
		case *CertReq:
			_ = b.CAHashes()
		case *TS:
			for j := range b.Selectors {
				_ = b.Selectors[j].String()
			}
		case *CP:
			for j := range b.Attributes {
				_ = b.Attributes[j].String()
			}
		case *Delete:
			for j := 0; j < int(b.NumSPIs); j++ {
				_ = b.SPI(j)
			}
		}
	}
}

// FuzzClassify checks the RFC 3948 framing rules on arbitrary datagrams.
func FuzzClassify(f *testing.F) {
	ike := handMadeMessages(f)[0]
	f.Add(uint16(500), uint16(500), ike)
	f.Add(uint16(4500), uint16(4500), append([]byte{0, 0, 0, 0}, ike...))
	f.Add(uint16(4500), uint16(14500), []byte{0xff})
	f.Add(uint16(4500), uint16(4500), []byte{0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1})
	f.Add(uint16(53), uint16(4500), []byte{0, 0})
	f.Fuzz(func(t *testing.T, src, dst uint16, b []byte) {
		p := DefaultPorts
		fr := p.Classify(src, dst, b)
		natt := src == p.NATT || dst == p.NATT
		// On the NAT-T port, Classify is ClassifyNATT; ClassifyNATT reads
		// any payload so.
		if g := ClassifyNATT(b); natt && !reflect.DeepEqual(g, fr) {
			t.Fatalf("Classify %+v, ClassifyNATT %+v", fr, g)
		} else if g.Kind == KindNone {
			t.Fatalf("ClassifyNATT gave no kind for %x", b)
		}
		switch fr.Kind {
		case KindNone:
			if p.Carries(src, dst) {
				t.Fatal("IKE-port datagram classified as none")
			}
		case KindKeepalive:
			if !natt || len(b) != 1 || b[0] != 0xff {
				t.Fatalf("keepalive: %x", b)
			}
		case KindESP:
			if !natt || len(b) < 4 || fr.SPI == 0 || fr.SPI != binary.BigEndian.Uint32(b) {
				t.Fatalf("ESP SPI %#x from %x", fr.SPI, b)
			}
		case KindIKE:
			if fr.Marker != natt {
				t.Fatalf("marker %v on ports %d→%d", fr.Marker, src, dst)
			}
			want := b
			if natt {
				if len(b) < 4 || binary.BigEndian.Uint32(b) != 0 {
					t.Fatalf("IKE on NAT-T without the marker: %x", b)
				}
				want = b[4:]
			}
			if !bytes.Equal(fr.IKE, want) {
				t.Fatal("IKE bytes are not the payload after the marker")
			}
			if m, err := Decode(fr.IKE); err == nil {
				exercise(m)
			}
		case KindInvalid:
			if !natt || fr.Reason == "" {
				t.Fatalf("invalid without reason on %d→%d", src, dst)
			}
		default:
			t.Fatalf("kind %d", fr.Kind)
		}
	})
}

// TestWriteHandMadeSeeds writes the hand-made messages and a few edge
// cases into testdata/fuzz/FuzzDecode. It runs only when
// IKE_WRITE_FUZZ_SEEDS is set.
func TestWriteHandMadeSeeds(t *testing.T) {
	if os.Getenv("IKE_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set IKE_WRITE_FUZZ_SEEDS=1 to rewrite the hand-made seeds in testdata/fuzz")
	}
	seeds := handMadeMessages(t)
	v1 := Header{MajorVersion: 1, Exchange: ExchangeV1Aggressive, Length: HeaderLen}
	critical := buildMessage(ExchangeIKESAInit, FlagInitiator, 0, rawPayload{t: 200, body: []byte{1}})
	critical[HeaderLen+1] = 0x80
	var many []rawPayload
	for range MaxPayloads {
		many = append(many, rawPayload{t: PayloadVendorID})
	}
	seeds = append(seeds,
		buildMessage(ExchangeInformational, FlagResponse, 7), // no payloads
		v1.AppendTo(nil),
		critical,
		buildMessage(ExchangeInformational, 0, 1, many...),
		buildMessage(ExchangeIKEAuth, 0, 1, rawPayload{t: PayloadEncryptedFragment, body: unhex(t, "0000 0000")}),
	)
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, b := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("handmade-%02d", i+1)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
