// Package packet builds IPv4, IPv6, UDP, TCP, ICMP and IP-fragment packets and
// pcap files for tests, byte by byte, so that tests state exactly what is
// on the wire (including malformed fields) without a capture library.
// It is for tests only: nothing in the product imports it.
package packet

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers (IANA) the builders use.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoESP    = 50
	ProtoICMPv6 = 58
	// ProtoFragment is the IPv6 Fragment header (RFC 8200 §4.5).
	ProtoFragment = 44
	// ProtoHopByHop and ProtoDestOpts are IPv6 options headers.
	ProtoHopByHop = 0
	ProtoDestOpts = 60
)

// IPv4 is an IPv4 packet (RFC 791). Offset is in bytes (a multiple of 8
// for all but tests of bad input).
type IPv4 struct {
	Src, Dst netip.Addr
	ID       uint16
	Proto    uint8
	TTL      uint8 // 0 means 64
	Offset   int
	MF, DF   bool
	Options  []byte // a multiple of 4 bytes
	Payload  []byte
	// TotalLen overrides the Total Length field (0: the real length).
	TotalLen int
}

// Bytes encodes the packet with a correct header checksum.
func (h IPv4) Bytes() []byte {
	ihl := 20 + len(h.Options)
	b := make([]byte, ihl+len(h.Payload))
	b[0] = 0x40 | byte(ihl/4)
	tl := len(b)
	if h.TotalLen != 0 {
		tl = h.TotalLen
	}
	binary.BigEndian.PutUint16(b[2:4], uint16(tl))
	binary.BigEndian.PutUint16(b[4:6], h.ID)
	fo := uint16(h.Offset / 8)
	if h.MF {
		fo |= 0x2000
	}
	if h.DF {
		fo |= 0x4000
	}
	binary.BigEndian.PutUint16(b[6:8], fo)
	b[8] = h.TTL
	if b[8] == 0 {
		b[8] = 64
	}
	b[9] = h.Proto
	s, d := h.Src.As4(), h.Dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	copy(b[20:], h.Options)
	binary.BigEndian.PutUint16(b[10:12], ^fold(sum(0, b[:ihl])))
	copy(b[ihl:], h.Payload)
	return b
}

// IPv6 is an IPv6 packet (RFC 8200). Ext holds raw extension headers, each
// with its Next Header byte already set; NextHeader is the fixed header's.
type IPv6 struct {
	Src, Dst   netip.Addr
	NextHeader uint8
	HopLimit   uint8 // 0 means 64
	Ext        []byte
	Payload    []byte
}

// Bytes encodes the packet.
func (h IPv6) Bytes() []byte {
	b := make([]byte, 40+len(h.Ext)+len(h.Payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(len(h.Ext)+len(h.Payload)))
	b[6] = h.NextHeader
	b[7] = h.HopLimit
	if b[7] == 0 {
		b[7] = 64
	}
	s, d := h.Src.As16(), h.Dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	copy(b[40:], h.Ext)
	copy(b[40+len(h.Ext):], h.Payload)
	return b
}

// FragmentHeader is an IPv6 Fragment header; off is in bytes.
func FragmentHeader(nh uint8, off int, mf bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = nh
	fo := uint16(off) &^ 7
	if mf {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:4], fo)
	binary.BigEndian.PutUint32(b[4:8], id)
	return b
}

// OptionsHeader is a Hop-by-Hop or Destination Options header of 8*(n+1)
// bytes filled with PadN.
func OptionsHeader(nh uint8, n int) []byte {
	b := make([]byte, 8*(n+1))
	b[0] = nh
	b[1] = byte(n)
	b[2] = 1 // PadN
	b[3] = byte(len(b) - 4)
	return b
}

// UDP is a UDP header and payload (RFC 768).
type UDP struct {
	SrcPort, DstPort uint16
	Payload          []byte
	// Length overrides the length field (0: the real length).
	Length int
	// Src and Dst, when both valid, give the pseudo-header for the
	// checksum; otherwise the checksum is 0 (none, valid for IPv4 only).
	Src, Dst netip.Addr
}

