package capture

import (
	"encoding/binary"
	"net/netip"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// ICMP message types that carry a path MTU.
const (
	icmpv4DestUnreach   = 3 // RFC 792
	icmpv4FragNeeded    = 4 // code of type 3; RFC 1191 puts the next-hop MTU in bytes 6-7
	icmpv6PacketTooBig  = 2 // RFC 4443 §3.2; MTU in bytes 4-7
	icmpErrorHeaderSize = 8 // type, code, checksum, 4 bytes; the invoking packet follows
)

// TooBig reports whether d is an ICMPv4 "fragmentation needed" or ICMPv6
// "packet too big" message and, if so, returns it as an observation with the
// quoted original packet's addresses, protocol and (when quoted) UDP ports.
// An MTU of 0 means the router did not say (pre-RFC 1191 routers).
func TooBig(d *obs.Datagram) (obs.ICMPTooBig, bool) {
	var t obs.ICMPTooBig
	if !d.Complete || len(d.Payload) < icmpErrorHeaderSize {
		return t, false
	}
	m := d.Payload
	switch {
	case d.IPVersion == 4 && d.Proto == protoICMPv4 && m[0] == icmpv4DestUnreach && m[1] == icmpv4FragNeeded:
		t.MTU = int(binary.BigEndian.Uint16(m[6:8]))
	case d.IPVersion == 6 && d.Proto == protoICMPv6 && m[0] == icmpv6PacketTooBig && m[1] == 0:
		t.MTU = int(min(binary.BigEndian.Uint32(m[4:8]), 1<<31-1))
	default:
		return t, false
	}
	t.Time = d.Time
	t.Source = d.Source
	t.From = d.Src.Addr()
	t.To = d.Dst.Addr()
	quoted(&t, m[icmpErrorHeaderSize:])
	return t, true
}

// quoted fills the Orig fields from the invoking packet an ICMP error quotes.
// The quote is cut short by design (RFC 792: header + 8 bytes; RFC 4443: as
// much as fits in 1280), so lengths in it are not checked against it.
func quoted(t *obs.ICMPTooBig, b []byte) {
	if len(b) == 0 {
		return
	}
	var l4 []byte
	first := true
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return
		}
		t.OrigSrc = netip.AddrFrom4([4]byte(b[12:16]))
		t.OrigDst = netip.AddrFrom4([4]byte(b[16:20]))
		t.OrigProto = b[9]
		first = binary.BigEndian.Uint16(b[6:8])&0x1fff == 0
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return
		}
		t.OrigSrc = netip.AddrFrom16([16]byte(b[8:24]))
		t.OrigDst = netip.AddrFrom16([16]byte(b[24:40]))
		nh, off := b[6], 40
	walk:
		for n := 0; n < maxExtHeaders; n++ {
			hl := 8
			switch nh {
			case protoHopByHop, protoRouting, protoDestOpts:
				if off+2 > len(b) {
					return
				}
				hl = (int(b[off+1]) + 1) * 8
			case protoAH:
				if off+2 > len(b) {
					return
				}
				hl = (int(b[off+1]) + 2) * 4
			case protoFragment:
				if off+8 > len(b) {
					return
				}
				first = binary.BigEndian.Uint16(b[off+2:off+4])&^7 == 0
			default:
				break walk
			}
			if off+hl > len(b) {
				return
			}
			nh = b[off]
			off += hl
		}
		t.OrigProto = nh
		l4 = b[off:]
	default:
		return
	}
	if t.OrigProto == protoUDP && first && len(l4) >= 4 {
		t.OrigSrcPort = binary.BigEndian.Uint16(l4[0:2])
		t.OrigDstPort = binary.BigEndian.Uint16(l4[2:4])
	}
}
