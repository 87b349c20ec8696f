package ike

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{PayloadSA.String(), "SA"},
		{PayloadNotify.String(), "N"},
		{PayloadNonce.String(), "Nonce"},
		{PayloadEncryptedFragment.String(), "SKF"},
		{PayloadPS.String(), "PS"},
		{PayloadType(99).String(), "PAYLOAD(99)"},
		{PayloadEncrypted.FullName(), "Encrypted and Authenticated"},
		{ExchangeIKESAInit.String(), "IKE_SA_INIT"},
		{ExchangeIKEIntermediate.String(), "IKE_INTERMEDIATE"},
		{ExchangeIKEFollowupKE.String(), "IKE_FOLLOWUP_KE"},
		{ExchangeType(2).String(), "EXCHANGE(2)"},
		{ExchangeType(2).IKEv1String(), "Identity Protection (Main Mode)"},
		{ExchangeType(4).IKEv1String(), "Aggressive"},
		{ExchangeType(5).IKEv1String(), "Informational"},
		{ExchangeType(32).IKEv1String(), "Quick Mode"},
		{NotifyType(14).String(), "NO_PROPOSAL_CHOSEN"},
		{NotifyType(17).String(), "INVALID_KE_PAYLOAD"},
		{NotifyType(24).String(), "AUTHENTICATION_FAILED"},
		{NotifyType(16388).String(), "NAT_DETECTION_SOURCE_IP"},
		{NotifyType(16389).String(), "NAT_DETECTION_DESTINATION_IP"},
		{NotifyType(16390).String(), "COOKIE"},
		{NotifyType(16404).String(), "MULTIPLE_AUTH_SUPPORTED"},
		{NotifyType(16406).String(), "REDIRECT_SUPPORTED"},
		{NotifyType(16407).String(), "REDIRECT"},
		{NotifyType(16408).String(), "REDIRECTED_FROM"},
		{NotifyType(16430).String(), "IKEV2_FRAGMENTATION_SUPPORTED"},
		{NotifyType(16431).String(), "SIGNATURE_HASH_ALGORITHMS"},
		{NotifyType(16441).String(), "ADDITIONAL_KEY_EXCHANGE"},
		{NotifyType(16442).String(), "USE_AGGFRAG"},
		{NotifyType(12345).String(), "NOTIFY(12345)"},
		{TransformENCR.String(), "ENCR"},
		{TransformType(6).String(), "ADDKE1"},
		{Encr3DES.String(), "ENCR_3DES"},
		{EncrAESCBC.String(), "ENCR_AES_CBC"},
		{EncrAESGCM16.String(), "ENCR_AES_GCM_16"},
		{EncrChaCha20Poly1305.String(), "ENCR_CHACHA20_POLY1305"},
		{PRFHMACSHA2_256.String(), "PRF_HMAC_SHA2_256"},
		{IntegHMACSHA2_384192.String(), "AUTH_HMAC_SHA2_384_192"},
		{GroupMODP1024.String(), "MODP_1024"},
		{DHGroup(28).String(), "BRAINPOOL_P256R1"},
		{GroupCurve25519.String(), "CURVE25519"},
		{GroupMLKEM768.String(), "ML_KEM_768"},
		{DHGroup(1000).String(), "KE(1000)"},
		{ESNID(1).String(), "ESN"},
		{IDDERASN1DN.String(), "ID_DER_ASN1_DN"},
		{CertX509Signature.String(), "X.509 Certificate - Signature"},
		{AuthSharedKeyMIC.String(), "Shared Key Message Integrity Code"},
		{TSIPv6AddrRange.String(), "TS_IPV6_ADDR_RANGE"},
		{CFGReply.String(), "CFG_REPLY"},
		{CPInternalIP4Address.String(), "INTERNAL_IP4_ADDRESS"},
		{ProtocolESP.String(), "ESP"},
		{EAPSuccess.String(), "Success"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if !NotifyNoProposalChosen.IsError() || NotifyCookie.IsError() {
		t.Error("IsError")
	}
	if !EncrAESGCM16.IsAEAD() || EncrAESCBC.IsAEAD() {
		t.Error("IsAEAD")
	}
}

func TestVendorIDName(t *testing.T) {
	for hexs, want := range map[string]string{
		"4048b7d56ebce88525e7de7f00d6c2d3c0000000": "Cisco Fragmentation",
		"1e2b516905991c7d7c96fcbfb587e46100000009": "MS NT5 ISAKMPOAKLEY",
		"882fe56d6fd20dbc2251613b2ebe5beb":         "strongSwan",
		"434953434f2d44454c4554452d524541534f4e":   "CISCO-DELETE-REASON",
		"c61baca1f1a60cc10800000000000000":         "",
	} {
		v := &VendorID{Data: unhex(t, hexs)}
		if got := v.Name(); got != want {
			t.Errorf("%s: %q, want %q", hexs, got, want)
		}
	}
}

