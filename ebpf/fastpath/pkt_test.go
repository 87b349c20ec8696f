package fastpath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Frame builders and decoders for the BPF_PROG_TEST_RUN tests. Frames
// carry valid checksums so that the tests can tell a correct incremental
// update from a broken one.

// testMAC is the destination MAC of test frames: the address of the
// loopback device the test run uses, so the frame is PACKET_HOST.
var testMAC = [6]byte{}

func ethFrame(etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], testMAC[:])
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 9})
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, payload...)
}

// sum16 is the one's complement sum of b (RFC 1071), not complemented.
func sum16(init uint32, b []byte) uint32 {
	s := init
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return s
}

func pseudoSum(src, dst netip.Addr, udpLen int) uint32 {
	s := sum16(0, src.AsSlice())
	s = sum16(s, dst.AsSlice())
	s += 17 + uint32(udpLen)
	return sum16(s, nil)
}

// udpPacket is an IP datagram carrying one UDP datagram.
type udpPacket struct {
	src, dst   netip.AddrPort
	payload    []byte
	ttl        uint8
	tos        uint8
	id         uint16
	df         bool
	mf         bool
	fragOff    int  // bytes
	noCsum     bool // IPv4: UDP checksum zero
	badUDPLen  int  // non-zero: the UDP length field
	ipOptions  []byte
	ext6       uint8 // IPv6: an extension header of this type before UDP
	truncateIP int   // cut this many bytes off the end
}

func (p udpPacket) udp() []byte {
	u := make([]byte, 8, 8+len(p.payload))
	binary.BigEndian.PutUint16(u[0:], p.src.Port())
	binary.BigEndian.PutUint16(u[2:], p.dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(p.payload)))
	u = append(u, p.payload...)
	if !(p.noCsum && p.src.Addr().Is4()) {
		c := ^uint16(sum16(pseudoSum(p.src.Addr(), p.dst.Addr(), len(u)), u))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(u[6:], c)
	}
	if p.badUDPLen != 0 {
		binary.BigEndian.PutUint16(u[4:], uint16(p.badUDPLen))
	}
	return u
}

func (p udpPacket) frame() []byte {
	ttl := p.ttl
	if ttl == 0 {
		ttl = 61
	}
	u := p.udp()
	var f []byte
	if p.src.Addr().Is4() {
		hl := 20 + len(p.ipOptions)
		h := make([]byte, hl, hl+len(u))
		h[0] = 0x40 | byte(hl/4)
		h[1] = p.tos
		binary.BigEndian.PutUint16(h[2:], uint16(hl+len(u)))
		binary.BigEndian.PutUint16(h[4:], p.id)
		fo := uint16(p.fragOff / 8)
		if p.df {
			fo |= 0x4000
		}
		if p.mf {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		h[8] = ttl
		h[9] = 17
		s, d := p.src.Addr().As4(), p.dst.Addr().As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		copy(h[20:], p.ipOptions)
		binary.BigEndian.PutUint16(h[10:], ^uint16(sum16(0, h)))
		f = ethFrame(0x0800, append(h, u...))
	} else {
		body := u
		nh := uint8(17)
		if p.ext6 != 0 {
			body = append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, u...)
			nh = p.ext6
		}
		h := make([]byte, 40, 40+len(body))
		h[0] = 0x60 | p.tos>>4
		h[1] = p.tos << 4
		binary.BigEndian.PutUint16(h[4:], uint16(len(body)))
		h[6] = nh
		h[7] = ttl
		s, d := p.src.Addr().As16(), p.dst.Addr().As16()
		copy(h[8:], s[:])
		copy(h[24:], d[:])
		f = ethFrame(0x86dd, append(h, body...))
	}
	return f[:len(f)-p.truncateIP]
}

// decoded is what a test checks of an output frame.
type decoded struct {
	src, dst netip.AddrPort
	ttl, tos uint8
	id       uint16
	flags    uint16 // IPv4 DF/MF bits
	udpCsum  uint16
	payload  []byte
}

// decode parses an Ethernet/IP/UDP frame and verifies its checksums: the
// IPv4 header checksum, and the UDP checksum unless it is zero over IPv4.
func decode(f []byte) (decoded, error) {
	var d decoded
	if len(f) < 14 {
		return d, fmt.Errorf("frame of %d bytes", len(f))
	}
	et := binary.BigEndian.Uint16(f[12:])
	ip := f[14:]
	var u []byte
	var src, dst netip.Addr
	switch et {
	case 0x0800:
		if len(ip) < 20 || ip[0] != 0x45 {
			return d, fmt.Errorf("not an option-less IPv4 header")
		}
		if s := sum16(0, ip[:20]); s != 0xffff {
			return d, fmt.Errorf("IPv4 header checksum wrong (sum %#04x)", s)
		}
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if tot > len(ip) || ip[9] != 17 {
			return d, fmt.Errorf("IPv4 length %d of %d, protocol %d", tot, len(ip), ip[9])
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		d.ttl, d.tos, d.id = ip[8], ip[1], binary.BigEndian.Uint16(ip[4:])
		d.flags = binary.BigEndian.Uint16(ip[6:]) & 0xe000
		u = ip[20:tot]
	case 0x86dd:
		if len(ip) < 40 || ip[6] != 17 {
			return d, fmt.Errorf("not IPv6 + UDP")
		}
		pl := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+pl > len(ip) {
			return d, fmt.Errorf("IPv6 payload length %d of %d", pl, len(ip)-40)
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		d.ttl = ip[7]
		d.tos = ip[0]<<4 | ip[1]>>4
		u = ip[40 : 40+pl]
	default:
		return d, fmt.Errorf("EtherType %#04x", et)
	}
	if len(u) < 8 || int(binary.BigEndian.Uint16(u[4:])) != len(u) {
		return d, fmt.Errorf("UDP length wrong")
	}
	d.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(u[0:]))
	d.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(u[2:]))
	d.udpCsum = binary.BigEndian.Uint16(u[6:])
	d.payload = u[8:]
	if d.udpCsum == 0 {
		if src.Is6() {
			return d, fmt.Errorf("zero UDP checksum over IPv6")
		}
		return d, nil
	}
	if s := sum16(pseudoSum(src, dst, len(u)), u); s != 0xffff {
		return d, fmt.Errorf("UDP checksum wrong (sum %#04x)", s)
	}
	return d, nil
}

// espPayload is an ESP-shaped UDP payload: SPI, sequence number, bytes.
func espPayload(spi, seq uint32, n int) []byte {
	b := make([]byte, 8, 8+n)
	binary.BigEndian.PutUint32(b[0:], spi)
	binary.BigEndian.PutUint32(b[4:], seq)
	for i := 0; i < n; i++ {
		b = append(b, byte(i*7+int(seq)))
	}
	return b
}

// ikePayload is a non-ESP marker followed by an IKE header of n bytes.
func ikePayload(n int) []byte {
	b := make([]byte, 4+n)
	for i := 4; i < 12 && i < len(b); i++ {
		b[i] = 0xa0 + byte(i)
	}
	if n >= 28 {
		b[4+17] = 0x20
		b[4+18] = 35
		binary.BigEndian.PutUint32(b[4+24:], uint32(n))
	}
	return b
}

// skbCtx is a struct __sk_buff for BPF_PROG_TEST_RUN with the fields the
// kernel lets a test set.
type skbCtx [192]byte

func (c *skbCtx) set(off int, v uint32) *skbCtx {
	binary.NativeEndian.PutUint32(c[off:], v)
	return c
}

const (
	ctxIngressIfindex = 36
	ctxGSOSegs        = 164
	ctxGSOSize        = 176
)
