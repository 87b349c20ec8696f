package sk

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ikefrag/ikefrag/ike"
)

// Decrypted is a whole IKE message in the clear: what Open gives for an SK
// message and what the Reassembler gives for a complete set of SKF
// fragments.
type Decrypted struct {
	// Header is the received header (of fragment 1 for a reassembled
	// message). Its Next Payload and Length are recomputed when the
	// message is protected again.
	Header ike.Header
	// Unprotected holds the payloads that precede SK (fragment 1 for SKF),
	// encoded; the first one's type is Header.NextPayload. Usually empty.
	Unprotected []byte
	// Inner is the type of the first inner payload (the SK Next Payload).
	Inner ike.PayloadType
	// Payloads is the inner payload chain, padding removed.
	Payloads []byte
	// Fragments is the Total Fragments it arrived in; 0 for an SK message.
	Fragments uint16
}

// Decode decodes the inner payload chain with the ike codec.
func (d *Decrypted) Decode() ([]ike.Payload, error) { return ike.DecodePayloads(d.Inner, d.Payloads) }

// Decrypted returns the whole message an SK Opened carries. It fails for
// a fragment, which needs the Reassembler.
func (o *Opened) Decrypted() (*Decrypted, error) {
	if o.Fragment {
		return nil, fmt.Errorf("fragment %d of %d is not a whole message", o.Number, o.Total)
	}
	return &Decrypted{Header: o.Header, Unprotected: o.Unprotected, Inner: o.NextPayload, Payloads: o.Content}, nil
}

// withLastNext returns a copy of the unprotected payload chain whose last
// payload's Next Payload is np (SK or SKF).
func withLastNext(unprot []byte, np ike.PayloadType) ([]byte, error) {
	if len(unprot) == 0 {
		return nil, nil
	}
	out := append([]byte(nil), unprot...)
	off := 0
	for i := 0; ; i++ {
		if len(out)-off < 4 || i >= ike.MaxPayloads {
			return nil, fmt.Errorf("%w: unprotected payloads do not form a chain", ErrMalformed)
		}
		plen := int(binary.BigEndian.Uint16(out[off+2:]))
		if plen < 4 || plen > len(out)-off {
			return nil, fmt.Errorf("%w: unprotected payload at offset %d has Payload Length %d", ErrMalformed, off, plen)
		}
		if off+plen == len(out) {
			out[off] = byte(np)
			return out, nil
		}
		off += plen
	}
}

// firstType is the IKE header's Next Payload for a message carrying d's
// unprotected payloads followed by an encrypted payload of type enc.
func (d *Decrypted) firstType(enc ike.PayloadType) ike.PayloadType {
	if len(d.Unprotected) > 0 {
		return d.Header.NextPayload
	}
	return enc
}

// Seal protects d as one SK message (no non-ESP marker) with a fresh IV
// read from ivs (crypto/rand when nil).
func (sa *SA) Seal(d *Decrypted, ivs io.Reader) ([]byte, error) {
	unprot, err := withLastNext(d.Unprotected, ike.PayloadEncrypted)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, sa.p.iv)
	if err := readIVs(ivs, iv); err != nil {
		return nil, err
	}
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	if sa.closed {
		return nil, ErrClosed
	}
	return sa.seal(nil, &unit{h: &d.Header, firstNP: d.firstType(ike.PayloadEncrypted), unprot: unprot,
		np: d.Inner, content: d.Payloads, iv: iv})
}

// SealFragment protects one SKF fragment (no non-ESP marker): header h
// (its Next Payload and Length are replaced), unprotected payloads whose
// last Next Payload is already SKF (fragment 1 only), the SKF Next Payload
// np, Fragment Number and Total Fragments, and the chunk of inner payload
// bytes. It is the building block of Split; tests use it to make
// hand-crafted fragment patterns.
func (sa *SA) SealFragment(h *ike.Header, unprot []byte, np ike.PayloadType, number, total uint16, chunk []byte, ivs io.Reader) ([]byte, error) {
	if number == 0 || total == 0 || number > total {
		return nil, fmt.Errorf("%w: SKF fragment %d of %d", ErrMalformed, number, total)
	}
	first := ike.PayloadEncryptedFragment
	if len(unprot) > 0 {
		first = h.NextPayload
	}
	iv := make([]byte, sa.p.iv)
	if err := readIVs(ivs, iv); err != nil {
		return nil, err
	}
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	if sa.closed {
		return nil, ErrClosed
	}
	return sa.seal(nil, &unit{h: h, firstNP: first, unprot: unprot, skf: true, np: np,
		number: number, total: total, content: chunk, iv: iv})
}