func transforms(ts ...Transform) Proposal {
	return Proposal{Number: 1, Protocol: ProtocolIKE, Transforms: ts}
}

func tr(typ TransformType, id uint16, keylen ...int) Transform {
	t := Transform{Type: typ, ID: id}
	for _, k := range keylen {
		t.Attributes = append(t.Attributes, Attribute{Type: AttrKeyLength, TV: true, Value: []byte{byte(k >> 8), byte(k)}})
	}
	return t
}

func TestStrength(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     Proposal
		want  Strength
		words []string
	}{
		{"windows default", transforms(tr(1, 3), tr(3, 2), tr(2, 2), tr(4, 2)), Weak,
			[]string{"ENCR_3DES: weak", "AUTH_HMAC_SHA1_96: weak", "PRF_HMAC_SHA1: weak", "DH group 2 (MODP_1024): weak"}},
		{"baseline", transforms(tr(1, 12, 128), tr(2, 5), tr(3, 12), tr(4, 14)), Acceptable,
			[]string{"ENCR_AES_CBC-128: acceptable", "DH group 14 (MODP_2048): acceptable"}},
		{"gcm", transforms(tr(1, 20, 256), tr(2, 7), tr(4, 19)), Strong, []string{"ENCR_AES_GCM_16-256: strong (AEAD)"}},
		{"aes256 sha384", transforms(tr(1, 12, 256), tr(2, 6), tr(3, 13), tr(4, 20)), Strong, nil},
		{"aes256 sha256", transforms(tr(1, 12, 256), tr(2, 5), tr(3, 12), tr(4, 31)), Acceptable, nil},
		{"only dh weak", transforms(tr(1, 12, 256), tr(2, 5), tr(3, 12), tr(4, 2)), Weak, []string{"MODP_1024"}},
		{"null encryption", transforms(tr(1, 11), tr(2, 5), tr(3, 12), tr(4, 14)), Weak, []string{"ENCR_NULL: weak (no encryption)"}},
		{"md5 prf", transforms(tr(1, 12, 128), tr(2, 1), tr(3, 12), tr(4, 14)), Weak, []string{"PRF_HMAC_MD5: weak"}},
		{"no integ for cbc", transforms(tr(1, 12, 128), tr(2, 5), tr(4, 14)), Weak, []string{"no INTEG transform"}},
		{"aes without key length", transforms(tr(1, 12), tr(2, 5), tr(3, 12), tr(4, 14)), Unknown, []string{"no Key Length"}},
		{"unknown group", transforms(tr(1, 20, 128), tr(2, 5), tr(4, 999)), Unknown, []string{"KE(999)"}},
		{"weak beats unknown", transforms(tr(1, 3), tr(2, 5), tr(3, 12), tr(4, 999)), Weak, nil},
		{"modp with small subgroup", transforms(tr(1, 20, 128), tr(2, 5), tr(4, 22)), Weak, []string{"DH group 22"}},
		{"addke does not lower", transforms(tr(1, 20, 256), tr(2, 7), tr(4, 20), tr(6, 35)), Strong, []string{"ADDKE1 ML_KEM_512"}},
		{"missing KE", transforms(tr(1, 20, 256), tr(2, 7)), Unknown, []string{"no KE transform"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.p.Strength()
			if v.Strength != tc.want {
				t.Errorf("strength %s, want %s (%v)", v.Strength, tc.want, v.Reasons)
			}
			all := strings.Join(v.Reasons, "; ")
			for _, w := range tc.words {
				if !strings.Contains(all, w) {
					t.Errorf("reasons %q lack %q", all, w)
				}
			}
		})
	}
	esp := Proposal{Protocol: ProtocolESP, Transforms: []Transform{tr(1, 20, 256), tr(4, 0), tr(5, 0)}}
	if v := esp.Strength(); v.Strength != Strong {
		t.Errorf("ESP GCM without PFS: %+v", v)
	}
}

func TestFormatID(t *testing.T) {
	dn, err := asn1.Marshal(pkix.Name{CommonName: "vpn.example.com", Organization: []string{"Example"}}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		t    IDType
		data []byte
		want string
	}{
		{IDIPv4Addr, []byte{198, 51, 100, 7}, "198.51.100.7"},
		{IDIPv6Addr, unhex(t, "20010db8000000000000000000000001"), "2001:db8::1"},
		{IDFQDN, []byte("gw.example.net"), "gw.example.net"},
		{IDRFC822Addr, []byte("alice@example.net"), "alice@example.net"},
		{IDRFC822Addr, []byte("a\x1bb"), `"a\x1bb"`},
		{IDDERASN1DN, dn, "CN=vpn.example.com,O=Example"},
		{IDKeyID, []byte{1, 2}, "0102"},
		{IDNull, nil, "(null)"},
		{IDIPv4Addr, []byte{1, 2, 3}, "ID_IPV4_ADDR(3 bytes: 010203)"},
		{IDDERASN1DN, []byte{0x30, 0x05}, "ID_DER_ASN1_DN(2 bytes: 3005)"},
	} {
		if got := FormatID(tc.t, tc.data); got != tc.want {
			t.Errorf("FormatID(%s, %x) = %q, want %q", tc.t, tc.data, got, tc.want)
		}
	}
}

