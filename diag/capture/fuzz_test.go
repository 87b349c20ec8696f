package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/test/packet"
)

// fuzzLinkTypes maps the fuzzer's selector byte to a link type, so inputs
// spend their time in decoders rather than on unsupported types.
var fuzzLinkTypes = []layers.LinkType{
	layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2, layers.LinkTypeRaw,
	layers.LinkTypeIPv4, layers.LinkTypeIPv6, layers.LinkTypeNull, layers.LinkTypeLoop, 12, 14,
}

func linkSelector(lt layers.LinkType) uint8 {
	for i, l := range fuzzLinkTypes {
		if l == lt {
			return uint8(i)
		}
	}
	return 0
}

// corpusSeeds returns up to perFile frames of every shared capture, with
// their link types; none when the shared directory is absent.
func corpusSeeds(perFile int) (seeds []struct {
	lt   layers.LinkType
	data []byte
}) {
	dir, ok := findShared()
	if !ok {
		return nil
	}
	var files []string
	for _, pat := range []string{"corpus/ike-pcaps/*.pcap*", "corpus/ike-pcaps/*.cap", "lab/pcaps/*.pcap"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		files = append(files, m...)
	}
	for _, f := range files {
		pk, err := OpenPackets(f)
		if err != nil {
			continue
		}
		for n := 0; n < perFile; n++ {
			data, _, fm, err := pk.read()
			if err != nil {
				break
			}
			seeds = append(seeds, struct {
				lt   layers.LinkType
				data []byte
			}{fm.link, append([]byte(nil), data...)})
		}
		pk.Close()
	}
	return seeds
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range corpusSeeds(12) {
		f.Add(linkSelector(s.lt), s.data, uint16(0))
	}
	udp := packet.UDPBytes(4500, 4500, pattern(64, 1), 0)
	f.Add(linkSelector(layers.LinkTypeRaw), packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17, Payload: udp}.Bytes(), uint16(0))
	f.Add(linkSelector(layers.LinkTypeRaw), packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17, MF: true, Payload: udp[:64]}.Bytes(), uint16(100))
	f.Add(linkSelector(layers.LinkTypeRaw), packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 50, Offset: 1480, Options: []byte{1, 1, 1, 0}, Payload: udp}.Bytes(), uint16(0))
	f.Add(linkSelector(layers.LinkTypeRaw), packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoHopByHop,
		Ext: packet.Cat(packet.OptionsHeader(protoFragment, 0), packet.FragmentHeader(protoDestOpts, 0, true, 5)), Payload: packet.Cat(packet.OptionsHeader(protoUDP, 0), udp[:56])}.Bytes(), uint16(0))
	icmp := []byte{3, 4, 0, 0, 0, 0, 0x05, 0x00}
	f.Add(linkSelector(layers.LinkTypeRaw), packet.IPv4{Src: addrB, Dst: addrA, Proto: 1, Payload: packet.Cat(icmp, packet.IPv4{Src: addrA, Dst: addrB, Proto: 17, Payload: udp[:8]}.Bytes())}.Bytes(), uint16(0))
	icmp6 := []byte{2, 0, 0, 0, 0, 0, 0x05, 0x00}
	f.Add(linkSelector(layers.LinkTypeIPv6), packet.IPv6{Src: addr6B, Dst: addr6A, NextHeader: protoICMPv6, Payload: packet.Cat(icmp6, packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoUDP, Payload: udp}.Bytes())}.Bytes(), uint16(0))
	f.Add(linkSelector(layers.LinkTypeEthernet), packet.Cat(make([]byte, 12), []byte{0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x08, 0}, packet.IPv4{Src: addrA, Dst: addrB, Proto: 17, Payload: udp}.Bytes()), uint16(0))
	f.Add(linkSelector(layers.LinkTypeNull), packet.Cat([]byte{30, 0, 0, 0}, packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoUDP, Payload: udp}.Bytes()), uint16(0))

	f.Fuzz(func(t *testing.T, sel uint8, data []byte, cut uint16) {
		lt := fuzzLinkTypes[int(sel)%len(fuzzLinkTypes)]
		ci := gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(data), Length: len(data) + int(cut)}
		p, err := DecodeFrame(lt, data, ci)
		if err != nil {
			var r Reason
			if !errors.As(err, &r) || r == reasonNone || r >= NumReasons {
				t.Fatalf("error %v is not a Reason", err)
			}
			return
		}
		checkPacket(t, &p, len(data), int(cut))
		d := NewDefragmenter(DefragOptions{})
		out := d.Add(&p, nil)
		out = d.Flush(out)
		for _, dg := range out {
			checkDatagram(t, dg)
			TooBig(dg)
		}
		if st := d.Stats(); st.InFlight != 0 || st.Buffered != 0 {
			t.Fatalf("after flush: %+v", st)
		}
	})
}

