package ike

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// rawPayload is a payload given as type and body bytes, for building
// messages (including malformed ones) by hand.
type rawPayload struct {
	t    PayloadType
	np   PayloadType // used only by SK/SKF, whose Next Payload is the inner type
	body []byte
}

// buildMessage assembles an IKEv2 message around hand-made payload bodies.
func buildMessage(exch ExchangeType, flags Flags, mid uint32, ps ...rawPayload) []byte {
	h := Header{MajorVersion: 2, Exchange: exch, Flags: flags, MessageID: mid}
	copy(h.SPIi[:], "\x11\x22\x33\x44\x55\x66\x77\x88")
	if len(ps) > 0 {
		h.NextPayload = ps[0].t
	}
	b := h.AppendTo(nil)
	for i, p := range ps {
		np := p.np
		if p.t != PayloadEncrypted && p.t != PayloadEncryptedFragment {
			np = PayloadNone
			if i+1 < len(ps) {
				np = ps[i+1].t
			}
		}
		b = append(b, byte(np), 0)
		b = binary.BigEndian.AppendUint16(b, uint16(4+len(p.body)))
		b = append(b, p.body...)
	}
	binary.BigEndian.PutUint32(b[24:], uint32(len(b)))
	return b
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustRoundTrip decodes b, checks that encoding gives b back byte for
// byte and that decoding the encoding gives an equal message.
func mustRoundTrip(t *testing.T, b []byte) *Message {
	t.Helper()
	m, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	enc := m.Encode()
	if !bytes.Equal(enc, b) {
		t.Fatalf("Encode differs from input\n got %x\nwant %x", enc, b)
	}
	m2, err := Decode(enc)
	if err != nil {
		t.Fatalf("Decode(Encode): %v", err)
	}
	if !reflect.DeepEqual(m, m2) {
		t.Fatalf("Decode(Encode(m)) != m")
	}
	return m
}

// An SA with two proposals: IKE with TV key lengths, ESP with a 4-byte SPI,
// a TLV attribute and non-zero reserved bytes, which must all survive.
const saTwoProposals = `
02 00 002c 01 01 00 04
   03 00 000c 01 00 000c 800e0100
   03 00 0008 02 00 0005
   03 00 0008 03 00 000c
   00 00 0008 04 00 000e
00 07 002e 02 03 04 03 cafef00d
   03 00 000c 01 00 0014 800e0100
   03 00 000e 04 00 0000 00200002abcd
   00 09 0008 05 01 0000
`

func TestSAFields(t *testing.T) {
	body := unhex(t, saTwoProposals)
	m := mustRoundTrip(t, buildMessage(ExchangeIKESAInit, FlagInitiator, 0, rawPayload{t: PayloadSA, body: body}))
	sa := m.SA()
	if sa == nil || len(sa.Proposals) != 2 {
		t.Fatalf("SA = %+v", sa)
	}
	p1, p2 := sa.Proposals[0], sa.Proposals[1]
	if p1.LastSubstruc != MoreProposals || p1.Number != 1 || p1.Protocol != ProtocolIKE || len(p1.SPI) != 0 || len(p1.Transforms) != 4 {
		t.Errorf("proposal 1 = %+v", p1)
	}
	if p2.LastSubstruc != LastSubstruc || p2.Reserved != 7 || p2.Number != 2 || p2.Protocol != ProtocolESP ||
		!bytes.Equal(p2.SPI, []byte{0xca, 0xfe, 0xf0, 0x0d}) || len(p2.Transforms) != 3 {
		t.Errorf("proposal 2 = %+v", p2)
	}
	if got := p1.Suite().String(); got != "ENCR_AES_CBC-256/PRF_HMAC_SHA2_256/AUTH_HMAC_SHA2_256_128/MODP_2048" {
		t.Errorf("suite = %q", got)
	}
	tlv := p2.Transforms[1]
	if len(tlv.Attributes) != 1 || tlv.Attributes[0].TV || tlv.Attributes[0].Type != 0x20 || !bytes.Equal(tlv.Attributes[0].Value, []byte{0xab, 0xcd}) {
		t.Errorf("TLV attribute = %+v", tlv.Attributes)
	}
	esn := p2.Transforms[2]
	if esn.Reserved1 != 9 || esn.Reserved2 != 1 || esn.Type != TransformESN {
		t.Errorf("ESN transform = %+v", esn)
	}
	if kl, ok := p2.Transforms[0].KeyLength(); !ok || kl != 256 {
		t.Errorf("GCM key length = %d, %v", kl, ok)
	}
	if _, err := sa.Chosen(); err == nil {
		t.Errorf("Chosen accepted an offer of 2 proposals")
	}

	// SetMarkers rewrites the markers as RFC 7296 prescribes.
	sa.Proposals[0].Transforms[3].LastSubstruc = 3
	sa.SetMarkers()
	if sa.Proposals[0].Transforms[3].LastSubstruc != 0 || sa.Proposals[0].Transforms[0].LastSubstruc != 3 ||
		sa.Proposals[0].LastSubstruc != 2 || sa.Proposals[1].LastSubstruc != 0 {
		t.Errorf("SetMarkers left %+v", sa.Proposals)
	}
}

func TestChosen(t *testing.T) {
	body := unhex(t, `00 00 002c 01 01 00 04
	   03 00 000c 01 00 000c 800e0080
	   03 00 0008 02 00 0002
	   03 00 0008 03 00 0002
	   00 00 0008 04 00 0002`)
	m := mustRoundTrip(t, buildMessage(ExchangeIKESAInit, FlagResponse, 0, rawPayload{t: PayloadSA, body: body}))
	p, err := m.SA().Chosen()
	if err != nil {
		t.Fatal(err)
	}
	s := p.Suite()
	if s.Encr != EncrAESCBC || s.KeyLength != 128 || s.PRF != PRFHMACSHA1 || s.Integ != IntegHMACSHA1_96 || s.DH != GroupMODP1024 {
		t.Errorf("suite = %+v", s)
	}
	v := p.Strength()
	if v.Strength != Weak || len(v.Reasons) != 4 {
		t.Errorf("verdict = %+v", v)
	}
	// Two ENCR transforms are an offer, not a choice.
	p.Transforms[1].Type = TransformENCR
	if _, err := m.SA().Chosen(); !errors.Is(err, ErrMalformed) {
		t.Errorf("Chosen with two ENCR: %v", err)
	}
}

func TestTypedPayloads(t *testing.T) {
	ts := `02 010203
	  07 06 0010 0000 ffff 0a000000 0a0000ff
	  08 11 0028 01bb 01bb 20010db8000000000000000000000001 20010db8000000000000000000000002`
	m := mustRoundTrip(t, buildMessage(ExchangeIKEAuth, FlagInitiator, 1,
		rawPayload{t: PayloadIDi, body: unhex(t, "02 000000 76706e2e6578616d706c65")}, // "vpn.example"
		rawPayload{t: PayloadIDr, body: unhex(t, "01 000000 c0000201")},
		rawPayload{t: PayloadCERT, body: unhex(t, "04 3003020100")},
		rawPayload{t: PayloadCERTREQ, body: unhex(t, "04"+strings.Repeat("ab", 40))},
		rawPayload{t: PayloadAUTH, body: unhex(t, "0e 000000 0102030405")},
		rawPayload{t: PayloadCP, body: unhex(t, "01 000000 0001 0000 0003 0000 8008 0011 20010db8000000000000000000000001 40 0019 0004 74657374")},
		rawPayload{t: PayloadSA, body: unhex(t, "00 00 0014 01 03 04 01 01020304 00 00 0008 01 00 0014")},
		rawPayload{t: PayloadTSi, body: unhex(t, ts)},
		rawPayload{t: PayloadTSr, body: unhex(t, "01 000000 0a 00 0008 61626364")},
		rawPayload{t: PayloadNotify, body: unhex(t, "03 04 4009 01020304")}, // REKEY_SA with an ESP SPI
		rawPayload{t: PayloadNotify, body: unhex(t, "00 00 0011 000e")},     // INVALID_KE_PAYLOAD, group 14
		rawPayload{t: PayloadDelete, body: unhex(t, "03 04 0002 0102030405060708")},
		rawPayload{t: PayloadVendorID, body: []byte("FLEXVPN-SUPPORTED")},
		rawPayload{t: PayloadEAP, body: unhex(t, "02 07 000a 01 757365723a")},
		rawPayload{t: PayloadKE, body: unhex(t, "0013 0000 "+strings.Repeat("42", 64))},
		rawPayload{t: PayloadNonce, body: unhex(t, strings.Repeat("99", 32))},
		rawPayload{t: PayloadGSPM, body: unhex(t, "0102")},
		rawPayload{t: 200, body: unhex(t, "ff")}, // private use, not critical: kept raw
	))
	want := []PayloadType{PayloadIDi, PayloadIDr, PayloadCERT, PayloadCERTREQ, PayloadAUTH, PayloadCP, PayloadSA,
		PayloadTSi, PayloadTSr, PayloadNotify, PayloadNotify, PayloadDelete, PayloadVendorID, PayloadEAP, PayloadKE,
		PayloadNonce, PayloadGSPM, 200}
	if got := m.PayloadTypes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("PayloadTypes = %v", got)
	}
	body := func(i int) Body { return m.Payloads[i].Body }

	if id := body(0).(*ID); id.Type != IDFQDN || id.String() != "vpn.example" {
		t.Errorf("IDi = %+v %q", id, id.String())
	}
	if id := body(1).(*ID); id.String() != "192.0.2.1" {
		t.Errorf("IDr = %q", id.String())
	}
	if c := body(2).(*Cert); c.Encoding != CertX509Signature || len(c.Data) != 5 {
		t.Errorf("CERT = %+v", c)
	}
	if cr := body(3).(*CertReq); len(cr.CAHashes()) != 2 {
		t.Errorf("CERTREQ hashes = %d", len(cr.CAHashes()))
	}
	if a := body(4).(*Auth); a.Method != AuthDigitalSignature || len(a.Data) != 5 {
		t.Errorf("AUTH = %+v", a)
	}
	cp := body(5).(*CP)
	if cp.Type != CFGRequest || len(cp.Attributes) != 4 {
		t.Fatalf("CP = %+v", cp)
	}
	if a := cp.Attributes[2]; !a.R || a.Type != CPInternalIP6Address || a.String() != "INTERNAL_IP6_ADDRESS=2001:db8::1/64" {
		t.Errorf("CP attribute 3 = %+v %q", a, a.String())
	}
	if s := cp.Attributes[3].String(); s != "INTERNAL_DNS_DOMAIN=test" {
		t.Errorf("CP attribute 4 = %q", s)
	}
	tsi := body(7).(*TS)
	if len(tsi.Selectors) != 2 || tsi.Reserved != [3]byte{1, 2, 3} {
		t.Fatalf("TSi = %+v", tsi)
	}
	s0, s1 := tsi.Selectors[0], tsi.Selectors[1]
	if s0.Type != TSIPv4AddrRange || s0.IPProtocol != 6 || s0.StartAddr != netip.MustParseAddr("10.0.0.0") ||
		s0.EndAddr != netip.MustParseAddr("10.0.0.255") || s0.EndPort != 0xffff {
		t.Errorf("TS 1 = %+v", s0)
	}
	if s1.String() != "2001:db8::1-2001:db8::2 proto 17 port 443-443" {
		t.Errorf("TS 2 = %q", s1.String())
	}
	if sel := body(8).(*TS).Selectors[0]; sel.Type != TSSecLabel || string(sel.Data) != "abcd" {
		t.Errorf("TSr = %+v", sel)
	}
	if n := body(9).(*Notify); n.Type != NotifyRekeySA || n.Protocol != ProtocolESP || len(n.SPI) != 4 || len(n.Data) != 0 {
		t.Errorf("Notify = %+v", n)
	}
	if g, ok := body(10).(*Notify).AcceptedGroup(); !ok || g != GroupMODP2048 {
		t.Errorf("AcceptedGroup = %v, %v", g, ok)
	}
	d := body(11).(*Delete)
	if d.Protocol != ProtocolESP || d.NumSPIs != 2 || !bytes.Equal(d.SPI(1), []byte{5, 6, 7, 8}) || d.SPI(2) != nil {
		t.Errorf("Delete = %+v", d)
	}
	if v := body(12).(*VendorID); v.Name() != "FLEXVPN-SUPPORTED" {
		t.Errorf("VID name = %q", v.Name())
	}
	if e := body(13).(*EAP); e.Code != EAPResponse || e.Identifier != 7 || e.Type != 1 || string(e.Data) != "user:" {
		t.Errorf("EAP = %+v", e)
	}
	if k := m.KE(); k.Group != GroupECP256 || len(k.Data) != 64 {
		t.Errorf("KE = %+v", k)
	}
	if _, ok := body(16).(Raw); !ok {
		t.Errorf("GSPM body is %T", body(16))
	}
	if _, ok := body(17).(Raw); !ok {
		t.Errorf("private-use body is %T", body(17))
	}
	if len(m.Notifies()) != 2 || !m.HasNotify(NotifyInvalidKEPayload) || m.HasNotify(NotifyCookie) {
		t.Errorf("Notifies = %v", m.Notifies())
	}
}