func TestCertSubject(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0x4242),
		Subject:      pkix.Name{CommonName: "client1", Organization: []string{"Example VPN"}},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(1<<31, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{Encoding: CertX509Signature, Data: der}
	if s, err := c.Subject(); err != nil || s != "CN=client1,O=Example VPN" {
		t.Fatalf("Subject = %q, %v", s, err)
	}
	// Make the serial negative: crypto/x509 refuses the certificate, the
	// fallback still finds the subject.
	i := strings.Index(string(der), "\x02\x02\x42\x42")
	if i < 0 {
		t.Fatal("serial not found")
	}
	bad := append([]byte(nil), der...)
	bad[i+2] = 0xc2
	if _, err := x509.ParseCertificate(bad); err == nil {
		t.Skip("crypto/x509 accepts negative serials here")
	}
	if s, err := CertSubject(bad); err != nil || s != "CN=client1,O=Example VPN" {
		t.Fatalf("fallback Subject = %q, %v", s, err)
	}
	if _, err := CertSubject([]byte{0x30, 0x03, 0x02, 0x01, 0x00}); err == nil {
		t.Error("subject from a non-certificate")
	}
	if _, err := (&Cert{Encoding: CertPGP}).Subject(); err == nil {
		t.Error("subject from a PGP CERT")
	}
}

func TestClassify(t *testing.T) {
	p := DefaultPorts
	ike := buildMessage(ExchangeIKESAInit, 8, 0)
	for _, tc := range []struct {
		name     string
		src, dst uint16
		payload  []byte
		kind     Kind
		marker   bool
		spi      uint32
	}{
		{"IKE on 500", 500, 500, ike, KindIKE, false, 0},
		{"IKE from NAT port to 500", 10952, 500, ike, KindIKE, false, 0},
		{"IKE after marker", 4500, 4500, append([]byte{0, 0, 0, 0}, ike...), KindIKE, true, 0},
		{"keepalive", 4500, 4500, []byte{0xff}, KindKeepalive, false, 0},
		{"ESP", 14500, 4500, []byte{0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1}, KindESP, false, 0x12345678},
		{"short", 4500, 4500, []byte{0, 0}, KindInvalid, false, 0},
		{"other port", 53, 53, ike, KindNone, false, 0},
	} {
		f := p.Classify(tc.src, tc.dst, tc.payload)
		if f.Kind != tc.kind || f.Marker != tc.marker || f.SPI != tc.spi {
			t.Errorf("%s: %+v", tc.name, f)
		}
		if f.Kind == KindIKE && string(f.IKE) != string(ike) {
			t.Errorf("%s: IKE bytes %x", tc.name, f.IKE)
		}
	}
}

// ClassifyNATT reads any payload as the NAT-T port's, whatever the ports
// (a proxy's NAT-T socket on another port number).
func TestClassifyNATT(t *testing.T) {
	ike := buildMessage(ExchangeIKESAInit, 8, 0)
	for _, tc := range []struct {
		name    string
		payload []byte
		kind    Kind
		marker  bool
		spi     uint32
	}{
		{"IKE after marker", append([]byte{0, 0, 0, 0}, ike...), KindIKE, true, 0},
		{"marker alone", []byte{0, 0, 0, 0}, KindIKE, true, 0},
		{"keepalive", []byte{0xff}, KindKeepalive, false, 0},
		{"ESP", []byte{0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1}, KindESP, false, 0x12345678},
		{"IKE without marker is ESP", ike, KindESP, false, binary.BigEndian.Uint32(ike)},
		{"short", []byte{0, 0}, KindInvalid, false, 0},
		{"empty", nil, KindInvalid, false, 0},
		{"one byte not 0xff", []byte{0}, KindInvalid, false, 0},
	} {
		f := ClassifyNATT(tc.payload)
		if f.Kind != tc.kind || f.Marker != tc.marker || f.SPI != tc.spi {
			t.Errorf("%s: %+v", tc.name, f)
		}
		if tc.kind == KindIKE && string(f.IKE) != string(tc.payload[NonESPMarkerLen:]) {
			t.Errorf("%s: IKE bytes %x", tc.name, f.IKE)
		}
		// The same as Classify on the NAT-T port, from either side.
		for _, ports := range [][2]uint16{{4500, 4500}, {14500, 4500}, {4500, 500}} {
			if g := DefaultPorts.Classify(ports[0], ports[1], tc.payload); g.Kind != f.Kind || g.SPI != f.SPI || g.Marker != f.Marker || g.Reason != f.Reason {
				t.Errorf("%s: Classify(%d, %d) %+v, ClassifyNATT %+v", tc.name, ports[0], ports[1], g, f)
			}
		}
	}
}