func checkPacket(t *testing.T, p *Packet, captured, cut int) {
	t.Helper()
	if p.Version != 4 && p.Version != 6 {
		t.Fatalf("version %d", p.Version)
	}
	if p.Src.Is4() != (p.Version == 4) || p.Dst.Is4() != (p.Version == 4) {
		t.Fatalf("address family does not match version %d: %v %v", p.Version, p.Src, p.Dst)
	}
	if len(p.Payload) > p.PayloadLen || p.PayloadLen < 0 || p.IPLen > captured+cut || p.PayloadLen > p.IPLen {
		t.Fatalf("lengths: payload %d/%d ip %d captured %d+%d", len(p.Payload), p.PayloadLen, p.IPLen, captured, cut)
	}
	if p.Snapped != (len(p.Payload) < p.PayloadLen) || (p.Snapped && cut == 0) {
		t.Fatalf("snapped=%v with %d of %d bytes, cut %d", p.Snapped, len(p.Payload), p.PayloadLen, cut)
	}
	if p.Fragment != (p.MF || p.FragOffset != 0) || p.FragOffset%8 != 0 || p.FragOffset+p.PayloadLen > maxIPPayload {
		t.Fatalf("fragment fields %+v", p.Packet)
	}
	if p.Proto == protoUDP && !p.Fragment {
		ulen := int(binary.BigEndian.Uint16(p.Payload[4:6]))
		if ulen < 8 || ulen > p.PayloadLen || p.SrcPort != binary.BigEndian.Uint16(p.Payload[0:2]) {
			t.Fatalf("UDP accepted with length %d of %d", ulen, p.PayloadLen)
		}
	}
}

// checkDatagram verifies what holds for every datagram.
func checkDatagram(t *testing.T, d *obs.Datagram) {
	t.Helper()
	if d.Length >= 0 && len(d.Payload) > d.Length {
		t.Fatalf("payload %d bytes > length %d", len(d.Payload), d.Length)
	}
	if d.Complete {
		if len(d.Missing) != 0 || d.TotalLen < 0 {
			t.Fatalf("complete with missing %v total %d", d.Missing, d.TotalLen)
		}
		if !d.Truncated && d.Length >= 0 && len(d.Payload) != d.Length {
			t.Fatalf("complete, not truncated, payload %d != length %d", len(d.Payload), d.Length)
		}
	} else if len(d.Missing) == 0 || d.Truncated {
		t.Fatalf("incomplete with missing %v truncated %v", d.Missing, d.Truncated)
	}
	// Fragments in offset order; fragments and missing ranges together
	// cover the datagram with no missing range overlapping a fragment.
	end := 0
	for i, f := range d.Frags {
		if i > 0 && f.Offset < d.Frags[i-1].Offset {
			t.Fatalf("fragments out of order: %+v", d.Frags)
		}
		end = max(end, f.Offset+f.Len)
		for _, m := range d.Missing {
			mEnd := m.End
			if mEnd < 0 {
				mEnd = 1 << 30
			}
			if f.Offset < mEnd && m.Start < f.Offset+f.Len {
				t.Fatalf("missing %v overlaps fragment %+v", m, f)
			}
		}
	}
	prev := 0
	for i, m := range d.Missing {
		if m.Start < prev || (m.End >= 0 && m.End <= m.Start) || (m.End < 0 && i != len(d.Missing)-1) {
			t.Fatalf("missing ranges %v", d.Missing)
		}
		prev = m.End
	}
	if d.Fragmented() && d.Complete && end != d.TotalLen {
		t.Fatalf("complete: fragments end at %d, total %d", end, d.TotalLen)
	}
	if d.Fragmented() && !d.Complete && d.TotalLen >= 0 && end != d.TotalLen {
		t.Fatalf("incomplete: fragments end at %d, total %d", end, d.TotalLen)
	}
}

