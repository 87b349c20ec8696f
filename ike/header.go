// Package ike is the IKEv2 wire codec (RFC 7296, RFC 7383, RFC 3948 framing):
// header, payload chain, typed payloads and the IANA names. It does no I/O.
package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the length of the IKE header (RFC 7296 §3.1).
const HeaderLen = 28

// MaxMessageLen bounds what Decode accepts. The Length field is 32 bits, but
// an IKE message travels in one UDP datagram, so it can never exceed 65535
// minus the UDP header.
const MaxMessageLen = 65535 - 8

// Flags is the IKE header flags byte, as IKEv2 defines it (RFC 7296
// §3.1); an IKEv1 header uses the byte for other bits. A request is a
// message without the R flag: !Flags.Response().
type Flags uint8

const (
	FlagInitiator Flags = 0x08 // I: sent by the original initiator of the IKE SA
	FlagVersion   Flags = 0x10 // V: sender can speak a higher major version
	FlagResponse  Flags = 0x20 // R: message is a response
)

// Initiator reports the I flag.
func (f Flags) Initiator() bool { return f&FlagInitiator != 0 }

// Response reports the R flag.
func (f Flags) Response() bool { return f&FlagResponse != 0 }

func (f Flags) String() string {
	s := ""
	if f&FlagInitiator != 0 {
		s += "I"
	}
	if f&FlagVersion != 0 {
		s += "V"
	}
	if f&FlagResponse != 0 {
		s += "R"
	}
	if rest := f &^ (FlagInitiator | FlagVersion | FlagResponse); rest != 0 {
		s += fmt.Sprintf("+%#02x", uint8(rest))
	}
	if s == "" {
		return "-"
	}
	return s
}

// SPI is an 8-byte IKE SA Security Parameter Index.
type SPI [8]byte

// IsZero reports whether the SPI is all zeros (the SPIr of an IKE_SA_INIT request).
func (s SPI) IsZero() bool { return s == SPI{} }

func (s SPI) String() string { return fmt.Sprintf("%016x", binary.BigEndian.Uint64(s[:])) }

// Uint64 returns the SPI in network byte order as an integer.
func (s SPI) Uint64() uint64 { return binary.BigEndian.Uint64(s[:]) }

// Header is the fixed IKE header. It is shared by IKEv1 (ISAKMP), where SPIi and
// SPIr are the initiator and responder cookies.
type Header struct {
	SPIi, SPIr   SPI
	NextPayload  PayloadType
	MajorVersion uint8
	MinorVersion uint8
	Exchange     ExchangeType
	Flags        Flags
	MessageID    uint32
	Length       uint32
}

// Errors returned by the codec. They are wrapped with detail; test with errors.Is.
var (
	ErrShort          = errors.New("truncated")
	ErrLength         = errors.New("bad length")
	ErrVersion        = errors.New("unsupported IKE major version")
	ErrCritical       = errors.New("unknown payload marked critical")
	ErrTooManyPayload = errors.New("too many payloads")
	ErrMalformed      = errors.New("malformed payload")
	ErrTooMany        = errors.New("too many elements")
)

// ParseHeader decodes the IKE header at the start of b. It checks only that b
// holds 28 bytes; Decode checks Length against the datagram.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("IKE header: %w: %d bytes, need %d", ErrShort, len(b), HeaderLen)
	}
	var h Header
	copy(h.SPIi[:], b[0:8])
	copy(h.SPIr[:], b[8:16])
	h.NextPayload = PayloadType(b[16])
	h.MajorVersion = b[17] >> 4
	h.MinorVersion = b[17] & 0x0f
	h.Exchange = ExchangeType(b[18])
	h.Flags = Flags(b[19])
	h.MessageID = binary.BigEndian.Uint32(b[20:24])
	h.Length = binary.BigEndian.Uint32(b[24:28])
	return h, nil
}

// AppendHeader appends the encoded header to b.
func (h *Header) AppendTo(b []byte) []byte {
	b = append(b, h.SPIi[:]...)
	b = append(b, h.SPIr[:]...)
	b = append(b, byte(h.NextPayload), h.MajorVersion<<4|h.MinorVersion&0x0f, byte(h.Exchange), byte(h.Flags))
	b = binary.BigEndian.AppendUint32(b, h.MessageID)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// IsIKEv2 reports whether the header is an IKEv2 header.
func (h *Header) IsIKEv2() bool { return h.MajorVersion == 2 }

// IsIKEv1 reports whether the header is an IKEv1 (ISAKMP) header.
func (h *Header) IsIKEv1() bool { return h.MajorVersion == 1 }