func TestEAPForms(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		ok         bool
	}{
		{"success", "03 05 0004", true},
		{"failure", "04 05 0004", true},
		{"request without type", "01 05 0004", false},
		{"success with data", "03 05 0005 00", false},
		{"length mismatch", "01 05 0009 01 00", false},
		{"unknown code raw", "09 01 0006 abcd", true},
		{"request type only", "01 01 0005 04", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := buildMessage(ExchangeIKEAuth, FlagInitiator, 1, rawPayload{t: PayloadEAP, body: unhex(t, tc.body)})
			if !tc.ok {
				if _, err := Decode(b); err == nil {
					t.Fatal("decoded a malformed EAP payload")
				}
				return
			}
			mustRoundTrip(t, b)
		})
	}
}

func TestSKAndSKF(t *testing.T) {
	m := mustRoundTrip(t, buildMessage(ExchangeIKEAuth, FlagInitiator, 4,
		rawPayload{t: PayloadEncryptedFragment, np: PayloadIDi, body: unhex(t, "0001 0007 "+strings.Repeat("ee", 40))}))
	f := m.Fragment()
	if f == nil || f.Number != 1 || f.Total != 7 || f.NextPayload != PayloadIDi {
		t.Fatalf("SKF = %+v", f)
	}
	if got := m.Summary(); got != "IKE_AUTH request 4 [ SKF(1/7) ]" {
		t.Errorf("Summary = %q", got)
	}
	m = mustRoundTrip(t, buildMessage(ExchangeInformational, FlagResponse, 9,
		rawPayload{t: PayloadEncrypted, np: PayloadNone, body: unhex(t, strings.Repeat("ee", 32))}))
	if m.Fragment() != nil || m.Payloads[0].Body.(*Encrypted).NextPayload != PayloadNone {
		t.Errorf("SK = %+v", m.Payloads[0])
	}
}

