package sk_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// rfc7634B is the IKEv2 example of RFC 7634 Appendix B (ENCR_CHACHA20_POLY1305
// protecting an INFORMATIONAL request). The same values are in strongSwan's
// test vectors (chacha20poly1305.c, "IKEv2 example from RFC 7634").
//
// There is no AES-GCM counterpart: no published IKEv2 AES-GCM example with
// every value was found, and the ESP ones (AAD = SPI ‖ sequence number)
// cannot be framed as an IKE message.
var rfc7634B = struct {
	key, salt, iv string
	// aad is the 28-byte IKE header followed by the 4-byte SK payload
	// header; there are no unprotected payloads.
	aad string
	// plaintext is the inner payload chain (one Notify, 12 bytes) and a
	// Pad Length of 0: no padding.
	plaintext  string
	ciphertext string
	tag        string
}{
	key: "808182838485868788898a8b8c8d8e8f" +
		"909192939495969798999a9b9c9d9e9f",
	salt: "a0a1a2a3",
	iv:   "1011121314151617",
	aad: "c0c1c2c3c4c5c6c7d0d1d2d3d4d5d6d7" + // SPIi, SPIr
		"2e202500" + "00000009" + "00000045" + // NP=SK, v2.0, INFORMATIONAL, flags 0; Message ID 9; Length 69
		"29000029", // SK: NP=Notify, Payload Length 41
	plaintext:  "0000000c00004001" + "0000000a" + "00",
	ciphertext: "610394701f8d017f7c12924889",
	tag:        "6b71bfe25236efd7cdc67066906315b2",
}

func kh(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// rfc7634BMessage returns the keys and the complete protected message of
// the example: header and SK header (the AAD), IV, ciphertext, tag.
func rfc7634BMessage(t *testing.T) (*sk.Keys, []byte) {
	t.Helper()
	v := rfc7634B
	key := append(kh(t, v.key), kh(t, v.salt)...) // SK_e is key ‖ salt (RFC 7634 §3)
	// The example's flags byte is 0 (I clear): the message is protected
	// with the original responder's key, SK_er. SK_ei gets different bytes
	// so that choosing the wrong direction fails.
	other := make([]byte, len(key))
	for i := range other {
		other[i] = ^key[i]
	}
	k := &sk.Keys{Suite: sk.Suite{Encr: sk.EncrChaCha20Poly1305, KeyBits: 256}, SK_ei: other, SK_er: key}
	var msg []byte
	for _, s := range []string{v.aad, v.iv, v.ciphertext, v.tag} {
		msg = append(msg, kh(t, s)...)
	}
	if len(msg) != 69 {
		t.Fatalf("vector message is %d bytes, its header says 69", len(msg))
	}
	return k, msg
}

// TestChaCha20Poly1305RFC7634 opens the RFC 7634 Appendix B message with
// the package's Open and seals its content again with Seal and the
// example's IV: the result must be the example's bytes exactly.
func TestChaCha20Poly1305RFC7634(t *testing.T) {
	k, msg := rfc7634BMessage(t)
	sa := mustSA(t, k)
	pt := kh(t, rfc7634B.plaintext)
	inner := pt[:len(pt)-1] // without the Pad Length byte

	o, err := sa.Open(msg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	h := o.Header
	if h.SPIi != (ike.SPI{0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7}) ||
		h.SPIr != (ike.SPI{0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7}) ||
		h.Exchange != ike.ExchangeInformational || h.MessageID != 9 || h.Flags != 0 ||
		h.NextPayload != ike.PayloadEncrypted || h.Length != 69 {
		t.Fatalf("header %+v", h)
	}
	if o.Fragment || len(o.Unprotected) != 0 || o.NextPayload != ike.PayloadNotify {
		t.Fatalf("Fragment %v, Unprotected %x, NextPayload %s", o.Fragment, o.Unprotected, o.NextPayload)
	}
	if !bytes.Equal(o.Content, inner) {
		t.Fatalf("Content %x, want %x", o.Content, inner)
	}

	// Seal from a Decrypted built from the vector's fields (not from o),
	// with the example's IV as the injected IV source.
	d := &sk.Decrypted{
		Header: ike.Header{
			SPIi: h.SPIi, SPIr: h.SPIr, MajorVersion: 2,
			Exchange: ike.ExchangeInformational, MessageID: 9,
		},
		Inner:    ike.PayloadNotify,
		Payloads: inner,
	}
	got, err := sa.Seal(d, bytes.NewReader(kh(t, rfc7634B.iv)))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("Seal:\n got %x\nwant %x", got, msg)
	}
	// And from what Open returned.
	od, err := o.Decrypted()
	if err != nil {
		t.Fatal(err)
	}
	if got, err = sa.Seal(od, bytes.NewReader(kh(t, rfc7634B.iv))); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Seal of Open's result: %v\n got %x\nwant %x", err, got, msg)
	}
}

// TestChaCha20Poly1305RFC7634Tampered: every single-byte change to the
// example message makes Open fail; changes to the AAD, IV, ciphertext or
// tag that keep the framing intact fail the tag check.
func TestChaCha20Poly1305RFC7634Tampered(t *testing.T) {
	k, msg := rfc7634BMessage(t)
	sa := mustSA(t, k)
	if _, err := sa.Open(msg); err != nil {
		t.Fatalf("the untouched message: %v", err)
	}
	// Bytes whose change can break the framing before any tag check: the
	// IKE header's Next Payload, version and Length, and the SK header's
	// Payload Length.
	framing := map[int]bool{16: true, 17: true, 24: true, 25: true, 26: true, 27: true, 30: true, 31: true}
	for i := range msg {
		for _, mask := range []byte{0x01, 0x80} {
			bad := bytes.Clone(msg)
			bad[i] ^= mask
			o, err := sa.Open(bad)
			if err == nil {
				t.Fatalf("byte %d ^ %#02x: Open accepted the message (content %x)", i, mask, o.Content)
			}
			if !framing[i] && !errors.Is(err, sk.ErrIntegrity) {
				t.Errorf("byte %d ^ %#02x: %v, want %v", i, mask, err, sk.ErrIntegrity)
			}
		}
	}
	// The I flag picks the other direction's key (SK_ei).
	bad := bytes.Clone(msg)
	bad[19] |= byte(ike.FlagInitiator)
	if _, err := sa.Open(bad); !errors.Is(err, sk.ErrIntegrity) {
		t.Fatalf("I flag set: %v, want %v", err, sk.ErrIntegrity)
	}
}
