package capture

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// Defaults for DefragOptions.
const (
	// DefaultTimeout matches Linux's net.ipv4.ipfrag_time.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxDatagram is the largest IP payload a length field allows.
	DefaultMaxDatagram = maxIPPayload
	// DefaultMaxFragments covers a 65535-byte datagram at the IPv6
	// minimum MTU of 1280 (54 fragments) and bounds the per-fragment work
	// a crafted train can cause.
	DefaultMaxFragments = 64
	// DefaultMaxTrains is far more trains than IKE traffic keeps open at
	// once; it bounds the table when fragments never complete.
	DefaultMaxTrains = 4096
	// DefaultMaxBufferedBytes is four times Linux's ipfrag_high_thresh: an
	// offline reader can afford more than a kernel.
	DefaultMaxBufferedBytes = 16 << 20
)

// DefragOptions bounds a Defragmenter. Zero (or negative) fields take the
// defaults.
type DefragOptions struct {
	// Timeout is how long, in capture time, a train waits for its missing
	// fragments, counted from its first fragment (default 30 s).
	Timeout time.Duration
	// MaxDatagram is the largest reassembled IP payload in bytes (default
	// 65535, which is also the upper bound). A fragment reaching past it
	// drops its train.
	MaxDatagram int
	// MaxFragments is the most distinct fragments one train holds (default
	// 64). One more drops the train.
	MaxFragments int
	// MaxTrains is the most trains in flight (default 4096). A new train
	// beyond it evicts the oldest, which is emitted incomplete.
	MaxTrains int
	// MaxBufferedBytes caps the fragment bytes held across trains (default
	// 16 MiB). Oldest trains are evicted, and emitted incomplete, to stay
	// under it.
	MaxBufferedBytes int
}