// TestDecodeErrors checks that malformed input fails with the right
// sentinel and a message naming the payload and the fault.
func TestDecodeErrors(t *testing.T) {
	sa := func(s string) []byte {
		return buildMessage(ExchangeIKESAInit, FlagInitiator, 0, rawPayload{t: PayloadSA, body: unhex(t, s)})
	}
	for _, tc := range []struct {
		name  string
		msg   []byte
		err   error
		words []string
	}{
		{"empty SA", sa(""), ErrMalformed, []string{"SA", "no proposals"}},
		{"proposal header short", sa("00 00 0008 01 01"), ErrShort, []string{"proposal 1", "8-byte header"}},
		{"proposal too long", sa("00 00 0010 01 01 00 00"), ErrLength, []string{"proposal 1", "Proposal Length 16"}},
		{"SPI past proposal", sa("00 00 0008 01 03 04 00"), ErrLength, []string{"SPI Size 4"}},
		{"transform count too high", sa("00 00 0010 01 01 00 02 00 00 0008 01 00 000c"), ErrLength, []string{"Num Transforms 2"}},
		{"transform count too low", sa("00 00 0018 01 01 00 01 03 00 0008 01 00 000c 00 00 0008 02 00 0002"), ErrLength, []string{"8 bytes after the 1 transforms"}},
		{"transform length short", sa("00 00 0010 01 01 00 01 00 00 0006 01 00 000c"), ErrLength, []string{"transform 1 of 1", "Transform Length 6"}},
		{"attribute past transform", sa("00 00 0014 01 01 00 01 00 00 000c 01 00 000c 000e 0004"), ErrLength, []string{"transform 1 of 1 (ENCR)", "attribute 1", "Attribute Length 4"}},
		{"attribute header short", sa("00 00 0012 01 01 00 01 00 00 000a 01 00 000c 800e"), ErrShort, []string{"attribute 1", "4-byte header"}},
		{"KE short", buildMessage(ExchangeIKESAInit, 8, 0, rawPayload{t: PayloadKE, body: unhex(t, "0002")}), ErrShort, []string{"(KE)", "KE body of 2 bytes"}},
		{"notify SPI too long", buildMessage(ExchangeInformational, 8, 0, rawPayload{t: PayloadNotify, body: unhex(t, "03 08 4005 0102")}), ErrLength, []string{"(N)", "SPI Size 8"}},
		{"delete count mismatch", buildMessage(ExchangeInformational, 8, 0, rawPayload{t: PayloadDelete, body: unhex(t, "03 04 0003 0102030405060708")}), ErrLength, []string{"Delete", "3 SPIs of 4 bytes"}},
		{"delete zero size with count", buildMessage(ExchangeInformational, 8, 0, rawPayload{t: PayloadDelete, body: unhex(t, "01 00 0001")}), nil, nil},
		{"TS count too high", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadTSi, body: unhex(t, "02 000000 07 00 0010 0000ffff 00000000 ffffffff")}), ErrShort, []string{"selector 2 of 2"}},
		{"TS bad IPv4 length", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadTSi, body: unhex(t, "01 000000 07 00 0014 0000ffff 00000000 ffffffff 00000000")}), ErrLength, []string{"selector 1 of 1 (TS_IPV4_ADDR_RANGE)", "must be 16"}},
		{"TS trailing bytes", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadTSi, body: unhex(t, "01 000000 07 00 0010 0000ffff 00000000 ffffffff 00")}), ErrLength, []string{"1 bytes after the 1 selectors"}},
		{"CP attribute too long", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadCP, body: unhex(t, "01 000000 0001 0008 0a000001")}), ErrLength, []string{"CP attribute 1 (INTERNAL_IP4_ADDRESS)", "Length 8"}},
		{"ID short", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadIDi, body: unhex(t, "02")}), ErrShort, []string{"(IDi)"}},
		{"AUTH short", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadAUTH, body: unhex(t, "0100")}), ErrShort, []string{"(AUTH)"}},
		{"CERT empty", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadCERT}), ErrShort, []string{"(CERT)"}},
		{"SKF number zero", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadEncryptedFragment, np: 35, body: unhex(t, "0000 0002 00")}), ErrMalformed, []string{"SKF fragment 0 of 2"}},
		{"SKF number above total", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadEncryptedFragment, body: unhex(t, "0003 0002 00")}), ErrMalformed, []string{"SKF fragment 3 of 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.msg)
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				mustRoundTrip(t, tc.msg)
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestCriticalBit(t *testing.T) {
	b := buildMessage(ExchangeIKESAInit, 8, 0, rawPayload{t: 200, body: []byte{1}})
	b[HeaderLen+1] = 0x80
	var uc *UnsupportedCriticalError
	if _, err := Decode(b); !errors.As(err, &uc) || uc.Type != 200 || !errors.Is(err, ErrCritical) {
		t.Fatalf("critical unknown payload: %v", err)
	}
	// A critical payload of a registered type the codec keeps raw is fine.
	b = buildMessage(ExchangeIKESAInit, 8, 0, rawPayload{t: PayloadPS, body: []byte{1}})
	b[HeaderLen+1] = 0x80
	m := mustRoundTrip(t, b)
	if !m.Payloads[0].Critical {
		t.Error("critical bit lost")
	}
}

func TestBoundedCounts(t *testing.T) {
	// MaxProposals + 1 minimal proposals.
	var sa []byte
	for i := 0; i <= MaxProposals; i++ {
		sa = append(sa, 2, 0, 0, 8, byte(i), 1, 0, 0)
	}
	_, err := Decode(buildMessage(ExchangeIKESAInit, 8, 0, rawPayload{t: PayloadSA, body: sa}))
	if !errors.Is(err, ErrTooMany) {
		t.Errorf("%d proposals: %v", MaxProposals+1, err)
	}
	// MaxAttributes + 1 attributes on one transform.
	attrs := bytes.Repeat([]byte{0x80, 0x0e, 0, 128}, MaxAttributes+1)
	tr := append([]byte{0, 0, 0, byte(8 + len(attrs)), 1, 0, 0, 12}, attrs...)
	prop := append([]byte{0, 0, 0, byte(8 + len(tr)), 1, 1, 0, 1}, tr...)
	_, err = Decode(buildMessage(ExchangeIKESAInit, 8, 0, rawPayload{t: PayloadSA, body: prop}))
	if !errors.Is(err, ErrTooMany) {
		t.Errorf("%d attributes: %v", MaxAttributes+1, err)
	}
	cp := []byte{1, 0, 0, 0}
	for i := 0; i <= MaxConfigAttributes; i++ {
		cp = append(cp, 0, 1, 0, 0)
	}
	_, err = Decode(buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadCP, body: cp}))
	if !errors.Is(err, ErrTooMany) {
		t.Errorf("%d CP attributes: %v", MaxConfigAttributes+1, err)
	}
}

