package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// PayloadType is an IKEv2 payload type (IANA "IKEv2 Payload Types").
type PayloadType uint8

// ExchangeType is an IKEv2 (or, in an IKEv1 header, ISAKMP) exchange type.
type ExchangeType uint8

// Payload types the codec itself needs; the full list with names is in names.go.
const (
	PayloadNone              PayloadType = 0
	PayloadEncrypted         PayloadType = 46 // SK
	PayloadEncryptedFragment PayloadType = 53 // SKF (RFC 7383)
)

// MaxPayloads bounds the number of payloads Decode accepts in one chain, so a
// hostile message of 4-byte empty payloads cannot make the decoder allocate
// far more than the input size.
const MaxPayloads = 256

// genericHeaderLen is the length of the generic payload header (RFC 7296 §3.2).
const genericHeaderLen = 4

// Body is the decoded body of one payload (everything after the 4-byte
// generic payload header).
type Body interface {
	// AppendBody appends the encoded body to b.
	AppendBody(b []byte) []byte
}

// Payload is one element of a payload chain.
type Payload struct {
	Type     PayloadType
	Critical bool
	// Reserved holds the 7 reserved bits of the flags byte. Senders must set
	// them to zero; they are kept so that encoding reproduces the input.
	Reserved uint8
	Body     Body
}

// Raw is the body of a payload kept as bytes: unknown non-critical payload
// types, and types the codec does not interpret.
type Raw []byte

// AppendBody implements Body.
func (r Raw) AppendBody(b []byte) []byte { return append(b, r...) }

// Message is a decoded IKE message. For IKEv1 only the header is decoded and
// Payloads is nil.
type Message struct {
	Header
	Payloads []Payload
	// Trailing holds bytes after the last payload that the header's Length
	// still covers. RFC 7296 §3.2 leaves no room for them, but some
	// implementations send a few (padding to an even length, a stray
	// terminator); the payloads before them are kept and Encode writes them
	// back, so the message round-trips byte for byte. Nil for a well-formed
	// message.
	Trailing []byte
}

// Quirks lists the ways the message departs from RFC 7296 that decoding
// tolerated, for display next to a diagnosis.
func (m *Message) Quirks() []string {
	if len(m.Trailing) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("%d byte(s) after the last payload, inside the IKE header Length (RFC 7296 §3.2 allows none); payloads before them were kept", len(m.Trailing))}
}

// UnsupportedCriticalError is returned for a payload of unknown type with the
// critical bit set (RFC 7296 §2.5: such a message must be rejected).
type UnsupportedCriticalError struct{ Type PayloadType }

func (e *UnsupportedCriticalError) Error() string {
	return fmt.Sprintf("unknown payload type %d marked critical", uint8(e.Type))
}

// Unwrap lets errors.Is match ErrCritical.
func (e *UnsupportedCriticalError) Unwrap() error { return ErrCritical }

// Decode decodes one IKE message: the bytes of a UDP payload on port 500, or
// those after the non-ESP marker on port 4500. The header's Length must equal
// len(b). IKEv1 messages decode to their header only.
func Decode(b []byte) (*Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if err := checkLength(&h, len(b)); err != nil {
		return nil, err
	}
	m := &Message{Header: h}
	switch h.MajorVersion {
	case 1:
		return m, nil
	case 2:
	default:
		return nil, fmt.Errorf("%w %d (version byte %#02x)", ErrVersion, h.MajorVersion, b[17])
	}
	body := b[HeaderLen:]
	var off int
	m.Payloads, off, err = decodeChain(h.NextPayload, body)
	if err != nil {
		return nil, fmt.Errorf("IKEv2 %s message ID %d: %w", h.Exchange, h.MessageID, err)
	}
	if off < len(body) {
		m.Trailing = append([]byte(nil), body[off:]...)
	}
	return m, nil
}

func checkLength(h *Header, n int) error {
	switch {
	case h.Length < HeaderLen:
		return fmt.Errorf("IKE header: %w: Length %d is less than the header", ErrLength, h.Length)
	case h.Length > MaxMessageLen:
		return fmt.Errorf("IKE header: %w: Length %d exceeds a UDP datagram", ErrLength, h.Length)
	case int(h.Length) != n:
		return fmt.Errorf("IKE header: %w: Length %d, datagram carries %d bytes", ErrLength, h.Length, n)
	}
	return nil
}

// DecodePayloads decodes a payload chain whose first payload has type first.
// It is used for a message's chain and for the inner payloads of a decrypted
// SK payload or a reassembled set of SKF payloads. An Encrypted or Encrypted
// Fragment payload ends the chain: its Next Payload field names the first
// inner payload, and nothing may follow it.
func DecodePayloads(first PayloadType, b []byte) ([]Payload, error) {
	out, off, err := decodeChain(first, b)
	if err != nil {
		return nil, err
	}
	if off != len(b) {
		if n := len(out); n > 0 && (out[n-1].Type == PayloadEncrypted || out[n-1].Type == PayloadEncryptedFragment) {
			return nil, fmt.Errorf("%s payload is not last: %d bytes follow it", out[n-1].Type, len(b)-off)
		}
		return nil, fmt.Errorf("%w: %d bytes after the last payload", ErrLength, len(b)-off)
	}
	return out, nil
}