func (o DefragOptions) withDefaults() DefragOptions {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxDatagram <= 0 || o.MaxDatagram > maxIPPayload {
		o.MaxDatagram = DefaultMaxDatagram
	}
	if o.MaxFragments <= 0 {
		o.MaxFragments = DefaultMaxFragments
	}
	if o.MaxTrains <= 0 {
		o.MaxTrains = DefaultMaxTrains
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	return o
}

// DefragStats counts what a Defragmenter did.
type DefragStats struct {
	Packets     int // packets added
	Whole       int // unfragmented packets passed through
	Fragments   int // fragments stored in trains
	Duplicates  int // exact duplicate fragments ignored
	Overlapping int // fragments stored although they overlap others with identical bytes

	Reassembled int // trains completed
	TimedOut    int // trains emitted incomplete after Timeout
	Flushed     int // trains emitted incomplete by Flush (end of input)
	Evicted     int // trains given up (emitted incomplete) to honour MaxTrains or MaxBufferedBytes

	OverlapDropped   int // trains dropped: overlapping fragments with different bytes (RFC 5722)
	ConflictDropped  int // trains dropped: fragments disagree on where the datagram ends
	TooManyFragments int // trains dropped: more than MaxFragments
	Oversize         int // trains dropped (or fragments refused): data beyond MaxDatagram
	BadUDP           int // datagrams dropped: UDP length below 8 or beyond the IP payload

	InFlight     int // trains open now
	PeakInFlight int // most trains open at once
	Buffered     int // fragment bytes held now
}

// trainKey identifies a fragment train. RFC 791 keys IPv4 reassembly on
// (src, dst, protocol, ID); RFC 8200 §4.5 keys IPv6 on (src, dst, ID), so
// proto is 0 there. The capture interface and direction are part of the key
// so a packet captured on two interfaces of a router, or in and out of one,
// gives two trains.
type trainKey struct {
	src, dst netip.Addr
	id       uint32
	ifindex  int
	dir      obs.Direction
	ver      uint8
	proto    uint8
}

// fragment is one stored fragment; its captured bytes sit in the train's
// buffer at [dataOff, dataOff+dataLen).
type fragment struct {
	obs.Frag
	dataOff, dataLen int
	df               bool
	nh               uint8 // IPv4 protocol, or the IPv6 Fragment header's Next Header
}

func (f *fragment) end() int { return f.Offset + f.Len }

// train is one datagram being reassembled. Trains form a list in creation
// order, which is also deadline order because the clock never goes back.
type train struct {
	key        trainKey
	prev, next *train
	deadline   time.Time
	first      time.Time // time of the first packet seen
	last       time.Time // time of the last packet seen
	firstSeen  obs.Source
	firstNH    uint8
	total      int        // datagram end, once the last fragment is seen; else -1
	frags      []fragment // sorted by Offset, then arrival
	buf        []byte     // captured fragment bytes in arrival order
}

// Defragmenter reassembles IPv4 and IPv6 fragment trains of any protocol
// and turns every packet into an obs.Datagram: unfragmented ones at once,
// fragments when their train completes, times out, is evicted or is flushed.
//
// Time is capture time: the clock is the latest packet time seen, so capture
// timestamps that go backwards never shorten or lengthen a wait, and a
// capture whose timestamps are all zero never times anything out (the
// MaxTrains and MaxBufferedBytes bounds still hold).
//
// A Defragmenter is not safe for concurrent use.
type Defragmenter struct {
	opt        DefragOptions
	trains     map[trainKey]*train
	head, tail *train
	free       []*train
	clock      time.Time
	held       int
	scratch    []byte
	stats      DefragStats
}

// freeTrains bounds the recycled train list; recycled buffers above
// maxRecycledBuf are let go so idle memory stays small.
const (
	freeTrains     = 64
	maxRecycledBuf = 16 << 10
)

// NewDefragmenter returns a Defragmenter with opts (zero fields default).
func NewDefragmenter(opts DefragOptions) *Defragmenter {
	return &Defragmenter{
		opt:    opts.withDefaults(),
		trains: make(map[trainKey]*train),
	}
}

// Options returns the options in effect, defaults filled in.
func (d *Defragmenter) Options() DefragOptions { return d.opt }

// Stats returns the counters.
func (d *Defragmenter) Stats() DefragStats {
	s := d.stats
	s.InFlight = len(d.trains)
	s.Buffered = d.held
	return s
}

// Add feeds one decoded packet and appends the datagrams that result (trains
// timed out by p's time first, then p's own datagram if it is whole or
// completes a train) to out. The datagrams own their memory.
func (d *Defragmenter) Add(p *Packet, out []*obs.Datagram) []*obs.Datagram {
	d.stats.Packets++
	if p.Time.After(d.clock) {
		d.clock = p.Time
	}
	out = d.expire(out)
	if !p.Fragment {
		d.stats.Whole++
		if dg := d.whole(p); dg != nil {
			out = append(out, dg)
		}
		return out
	}
	return d.addFragment(p, out)
}

// Advance moves the clock to now (if later) and emits the trains whose time
// is up.
func (d *Defragmenter) Advance(now time.Time, out []*obs.Datagram) []*obs.Datagram {
	if now.After(d.clock) {
		d.clock = now
	}
	return d.expire(out)
}

// Flush emits every open train as incomplete, oldest first: the end of the
// input.
func (d *Defragmenter) Flush(out []*obs.Datagram) []*obs.Datagram {
	for d.head != nil {
		t := d.head
		d.stats.Flushed++
		out = d.emitIncomplete(t, out, obs.TrainEndOfInput)
	}
	return out
}

func (d *Defragmenter) expire(out []*obs.Datagram) []*obs.Datagram {
	for d.head != nil && d.clock.After(d.head.deadline) {
		d.stats.TimedOut++
		out = d.emitIncomplete(d.head, out, obs.TrainTimeout)
	}
	return out
}

func (d *Defragmenter) emitIncomplete(t *train, out []*obs.Datagram, why obs.IncompleteReason) []*obs.Datagram {
	if dg := d.build(t, false); dg != nil {
		dg.Incomplete = why
		out = append(out, dg)
	}
	d.remove(t)
	return out
}

func keyOf(p *Packet) trainKey {
	k := trainKey{
		src:     p.Src,
		dst:     p.Dst,
		id:      p.IPID,
		ifindex: p.Ifindex,
		dir:     p.Dir,
		ver:     p.Version,
		proto:   p.Proto,
	}
	if k.ver == 0 {
		k.ver = 6
		if p.Src.Is4() {
			k.ver = 4
		}
	}
	if k.ver == 6 {
		k.proto = 0
	}
	return k
}

func (d *Defragmenter) addFragment(p *Packet, out []*obs.Datagram) []*obs.Datagram {
	k := keyOf(p)
	t := d.trains[k]
	flen := max(p.PayloadLen, 0)
	data := p.Payload
	if len(data) > flen {
		data = data[:flen]
	}
	off := max(p.FragOffset, 0)
	// Compare the parts first so that values from outside the decoder
	// cannot overflow the sum.
	end := off + flen
	if off > d.opt.MaxDatagram || flen > d.opt.MaxDatagram || end > d.opt.MaxDatagram {
		d.stats.Oversize++
		if t != nil {
			d.remove(t)
		}
		return out
	}
	if t != nil {
		switch t.check(off, end, p.MF, data) {
		case fragDuplicate:
			d.stats.Duplicates++
			return out
		case fragOverlapDiffers:
			d.stats.OverlapDropped++
			d.remove(t)
			return out
		case fragConflict:
			d.stats.ConflictDropped++
			d.remove(t)
			return out
		case fragOverlapSame:
			d.stats.Overlapping++
		}
		if len(t.frags) >= d.opt.MaxFragments {
			d.stats.TooManyFragments++
			d.remove(t)
			return out
		}
	} else {
		for len(d.trains) >= d.opt.MaxTrains && d.head != nil {
			d.stats.Evicted++
			out = d.emitIncomplete(d.head, out, obs.TrainEvicted)
		}
		t = d.newTrain(k, p)
	}
	// Keep the byte budget: evict the oldest other trains first.
	for d.held+len(data) > d.opt.MaxBufferedBytes {
		victim := d.head
		if victim == t {
			victim = t.next
		}
		if victim == nil {
			break
		}
		d.stats.Evicted++
		out = d.emitIncomplete(victim, out, obs.TrainEvicted)
	}
	if d.held+len(data) > d.opt.MaxBufferedBytes {
		// Only this train is left and it alone is over budget.
		d.stats.Evicted++
		if len(t.frags) == 0 {
			d.remove(t)
			return out
		}
		return d.emitIncomplete(t, out, obs.TrainEvicted)
	}

	d.stats.Fragments++
	t.insert(p, off, flen, data)
	d.held += len(data)
	t.last = p.Time
	if !p.MF {
		t.total = end
	}
	if t.complete() {
		d.stats.Reassembled++
		if dg := d.build(t, true); dg != nil {
			out = append(out, dg)
		}
		d.remove(t)
	}
	return out
}

func (d *Defragmenter) newTrain(k trainKey, p *Packet) *train {
	var t *train
	if n := len(d.free); n > 0 {
		t = d.free[n-1]
		d.free[n-1] = nil
		d.free = d.free[:n-1]
	} else {
		t = &train{}
	}
	t.key = k
	t.deadline = d.clock.Add(d.opt.Timeout)
	t.first = p.Time
	t.last = p.Time
	t.firstSeen = p.Source
	t.firstNH = p.Proto
	t.total = -1
	// Append to the creation-order list.
	t.prev = d.tail
	t.next = nil
	if d.tail != nil {
		d.tail.next = t
	} else {
		d.head = t
	}
	d.tail = t
	d.trains[k] = t
	if n := len(d.trains); n > d.stats.PeakInFlight {
		d.stats.PeakInFlight = n
	}
	return t
}

// remove unlinks t, returns its bytes to the budget and recycles it.
func (d *Defragmenter) remove(t *train) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		d.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		d.tail = t.prev
	}
	delete(d.trains, t.key)
	d.held -= len(t.buf)
	t.prev, t.next = nil, nil
	t.frags = t.frags[:0]
	if cap(t.buf) > maxRecycledBuf {
		t.buf = nil
	}
	t.buf = t.buf[:0]
	if len(d.free) < freeTrains {
		d.free = append(d.free, t)
	}
}

