package capture

// RFC 9329 streams in captures: IKE and ESP carried over TCP.
//
// TCPStreams reassembles the TCP streams of a capture (per direction, by
// sequence number, retransmissions and overlaps trimmed, out-of-order
// segments held within a bound) and decodes each stream that starts with
// the RFC 9329 prefix "IKETCP" into its frames, and the other direction
// of such a stream (the responder's, which has no prefix) too. Each frame becomes an
// obs.Datagram marked as TCP: Proto 6, Src and Dst the TCP endpoints,
// Payload exactly what a UDP datagram on the NAT-T port would carry (IKE
// behind the non-ESP marker, or ESP), Length its length, Frame the
// capture frame of the segment that completed it, Complete true.
// EncapReader runs it over a Reader: its TCP segment datagrams are
// replaced by the frames they carry, so a Datagram of Proto 6 from an
// EncapReader is always one RFC 9329 frame.
//
// Streams whose first data is not the prefix (HTTPS, anything else) are
// left alone; a stream that loses bytes (a gap the capture never fills,
// a snapped segment) stops being decoded there, and what was lost is
// counted. Memory is bounded by MaxStreams and by MaxPending bytes of
// out-of-order data per direction; a frame is at most 65535 bytes.

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

const (
	protoTCP = 6

	// tcpEncapPrefix opens an RFC 9329 stream (§4).
	tcpEncapPrefix = "IKETCP"
	// tcpFrameMin is the smallest frame: the 2-byte Length, which counts
	// itself, and a 4-byte non-ESP marker or SPI.
	tcpFrameMin = 6

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
)

// TCPOptions bound the stream reassembly.
type TCPOptions struct {
	// MaxStreams is the number of TCP directions followed at once; the
	// least recently active one is dropped for a new one. Default 4096.
	MaxStreams int
	// MaxPending is the out-of-order data held per direction, in bytes;
	// beyond it the direction is given up. Default 256 KiB.
	MaxPending int
	// Idle drops a direction with no segment for this long (capture
	// time). Default 10 minutes.
	Idle time.Duration
}

func (o TCPOptions) withDefaults() TCPOptions {
	if o.MaxStreams <= 0 {
		o.MaxStreams = 4096
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 256 << 10
	}
	if o.Idle <= 0 {
		o.Idle = 10 * time.Minute
	}
	return o
}

// TCPStats count what TCPStreams did.
type TCPStats struct {
	Segments    int // TCP segments seen
	Malformed   int // segments whose TCP header does not decode
	Streams     int // directions that started with the RFC 9329 prefix (the responder's directions are not counted)
	NotEncap    int // directions whose first data is not the prefix
	Unsynced    int // segments of directions whose start the capture missed
	Frames      int // frames decoded
	BadFrames   int // directions given up at a Length below 6
	Gaps        int // directions given up at bytes the capture lacks (out-of-order data beyond MaxPending, or a hole still open when the direction ended)
	Truncated   int // directions that ended (FIN, RST, end of input, eviction) inside a frame, with no hole
	Evicted     int // directions dropped to stay within MaxStreams
	Retransmits int // segments wholly before the next expected byte
	// LostBytes counts the bytes of RFC 9329 streams the capture holds
	// and that could not be decoded because bytes before them are
	// missing or bad (the directions of Gaps and BadFrames, and snapped
	// segments): the part of a frame already read, out-of-order data
	// held, and every later byte of the direction (out-of-order copies
	// of the same bytes may count twice).
	LostBytes int
}

type tcpDirKey struct{ src, dst netip.AddrPort }

type tcpPending struct {
	seq  uint32
	data []byte
}

// tcpDir is one direction of a TCP connection.
type tcpDir struct {
	key       tcpDirKey
	next      uint32 // next expected sequence number
	synced    bool   // next is known (SYN seen, or the prefix at a segment's start)
	prefixed  bool   // the prefix was read, or the other direction's was
	initiator bool   // this direction sent the prefix
	done      bool   // not RFC 9329, or given up: segments are ignored
	lost      bool   // given up (done) at a gap or a bad frame: later bytes count as lost
	high      uint32 // when lost: the end of the highest byte counted
	buf       []byte // bytes in order not yet decoded (less than one frame)
	pending   []tcpPending
	pendingN  int
	last      time.Time
	src       obs.Source
	ipv       uint8
	elem      *list.Element
}

// TCPStreams decodes RFC 9329 frames out of TCP segments.
type TCPStreams struct {
	opt   TCPOptions
	dirs  map[tcpDirKey]*tcpDir
	lru   *list.List // *tcpDir, most recently active at the front
	stats TCPStats
}

// NewTCPStreams returns a decoder.
func NewTCPStreams(o TCPOptions) *TCPStreams {
	return &TCPStreams{opt: o.withDefaults(), dirs: map[tcpDirKey]*tcpDir{}, lru: list.New()}
}