// Bytes encodes the datagram.
func (u UDP) Bytes() []byte {
	l := 8 + len(u.Payload)
	if u.Length != 0 {
		l = u.Length
	}
	b := make([]byte, 8+len(u.Payload))
	binary.BigEndian.PutUint16(b[0:2], u.SrcPort)
	binary.BigEndian.PutUint16(b[2:4], u.DstPort)
	binary.BigEndian.PutUint16(b[4:6], uint16(l))
	copy(b[8:], u.Payload)
	if u.Src.IsValid() && u.Dst.IsValid() {
		c := ^fold(sum(pseudo(u.Src, u.Dst, ProtoUDP, len(b)), b))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(b[6:8], c)
	}
	return b
}

// TCP is a TCP segment (RFC 9293) with a 20-byte header and no options.
type TCP struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8  // TCPFIN, TCPSYN, ...
	Window           uint16 // 0 means 65535
	Payload          []byte
	// Src and Dst give the pseudo-header for the checksum (RFC 9293
	// §3.1), which TCP always carries.
	Src, Dst netip.Addr
}

// TCP header flags (RFC 9293 §3.1).
const (
	TCPFIN = 0x01
	TCPSYN = 0x02
	TCPRST = 0x04
	TCPPSH = 0x08
	TCPACK = 0x10
)

// Bytes encodes the segment with a correct checksum.
func (t TCP) Bytes() []byte {
	b := make([]byte, 20+len(t.Payload))
	binary.BigEndian.PutUint16(b[0:2], t.SrcPort)
	binary.BigEndian.PutUint16(b[2:4], t.DstPort)
	binary.BigEndian.PutUint32(b[4:8], t.Seq)
	binary.BigEndian.PutUint32(b[8:12], t.Ack)
	b[12] = 5 << 4
	b[13] = t.Flags
	w := t.Window
	if w == 0 {
		w = 65535
	}
	binary.BigEndian.PutUint16(b[14:16], w)
	copy(b[20:], t.Payload)
	binary.BigEndian.PutUint16(b[16:18], ^fold(sum(pseudo(t.Src, t.Dst, ProtoTCP, len(b)), b)))
	return b
}

// UDPBytes is a UDP header and payload without checksum; ulen overrides
// the length field when not 0.
func UDPBytes(sport, dport uint16, payload []byte, ulen int) []byte {
	return UDP{SrcPort: sport, DstPort: dport, Payload: payload, Length: ulen}.Bytes()
}

// SplitIPv4 fragments an IPv4 packet's payload (the L4 bytes l4) at the
// given byte offsets, all multiples of 8.
func SplitIPv4(base IPv4, l4 []byte, cuts ...int) [][]byte {
	var out [][]byte
	bounds := append(append([]int{0}, cuts...), len(l4))
	for i := 0; i+1 < len(bounds); i++ {
		h := base
		h.Offset = bounds[i]
		h.MF = i+2 < len(bounds)
		h.Payload = l4[bounds[i]:bounds[i+1]]
		out = append(out, h.Bytes())
	}
	return out
}

// SplitIPv6 fragments an IPv6 packet's fragmentable part at cuts (byte
// offsets, multiples of 8); unfrag (the per-fragment headers) goes before
// each Fragment header, whose Next Header is fragNH. base.NextHeader must
// chain to the Fragment header (44) or to unfrag's first header.
func SplitIPv6(base IPv6, unfrag []byte, fragNH uint8, id uint32, part []byte, cuts ...int) [][]byte {
	var out [][]byte
	bounds := append(append([]int{0}, cuts...), len(part))
	for i := 0; i+1 < len(bounds); i++ {
		h := base
		h.Ext = Cat(unfrag, FragmentHeader(fragNH, bounds[i], i+2 < len(bounds), id))
		h.Payload = part[bounds[i]:bounds[i+1]]
		out = append(out, h.Bytes())
	}
	return out
}