type fragVerdict uint8

const (
	fragNew fragVerdict = iota
	fragDuplicate
	fragOverlapSame
	fragOverlapDiffers
	fragConflict
)

// check classifies a new fragment [off, end) against the train.
func (t *train) check(off, end int, mf bool, data []byte) fragVerdict {
	if t.total >= 0 {
		// The last fragment fixed the end: nothing may pass it, and a
		// second last fragment must agree.
		if end > t.total || (!mf && end != t.total) {
			return fragConflict
		}
	} else if !mf {
		for i := range t.frags {
			if t.frags[i].end() > end {
				return fragConflict
			}
		}
	}
	v := fragNew
	for i := range t.frags {
		f := &t.frags[i]
		if f.Offset == off && f.Len == end-off && f.MF == mf && t.sameBytes(f, off, data) {
			return fragDuplicate
		}
		if f.Offset >= end || off >= f.end() {
			continue
		}
		if !t.sameBytes(f, off, data) {
			return fragOverlapDiffers
		}
		v = fragOverlapSame
	}
	return v
}

// sameBytes reports whether f's captured bytes and data (captured bytes of
// a fragment at off) agree wherever both are known.
func (t *train) sameBytes(f *fragment, off int, data []byte) bool {
	lo := max(f.Offset, off)
	hi := min(f.Offset+f.dataLen, off+len(data))
	if lo >= hi {
		return true
	}
	fd := t.buf[f.dataOff+lo-f.Offset : f.dataOff+hi-f.Offset]
	return bytes.Equal(fd, data[lo-off:hi-off])
}

func (t *train) insert(p *Packet, off, flen int, data []byte) {
	f := fragment{
		Frag: obs.Frag{
			Source: p.Source,
			Time:   p.Time,
			Offset: off,
			Len:    flen,
			MF:     p.MF,
			IPLen:  p.IPLen,
		},
		dataOff: len(t.buf),
		dataLen: len(data),
		df:      p.DF,
		nh:      p.Proto,
	}
	t.buf = append(t.buf, data...)
	// Insertion sort: a train holds at most MaxFragments entries.
	i := len(t.frags)
	t.frags = append(t.frags, f)
	for i > 0 && t.frags[i-1].Offset > off {
		t.frags[i] = t.frags[i-1]
		i--
	}
	t.frags[i] = f
}

// complete reports whether the fragments cover [0, total).
func (t *train) complete() bool {
	if t.total < 0 {
		return false
	}
	reach := 0
	for i := range t.frags {
		f := &t.frags[i]
		if f.Offset > reach {
			return false
		}
		reach = max(reach, f.end())
	}
	return reach >= t.total
}
