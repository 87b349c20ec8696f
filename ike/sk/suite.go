package sk

import (
	"errors"
	"fmt"
)

// EncrID is an IKEv2 encryption transform ID (IANA "Transform Type 1").
type EncrID uint16

// Encryption transform IDs. The ones this package can use are listed in
// Suite.Supported; the others are known so that key sources can name them.
const (
	EncrDES              EncrID = 2  // ENCR_DES
	Encr3DES             EncrID = 3  // ENCR_3DES
	EncrNull             EncrID = 11 // ENCR_NULL
	EncrAESCBC           EncrID = 12 // ENCR_AES_CBC
	EncrAESCTR           EncrID = 13 // ENCR_AES_CTR
	EncrAESCCM8          EncrID = 14 // ENCR_AES_CCM_8
	EncrAESCCM12         EncrID = 15 // ENCR_AES_CCM_12
	EncrAESCCM16         EncrID = 16 // ENCR_AES_CCM_16
	EncrAESGCM8          EncrID = 18 // ENCR_AES_GCM_8
	EncrAESGCM12         EncrID = 19 // ENCR_AES_GCM_12
	EncrAESGCM16         EncrID = 20 // ENCR_AES_GCM_16
	EncrChaCha20Poly1305 EncrID = 28 // ENCR_CHACHA20_POLY1305
)

var encrNames = map[EncrID]string{
	EncrDES:              "ENCR_DES",
	Encr3DES:             "ENCR_3DES",
	EncrNull:             "ENCR_NULL",
	EncrAESCBC:           "ENCR_AES_CBC",
	EncrAESCTR:           "ENCR_AES_CTR",
	EncrAESCCM8:          "ENCR_AES_CCM_8",
	EncrAESCCM12:         "ENCR_AES_CCM_12",
	EncrAESCCM16:         "ENCR_AES_CCM_16",
	EncrAESGCM8:          "ENCR_AES_GCM_8",
	EncrAESGCM12:         "ENCR_AES_GCM_12",
	EncrAESGCM16:         "ENCR_AES_GCM_16",
	EncrChaCha20Poly1305: "ENCR_CHACHA20_POLY1305",
}

func (e EncrID) String() string {
	if n, ok := encrNames[e]; ok {
		return n
	}
	return fmt.Sprintf("ENCR(%d)", uint16(e))
}

// ParseEncr maps an IANA name (with or without the ENCR_ prefix, any case)
// to its ID.
func ParseEncr(name string) (EncrID, bool) {
	n := normName(name, "ENCR_")
	for id, s := range encrNames {
		if s == n {
			return id, true
		}
	}
	return 0, false
}

// AuthID is an IKEv2 integrity transform ID (IANA "Transform Type 3").
type AuthID uint16

// Integrity transform IDs. AuthHMACSHA2_256_96 has no IANA number (it is the
// pre-RFC 4868 draft variant some stacks still emit); it gets a private
// value so that key sources can name it.
const (
	AuthNone             AuthID = 0  // NONE (AEAD suites)
	AuthHMACMD5_96       AuthID = 1  // AUTH_HMAC_MD5_96
	AuthHMACSHA1_96      AuthID = 2  // AUTH_HMAC_SHA1_96
	AuthAESXCBC96        AuthID = 5  // AUTH_AES_XCBC_96
	AuthHMACMD5_128      AuthID = 6  // AUTH_HMAC_MD5_128
	AuthHMACSHA1_160     AuthID = 7  // AUTH_HMAC_SHA1_160
	AuthAESCMAC96        AuthID = 8  // AUTH_AES_CMAC_96
	AuthHMACSHA2_256_128 AuthID = 12 // AUTH_HMAC_SHA2_256_128
	AuthHMACSHA2_384_192 AuthID = 13 // AUTH_HMAC_SHA2_384_192
	AuthHMACSHA2_512_256 AuthID = 14 // AUTH_HMAC_SHA2_512_256
	AuthHMACSHA2_256_96  AuthID = 0xff01
)