// fuzzRef is the byte at offset i of train k's IP payload; corrupted
// fragments carry it XORed with fuzzCorrupt.
func fuzzRef(k, i int) byte { return byte(i*31+k*17) ^ byte(i>>8) }

const fuzzCorrupt = 0x5a

// FuzzDefragmenter reads the input as options (2 bytes) followed by up to
// 64 5-byte fragment descriptors:
//
//	byte 0: bits 0-1 train, 2 IPv6, 3 MF, 4 interface 2/3, 5 corrupt bytes,
//	        6 snapped to half, 7 ESP instead of UDP
//	byte 1: offset in 8-byte units
//	byte 2-3: bits 0-10 length in bytes, bits 11-15 seconds to advance
//	byte 4: bit 0 egress instead of ingress
func FuzzDefragmenter(f *testing.F) {
	f.Add([]byte{0x00, 0x00})
	// A 3-fragment ESP train in order, then reversed with a duplicate.
	f.Add([]byte{0x13, 0x80,
		0x88, 0, 0xb8, 0x05, 0, 0x88, 185, 0xb8, 0x05, 0, 0x80, 114, 0x40, 0, 0})
	f.Add([]byte{0xff, 0xff,
		0x80, 114, 0x40, 0, 0, 0x88, 185, 0xb8, 0x05, 0, 0x88, 185, 0xb8, 0x05, 0, 0x88, 0, 0xb8, 0x05, 0})
	// Overlap with different bytes, an IPv6 train and a timeout.
	f.Add([]byte{0x07, 0x01,
		0x89, 0, 0x40, 0, 0, 0xa9, 4, 0x40, 0, 0x55, 0x8d, 0, 0x20, 0xf8, 0, 0x85, 2, 0x10, 0, 0})
	// Snapped UDP train on two interfaces.
	f.Add([]byte{0x3f, 0x22,
		0x48, 0, 0x00, 0x02, 0, 0x58, 0, 0x00, 0x02, 0, 0x40, 64, 0x10, 0, 0, 0x50, 64, 0x10, 0, 0})

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		opts := DefragOptions{
			Timeout:          time.Duration(1+in[0]&0x0f) * 4 * time.Second,
			MaxTrains:        1 + int(in[0]>>4&0x03),
			MaxFragments:     1 + int(in[1]&0x0f),
			MaxBufferedBytes: 256 << (in[1] >> 4 & 0x07),
			MaxDatagram:      1024 << (in[0] >> 6),
		}
		d := NewDefragmenter(opts)
		now := t0
		var out []*obs.Datagram
		frame := 0
		// 64 descriptors exercise every limit the options allow; more only
		// slow each run (and the minimisation of new inputs) down.
		in = in[2:min(len(in), 2+64*5)]
		for ; len(in) >= 5; in = in[5:] {
			b0 := in[0]
			off := int(in[1]) * 8
			lw := binary.LittleEndian.Uint16(in[2:4])
			n := int(lw & 0x07ff)
			now = now.Add(time.Duration(lw>>11) * time.Second)
			k := int(b0 & 3)
			p := Packet{PayloadLen: n}
			p.Time = now
			frame++
			p.Frame = frame
			p.IPID = uint32(k)
			p.MF = b0&0x08 != 0
			p.FragOffset = off
			p.Fragment = p.MF || off != 0
			p.Ifindex = 2 + int(b0>>4&1)
			p.Dir = obs.DirIngress
			if in[4]&1 != 0 {
				p.Dir = obs.DirEgress
			}
			p.Proto = protoUDP
			if b0&0x80 != 0 {
				p.Proto = protoESP
			}
			p.Version = 4
			p.Src, p.Dst = addrA, addrB
			if b0&0x04 != 0 {
				p.Version = 6
				p.Src, p.Dst = addr6A, addr6B
			}
			buf := make([]byte, n)
			for i := range buf {
				buf[i] = fuzzRef(k, off+i)
				if b0&0x20 != 0 {
					buf[i] ^= fuzzCorrupt
				}
			}
			p.Payload = buf
			if b0&0x40 != 0 {
				p.Payload = buf[:n/2]
				p.Snapped = n/2 < n
			}
			p.IPLen = n + 20
			out = d.Add(&p, out[:0])
			// The datagrams own their bytes: clobber the input.
			for i := range buf {
				buf[i] = 0xee
			}
			checkEmitted(t, out)
			st := d.Stats()
			if st.InFlight > opts.MaxTrains || st.Buffered > opts.MaxBufferedBytes || st.Buffered < 0 {
				t.Fatalf("bounds: %+v with %+v", st, opts)
			}
		}
		checkEmitted(t, d.Flush(out[:0]))
		if st := d.Stats(); st.InFlight != 0 || st.Buffered != 0 {
			t.Fatalf("after flush: %+v", st)
		}
	})
}

