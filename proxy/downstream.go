package proxy

// The downstream path: a datagram from a backend back to its client.
//
//  1. Flow.readLoop reads a batch from the flow's upstream socket into
//     pooled upBufs; Flow.upError handles ICMP errors (backend health).
//  2. Proxy.fromBackend decides what each datagram becomes: relayed as it
//     is, or, for an IKE message larger than the client's path MTU on a
//     keyed SA, re-fragmented per RFC 7383 (refrag.go), or replayed from
//     the cache for a retransmission.
//  3. Proxy.sendClient writes the batch to the client from the address it
//     sent to (IP_PKTINFO), with the non-ESP marker on port 4500.

import (
	"errors"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
)

// upBufs are the buffers of one upstream read and its writes toward the
// client, taken from a pool only while a flow has data.
type upBufs struct {
	ms   []message
	out  []message
	bufs [][]byte
	one  [][][]byte // one-element Buffers slices for out
}

func newUpBufs(n int) *upBufs {
	b := &upBufs{ms: make([]message, n), bufs: make([][]byte, n)}
	for i := range b.ms {
		b.bufs[i] = make([]byte, rxBufSize)
		b.ms[i].Buffers = [][]byte{b.bufs[i]}
	}
	return b
}

func (b *upBufs) add(f *Flow, d []byte) {
	i := len(b.out)
	if i >= len(b.one) {
		b.one = append(b.one, make([][]byte, 1))
	}
	b.one[i][0] = d
	b.out = append(b.out, message{Buffers: b.one[i], Addr: f.dst, OOB: f.oob})
}

func (b *upBufs) reset() {
	for i := range b.out {
		b.one[i][0] = nil
		b.out[i] = message{}
	}
	b.out = b.out[:0]
}

// readLoop relays a flow's backend datagrams to its client.
func (f *Flow) readLoop() {
	p := f.p
	defer p.wg.Done()
	for {
		serr, err := f.up.waitReadable()
		if err != nil || f.closed.Load() {
			return
		}
		if serr != nil {
			f.upError(serr)
			continue
		}
		b := p.pool.Get().(*upBufs)
		k, err := f.up.b.ReadBatch(b.ms, unix.MSG_DONTWAIT)
		if err != nil {
			p.pool.Put(b)
			if f.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if errnoOf(err) != unix.EAGAIN {
				f.upError(err)
			}
			continue
		}
		now := p.now()
		f.last.Store(now.UnixNano())
		first := !f.replied.Swap(true)
		if first {
			f.be.replied(now)
		}
		for i := 0; i < k; i++ {
			m := &b.ms[i]
			if m.Flags&unix.MSG_TRUNC != 0 {
				p.drop(f, DropTruncated, 1)
				continue
			}
			p.fromBackend(f, b, m.Buffers[0][:m.N], now)
		}
		if first && f.natt && p.fpx != nil && f.ln.tcp == nil {
			// Mapped before the backend's first reply reaches the client:
			// on a new NAT-T flow that reply ends IKE_AUTH, and only then
			// can the client send ESP, so the tunnel's ESP never crosses
			// user space. It costs this flow's reader, once, two route
			// lookups and the map updates (tens of microseconds; the first
			// flow through an interface also attaches the program), and
			// it sees a route MTU set while this batch was judged.
			p.fpMap(f)
		}
		if f.ln.tcp != nil {
			f.ln.tcp.sendFrames(f, b.out) // RFC 9329 stream (tcp.go)
		} else {
			p.sendClient(f, b.out)
		}
		b.reset()
		p.pool.Put(b)
	}
}

// upError handles an error on an upstream socket: one ICMP error is
// reported both as the socket error and in the error queue, and counts
// once.
func (f *Flow) upError(err error) {
	p := f.p
	counted := false
	switch errnoOf(err) {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH:
		p.backendFailed(f.be, err.Error())
		counted = true
	}
	f.up.drainErrors(func(e sockErr) {
		if !counted && (e.Errno == unix.ECONNREFUSED || e.Errno == unix.EHOSTUNREACH) {
			p.backendFailed(f.be, e.Errno.Error())
			counted = true
		}
	})
}

// fromBackend queues what a backend datagram becomes for the client.
func (p *Proxy) fromBackend(f *Flow, b *upBufs, payload []byte, now time.Time) {
	if f.ln.tcp != nil {
		p.tcpFromBackend(f, b, payload, now)
		return
	}
	fr := p.classify(f.ln, payload)
	if f.addMarker {
		// the backend framed IKE with a marker; the client expects none
		if fr = ike.ClassifyNATT(payload); fr.Kind == ike.KindIKE {
			payload = fr.IKE
			fr.Marker = false
		} else {
			fr = ike.Framing{Kind: ike.KindNone}
		}
	}
	if fr.Kind == ike.KindESP {
		p.promote(f, levelEstablished, now)
	}
	if fr.Kind == ike.KindIKE && len(fr.IKE) >= ike.HeaderLen {
		out, relay := p.backendIKE(f, payload, fr, now)
		for _, d := range out {
			b.add(f, d)
		}
		if !relay {
			return
		}
	}
	b.add(f, payload)
}

// sendClient writes datagrams to the client from the address it used.
func (p *Proxy) sendClient(f *Flow, ms []message) {
	retried := false
	for len(ms) > 0 {
		n, err := f.ln.sock.b.WriteBatch(ms, 0)
		if err != nil {
			if errnoOf(err) == unix.EMSGSIZE {
				f.ln.sock.drainErrors(f.ln.sockError)
			}
			if !retried {
				// A send reports an earlier datagram's ICMP error (the
				// router's "fragmentation needed") instead of sending:
				// send it again, once; the kernel now knows the path MTU.
				retried = true
				continue
			}
			p.drop(f, DropSendError, 1)
			n = 1
		} else {
			var bytes, esp, espBytes uint64
			for i := 0; i < n; i++ {
				bytes += uint64(ms[i].N)
				if f.natt && isESP(ms[i].Buffers[0]) {
					esp++
					espBytes += uint64(ms[i].N)
				}
			}
			f.pktsOut.Add(uint64(n))
			f.espOut.Add(esp)
			for _, c := range []*counters{&p.total, &f.be.ctr, &f.cl.ctr} {
				c.pktsOut.Add(uint64(n))
				c.bytesOut.Add(bytes)
				c.espOut.Add(esp)
				c.espBytesOut.Add(espBytes)
			}
		}
		retried = false
		ms = ms[n:]
	}
}