func TestHeaderHelpers(t *testing.T) {
	for _, tc := range []struct {
		flags                    Flags
		req, resp, init, v1check bool
	}{
		{0x08, true, false, true, false},
		{0x20, false, true, false, false},
		{0x00, true, false, false, false},
		{0x28, false, true, true, false},
	} {
		h := Header{Flags: tc.flags, MajorVersion: 2}
		if !h.Flags.Response() != tc.req || h.Flags.Response() != tc.resp || h.Flags.Initiator() != tc.init {
			t.Errorf("flags %#x: request %v response %v initiator %v", tc.flags, !h.Flags.Response(), h.Flags.Response(), h.Flags.Initiator())
		}
	}
	v1 := Header{MajorVersion: 1, Exchange: 2}
	v2 := Header{MajorVersion: 2, Exchange: 34}
	if ExchangeName(v1) != "Identity Protection (Main Mode)" || ExchangeName(v2) != "IKE_SA_INIT" {
		t.Errorf("ExchangeName: %q %q", ExchangeName(v1), ExchangeName(v2))
	}
	b := v1.AppendTo(nil)
	if !IsIKEv1(b) || IsIKEv1(v2.AppendTo(nil)) || IsIKEv1(b[:27]) {
		t.Error("IsIKEv1")
	}
	b[27] = HeaderLen
	m, err := Decode(b)
	if err != nil || !m.IsIKEv1() || m.Payloads != nil {
		t.Errorf("IKEv1 header: %v %+v", err, m)
	}
	if !strings.HasPrefix(m.Summary(), "Identity Protection (Main Mode) (IKEv1)") {
		t.Errorf("IKEv1 summary %q", m.Summary())
	}
}

