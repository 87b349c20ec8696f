package capture

import (
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/test/shared"
)

// sharedDir returns ../shared relative to the module root, or skips the
// test when the shared captures are not there.
func sharedDir(tb testing.TB) string {
	tb.Helper()
	return shared.Dir(tb)
}

func findShared() (string, bool) { return shared.Find() }

func corpusPath(tb testing.TB, name string) string {
	tb.Helper()
	return shared.Corpus(tb, name)
}

func labPath(tb testing.TB, name string) string {
	tb.Helper()
	return shared.LabPcap(tb, name)
}

func readAll(tb testing.TB, path string) ([]obs.Record, Stats) {
	tb.Helper()
	recs, st, err := ReadFile(path, Options{})
	if err != nil {
		tb.Fatalf("ReadFile(%s): %v", filepath.Base(path), err)
	}
	return recs, st
}

func datagrams(recs []obs.Record) []*obs.Datagram {
	var out []*obs.Datagram
	for _, r := range recs {
		if r.Datagram != nil {
			out = append(out, r.Datagram)
		}
	}
	return out
}

func fragmented(recs []obs.Record) []*obs.Datagram {
	var out []*obs.Datagram
	for _, d := range datagrams(recs) {
		if d.Fragmented() {
			out = append(out, d)
		}
	}
	return out
}

var (
	addrA  = netip.MustParseAddr("192.0.2.1")
	addrB  = netip.MustParseAddr("198.51.100.2")
	addr6A = netip.MustParseAddr("2001:db8::1")
	addr6B = netip.MustParseAddr("2001:db8::2")
	t0     = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
)

// udpHeader builds a UDP header and payload; ulen is the length field
// (0 means the real length).
func udpBytes(sport, dport uint16, payload []byte, ulen int) []byte {
	if ulen == 0 {
		ulen = 8 + len(payload)
	}
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	binary.BigEndian.PutUint16(b[4:6], uint16(ulen))
	copy(b[8:], payload)
	return b
}

// ipv4Bytes builds an IPv4 packet by hand. off is in bytes.
type v4 struct {
	src, dst netip.Addr
	id       uint16
	proto    uint8
	off      int
	mf, df   bool
	options  []byte // multiple of 4
	payload  []byte
}

func (h v4) bytes() []byte {
	ihl := 20 + len(h.options)
	b := make([]byte, ihl+len(h.payload))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:6], h.id)
	fo := uint16(h.off / 8)
	if h.mf {
		fo |= 0x2000
	}
	if h.df {
		fo |= 0x4000
	}
	binary.BigEndian.PutUint16(b[6:8], fo)
	b[8] = 64
	b[9] = h.proto
	s, d := h.src.As4(), h.dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	copy(b[20:], h.options)
	copy(b[ihl:], h.payload)
	return b
}

// v6 builds an IPv6 packet. exts are raw extension headers with their
// Next Header bytes already set; nh is the IPv6 header's Next Header.
type v6 struct {
	src, dst netip.Addr
	nh       uint8
	exts     []byte
	payload  []byte
}

func (h v6) bytes() []byte {
	b := make([]byte, 40+len(h.exts)+len(h.payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(len(h.exts)+len(h.payload)))
	b[6] = h.nh
	b[7] = 64
	s, d := h.src.As16(), h.dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	copy(b[40:], h.exts)
	copy(b[40+len(h.exts):], h.payload)
	return b
}

// fragHdr is an IPv6 Fragment header.
func fragHdr(nh uint8, off int, mf bool, id uint32) []byte {
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

// optsHdr is a Hop-by-Hop or Destination Options header of 8*(n+1) bytes
// filled with PadN.
func optsHdr(nh uint8, n int) []byte {
	b := make([]byte, 8*(n+1))
	b[0] = nh
	b[1] = byte(n)
	b[2] = 1 // PadN
	b[3] = byte(len(b) - 4)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func ciFor(b []byte, ts time.Time) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(b), Length: len(b)}
}

// rawPacket decodes a raw IP packet and fails the test on error.
func rawPacket(tb testing.TB, b []byte, ts time.Time, frame int) Packet {
	tb.Helper()
	p, err := DecodeFrame(layers.LinkTypeRaw, b, ciFor(b, ts))
	if err != nil {
		tb.Fatalf("DecodeFrame: %v", err)
	}
	p.Frame = frame
	return p
}

// pattern returns n deterministic bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>8)
	}
	return b
}

// splitV4 fragments an IPv4 payload (the L4 bytes) at the given byte
// offsets, all multiples of 8.
func splitV4(base v4, l4 []byte, cuts ...int) [][]byte {
	var out [][]byte
	bounds := append(append([]int{0}, cuts...), len(l4))
	for i := 0; i+1 < len(bounds); i++ {
		h := base
		h.off = bounds[i]
		h.mf = i+2 < len(bounds)
		h.payload = l4[bounds[i]:bounds[i+1]]
		out = append(out, h.bytes())
	}
	return out
}

// splitV6 fragments an IPv6 fragmentable part at cuts; unfrag goes before
// each Fragment header (its first byte must be 44 chained correctly by the
// caller via nh).
func splitV6(base v6, unfrag []byte, fragNH uint8, id uint32, part []byte, cuts ...int) [][]byte {
	var out [][]byte
	bounds := append(append([]int{0}, cuts...), len(part))
	for i := 0; i+1 < len(bounds); i++ {
		h := base
		h.exts = cat(unfrag, fragHdr(fragNH, bounds[i], i+2 < len(bounds), id))
		h.payload = part[bounds[i]:bounds[i+1]]
		out = append(out, h.bytes())
	}
	return out
}