var authNames = map[AuthID]string{
	AuthNone:             "NONE",
	AuthHMACMD5_96:       "AUTH_HMAC_MD5_96",
	AuthHMACSHA1_96:      "AUTH_HMAC_SHA1_96",
	AuthAESXCBC96:        "AUTH_AES_XCBC_96",
	AuthHMACMD5_128:      "AUTH_HMAC_MD5_128",
	AuthHMACSHA1_160:     "AUTH_HMAC_SHA1_160",
	AuthAESCMAC96:        "AUTH_AES_CMAC_96",
	AuthHMACSHA2_256_128: "AUTH_HMAC_SHA2_256_128",
	AuthHMACSHA2_384_192: "AUTH_HMAC_SHA2_384_192",
	AuthHMACSHA2_512_256: "AUTH_HMAC_SHA2_512_256",
	AuthHMACSHA2_256_96:  "AUTH_HMAC_SHA2_256_96",
}

func (a AuthID) String() string {
	if n, ok := authNames[a]; ok {
		return n
	}
	return fmt.Sprintf("AUTH(%d)", uint16(a))
}

// ParseAuth maps an IANA name (with or without the AUTH_ prefix, any case;
// "" and "NONE" mean AuthNone) to its ID.
func ParseAuth(name string) (AuthID, bool) {
	if name == "" {
		return AuthNone, true
	}
	n := normName(name, "AUTH_")
	if n == "AUTH_NONE" {
		return AuthNone, true
	}
	for id, s := range authNames {
		if s == n {
			return id, true
		}
	}
	return 0, false
}

func normName(name, prefix string) string {
	b := []byte(name)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		case c == '-':
			b[i] = '_'
		}
	}
	n := string(b)
	if len(n) < len(prefix) || n[:len(prefix)] != prefix {
		n = prefix + n
	}
	return n
}

// Suite is the IKE SA's negotiated protection: an encryption transform with
// its key length and, for non-AEAD ciphers, an integrity transform.
type Suite struct {
	Encr EncrID
	// KeyBits is the cipher key length without any salt: 128, 192 or 256
	// for AES, 192 for 3DES, 256 for ChaCha20-Poly1305.
	KeyBits int
	Integ   AuthID
}

func (s Suite) String() string {
	enc := s.Encr.String()
	if s.KeyBits != 0 && s.Encr != Encr3DES {
		enc = fmt.Sprintf("%s_%d", enc, s.KeyBits)
	}
	if s.Integ == AuthNone {
		return enc
	}
	return enc + "/" + s.Integ.String()
}

// ErrUnsupportedSuite is returned for a suite the package has no cipher for
// (or an invalid combination, such as an AEAD cipher with an integrity
// transform). Test with errors.Is.
var ErrUnsupportedSuite = errors.New("unsupported suite")

// params are the sizes a suite implies.
type params struct {
	encKey  int // SK_e length, salt included
	salt    int // trailing salt bytes of SK_e (AEAD)
	block   int // padding alignment
	iv      int // IV bytes on the wire
	icv     int // ICV or tag bytes
	authKey int // SK_a length; 0 for AEAD
	aead    bool
}

