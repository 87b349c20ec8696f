package sk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ikefrag/ikefrag/ike"
)

// Errors returned by Open and the seal functions. They are wrapped with
// detail that never includes key material; test with errors.Is.
var (
	// ErrMalformed: the bytes are not a well-formed IKEv2 message with an
	// SK or SKF payload of a size the suite allows.
	ErrMalformed = errors.New("malformed protected message")
	// ErrNotEncrypted: the message has no SK or SKF payload.
	ErrNotEncrypted = errors.New("no Encrypted or Encrypted Fragment payload")
	// ErrIntegrity: the ICV or AEAD tag does not verify.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrPadding: the ICV verified but the Pad Length exceeds the plaintext.
	ErrPadding = errors.New("bad padding")
	// ErrClosed: the SA's keys were deleted.
	ErrClosed = errors.New("IKE SA keys deleted")
	// ErrTooLarge: the protected message would exceed what IKE can carry.
	ErrTooLarge = errors.New("message too large")
)

// SA holds one IKE SA's keys, ready to protect and unprotect messages in
// both directions. It is safe for concurrent use. Close wipes the copies
// of the keys it holds; the expanded key schedules inside the standard
// library's cipher and HMAC objects cannot be wiped and are only released.
type SA struct {
	suite Suite
	p     params

	mu     sync.RWMutex // held for reading by every operation, for writing by Close
	closed bool
	// dir[0] protects messages from the original initiator (SK_ei, SK_ai),
	// dir[1] those from the original responder (SK_er, SK_ar).
	dir [2]*direction
}

type direction struct {
	p        *params
	encKey   []byte
	authKey  []byte
	salt     [4]byte
	block    cipher.Block // CBC suites, and the CTR half of GCM-8 opening
	aead     cipher.AEAD  // AEAD suites (16-byte tag for GCM-8, see sealAEAD)
	macs     sync.Pool    // *macState
	cbcEncs  sync.Pool    // cipher.BlockMode with SetIV
	cbcDecs  sync.Pool
	newHash  func() hash.Hash
	truncTag bool // GCM-8: tag computed with 16 bytes and truncated
}

type macState struct {
	h   hash.Hash
	sum [sha512.Size]byte
}

type ivSetter interface{ SetIV([]byte) }

// NewSA checks k and builds the cipher state. The key bytes are copied, so
// the caller may zero k afterwards.
func NewSA(k *Keys) (*SA, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	p, _ := k.Suite.params()
	sa := &SA{suite: k.Suite, p: p}
	var err error
	if sa.dir[0], err = newDirection(k.Suite, &sa.p, k.SK_ei, k.SK_ai); err != nil {
		return nil, err
	}
	if sa.dir[1], err = newDirection(k.Suite, &sa.p, k.SK_er, k.SK_ar); err != nil {
		sa.dir[0].wipe()
		return nil, err
	}
	return sa, nil
}

