package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// MaxConfigAttributes bounds the attributes of one CP payload.
const MaxConfigAttributes = 256

// CP is the body of a Configuration payload (RFC 7296 §3.15).
type CP struct {
	Type       CFGType
	Reserved   [3]byte
	Attributes []ConfigAttribute
}

// ConfigAttribute is one Configuration Attribute (RFC 7296 §3.15.1).
type ConfigAttribute struct {
	// R is the reserved top bit of the type field, kept as received.
	R     bool
	Type  CPAttrType // 15 bits
	Value []byte     // empty in a CFG_REQUEST that asks for a value
}

func decodeCP(body []byte) (*CP, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: CP body of %d bytes, need 4", ErrShort, len(body))
	}
	cp := &CP{Type: CFGType(body[0])}
	copy(cp.Reserved[:], body[1:4])
	b := body[4:]
	for off := 0; off < len(b); {
		n := len(cp.Attributes) + 1
		if n > MaxConfigAttributes {
			return nil, fmt.Errorf("%w: CP with more than %d attributes", ErrTooMany, MaxConfigAttributes)
		}
		rest := b[off:]
		if len(rest) < 4 {
			return nil, fmt.Errorf("CP attribute %d: %w: %d bytes left for a 4-byte header", n, ErrShort, len(rest))
		}
		word := binary.BigEndian.Uint16(rest[0:2])
		a := ConfigAttribute{R: word&0x8000 != 0, Type: CPAttrType(word & 0x7fff)}
		alen := int(binary.BigEndian.Uint16(rest[2:4]))
		if alen > len(rest)-4 {
			return nil, fmt.Errorf("CP attribute %d (%s): %w: Length %d, %d bytes left", n, a.Type, ErrLength, alen, len(rest)-4)
		}
		a.Value = rest[4 : 4+alen]
		cp.Attributes = append(cp.Attributes, a)
		off += 4 + alen
	}
	return cp, nil
}

// AppendBody implements Body.
func (cp *CP) AppendBody(b []byte) []byte {
	b = append(b, byte(cp.Type))
	b = append(b, cp.Reserved[:]...)
	for _, a := range cp.Attributes {
		word := uint16(a.Type) & 0x7fff
		if a.R {
			word |= 0x8000
		}
		b = binary.BigEndian.AppendUint16(b, word)
		b = binary.BigEndian.AppendUint16(b, uint16(len(a.Value)))
		b = append(b, a.Value...)
	}
	return b
}

// String renders the attribute like "INTERNAL_IP4_ADDRESS=10.1.0.2".
func (a *ConfigAttribute) String() string {
	if len(a.Value) == 0 {
		return a.Type.String()
	}
	return a.Type.String() + "=" + a.valueString()
}

func (a *ConfigAttribute) valueString() string {
	v := a.Value
	switch a.Type {
	case CPInternalIP4Address, CPInternalIP4Netmask, CPInternalIP4DNS, CPInternalIP4NBNS, CPInternalIP4DHCP, 20:
		if len(v) == 4 {
			ip, _ := netip.AddrFromSlice(v)
			return ip.String()
		}
	case CPInternalIP4Subnet:
		if len(v) == 8 {
			ip, _ := netip.AddrFromSlice(v[:4])
			mask, _ := netip.AddrFromSlice(v[4:])
			return ip.String() + "/" + mask.String()
		}
	case CPInternalIP6DNS, CPInternalIP6DHCP, 21:
		if len(v) == 16 {
			ip, _ := netip.AddrFromSlice(v)
			return ip.String()
		}
	case CPInternalIP6Address, CPInternalIP6Subnet:
		// 16-byte address and a one-byte prefix length.
		if len(v) == 17 {
			ip, _ := netip.AddrFromSlice(v[:16])
			return ip.String() + "/" + strconv.Itoa(int(v[16]))
		}
	case CPApplicationVersion, CPInternalDNSDomain:
		return safeString(v)
	}
	return fmt.Sprintf("%x", v)
}
