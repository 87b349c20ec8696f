package capture

// From fragments (or a whole packet) to one obs.Datagram: the headers the
// engine reads, the IKE payload, and what was missing.

import (
	"encoding/binary"
	"net/netip"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// build turns a train into a Datagram; nil when the datagram is dropped
// (a reassembled UDP header that contradicts the payload).
func (d *Defragmenter) build(t *train, complete bool) *obs.Datagram {
	dg := &obs.Datagram{
		Time:      t.first,
		Last:      t.last,
		Source:    t.firstSeen,
		IPVersion: t.key.ver,
		IPID:      t.key.id,
		Complete:  complete,
		TotalLen:  t.total,
		Length:    -1,
		Frags:     make([]obs.Frag, len(t.frags)),
	}
	var f0 *fragment
	for i := range t.frags {
		dg.Frags[i] = t.frags[i].Frag
		if t.frags[i].Offset == 0 && f0 == nil {
			f0 = &t.frags[i]
		}
	}
	proto := t.firstNH
	if t.key.ver == 4 {
		proto = t.key.proto
	}
	if f0 != nil {
		dg.Source = f0.Source
		dg.DF = f0.df
		proto = f0.nh
	}

	// Reach of header coverage (for Missing) and of captured bytes (for
	// the known prefix), both from offset 0.
	reach, known := 0, 0
	knownOpen := true
	for i := range t.frags {
		f := &t.frags[i]
		if f.Offset > reach && !complete {
			dg.Missing = append(dg.Missing, obs.Range{Start: reach, End: f.Offset})
		}
		reach = max(reach, f.end())
		if knownOpen {
			if f.Offset > known {
				knownOpen = false
			} else {
				known = max(known, f.Offset+f.dataLen)
			}
		}
	}
	if !complete {
		switch {
		case t.total < 0:
			dg.Missing = append(dg.Missing, obs.Range{Start: reach, End: -1})
		case reach < t.total:
			dg.Missing = append(dg.Missing, obs.Range{Start: reach, End: t.total})
		}
	}
	if t.total >= 0 {
		known = min(known, t.total)
	}

	// Lay the known prefix out in scratch; overlaps carry equal bytes.
	if cap(d.scratch) < known {
		d.scratch = make([]byte, known, max(known, 2048))
	}
	body := d.scratch[:known]
	for i := range t.frags {
		f := &t.frags[i]
		if f.Offset >= known {
			continue
		}
		n := min(f.dataLen, known-f.Offset)
		copy(body[f.Offset:], t.buf[f.dataOff:f.dataOff+n])
	}

	l4 := 0
	if t.key.ver == 6 && f0 != nil {
		proto, l4 = skipExtHeaders(proto, body)
	}
	dg.Proto = proto
	src, dst := t.key.src, t.key.dst
	var payload []byte
	switch {
	case proto == protoUDP && f0 != nil && len(body) >= l4+8:
		h := body[l4:]
		ulen := int(binary.BigEndian.Uint16(h[4:6]))
		if complete && (ulen < 8 || l4+ulen > t.total) {
			d.stats.BadUDP++
			return nil
		}
		dg.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(h[0:2]))
		dg.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(h[2:4]))
		if ulen >= 8 {
			dg.Length = ulen - 8
			payload = h[8:min(ulen, len(h))]
		}
	case proto == protoUDP:
		dg.Src = netip.AddrPortFrom(src, 0)
		dg.Dst = netip.AddrPortFrom(dst, 0)
	default:
		dg.Src = netip.AddrPortFrom(src, 0)
		dg.Dst = netip.AddrPortFrom(dst, 0)
		if f0 != nil {
			payload = body[min(l4, len(body)):]
			if t.total >= 0 {
				dg.Length = t.total - l4
			}
		}
	}
	dg.Payload = clone(payload)
	// Complete but short of bytes: the capture snapped a fragment.
	dg.Truncated = complete && known < t.total && (dg.Length < 0 || len(dg.Payload) < dg.Length)
	return dg
}

// skipExtHeaders walks IPv6 extension headers that a first fragment carried
// in its fragmentable part. On a short or odd chain it stops where it is.
func skipExtHeaders(nh uint8, b []byte) (uint8, int) {
	off := 0
	for n := 0; n < maxExtHeaders; n++ {
		var hl int
		switch nh {
		case protoRouting, protoDestOpts:
			if off+2 > len(b) {
				return nh, off
			}
			hl = (int(b[off+1]) + 1) * 8
		case protoAH:
			if off+2 > len(b) {
				return nh, off
			}
			hl = (int(b[off+1]) + 2) * 4
		default:
			return nh, off
		}
		if off+hl > len(b) {
			return nh, off
		}
		nh = b[off]
		off += hl
	}
	return nh, off
}

// whole turns an unfragmented packet into a Datagram.
func (d *Defragmenter) whole(p *Packet) *obs.Datagram {
	ver := p.Version
	if ver == 0 {
		ver = 6
		if p.Src.Is4() {
			ver = 4
		}
	}
	plen := max(p.PayloadLen, len(p.Payload))
	dg := &obs.Datagram{
		Time:      p.Time,
		Last:      p.Time,
		Source:    p.Source,
		IPVersion: ver,
		Proto:     p.Proto,
		IPID:      p.IPID,
		DF:        p.DF,
		Complete:  true,
		TotalLen:  plen,
	}
	var payload []byte
	if p.Proto == protoUDP {
		if len(p.Payload) < 8 {
			d.stats.BadUDP++
			return nil
		}
		ulen := int(binary.BigEndian.Uint16(p.Payload[4:6]))
		if ulen < 8 || ulen > plen {
			d.stats.BadUDP++
			return nil
		}
		dg.Src = netip.AddrPortFrom(p.Src, binary.BigEndian.Uint16(p.Payload[0:2]))
		dg.Dst = netip.AddrPortFrom(p.Dst, binary.BigEndian.Uint16(p.Payload[2:4]))
		dg.Length = ulen - 8
		payload = p.Payload[8:min(ulen, len(p.Payload))]
	} else {
		dg.Src = netip.AddrPortFrom(p.Src, 0)
		dg.Dst = netip.AddrPortFrom(p.Dst, 0)
		dg.Length = plen
		payload = p.Payload
	}
	dg.Payload = clone(payload)
	dg.Truncated = len(dg.Payload) < dg.Length
	return dg
}

// clone copies b; the copy is never nil so a known-empty payload reads as
// such.
func clone(b []byte) []byte {
	c := make([]byte, len(b))
	copy(c, b)
	return c
}