func newDirection(s Suite, p *params, ek, ak []byte) (*direction, error) {
	d := &direction{p: p, encKey: append([]byte(nil), ek...), authKey: append([]byte(nil), ak...)}
	cipherKey := d.encKey[:len(d.encKey)-p.salt]
	copy(d.salt[:], d.encKey[len(d.encKey)-p.salt:])
	var err error
	switch s.Encr {
	case Encr3DES:
		d.block, err = des.NewTripleDESCipher(cipherKey)
	case EncrAESCBC:
		d.block, err = aes.NewCipher(cipherKey)
	case EncrAESGCM8, EncrAESGCM12, EncrAESGCM16:
		if d.block, err = aes.NewCipher(cipherKey); err == nil {
			tag := p.icv
			if tag < 12 {
				// crypto/cipher refuses tags under 12 bytes. A truncated
				// GCM tag is the leading bytes of the full one, so seal
				// with 16 and cut (sealAEAD, openGCMTruncated).
				tag, d.truncTag = 16, true
			}
			d.aead, err = cipher.NewGCMWithTagSize(d.block, tag)
		}
	case EncrChaCha20Poly1305:
		d.aead, err = chacha20poly1305.New(cipherKey)
	default:
		err = fmt.Errorf("%w: %s", ErrUnsupportedSuite, s)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	if !p.aead {
		switch s.Integ {
		case AuthHMACSHA1_96:
			d.newHash = sha1.New
		case AuthHMACSHA2_256_128:
			d.newHash = sha256.New
		case AuthHMACSHA2_384_192:
			d.newHash = sha512.New384
		case AuthHMACSHA2_512_256:
			d.newHash = sha512.New
		}
		d.macs.New = func() any { return &macState{h: hmac.New(d.newHash, d.authKey)} }
		zeroIV := make([]byte, p.block)
		d.cbcEncs.New = func() any { return cipher.NewCBCEncrypter(d.block, zeroIV) }
		d.cbcDecs.New = func() any { return cipher.NewCBCDecrypter(d.block, zeroIV) }
	}
	return d, nil
}

func (d *direction) wipe() {
	clear(d.encKey)
	clear(d.authKey)
	clear(d.salt[:])
	d.block, d.aead = nil, nil
	d.macs.New, d.cbcEncs.New, d.cbcDecs.New = nil, nil, nil
}

// Suite returns the SA's suite.
func (sa *SA) Suite() Suite { return sa.suite }

// Close wipes the keys. Operations in progress finish first; later ones
// fail with ErrClosed. Close is idempotent.
func (sa *SA) Close() {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	if sa.closed {
		return
	}
	sa.closed = true
	sa.dir[0].wipe()
	sa.dir[1].wipe()
}

// Closed reports whether Close was called.
func (sa *SA) Closed() bool {
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	return sa.closed
}

func (sa *SA) String() string { return "SA{" + sa.suite.String() + "}" }

func dirIndex(f ike.Flags) int {
	if f.Initiator() {
		return 0
	}
	return 1
}

// unitLen returns the length of one protected message: IKE header,
// unprotected payloads, SK (4-byte) or SKF (8-byte) header, IV, ciphertext
// of content ‖ padding ‖ Pad Length, ICV.
func (p *params) unitLen(unprotLen int, skf bool, contentLen int) (msgLen, padded int) {
	hdr := 4
	if skf {
		hdr = ike.SKFHeaderLen
	}
	padded = roundUp(contentLen+1, p.block)
	return ike.HeaderLen + unprotLen + hdr + p.iv + padded + p.icv, padded
}

func roundUp(n, b int) int { return (n + b - 1) / b * b }

// unit describes one protected message to build.
type unit struct {
	h        *ike.Header // copied; NextPayload and Length are set by seal
	firstNP  ike.PayloadType
	unprot   []byte // unprotected payloads, last Next Payload already 46/53
	skf      bool
	np       ike.PayloadType // SK/SKF Next Payload
	number   uint16
	total    uint16
	content  []byte
	iv       []byte
	padValue byte   // value of each padding byte (RFC 7296: any value)
	nonce    []byte // 12 bytes of scratch for AEAD suites (escapes into the AEAD interface, so the caller provides it once per cut)
}

// seal appends the protected message to dst. The caller holds sa.mu for
// reading. dst needs no spare capacity; seal grows it.
func (sa *SA) seal(dst []byte, u *unit) ([]byte, error) {
	p := &sa.p
	msgLen, padded := p.unitLen(len(u.unprot), u.skf, len(u.content))
	hdrLen := 4
	if u.skf {
		hdrLen = ike.SKFHeaderLen
	}
	payloadLen := hdrLen + p.iv + padded + p.icv
	if msgLen > ike.MaxMessageLen || payloadLen > 0xffff {
		return dst, fmt.Errorf("%w: %d bytes", ErrTooLarge, msgLen)
	}
	if len(u.iv) != p.iv {
		return dst, fmt.Errorf("sk: IV of %d bytes, suite needs %d", len(u.iv), p.iv)
	}
	start := len(dst)
	// 8 spare bytes: GCM-8 writes a 16-byte tag before it is cut.
	if free := cap(dst) - start; free < msgLen+8 {
		nb := make([]byte, start, start+msgLen+8)
		copy(nb, dst)
		dst = nb
	}
	b := dst[start : start+msgLen]
	h := *u.h
	h.NextPayload = u.firstNP
	h.Length = uint32(msgLen)
	h.AppendTo(b[:0])
	o := ike.HeaderLen + copy(b[ike.HeaderLen:], u.unprot)
	b[o], b[o+1] = byte(u.np), 0
	binary.BigEndian.PutUint16(b[o+2:], uint16(payloadLen))
	if u.skf {
		binary.BigEndian.PutUint16(b[o+4:], u.number)
		binary.BigEndian.PutUint16(b[o+6:], u.total)
	}
	aadEnd := o + hdrLen
	ctStart := aadEnd + copy(b[aadEnd:], u.iv)
	n := copy(b[ctStart:], u.content)
	pt := b[ctStart : ctStart+padded]
	padLen := padded - n - 1
	for i := n; i < padded-1; i++ {
		pt[i] = u.padValue
	}
	pt[padded-1] = byte(padLen)
	d := sa.dir[dirIndex(h.Flags)]
	if p.aead {
		nonce := u.nonce
		if len(nonce) != 12 {
			nonce = make([]byte, 12)
		}
		copy(nonce[:4], d.salt[:])
		copy(nonce[4:], u.iv)
		out := d.aead.Seal(b[:ctStart], nonce, pt, b[:aadEnd])
		if len(out) < msgLen || &out[0] != &b[0] {
			return dst, errors.New("sk: AEAD did not seal in place")
		}
	} else {
		mode := d.cbcEncs.Get().(cipher.BlockMode)
		mode.(ivSetter).SetIV(u.iv)
		mode.CryptBlocks(pt, pt)
		d.cbcEncs.Put(mode)
		ms := d.macs.Get().(*macState)
		ms.h.Reset()
		ms.h.Write(b[:ctStart+padded])
		sum := ms.h.Sum(ms.sum[:0])
		copy(b[ctStart+padded:], sum[:p.icv])
		d.macs.Put(ms)
	}
	return dst[:start+msgLen], nil
}

// Opened is one verified and decrypted message or fragment.
type Opened struct {
	Header ike.Header
	// Unprotected holds the payloads between the IKE header and the SK or
	// SKF payload (a copy; usually empty). The first one's type is
	// Header.NextPayload.
	Unprotected []byte
	// NextPayload is the SK or SKF payload's Next Payload: the first inner
	// payload type (0 in SKF fragments after the first).
	NextPayload ike.PayloadType
	Fragment    bool   // SKF rather than SK
	Number      uint16 // Fragment Number (SKF only)
	Total       uint16 // Total Fragments (SKF only)
	// Content is the decrypted inner payload bytes, padding removed. For a
	// fragment it is that fragment's chunk of the message.
	Content []byte
}

// locate walks the unprotected payload chain to the SK or SKF payload and
// returns its offset and type.
func locate(msg []byte, first ike.PayloadType) (int, ike.PayloadType, error) {
	off, t := ike.HeaderLen, first
	for i := 0; ; i++ {
		switch t {
		case ike.PayloadEncrypted, ike.PayloadEncryptedFragment:
			return off, t, nil
		case ike.PayloadNone:
			return 0, 0, ErrNotEncrypted
		}
		if i >= ike.MaxPayloads || len(msg)-off < 4 {
			return 0, 0, fmt.Errorf("%w: payload chain ends before an SK payload", ErrNotEncrypted)
		}
		plen := int(binary.BigEndian.Uint16(msg[off+2:]))
		if plen < 4 || plen > len(msg)-off {
			return 0, 0, fmt.Errorf("%w: payload %s at offset %d has Payload Length %d", ErrMalformed, t, off, plen)
		}
		t = ike.PayloadType(msg[off])
		off += plen
	}
}

// Open verifies and decrypts an IKEv2 message (without the non-ESP marker)
// whose last payload is SK or SKF. Nothing is decrypted before the ICV has
// been checked (CBC suites); AEAD suites release no plaintext on failure.
// The result does not alias msg.
func (sa *SA) Open(msg []byte) (*Opened, error) {
	h, err := ike.ParseHeader(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !h.IsIKEv2() {
		return nil, fmt.Errorf("%w: IKE major version %d", ErrMalformed, h.MajorVersion)
	}
	if int(h.Length) != len(msg) {
		return nil, fmt.Errorf("%w: IKE Length %d, message carries %d bytes", ErrMalformed, h.Length, len(msg))
	}
	off, typ, err := locate(msg, h.NextPayload)
	if err != nil {
		return nil, err
	}
	if len(msg)-off < 4 {
		return nil, fmt.Errorf("%w: %d bytes for the %s header", ErrMalformed, len(msg)-off, typ)
	}
	o := &Opened{Header: h, NextPayload: ike.PayloadType(msg[off])}
	if plen := int(binary.BigEndian.Uint16(msg[off+2:])); plen != len(msg)-off {
		return nil, fmt.Errorf("%w: %s Payload Length %d, %d bytes left (it must be last)", ErrMalformed, typ, plen, len(msg)-off)
	}
	hdrLen := 4
	if typ == ike.PayloadEncryptedFragment {
		hdrLen = ike.SKFHeaderLen
		if len(msg)-off < hdrLen {
			return nil, fmt.Errorf("%w: %d bytes for the SKF header", ErrMalformed, len(msg)-off)
		}
		o.Fragment = true
		o.Number = binary.BigEndian.Uint16(msg[off+4:])
		o.Total = binary.BigEndian.Uint16(msg[off+6:])
		if o.Number == 0 || o.Total == 0 || o.Number > o.Total {
			return nil, fmt.Errorf("%w: SKF fragment %d of %d", ErrMalformed, o.Number, o.Total)
		}
	}
	if off > ike.HeaderLen {
		o.Unprotected = append([]byte(nil), msg[ike.HeaderLen:off]...)
	}
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	if sa.closed {
		return nil, ErrClosed
	}
	o.Content, err = sa.dir[dirIndex(h.Flags)].open(msg, off+hdrLen)
	if err != nil {
		return nil, err
	}
	return o, nil
}

// open verifies and decrypts msg whose IV starts at aadEnd.
func (d *direction) open(msg []byte, aadEnd int) ([]byte, error) {
	p := d.p
	data := msg[aadEnd:]
	ctLen := len(data) - p.iv - p.icv
	if ctLen < 1 || ctLen%p.block != 0 {
		return nil, fmt.Errorf("%w: %d bytes of IV, ciphertext and ICV do not fit the suite (IV %d, ICV %d, block %d)",
			ErrMalformed, len(data), p.iv, p.icv, p.block)
	}
	iv := data[:p.iv]
	ct := data[p.iv : p.iv+ctLen]
	var pt []byte
	if p.aead {
		var nonce [12]byte
		copy(nonce[:4], d.salt[:])
		copy(nonce[4:], iv)
		var err error
		if d.truncTag {
			pt, err = d.openGCMTruncated(nonce[:], ct, data[p.iv+ctLen:], msg[:aadEnd])
		} else {
			pt, err = d.aead.Open(nil, nonce[:], data[p.iv:], msg[:aadEnd])
		}
		if err != nil {
			return nil, ErrIntegrity
		}
	} else {
		icv := data[p.iv+ctLen:]
		ms := d.macs.Get().(*macState)
		ms.h.Reset()
		ms.h.Write(msg[:len(msg)-p.icv])
		sum := ms.h.Sum(ms.sum[:0])
		ok := hmac.Equal(sum[:p.icv], icv)
		d.macs.Put(ms)
		if !ok {
			return nil, ErrIntegrity
		}
		pt = make([]byte, ctLen)
		mode := d.cbcDecs.Get().(cipher.BlockMode)
		mode.(ivSetter).SetIV(iv)
		mode.CryptBlocks(pt, ct)
		d.cbcDecs.Put(mode)
	}
	padLen := int(pt[len(pt)-1])
	if padLen+1 > len(pt) {
		return nil, fmt.Errorf("%w: Pad Length %d in %d bytes of plaintext", ErrPadding, padLen, len(pt))
	}
	return pt[:len(pt)-1-padLen], nil
}

// openGCMTruncated opens a GCM ciphertext with a tag shorter than the
// 12 bytes crypto/cipher accepts: decrypt with the GCM keystream (CTR from
// counter 2, NIST SP 800-38D §7.2), recompute the full tag by sealing the
// plaintext again, and compare its leading bytes in constant time. The
// plaintext is returned only when the tag matches.
func (d *direction) openGCMTruncated(nonce, ct, tag, aad []byte) ([]byte, error) {
	var ctr [16]byte
	copy(ctr[:12], nonce)
	ctr[15] = 2
	pt := make([]byte, len(ct), len(ct)+16)
	cipher.NewCTR(d.block, ctr[:]).XORKeyStream(pt, ct)
	full := d.aead.Seal(make([]byte, 0, len(ct)+16), nonce, pt, aad)
	if subtle.ConstantTimeCompare(full[len(ct):len(ct)+len(tag)], tag) != 1 {
		clear(pt)
		return nil, ErrIntegrity
	}
	return pt, nil
}
