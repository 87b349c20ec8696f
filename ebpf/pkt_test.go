package ebpf

import (
	"encoding/binary"
	"net/netip"
)

// Packet builders for the BPF tests. Checksums are left zero: the
// programs never verify them.

const (
	tpidQ  = 0x8100
	tpidAD = 0x88a8
)

type vlanTag struct{ tpid, vid uint16 }

func eth(etherType uint16, tags ...vlanTag) []byte {
	b := make([]byte, 12, 64)
	copy(b, []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1})
	for _, t := range tags {
		b = binary.BigEndian.AppendUint16(b, t.tpid)
		b = binary.BigEndian.AppendUint16(b, t.vid)
	}
	return binary.BigEndian.AppendUint16(b, etherType)
}

type v4 struct {
	src, dst netip.Addr
	proto    uint8
	id       uint16
	off      int // bytes
	mf, df   bool
	options  []byte
	totLen   int // 0: computed
	ihl      int // 0: computed
}

func (h v4) build(payload []byte) []byte {
	hl := 20 + len(h.options)
	b := make([]byte, hl, hl+len(payload))
	ihl := hl / 4
	if h.ihl != 0 {
		ihl = h.ihl
	}
	b[0] = 0x40 | byte(ihl)
	tot := hl + len(payload)
	if h.totLen != 0 {
		tot = h.totLen
	}
	binary.BigEndian.PutUint16(b[2:], uint16(tot))
	binary.BigEndian.PutUint16(b[4:], h.id)
	fo := uint16(h.off / 8)
	if h.mf {
		fo |= 0x2000
	}
	if h.df {
		fo |= 0x4000
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8] = 64
	b[9] = h.proto
	s, d := h.src.As4(), h.dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], h.options)
	return append(b, payload...)
}

func ipv6(src, dst netip.Addr, nh uint8, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = nh
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

// ext6 is an 8-byte IPv6 option header (hop-by-hop, destination options).
func ext6(nh uint8, rest []byte) []byte {
	b := []byte{nh, 0, 1, 4, 0, 0, 0, 0}
	return append(b, rest...)
}

func frag6(nh uint8, off int, m bool, id uint32, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	b[0] = nh
	fo := uint16(off) & 0xfff8
	if m {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	binary.BigEndian.PutUint32(b[4:], id)
	return append(b, data...)
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// ike builds an IKE message of n bytes (n >= 28) whose header says so.
func ike(major uint8, exch uint8, msgID uint32, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < 8; i++ {
		b[i] = byte(0xa0 + i)
	}
	b[16] = 33 // SA
	b[17] = major << 4
	b[18] = exch
	b[19] = 0x08 // initiator
	binary.BigEndian.PutUint32(b[20:], msgID)
	binary.BigEndian.PutUint32(b[24:], uint32(n))
	for i := 28; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

type piece struct {
	off  int
	data []byte
	mf   bool
}

// split cuts an IP payload into fragments of at most size bytes (a
// multiple of 8).
func split(payload []byte, size int) []piece {
	var out []piece
	for off := 0; off < len(payload); off += size {
		end := off + size
		if end > len(payload) {
			end = len(payload)
		}
		out = append(out, piece{off: off, data: payload[off:end], mf: end < len(payload)})
	}
	return out
}