// TestEncodeBuilt checks that bodies built by hand (not decoded) encode
// without panicking, including zero values.
func TestEncodeBuilt(t *testing.T) {
	m := &Message{Header: Header{MajorVersion: 2, Exchange: ExchangeIKEAuth}}
	for _, b := range []Body{
		&SA{Proposals: []Proposal{{Number: 1, Protocol: ProtocolESP, Transforms: []Transform{{Type: TransformENCR, ID: 12, Attributes: []Attribute{{Type: AttrKeyLength, TV: true}}}}}}},
		&TS{Selectors: []TrafficSelector{{Type: TSIPv4AddrRange}, {Type: TSIPv6AddrRange, StartAddr: netip.MustParseAddr("10.0.0.1")}, {Type: 99}}},
		&EAP{Code: EAPSuccess}, &EAP{Code: EAPRequest, Type: 1}, &KE{}, &Notify{}, &Delete{}, &ID{}, &Auth{}, &CP{},
		&Cert{}, &CertReq{}, &Nonce{}, &VendorID{}, Raw(nil), &EncryptedFragment{Number: 1, Total: 1},
	} {
		m.Payloads = append(m.Payloads, Payload{Type: bodyType(b), Body: b})
	}
	// SK/SKF must come last; drop the SKF for the middle of the chain test.
	m.Payloads = m.Payloads[:len(m.Payloads)-1]
	if _, err := Decode(m.Encode()); err != nil {
		t.Fatalf("built message does not decode: %v", err)
	}
}