// checkEmitted checks datagrams from FuzzDefragmenter. ESP payloads start
// at IP payload offset 0, so each byte must be the reference byte, clean or
// corrupted: never shifted, never the clobbered input.
func checkEmitted(t *testing.T, out []*obs.Datagram) {
	t.Helper()
	for _, d := range out {
		checkDatagram(t, d)
		if d.Proto != protoESP {
			continue
		}
		k := int(d.IPID)
		for i, c := range d.Payload {
			if r := fuzzRef(k, i); c != r && c != r^fuzzCorrupt {
				t.Fatalf("train %d byte %d: %#x, want %#x or %#x", k, i, c, r, r^fuzzCorrupt)
			}
		}
		if d.Complete && !d.Truncated && len(d.Payload) != d.TotalLen {
			t.Fatalf("ESP payload %d, total %d", len(d.Payload), d.TotalLen)
		}
	}
}

// TestFuzzSeedsFromCorpus makes sure the corpus seeds are real frames.
func TestFuzzSeedsFromCorpus(t *testing.T) {
	sharedDir(t)
	seeds := corpusSeeds(2)
	if len(seeds) < 40 {
		t.Fatalf("%d seeds", len(seeds))
	}
	ok := 0
	for _, s := range seeds {
		if _, err := DecodeFrame(s.lt, s.data, ciFor(s.data, t0)); err == nil {
			ok++
		}
	}
	if ok < len(seeds)-2 {
		t.Errorf("only %d of %d seeds decode", ok, len(seeds))
	}
}

// FuzzReader feeds whole files to the Reader: whatever the bytes, it ends
// with io.EOF or an error, never a panic, and its counters add up.
func FuzzReader(f *testing.F) {
	frames, _ := testFrames()
	f.Add(pcapBytes(binary.LittleEndian, false, 101, frames))
	f.Add(pcapBytes(binary.BigEndian, true, 1, [][]byte{packet.Cat(make([]byte, 12), []byte{8, 0}, frames[0])}))
	if dir, ok := findShared(); ok {
		for _, name := range []string{"corpus/ike-pcaps/nDPI-esp.pcapng", "corpus/ike-pcaps/tcpdump-ikev2four.pcap", "lab/pcaps/d.pcap"} {
			if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				f.Add(b[:min(len(b), 1024)])
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), "fuzz", Options{})
		if err != nil {
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("open error %T %v", err, err)
			}
			return
		}
		n := 0
		for {
			rec, err := r.Next()
			if err != nil {
				if err != io.EOF {
					var fe *FileError
					if !errors.As(err, &fe) || fe.Frame < 1 {
						t.Fatalf("error %T %v", err, err)
					}
				}
				break
			}
			n++
			if rec.Datagram != nil {
				checkDatagram(t, rec.Datagram)
			}
		}
		st := r.Stats()
		if st.Decoded+st.SkippedTotal() != st.Frames || n != st.Datagrams+st.TooBig || st.Defrag.InFlight != 0 {
			t.Fatalf("stats %+v, %d records", st, n)
		}
	})
}
