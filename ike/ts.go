package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// TS is the body of a Traffic Selector payload, TSi or TSr (RFC 7296 §3.13).
type TS struct {
	Reserved  [3]byte
	Selectors []TrafficSelector // Number of TSs is len(Selectors), at most 255
}

// TrafficSelector is one Traffic Selector substructure. For the address
// range types the ports and addresses are decoded; any other type keeps
// the bytes after the 4-byte selector header in Data.
type TrafficSelector struct {
	Type TSType
	// IPProtocol is the IP Protocol ID (0 = any). For TS_SECLABEL this byte
	// is reserved; it is kept all the same.
	IPProtocol         uint8
	StartPort, EndPort uint16
	StartAddr, EndAddr netip.Addr
	Data               []byte // other types only
}

const tsHeaderLen = 4

// selectorLen is the fixed Selector Length of the address range types.
func selectorLen(t TSType) int {
	switch t {
	case TSIPv4AddrRange:
		return 16
	case TSIPv6AddrRange:
		return 40
	}
	return 0
}

func decodeTS(body []byte) (*TS, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: TS body of %d bytes, need 4", ErrShort, len(body))
	}
	count := int(body[0])
	ts := &TS{}
	copy(ts.Reserved[:], body[1:4])
	b := body[4:]
	// Each selector takes at least 4 bytes; checking first bounds the
	// allocation by the input size.
	if count*tsHeaderLen > len(b) {
		return nil, fmt.Errorf("%w: Number of TSs %d does not fit %d bytes", ErrLength, count, len(b))
	}
	if count > 0 {
		ts.Selectors = make([]TrafficSelector, 0, count)
	}
	off := 0
	for i := 1; i <= count; i++ {
		rest := b[off:]
		if len(rest) < tsHeaderLen {
			return nil, fmt.Errorf("selector %d of %d: %w: %d bytes left for a 4-byte header", i, count, ErrShort, len(rest))
		}
		s := TrafficSelector{Type: TSType(rest[0]), IPProtocol: rest[1]}
		slen := int(binary.BigEndian.Uint16(rest[2:4]))
		if slen < tsHeaderLen || slen > len(rest) {
			return nil, fmt.Errorf("selector %d of %d (%s): %w: Selector Length %d, %d bytes left",
				i, count, s.Type, ErrLength, slen, len(rest))
		}
		if want := selectorLen(s.Type); want != 0 {
			if slen != want {
				return nil, fmt.Errorf("selector %d of %d (%s): %w: Selector Length %d, must be %d",
					i, count, s.Type, ErrLength, slen, want)
			}
			alen := (want - 8) / 2
			s.StartPort = binary.BigEndian.Uint16(rest[4:6])
			s.EndPort = binary.BigEndian.Uint16(rest[6:8])
			s.StartAddr, _ = netip.AddrFromSlice(rest[8 : 8+alen])
			s.EndAddr, _ = netip.AddrFromSlice(rest[8+alen : 8+2*alen])
		} else {
			s.Data = rest[tsHeaderLen:slen]
		}
		ts.Selectors = append(ts.Selectors, s)
		off += slen
	}
	if off != len(b) {
		return nil, fmt.Errorf("%w: %d bytes after the %d selectors Number of TSs announces", ErrLength, len(b)-off, count)
	}
	return ts, nil
}

// AppendBody implements Body.
func (ts *TS) AppendBody(b []byte) []byte {
	b = append(b, byte(len(ts.Selectors)))
	b = append(b, ts.Reserved[:]...)
	for i := range ts.Selectors {
		b = ts.Selectors[i].appendTo(b)
	}
	return b
}

func (s *TrafficSelector) appendTo(b []byte) []byte {
	start := len(b)
	b = append(b, byte(s.Type), s.IPProtocol, 0, 0)
	switch s.Type {
	case TSIPv4AddrRange, TSIPv6AddrRange:
		b = binary.BigEndian.AppendUint16(b, s.StartPort)
		b = binary.BigEndian.AppendUint16(b, s.EndPort)
		v6 := s.Type == TSIPv6AddrRange
		b = appendAddr(b, s.StartAddr, v6)
		b = appendAddr(b, s.EndAddr, v6)
	default:
		b = append(b, s.Data...)
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

// appendAddr writes a 4- or 16-byte address; an address of the wrong
// family or the zero Addr is written as zeros rather than panicking.
func appendAddr(b []byte, a netip.Addr, v6 bool) []byte {
	if v6 {
		var z [16]byte
		if a.IsValid() {
			z = a.As16()
		}
		return append(b, z[:]...)
	}
	var z [4]byte
	if a.Is4() {
		z = a.As4()
	}
	return append(b, z[:]...)
}

// String renders a range selector like "10.0.0.0-10.0.0.255 proto 6 port 0-65535".
func (s *TrafficSelector) String() string {
	if selectorLen(s.Type) == 0 {
		return fmt.Sprintf("%s(%d bytes)", s.Type, len(s.Data))
	}
	str := s.StartAddr.String() + "-" + s.EndAddr.String()
	if s.IPProtocol != 0 {
		str += " proto " + strconv.Itoa(int(s.IPProtocol))
	}
	if s.StartPort != 0 || s.EndPort != 65535 {
		str += " port " + strconv.Itoa(int(s.StartPort)) + "-" + strconv.Itoa(int(s.EndPort))
	}
	return str
}