// Stats returns the counters so far.
func (s *TCPStreams) Stats() TCPStats { return s.stats }

// Add takes one datagram of Proto 6 (a whole TCP segment as the
// Defragmenter yields it) and appends the frames it completes to out.
func (s *TCPStreams) Add(d *obs.Datagram, out []*obs.Datagram) []*obs.Datagram {
	if d.Proto != protoTCP {
		return out
	}
	s.stats.Segments++
	p := d.Payload
	if !d.Complete || len(p) < 20 {
		s.stats.Malformed++
		return out
	}
	hl := int(p[12]>>4) * 4
	if hl < 20 || hl > len(p) {
		s.stats.Malformed++
		return out
	}
	src := netip.AddrPortFrom(d.Src.Addr(), binary.BigEndian.Uint16(p[0:]))
	dst := netip.AddrPortFrom(d.Dst.Addr(), binary.BigEndian.Uint16(p[2:]))
	seq := binary.BigEndian.Uint32(p[4:])
	flags := p[13]
	data := p[hl:]
	k := tcpDirKey{src, dst}
	t := s.dirs[k]
	if flags&tcpSYN != 0 {
		// a new connection (or a retransmitted SYN): start afresh
		if t != nil {
			s.remove(t, false)
		}
		t = s.add(k, d)
		t.next, t.synced = seq+1, true
		seq++
	}
	if t == nil {
		if len(data) == 0 {
			return out
		}
		if !bytes.HasPrefix(data, []byte(tcpEncapPrefix)) {
			s.stats.Unsynced++
			return out
		}
		// the capture began after the handshake, at the stream's start
		t = s.add(k, d)
		t.next, t.synced = seq, true
	}
	t.last = d.Time
	s.lru.MoveToFront(t.elem)
	if t.done && t.lost && len(data) > 0 {
		if n := int32(seq + uint32(len(data)) - t.high); n > 0 {
			s.stats.LostBytes += min(len(data), int(n))
			t.high = seq + uint32(len(data))
		}
	}
	if !t.done && len(data) > 0 {
		if d.Truncated {
			// the snap length cut the segment: its bytes are lost
			s.giveUp(t, &s.stats.Gaps, seq, data)
		} else {
			t.src, t.ipv = d.Source, d.IPVersion
			out = s.segment(t, seq, data, d.Time, out)
		}
	}
	if flags&(tcpFIN|tcpRST) != 0 {
		s.remove(t, true)
	}
	return s.expire(d.Time, out)
}

func (s *TCPStreams) add(k tcpDirKey, d *obs.Datagram) *tcpDir {
	if len(s.dirs) >= s.opt.MaxStreams {
		if e := s.lru.Back(); e != nil {
			s.stats.Evicted++
			s.remove(e.Value.(*tcpDir), true)
		}
	}
	t := &tcpDir{key: k, last: d.Time, src: d.Source, ipv: d.IPVersion}
	t.elem = s.lru.PushFront(t)
	s.dirs[k] = t
	return t
}

// remove forgets a direction; ended counts a frame left half read.
func (s *TCPStreams) remove(t *tcpDir, ended bool) {
	if s.dirs[t.key] != t {
		return
	}
	if ended && !t.done && t.prefixed {
		switch {
		case t.pendingN > 0:
			// data after a hole the capture never filled, and the
			// frame the hole is in
			s.stats.Gaps++
			s.stats.LostBytes += t.pendingN + len(t.buf)
		case len(t.buf) > 0:
			s.stats.Truncated++
		}
	}
	delete(s.dirs, t.key)
	s.lru.Remove(t.elem)
}

// giveUp stops decoding a direction at the segment of data at seq,
// counting what it held and that segment as lost.
func (s *TCPStreams) giveUp(t *tcpDir, ctr *int, seq uint32, data []byte) {
	*ctr++
	t.done, t.lost = true, true
	t.high = t.next
	lost := len(t.buf)
	if n := int32(seq + uint32(len(data)) - t.next); n > 0 {
		lost += min(len(data), int(n))
		t.high = seq + uint32(len(data))
	}
	for _, p := range t.pending {
		lost += len(p.data)
		if int32(p.seq+uint32(len(p.data))-t.high) > 0 {
			t.high = p.seq + uint32(len(p.data))
		}
	}
	s.stats.LostBytes += lost
	t.buf, t.pending, t.pendingN = nil, nil, 0
}

// expire drops directions idle for longer than Idle.
func (s *TCPStreams) expire(now time.Time, out []*obs.Datagram) []*obs.Datagram {
	for e := s.lru.Back(); e != nil; e = s.lru.Back() {
		t := e.Value.(*tcpDir)
		if now.Sub(t.last) <= s.opt.Idle {
			break
		}
		s.remove(t, true)
	}
	return out
}

