package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// Record types and flags, mirrored from bpf/common.h and bpf/frag.h.
const (
	evDatagram = 1
	evTrain    = 2
	evTooBig   = 3
	evDrop     = 4

	ipfDF     = 0x01
	ipfMF     = 0x02
	ipfFrag   = 0x04
	ipfMarker = 0x08

	tfHaveFirst = 0x001
	tfHaveLast  = 0x002
	tfComplete  = 0x004
	tfOverlap   = 0x008
	tfDup       = 0x010
	tfListFull  = 0x020
	tfIKE       = 0x040
	tfNotIKE    = 0x080
	tfMarker    = 0x100
	tfBad       = 0x200

	trainMaxFrags = 16
	ikeHdrLen     = 28
)

var (
	eventSize = binary.Size(tcEvent{})
	trainSize = binary.Size(tcTrain{})
)

// tooBigSize is sizeof(struct too_big): two addresses, two ports, the
// protocol and padding.
const tooBigSize = 16 + 16 + 2 + 2 + 1 + 3

var errShort = errors.New("ring buffer record too short")

// rawRecord is one ring-buffer record, split by type. Payload aliases the
// reader's buffer and must be copied before it is kept.
type rawRecord struct {
	ev      tcEvent
	payload []byte   // evDatagram
	train   tcTrain  // evTrain
	tooBig  tooBigEv // evTooBig
}

type tooBigEv struct {
	origSrc, origDst     [16]byte
	origSport, origDport uint16
	origProto            uint8
}

// decodeRecord splits a ring-buffer record. It checks every length against
// the record, so a corrupt record is an error, never a panic.
func decodeRecord(b []byte) (rawRecord, error) {
	var r rawRecord
	if len(b) < eventSize {
		return r, errShort
	}
	if _, err := binary.Decode(b[:eventSize], binary.NativeEndian, &r.ev); err != nil {
		return r, err
	}
	rest := b[eventSize:]
	switch r.ev.Type {
	case evDatagram:
		n := int(r.ev.CapLen)
		if n > len(rest) || n > CaptureMax {
			return r, fmt.Errorf("datagram record claims %d payload bytes, has %d", n, len(rest))
		}
		r.payload = rest[:n]
	case evTrain:
		if len(rest) < trainSize {
			return r, errShort
		}
		if _, err := binary.Decode(rest[:trainSize], binary.NativeEndian, &r.train); err != nil {
			return r, err
		}
	case evTooBig:
		if len(rest) < tooBigSize {
			return r, errShort
		}
		copy(r.tooBig.origSrc[:], rest[0:16])
		copy(r.tooBig.origDst[:], rest[16:32])
		r.tooBig.origSport = binary.NativeEndian.Uint16(rest[32:34])
		r.tooBig.origDport = binary.NativeEndian.Uint16(rest[34:36])
		r.tooBig.origProto = rest[36]
	case evDrop:
	default:
		return r, fmt.Errorf("unknown record type %d", r.ev.Type)
	}
	return r, nil
}

// monoClock converts bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall time.
type monoClock struct {
	base time.Time // wall time at monotonic zero
}

func (c monoClock) wall(ns uint64) time.Time { return c.base.Add(time.Duration(ns)) }

func addr(family uint8, b [16]byte) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func direction(d uint8) obs.Direction {
	switch d {
	case 0:
		return obs.DirIngress
	case 1:
		return obs.DirEgress
	}
	return obs.DirUnknown
}

// datagramFromEvent builds the record of a whole IKE datagram, or the start
// of one whose first fragment this is.
func datagramFromEvent(c monoClock, ev *tcEvent, payload []byte) *obs.Datagram {
	t := c.wall(ev.TsNs)
	d := &obs.Datagram{
		Time:      t,
		Last:      t,
		Source:    obs.Source{Ifindex: int(ev.Ifindex), Dir: direction(ev.Dir)},
		IPVersion: ev.Family,
		Proto:     ev.Proto,
		Src:       netip.AddrPortFrom(addr(ev.Family, ev.Saddr), ev.Sport),
		Dst:       netip.AddrPortFrom(addr(ev.Family, ev.Daddr), ev.Dport),
		IPID:      ev.IpId,
		DF:        ev.IpFlags&ipfDF != 0,
		Length:    int(ev.UdpLen) - 8,
		Payload:   append([]byte(nil), payload...),
		Complete:  true,
		TotalLen:  int(ev.FragLen),
	}
	d.Truncated = len(d.Payload) < d.Length
	if ev.IpFlags&ipfFrag != 0 {
		d.Complete = false
		d.TotalLen = -1
	}
	return d
}