func bodyType(b Body) PayloadType {
	switch b.(type) {
	case *SA:
		return PayloadSA
	case *TS:
		return PayloadTSi
	case *EAP:
		return PayloadEAP
	case *KE:
		return PayloadKE
	case *Notify:
		return PayloadNotify
	case *Delete:
		return PayloadDelete
	case *ID:
		return PayloadIDi
	case *Auth:
		return PayloadAUTH
	case *CP:
		return PayloadCP
	case *Cert:
		return PayloadCERT
	case *CertReq:
		return PayloadCERTREQ
	case *Nonce:
		return PayloadNonce
	case *VendorID:
		return PayloadVendorID
	case *EncryptedFragment:
		return PayloadEncryptedFragment
	}
	return PayloadGSPM
}

// TestTrailingBytesKept: bytes after the last payload that the header's
// Length covers cost nothing but a noted quirk; the notify before them
// still says which group the responder wants.
func TestTrailingBytesKept(t *testing.T) {
	b := buildMessage(ExchangeIKESAInit, FlagResponse, 0,
		rawPayload{t: PayloadNotify, body: unhex(t, "00 00 0011 000e")})
	b = append(b, 0, 0)
	binary.BigEndian.PutUint32(b[24:], uint32(len(b)))
	m := mustRoundTrip(t, b)
	if len(m.Payloads) != 1 || len(m.Trailing) != 2 {
		t.Fatalf("payloads %v trailing %x", m.PayloadTypes(), m.Trailing)
	}
	if g, ok := m.Notify(NotifyInvalidKEPayload).AcceptedGroup(); !ok || g != 14 {
		t.Errorf("accepted group %v %v, want 14", g, ok)
	}
	if q := m.Quirks(); len(q) != 1 || !strings.Contains(q[0], "2 byte(s) after the last payload") {
		t.Errorf("quirks %q", q)
	}
	// An inner chain (decrypted SK contents) stays strict.
	if _, err := DecodePayloads(PayloadNotify, append(unhex(t, "00 00 000a 00 00 0011 000e"), 0, 0)); !errors.Is(err, ErrLength) {
		t.Errorf("DecodePayloads with trailing bytes: %v, want ErrLength", err)
	}
}