func (s Suite) params() (params, error) {
	var p params
	switch s.Encr {
	case Encr3DES:
		if s.KeyBits != 0 && s.KeyBits != 192 {
			return p, fmt.Errorf("%w: ENCR_3DES with %d-bit key", ErrUnsupportedSuite, s.KeyBits)
		}
		p = params{encKey: 24, block: 8, iv: 8}
	case EncrAESCBC:
		if !aesBits(s.KeyBits) {
			return p, fmt.Errorf("%w: ENCR_AES_CBC with %d-bit key", ErrUnsupportedSuite, s.KeyBits)
		}
		p = params{encKey: s.KeyBits / 8, block: 16, iv: 16}
	case EncrAESGCM8, EncrAESGCM12, EncrAESGCM16:
		if !aesBits(s.KeyBits) {
			return p, fmt.Errorf("%w: %s with %d-bit key", ErrUnsupportedSuite, s.Encr, s.KeyBits)
		}
		icv := map[EncrID]int{EncrAESGCM8: 8, EncrAESGCM12: 12, EncrAESGCM16: 16}[s.Encr]
		// RFC 5282 §7.1: SK_e is the AES key followed by a 4-byte salt.
		p = params{encKey: s.KeyBits/8 + 4, salt: 4, block: 1, iv: 8, icv: icv, aead: true}
	case EncrChaCha20Poly1305:
		if s.KeyBits != 0 && s.KeyBits != 256 {
			return p, fmt.Errorf("%w: ENCR_CHACHA20_POLY1305 with %d-bit key", ErrUnsupportedSuite, s.KeyBits)
		}
		// RFC 7634 §3: 32-byte key plus a 4-byte salt, 8-byte IV, 16-byte tag.
		p = params{encKey: 36, salt: 4, block: 1, iv: 8, icv: 16, aead: true}
	default:
		return p, fmt.Errorf("%w: %s", ErrUnsupportedSuite, s.Encr)
	}
	if p.aead {
		if s.Integ != AuthNone {
			return p, fmt.Errorf("%w: AEAD cipher %s with integrity %s", ErrUnsupportedSuite, s.Encr, s.Integ)
		}
		return p, nil
	}
	switch s.Integ {
	case AuthHMACSHA1_96:
		p.authKey, p.icv = 20, 12
	case AuthHMACSHA2_256_128:
		p.authKey, p.icv = 32, 16
	case AuthHMACSHA2_384_192:
		p.authKey, p.icv = 48, 24
	case AuthHMACSHA2_512_256:
		p.authKey, p.icv = 64, 32
	case AuthNone:
		return p, fmt.Errorf("%w: %s without integrity", ErrUnsupportedSuite, s.Encr)
	default:
		return p, fmt.Errorf("%w: integrity %s", ErrUnsupportedSuite, s.Integ)
	}
	return p, nil
}

func aesBits(b int) bool { return b == 128 || b == 192 || b == 256 }

// Supported reports whether the package can protect messages with s.
func (s Suite) Supported() bool { _, err := s.params(); return err == nil }

// AEAD reports whether s is a combined-mode cipher (no separate integrity).
func (s Suite) AEAD() bool { p, _ := s.params(); return p.aead }

// IVLen is the IV length on the wire.
func (s Suite) IVLen() int { p, _ := s.params(); return p.iv }

// ICVLen is the Integrity Checksum Data (or AEAD tag) length.
func (s Suite) ICVLen() int { p, _ := s.params(); return p.icv }

// BlockLen is the alignment of content ‖ Padding ‖ Pad Length.
func (s Suite) BlockLen() int { p, _ := s.params(); return p.block }

// EncKeyLen is the length of SK_ei and SK_er, salt included.
func (s Suite) EncKeyLen() int { p, _ := s.params(); return p.encKey }

// AuthKeyLen is the length of SK_ai and SK_ar (0 for AEAD suites).
func (s Suite) AuthKeyLen() int { p, _ := s.params(); return p.authKey }

// Suites lists every suite the package supports: the cipher and integrity
// combinations of the product's requirements.
func Suites() []Suite {
	var out []Suite
	integ := []AuthID{AuthHMACSHA1_96, AuthHMACSHA2_256_128, AuthHMACSHA2_384_192, AuthHMACSHA2_512_256}
	for _, a := range integ {
		out = append(out, Suite{Encr: Encr3DES, KeyBits: 192, Integ: a})
	}
	for _, bits := range []int{128, 192, 256} {
		for _, a := range integ {
			out = append(out, Suite{Encr: EncrAESCBC, KeyBits: bits, Integ: a})
		}
	}
	for _, e := range []EncrID{EncrAESGCM8, EncrAESGCM12, EncrAESGCM16} {
		for _, bits := range []int{128, 192, 256} {
			out = append(out, Suite{Encr: e, KeyBits: bits})
		}
	}
	return append(out, Suite{Encr: EncrChaCha20Poly1305, KeyBits: 256})
}