// datagramFromTrain builds the record of a fragmented datagram from its
// train state. first, when not nil, is the record made from the first
// fragment's event and provides the payload.
func datagramFromTrain(c monoClock, ev *tcEvent, t *tcTrain, first *obs.Datagram, complete bool) *obs.Datagram {
	src := obs.Source{Ifindex: int(t.Ifindex), Dir: direction(ev.Dir)}
	d := &obs.Datagram{
		Time:      c.wall(t.FirstNs),
		Last:      c.wall(t.LastNs),
		Source:    src,
		IPVersion: ev.Family,
		Proto:     ev.Proto,
		Src:       netip.AddrPortFrom(addr(ev.Family, ev.Saddr), t.Sport),
		Dst:       netip.AddrPortFrom(addr(ev.Family, ev.Daddr), t.Dport),
		IPID:      ev.IpId,
		Length:    -1,
		Complete:  complete,
		TotalLen:  -1,
	}
	if t.Flags&tfHaveFirst != 0 {
		d.Length = int(t.UdpLen) - 8
		switch {
		case first != nil:
			d.Payload = first.Payload
		case t.Flags&tfIKE != 0:
			// The first fragment's record was lost; the train still has
			// the IKE header.
			if t.Flags&tfMarker != 0 {
				d.Payload = append(d.Payload, 0, 0, 0, 0)
			}
			d.Payload = append(d.Payload, t.Ike[:]...)
		}
		d.Truncated = len(d.Payload) < d.Length
	}
	if t.Flags&tfHaveLast != 0 {
		d.TotalLen = int(t.Total)
	}
	n := int(t.Nfrags)
	if n > trainMaxFrags {
		n = trainMaxFrags
	}
	for i := 0; i < n; i++ {
		r := t.Frags[i]
		d.Frags = append(d.Frags, obs.Frag{
			Source: src,
			Time:   d.Time.Add(time.Duration(r.T_us) * time.Microsecond),
			Offset: int(r.Off),
			Len:    int(r.Len),
			MF:     r.Mf != 0,
			IPLen:  int(r.IpLen),
		})
	}
	sort.SliceStable(d.Frags, func(i, j int) bool { return d.Frags[i].Offset < d.Frags[j].Offset })
	if !complete {
		// Trains are reported incomplete only by the timeout sweep.
		d.Missing = missing(d.Frags, d.TotalLen)
		d.Incomplete = obs.TrainTimeout
	}
	return d
}

// missing returns the byte ranges of [0, total) no fragment covers; with
// total -1 (last fragment never seen) the final range ends at -1. frags
// must be sorted by offset.
func missing(frags []obs.Frag, total int) []obs.Range {
	var out []obs.Range
	pos := 0
	for _, f := range frags {
		if f.Offset > pos {
			out = append(out, obs.Range{Start: pos, End: f.Offset})
		}
		if e := f.Offset + f.Len; e > pos {
			pos = e
		}
	}
	switch {
	case total < 0:
		out = append(out, obs.Range{Start: pos, End: -1})
	case pos < total:
		out = append(out, obs.Range{Start: pos, End: total})
	}
	return out
}

func tooBigFromEvent(c monoClock, r *rawRecord) *obs.ICMPTooBig {
	ev := &r.ev
	return &obs.ICMPTooBig{
		Time:        c.wall(ev.TsNs),
		Source:      obs.Source{Ifindex: int(ev.Ifindex), Dir: direction(ev.Dir)},
		From:        addr(ev.Family, ev.Saddr),
		To:          addr(ev.Family, ev.Daddr),
		MTU:         int(ev.Reason),
		OrigSrc:     addr(ev.Family, r.tooBig.origSrc),
		OrigDst:     addr(ev.Family, r.tooBig.origDst),
		OrigProto:   r.tooBig.origProto,
		OrigSrcPort: r.tooBig.origSport,
		OrigDstPort: r.tooBig.origDport,
	}
}

func dropFromEvent(c monoClock, ev *tcEvent, names map[uint32]string) *obs.Drop {
	if ev.Proto == 1 || ev.Proto == 58 {
		// bpf/drop.c: an ICMP record carries type and code in the port
		// fields.
		d := dropFromUDP(c, ev, names)
		d.SrcPort, d.DstPort = 0, 0
		d.ICMPType, d.ICMPCode = uint8(ev.Sport), uint8(ev.Dport)
		return d
	}
	return dropFromUDP(c, ev, names)
}

func dropFromUDP(c monoClock, ev *tcEvent, names map[uint32]string) *obs.Drop {
	return &obs.Drop{
		Time:       c.wall(ev.TsNs),
		Source:     obs.Source{Ifindex: int(ev.Ifindex), Dir: obs.DirUnknown},
		Reason:     ev.Reason,
		Name:       names[ev.Reason],
		Src:        addr(ev.Family, ev.Saddr),
		Dst:        addr(ev.Family, ev.Daddr),
		Proto:      ev.Proto,
		SrcPort:    ev.Sport,
		DstPort:    ev.Dport,
		IPID:       ev.IpId,
		Fragment:   ev.IpFlags&ipfFrag != 0,
		FragOffset: int(ev.FragOff),
		Netns:      ev.Netns,
	}
}
