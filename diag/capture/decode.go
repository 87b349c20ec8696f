package capture

import (
	"encoding/binary"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// IP protocol numbers the decoder treats specially.
const (
	protoHopByHop = 0
	protoICMPv4   = 1
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoESP      = 50
	protoAH       = 51
	protoICMPv6   = 58
	protoDestOpts = 60
)

// maxExtHeaders bounds the IPv6 extension header walk. RFC 8200 §4.1 allows
// each header once (Destination Options twice); more is an attack or junk.
const maxExtHeaders = 8

// maxIPPayload is the largest IP payload a 16-bit length field can describe.
const maxIPPayload = 65535

// Packet is one decoded IP packet: the shared observation record plus what
// the defragmenter needs that obs.Packet does not carry.
//
// For an IPv6 fragment, Payload starts right after the Fragment header and
// Proto is that header's Next Header, which in a first fragment may itself be
// an extension header (RFC 8200 §4.5 lets such headers sit in the
// fragmentable part); the defragmenter walks them after reassembly.
type Packet struct {
	obs.Packet
	// Version is the IP version, 4 or 6.
	Version uint8
	// PayloadLen is the IP payload length the headers declare. It equals
	// len(Payload) unless Snapped; for a fragment it is the fragment's data
	// length.
	PayloadLen int
}

// DecodeFrame decodes one captured frame of link type lt. ci supplies the
// time and the original length (so a snapped frame is told from a malformed
// one); Frame is left 0 for the caller to set. Payload aliases data.
//
// On failure the error is a Reason and the Packet is zero.
func DecodeFrame(lt layers.LinkType, data []byte, ci gopacket.CaptureInfo) (Packet, error) {
	var p Packet
	if r := decodeFrame(&p, lt, data, ci); r != reasonNone {
		return Packet{}, r
	}
	return p, nil
}

func decodeFrame(p *Packet, lt layers.LinkType, data []byte, ci gopacket.CaptureInfo) Reason {
	l3, li, r := decodeLink(lt, data)
	if r != reasonNone {
		return r
	}
	// orig is how many network-layer bytes the wire frame had: the captured
	// ones plus whatever the snap length cut off.
	orig := len(l3)
	if ci.Length > len(data) {
		orig += ci.Length - len(data)
	}
	p.Time = ci.Timestamp
	p.Ifindex = li.ifindex
	p.Dir = li.dir
	return decodeIP(p, l3, orig, li.ver)
}

// decodeIP decodes an IPv4 or IPv6 packet from b. orig is the packet's length
// on the wire (at least len(b)); want is the version the link layer named, or
// 0 to go by the version nibble.
func decodeIP(p *Packet, b []byte, orig int, want uint8) Reason {
	if len(b) == 0 {
		if orig > 0 {
			return ReasonSnapped
		}
		return ReasonIPHeader
	}
	v := b[0] >> 4
	if want != 0 && v != want {
		return ReasonIPVersion
	}
	switch v {
	case 4:
		return decodeIPv4(p, b, orig)
	case 6:
		return decodeIPv6(p, b, orig)
	}
	return ReasonIPVersion
}

func decodeIPv4(p *Packet, b []byte, orig int) Reason {
	if len(b) < 20 {
		if orig >= 20 {
			return ReasonSnapped
		}
		return ReasonIPHeader
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return ReasonIPHeader
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl || total > orig {
		return ReasonIPLength
	}
	if len(b) < ihl {
		// The wire frame held the options (ihl <= total <= orig).
		return ReasonSnapped
	}
	// Frames may carry link-layer padding or an FCS past the IP packet.
	end := min(total, len(b))
	// Checksums (IP and UDP) are not verified: captures of outgoing
	// packets hold whatever was there before the NIC computed them.
	fo := binary.BigEndian.Uint16(b[6:8])

	p.Version = 4
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.Proto = b[9]
	p.IPID = uint32(binary.BigEndian.Uint16(b[4:6]))
	p.DF = fo&0x4000 != 0
	p.MF = fo&0x2000 != 0
	p.FragOffset = int(fo&0x1fff) * 8
	p.Fragment = p.MF || p.FragOffset != 0
	p.IPLen = total
	p.PayloadLen = total - ihl
	p.Payload = b[ihl:end]
	p.Snapped = end < total
	return finishL4(p, ihl)
}

func decodeIPv6(p *Packet, b []byte, orig int) Reason {
	if len(b) < 40 {
		if orig >= 40 {
			return ReasonSnapped
		}
		return ReasonIPHeader
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	nh := b[6]
	if plen == 0 && nh == protoHopByHop {
		// Payload Length 0 with a Hop-by-Hop header is a jumbogram; the
		// real length sits in an option and exceeds what is handled here.
		return ReasonJumbogram
	}
	total := 40 + plen
	if total > orig {
		return ReasonIPLength
	}
	end := min(total, len(b))

	p.Version = 6
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))

	off := 40
walk:
	for n := 0; ; n++ {
		switch nh {
		case protoHopByHop, protoRouting, protoDestOpts, protoAH, protoFragment:
		default:
			break walk
		}
		if n == maxExtHeaders {
			return ReasonIPv6ExtHeader
		}
		if nh == protoHopByHop && off != 40 {
			// RFC 8200 §4.3: only immediately after the IPv6 header.
			return ReasonIPv6ExtHeader
		}
		hl := 8
		if nh != protoFragment {
			if off+2 > total {
				return ReasonIPv6ExtHeader
			}
			if off+2 > end {
				return ReasonSnapped
			}
			if nh == protoAH {
				hl = (int(b[off+1]) + 2) * 4 // RFC 4302 §2.2: 4-octet units minus 2
			} else {
				hl = (int(b[off+1]) + 1) * 8 // 8-octet units, not counting the first
			}
		}
		if off+hl > total {
			return ReasonIPv6ExtHeader
		}
		if off+hl > end {
			return ReasonSnapped
		}
		next := b[off]
		if nh == protoFragment {
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			p.IPID = binary.BigEndian.Uint32(b[off+4 : off+8])
			p.FragOffset = int(fo &^ 7)
			p.MF = fo&1 != 0
			if p.MF || p.FragOffset != 0 {
				p.Fragment = true
				nh = next
				off += hl
				break walk
			}
			// An atomic fragment (RFC 6946) is a whole packet: walk on.
		}
		nh = next
		off += hl
	}
	p.Proto = nh
	p.IPLen = total
	p.PayloadLen = total - off
	p.Payload = b[off:end]
	p.Snapped = end < total
	// Headers that the reassembled packet keeps: all but the fixed header
	// and the Fragment header.
	return finishL4(p, off-40-8)
}

// finishL4 checks fragment bounds and the UDP header. hdr is the IP header
// bytes that count against the 65535-byte limit besides the payload.
func finishL4(p *Packet, hdr int) Reason {
	if p.Fragment {
		if p.MF && p.PayloadLen%8 != 0 {
			// RFC 791 and RFC 8200 §4.5: every fragment but the last
			// carries a multiple of 8 bytes.
			return ReasonFragLength
		}
		if hdr+p.FragOffset+p.PayloadLen > maxIPPayload {
			return ReasonFragOverflow
		}
	}
	if p.Proto != protoUDP || p.FragOffset != 0 {
		return reasonNone
	}
	if !p.Fragment {
		if p.PayloadLen < 8 {
			return ReasonUDPHeader
		}
		if len(p.Payload) < 8 {
			return ReasonSnapped
		}
		ulen := int(binary.BigEndian.Uint16(p.Payload[4:6]))
		if ulen < 8 || ulen > p.PayloadLen {
			return ReasonUDPLength
		}
	}
	// A first fragment shorter than the UDP header (RFC 1858's tiny
	// fragment) keeps no ports; reassembly finds them.
	if len(p.Payload) >= 8 {
		p.SrcPort = binary.BigEndian.Uint16(p.Payload[0:2])
		p.DstPort = binary.BigEndian.Uint16(p.Payload[2:4])
	}
	return reasonNone
}