// decodeChain decodes a payload chain and returns the offset where it
// ended; bytes after that are left to the caller to refuse (DecodePayloads)
// or keep (Decode, Message.Trailing).
func decodeChain(first PayloadType, b []byte) ([]Payload, int, error) {
	var out []Payload
	if n := countPayloads(first, b); n > 0 {
		out = make([]Payload, 0, n)
	}
	next := first
	off := 0
	for next != PayloadNone {
		if len(out) == MaxPayloads {
			return nil, 0, fmt.Errorf("%w: more than %d", ErrTooManyPayload, MaxPayloads)
		}
		if len(b)-off < genericHeaderLen {
			return nil, 0, fmt.Errorf("payload %d (%s) at offset %d: %w: %d bytes left for a 4-byte header",
				len(out)+1, next, off, ErrShort, len(b)-off)
		}
		np := PayloadType(b[off])
		flags := b[off+1]
		plen := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if plen < genericHeaderLen || plen > len(b)-off {
			return nil, 0, fmt.Errorf("payload %d (%s) at offset %d: %w: Payload Length %d, %d bytes left",
				len(out)+1, next, off, ErrLength, plen, len(b)-off)
		}
		p := Payload{Type: next, Critical: flags&0x80 != 0, Reserved: flags & 0x7f}
		body := b[off+genericHeaderLen : off+plen]
		var err error
		p.Body, err = decodeBody(next, np, body)
		if err == errUnknown {
			if p.Critical {
				return nil, 0, &UnsupportedCriticalError{Type: next}
			}
			p.Body, err = Raw(body), nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("payload %d (%s) at offset %d: %w", len(out)+1, next, off, err)
		}
		out = append(out, p)
		off += plen
		if next == PayloadEncrypted || next == PayloadEncryptedFragment {
			// The SK/SKF Next Payload names the first inner payload; the
			// chain continues inside the ciphertext, so the SK must be last.
			return out, off, nil
		}
		next = np
	}
	return out, off, nil
}

// countPayloads walks the chain's generic headers to size the slice that
// DecodePayloads fills, saving the regrowth. It stops at the first
// inconsistency and never counts beyond MaxPayloads; DecodePayloads does
// the checking.
func countPayloads(next PayloadType, b []byte) int {
	n, off := 0, 0
	for next != PayloadNone && n < MaxPayloads && len(b)-off >= genericHeaderLen {
		plen := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if plen < genericHeaderLen {
			break
		}
		n++
		if next == PayloadEncrypted || next == PayloadEncryptedFragment {
			break
		}
		next = PayloadType(b[off])
		off += plen
	}
	return n
}

// errUnknown marks a body whose type the codec does not know.
var errUnknown = errors.New("unknown payload type")

// nextOf returns the Next Payload value the generic header of payloads[i]
// carries: the following payload's type, or for SK/SKF the first inner type.
func nextOf(payloads []Payload, i int) PayloadType {
	switch b := payloads[i].Body.(type) {
	case *Encrypted:
		return b.NextPayload
	case *EncryptedFragment:
		return b.NextPayload
	}
	if i+1 < len(payloads) {
		return payloads[i+1].Type
	}
	return PayloadNone
}

// AppendPayloads encodes a payload chain and appends it to b.
func AppendPayloads(b []byte, payloads []Payload) []byte {
	for i := range payloads {
		p := &payloads[i]
		start := len(b)
		flags := p.Reserved & 0x7f
		if p.Critical {
			flags |= 0x80
		}
		b = append(b, byte(nextOf(payloads, i)), flags, 0, 0)
		b = p.Body.AppendBody(b)
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b
}

// Encode returns the wire form of m. The header's Next Payload and Length are
// computed from the payloads; for IKEv1 messages (header only) the header is
// written as it is.
func (m *Message) Encode() []byte {
	b := make([]byte, 0, HeaderLen+256)
	h := m.Header
	if h.MajorVersion == 2 {
		h.NextPayload = PayloadNone
		if len(m.Payloads) > 0 {
			h.NextPayload = m.Payloads[0].Type
		}
	}
	b = h.AppendTo(b)
	b = AppendPayloads(b, m.Payloads)
	b = append(b, m.Trailing...)
	if h.MajorVersion == 2 {
		binary.BigEndian.PutUint32(b[24:28], uint32(len(b)))
	}
	return b
}

// Find returns the first payload of type t, or nil.
func (m *Message) Find(t PayloadType) *Payload {
	for i := range m.Payloads {
		if m.Payloads[i].Type == t {
			return &m.Payloads[i]
		}
	}
	return nil
}