func readIVs(r io.Reader, b []byte) error {
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("sk: reading IVs: %w", err)
	}
	return nil
}

// Target is where fragments go: the largest IP datagram the path to one
// peer carries, its address family, and whether IKE runs on the NAT-T port
// (4-byte non-ESP marker before each IKE message).
type Target struct {
	MTU    int // whole IP datagram, IP header included
	IPv6   bool
	Marker bool
}

func (t Target) String() string {
	fam, m := "IPv4", ""
	if t.IPv6 {
		fam = "IPv6"
	}
	if t.Marker {
		m = "+marker"
	}
	return fmt.Sprintf("%s/%d%s", fam, t.MTU, m)
}

// Overhead is the bytes of each datagram before the IKE header: IP header
// (20 or 40, no options or extension headers), UDP header, and the marker.
func (t Target) Overhead() int {
	n := 20 + 8
	if t.IPv6 {
		n = 40 + 8
	}
	if t.Marker {
		n += ike.NonESPMarkerLen
	}
	return n
}

// ErrTargetTooSmall is returned when not one content byte fits a fragment.
var ErrTargetTooSmall = errors.New("target datagram size too small for a fragment")

// FragmentContent is the number of inner payload bytes one SKF fragment
// carries at most for the target (RFC 7383 §2.5.1 arithmetic): the
// datagram size less IP, UDP, marker, IKE header, unprotLen bytes of
// unprotected payloads (fragment 1 only), SKF header, IV and ICV, rounded
// down to the cipher block, less the Pad Length byte. IPv4, NAT-T,
// AES-CBC/HMAC-SHA2-256-128 at 576 gives 463; AES-GCM-16 gives 483.
func FragmentContent(s Suite, t Target, unprotLen int) (int, error) {
	p, err := s.params()
	if err != nil {
		return 0, err
	}
	return p.fragmentContent(t, unprotLen)
}

func (p *params) fragmentContent(t Target, unprotLen int) (int, error) {
	avail := t.MTU - t.Overhead() - ike.HeaderLen - unprotLen - ike.SKFHeaderLen - p.iv - p.icv
	avail = avail / p.block * p.block
	if avail-1 < 1 {
		return 0, fmt.Errorf("%w: %s leaves %d content bytes", ErrTargetTooSmall, t, avail-1)
	}
	return avail - 1, nil
}

// Output is the result of splitting one message.
type Output struct {
	// Datagrams are the UDP payloads to send, in order, each starting with
	// the non-ESP marker when the target has one. They share one buffer
	// and must not be modified.
	Datagrams [][]byte
	// Total is the Total Fragments; 0 when the message fit whole and was
	// sent as one SK message.
	Total  int
	Target Target
}

// Bytes is the sum of the datagram lengths.
func (o *Output) Bytes() int {
	n := 0
	for _, d := range o.Datagrams {
		n += len(d)
	}
	return n
}

// ErrTooManyFragments is returned when a message needs more fragments
// than allowed.
var ErrTooManyFragments = errors.New("too many fragments")

// MaxTotalFragments is the largest Total Fragments the wire format holds.
const MaxTotalFragments = 0xffff

// Split protects d for the target with fresh IVs from ivs (crypto/rand
// when nil). If the whole SK message fits one datagram it is sent whole,
// as strongSwan does; otherwise it is cut into the fewest SKF fragments,
// each filled to FragmentContent except the last. maxTotal bounds the
// fragment count (0: MaxTotalFragments).
func (sa *SA) Split(d *Decrypted, t Target, maxTotal int, ivs io.Reader) (*Output, error) {
	return sa.split(d, t, 0, maxTotal, ivs)
}

// SplitAtLeast is Split with at least minTotal SKF fragments; when
// minTotal is more than the target needs, the content is spread evenly.
// It serves a PMTU step-down, where the new cut must have a higher Total
// Fragments than the old one (RFC 7383 §2.5.2, §2.6).
func (sa *SA) SplitAtLeast(d *Decrypted, t Target, minTotal, maxTotal int, ivs io.Reader) (*Output, error) {
	return sa.split(d, t, minTotal, maxTotal, ivs)
}

