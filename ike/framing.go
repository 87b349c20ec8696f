package ike

import (
	"encoding/binary"
	"fmt"
)

// Ports are the UDP ports that carry IKE: the IKE port (500) and the NAT-T
// port (4500), where IKE messages follow a 4-byte non-ESP marker and share
// the port with ESP-in-UDP (RFC 3948).
type Ports struct {
	IKE  uint16
	NATT uint16
}

// DefaultPorts are the IANA ports.
var DefaultPorts = Ports{IKE: 500, NATT: 4500}

// Carries reports whether a datagram between these ports belongs to IKE or NAT-T.
func (p Ports) Carries(src, dst uint16) bool {
	return src == p.IKE || dst == p.IKE || src == p.NATT || dst == p.NATT
}

// Kind classifies a UDP payload on the IKE or NAT-T port.
type Kind uint8

const (
	KindNone      Kind = iota // not on an IKE port
	KindIKE                   // an IKE message (IKEv1 or IKEv2)
	KindKeepalive             // NAT-T keepalive: a single 0xFF byte (RFC 3948 §2.3)
	KindESP                   // ESP-in-UDP: a non-zero first word is the ESP SPI
	KindInvalid               // on the NAT-T port but neither of the above
)

func (k Kind) String() string {
	switch k {
	case KindIKE:
		return "IKE"
	case KindKeepalive:
		return "keepalive"
	case KindESP:
		return "ESP"
	case KindInvalid:
		return "invalid"
	}
	return "none"
}

// NonESPMarkerLen is the length of the non-ESP marker on the NAT-T port.
const NonESPMarkerLen = 4

// Framing is the result of classifying a UDP payload.
type Framing struct {
	Kind Kind
	// Marker is true when the IKE message followed a non-ESP marker.
	Marker bool
	// SPI is the ESP SPI for KindESP.
	SPI uint32
	// IKE is the IKE message (without the marker) for KindIKE.
	IKE []byte
	// Reason explains KindInvalid.
	Reason string
}

// Classify tells what a UDP payload between src and dst ports carries. On the
// NAT-T port (either side) it is what ClassifyNATT says. On the IKE port the
// payload is IKE with no marker (a NAT may have changed the other side's
// port).
func (p Ports) Classify(src, dst uint16, payload []byte) Framing {
	switch {
	case src == p.NATT || dst == p.NATT:
		return ClassifyNATT(payload)
	case src == p.IKE || dst == p.IKE:
		return Framing{Kind: KindIKE, IKE: payload}
	}
	return Framing{Kind: KindNone}
}

// ClassifyNATT tells what a UDP payload on the NAT-T port carries, whatever
// that port's number (RFC 3948 §2): four zero bytes (the non-ESP marker)
// mark IKE, a single 0xFF byte is a keepalive, and anything else of at
// least four bytes is ESP, its first word the SPI.
func ClassifyNATT(payload []byte) Framing {
	switch {
	case len(payload) == 1 && payload[0] == 0xff:
		return Framing{Kind: KindKeepalive}
	case len(payload) < NonESPMarkerLen:
		return Framing{Kind: KindInvalid, Reason: fmt.Sprintf("%d-byte payload on the NAT-T port", len(payload))}
	}
	spi := binary.BigEndian.Uint32(payload)
	if spi != 0 {
		return Framing{Kind: KindESP, SPI: spi}
	}
	return Framing{Kind: KindIKE, Marker: true, IKE: payload[NonESPMarkerLen:]}
}