// Flush ends every direction (end of input), counting frames left half
// read.
func (s *TCPStreams) Flush() {
	for e := s.lru.Back(); e != nil; e = s.lru.Back() {
		s.remove(e.Value.(*tcpDir), true)
	}
}

// segment places data at seq in the direction's stream.
func (s *TCPStreams) segment(t *tcpDir, seq uint32, data []byte, at time.Time, out []*obs.Datagram) []*obs.Datagram {
	diff := int32(seq - t.next)
	if diff < 0 {
		if int(-diff) >= len(data) {
			s.stats.Retransmits++
			return out
		}
		data = data[-diff:]
		diff = 0
	}
	if diff > 0 {
		if t.pendingN+len(data) > s.opt.MaxPending || len(t.pending) >= 1024 {
			s.giveUp(t, &s.stats.Gaps, seq, data)
			return out
		}
		t.pending = append(t.pending, tcpPending{seq, append([]byte(nil), data...)})
		t.pendingN += len(data)
		return out
	}
	out = s.inOrder(t, data, at, out)
	// held segments that now continue the stream
	for moved := true; moved && !t.done; {
		moved = false
		for i := 0; i < len(t.pending); i++ {
			pd := t.pending[i]
			d := int32(pd.seq - t.next)
			if d > 0 {
				continue
			}
			t.pending = append(t.pending[:i], t.pending[i+1:]...)
			t.pendingN -= len(pd.data)
			i--
			if int(-d) < len(pd.data) {
				out = s.inOrder(t, pd.data[-d:], at, out)
				moved = true
			}
			if t.done {
				break
			}
		}
	}
	return out
}

// inOrder appends the stream's next bytes and decodes what completes.
func (s *TCPStreams) inOrder(t *tcpDir, data []byte, at time.Time, out []*obs.Datagram) []*obs.Datagram {
	t.next += uint32(len(data))
	t.buf = append(t.buf, data...)
	if !t.prefixed {
		// Only the initiator sends the prefix (RFC 9329 §4): the other
		// direction of a stream that had it carries frames from its
		// first byte.
		if r := s.dirs[tcpDirKey{t.key.dst, t.key.src}]; r != nil && r.initiator {
			t.prefixed = true
		}
	}
	if !t.prefixed {
		n := min(len(t.buf), len(tcpEncapPrefix))
		if !bytes.Equal(t.buf[:n], []byte(tcpEncapPrefix)[:n]) {
			t.done, t.buf = true, nil
			s.stats.NotEncap++
			return out
		}
		if n < len(tcpEncapPrefix) {
			return out
		}
		t.prefixed, t.initiator = true, true
		t.buf = t.buf[len(tcpEncapPrefix):]
		s.stats.Streams++
	}
	b := t.buf
	for len(b) >= 2 {
		l := int(binary.BigEndian.Uint16(b))
		if l < tcpFrameMin {
			t.buf = b // the frames before it were decoded
			s.giveUp(t, &s.stats.BadFrames, t.next, nil)
			return out
		}
		if len(b) < l {
			break
		}
		d := &obs.Datagram{Time: at, Last: at, Source: t.src, IPVersion: t.ipv, Proto: protoTCP,
			Src: t.key.src, Dst: t.key.dst, Length: l - 2, Payload: append([]byte(nil), b[2:l]...), Complete: true,
			TotalLen: -1}
		out = append(out, d)
		s.stats.Frames++
		b = b[l:]
	}
	// keep the partial frame at the start of a buffer of its own size
	t.buf = append(t.buf[:0], b...)
	return out
}

// EncapReader is a Reader whose TCP segments are replaced by the RFC 9329
// frames they carry (TCPStreams); every other record passes unchanged.
type EncapReader struct {
	r  *Reader
	s  *TCPStreams
	q  []*obs.Datagram
	qi int
}

// NewEncapReader decodes RFC 9329 streams in r's records.
func NewEncapReader(r *Reader, o TCPOptions) *EncapReader {
	return &EncapReader{r: r, s: NewTCPStreams(o)}
}

// Next returns the next record, as Reader.Next does.
func (e *EncapReader) Next() (obs.Record, error) {
	for {
		if e.qi < len(e.q) {
			d := e.q[e.qi]
			e.q[e.qi] = nil
			e.qi++
			return obs.Record{Datagram: d}, nil
		}
		e.q, e.qi = e.q[:0], 0
		rec, err := e.r.Next()
		if err != nil {
			e.s.Flush()
			return rec, err
		}
		if rec.Datagram == nil || rec.Datagram.Proto != protoTCP {
			return rec, nil
		}
		e.q = e.s.Add(rec.Datagram, e.q)
	}
}

// TCPStats returns the stream decoder's counters.
func (e *EncapReader) TCPStats() TCPStats { return e.s.Stats() }

// Stats returns the underlying Reader's counters.
func (e *EncapReader) Stats() Stats { return e.r.Stats() }

// Close closes the underlying Reader.
func (e *EncapReader) Close() error { return e.r.Close() }