func (sa *SA) split(d *Decrypted, t Target, minTotal, maxTotal int, ivs io.Reader) (*Output, error) {
	p := &sa.p
	if maxTotal <= 0 || maxTotal > MaxTotalFragments {
		maxTotal = MaxTotalFragments
	}
	L := len(d.Payloads)
	if minTotal <= 1 {
		if whole, _ := p.unitLen(len(d.Unprotected), false, L); t.Overhead()+whole <= t.MTU {
			b, err := sa.Seal(d, ivs)
			if err != nil {
				return nil, err
			}
			if t.Marker {
				b = append(make([]byte, ike.NonESPMarkerLen, ike.NonESPMarkerLen+len(b)), b...)
			}
			return &Output{Datagrams: [][]byte{b}, Target: t}, nil
		}
	}
	c1, err := p.fragmentContent(t, len(d.Unprotected))
	if err != nil {
		return nil, err
	}
	c, _ := p.fragmentContent(t, 0)
	sizes, err := cut(L, c1, c, minTotal, maxTotal)
	if err != nil {
		return nil, fmt.Errorf("%d-byte message to %s: %w", L, t, err)
	}
	unprot, err := withLastNext(d.Unprotected, ike.PayloadEncryptedFragment)
	if err != nil {
		return nil, err
	}
	T := len(sizes)
	total := 0
	for i, n := range sizes {
		ul := 0
		if i == 0 {
			ul = len(unprot)
		}
		m, _ := p.unitLen(ul, true, n)
		total += m
		if t.Marker {
			total += ike.NonESPMarkerLen
		}
	}
	// One allocation for the IVs and the AEAD nonce scratch.
	ivBuf := make([]byte, T*p.iv+12)
	nonce := ivBuf[T*p.iv:]
	ivBuf = ivBuf[:T*p.iv]
	if err := readIVs(ivs, ivBuf); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, total+8)
	out := &Output{Datagrams: make([][]byte, T), Total: T, Target: t}
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	if sa.closed {
		return nil, ErrClosed
	}
	u := unit{h: &d.Header, skf: true, total: uint16(T), nonce: nonce}
	off := 0
	for i, n := range sizes {
		s := len(buf)
		if t.Marker {
			buf = append(buf, 0, 0, 0, 0)
		}
		u.number = uint16(i + 1)
		u.content = d.Payloads[off : off+n]
		u.iv = ivBuf[i*p.iv : (i+1)*p.iv]
		if i == 0 {
			u.firstNP, u.unprot, u.np = d.firstType(ike.PayloadEncryptedFragment), unprot, d.Inner
		} else {
			u.firstNP, u.unprot, u.np = ike.PayloadEncryptedFragment, nil, ike.PayloadNone
		}
		if buf, err = sa.seal(buf, &u); err != nil {
			return nil, err
		}
		out.Datagrams[i] = buf[s:len(buf):len(buf)]
		off += n
	}
	return out, nil
}

// cut returns the content size of each fragment: the fewest fragments
// filled greedily, or, when minTotal asks for more, minTotal fragments
// filled evenly.
func cut(L, c1, c, minTotal, maxTotal int) ([]int, error) {
	need := 1
	if L > c1 {
		need += (L - c1 + c - 1) / c
	}
	if need > maxTotal {
		return nil, fmt.Errorf("%w: needs %d, limit %d", ErrTooManyFragments, need, maxTotal)
	}
	if minTotal <= need {
		sizes := make([]int, need)
		rest := L
		for i := range sizes {
			lim := c
			if i == 0 {
				lim = c1
			}
			sizes[i] = min(rest, lim)
			rest -= sizes[i]
		}
		return sizes, nil
	}
	T := minTotal
	if T > maxTotal {
		return nil, fmt.Errorf("%w: asked for %d, limit %d", ErrTooManyFragments, T, maxTotal)
	}
	if L < T {
		return nil, fmt.Errorf("%w: %d bytes cannot fill %d fragments", ErrTooManyFragments, L, T)
	}
	sizes := make([]int, T)
	spread := func(from, n int) {
		k := T - from
		for i := from; i < T; i++ {
			sizes[i] = n / k
			if i-from < n%k {
				sizes[i]++
			}
		}
	}
	spread(0, L)
	if sizes[0] > c1 {
		sizes[0] = c1
		spread(1, L-c1)
	}
	return sizes, nil
}