// UDPPackets builds the IP packet(s) of one UDP datagram from src to dst:
// one packet when it fits mtu (0: no limit), else IP fragments of at most
// mtu bytes each, as a sending host's stack cuts them. id is the IPv4
// Identification or the IPv6 Fragment header's.
func UDPPackets(src, dst netip.AddrPort, id uint32, payload []byte, mtu int) [][]byte {
	u := UDP{SrcPort: src.Port(), DstPort: dst.Port(), Payload: payload, Src: src.Addr(), Dst: dst.Addr()}.Bytes()
	if src.Addr().Is4() {
		h := IPv4{Src: src.Addr(), Dst: dst.Addr(), ID: uint16(id), Proto: ProtoUDP}
		if mtu == 0 || 20+len(u) <= mtu {
			h.Payload = u
			return [][]byte{h.Bytes()}
		}
		return SplitIPv4(h, u, cuts(len(u), (mtu-20)&^7)...)
	}
	h := IPv6{Src: src.Addr(), Dst: dst.Addr(), NextHeader: ProtoUDP}
	if mtu == 0 || 40+len(u) <= mtu {
		h.Payload = u
		return [][]byte{h.Bytes()}
	}
	h.NextHeader = ProtoFragment
	return SplitIPv6(h, nil, ProtoUDP, id, u, cuts(len(u), (mtu-48)&^7)...)
}

func cuts(n, step int) []int {
	var out []int
	for c := step; c < n; c += step {
		out = append(out, c)
	}
	return out
}

// ICMPTooBig is the ICMP message a router at from sends to the source of
// orig (an IP packet) when orig does not fit the next link's mtu:
// fragmentation needed (RFC 792, RFC 1191) for IPv4, packet too big (RFC
// 4443 §3.2) for IPv6. It quotes as much of orig as RFC 1812 / RFC 4443
// allow (IPv4: the header and 8 bytes).
func ICMPTooBig(from netip.Addr, orig []byte, mtu int) []byte {
	if orig[0]>>4 == 4 {
		to := netip.AddrFrom4([4]byte(orig[12:16]))
		q := orig[:min(len(orig), int(orig[0]&0xf)*4+8)]
		m := make([]byte, 8+len(q))
		m[0], m[1] = 3, 4
		binary.BigEndian.PutUint16(m[6:8], uint16(mtu))
		copy(m[8:], q)
		binary.BigEndian.PutUint16(m[2:4], ^fold(sum(0, m)))
		return IPv4{Src: from, Dst: to, Proto: ProtoICMP, Payload: m}.Bytes()
	}
	to := netip.AddrFrom16([16]byte(orig[8:24]))
	q := orig[:min(len(orig), 1280-48)]
	m := make([]byte, 8+len(q))
	m[0] = 2
	binary.BigEndian.PutUint32(m[4:8], uint32(mtu))
	copy(m[8:], q)
	binary.BigEndian.PutUint16(m[2:4], ^fold(sum(pseudo(from, to, ProtoICMPv6, len(m)), m)))
	return IPv6{Src: from, Dst: to, NextHeader: ProtoICMPv6, Payload: m}.Bytes()
}

// Cat concatenates byte slices.
func Cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// sum adds b as big-endian 16-bit words to s (RFC 1071).
func sum(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// pseudo is the sum of the pseudo-header of UDP, TCP and ICMPv6
// checksums (RFC 768; RFC 9293 §3.1; RFC 8200 §8.1).
func pseudo(src, dst netip.Addr, proto uint8, n int) uint32 {
	var s uint32
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		s = sum(sum(0, a[:]), b[:])
	} else {
		a, b := src.As16(), dst.As16()
		s = sum(sum(0, a[:]), b[:])
	}
	return s + uint32(proto) + uint32(n)
}
