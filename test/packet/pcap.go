package packet

import (
	"encoding/binary"
	"time"
)

// Link types of pcap files (tcpdump.org link-layer header types).
const (
	// LinkTypeRaw: each frame is an IP packet, IPv4 or IPv6.
	LinkTypeRaw = 101
	// LinkTypeLinuxSLL2: Linux cooked capture v2, as tcpdump -i any
	// writes.
	LinkTypeLinuxSLL2 = 276
)

// Frame is one captured frame.
type Frame struct {
	Time time.Time
	Data []byte
}

// Pcap encodes frames as a classic little-endian pcap file with
// microsecond timestamps and a snap length of 262144.
func Pcap(linkType uint32, frames []Frame) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint32(b, 0) // thiszone
	b = binary.LittleEndian.AppendUint32(b, 0) // sigfigs
	b = binary.LittleEndian.AppendUint32(b, 262144)
	b = binary.LittleEndian.AppendUint32(b, linkType)
	for _, f := range frames {
		b = binary.LittleEndian.AppendUint32(b, uint32(f.Time.Unix()))
		b = binary.LittleEndian.AppendUint32(b, uint32(f.Time.Nanosecond()/1000))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Data)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Data)))
		b = append(b, f.Data...)
	}
	return b
}

// SLL2 wraps an IP packet in a Linux cooked v2 header (incoming, on
// interface index 1).
func SLL2(ip []byte) []byte {
	h := make([]byte, 20)
	proto := uint16(0x0800)
	if len(ip) > 0 && ip[0]>>4 == 6 {
		proto = 0x86dd
	}
	binary.BigEndian.PutUint16(h[0:2], proto)
	binary.BigEndian.PutUint32(h[4:8], 1)
	binary.BigEndian.PutUint16(h[8:10], 1) // ARPHRD_ETHER
	h[11] = 6
	return append(h, ip...)
}
