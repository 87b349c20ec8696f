package proxy

// The TCP path's downstream half (step 4 of tcp.go's route): a backend's
// datagram onto the client's RFC 9329 stream.
//
//  1. Proxy.tcpFromBackend (downstream.go's hook for TCP flows) learns IKE
//     SA state; Proxy.tcpBackendIKE, keyed, joins an RFC 7383 fragment set
//     into one SK message (Proxy.tcpJoin): RFC 9329 streams need none.
//  2. tcpConn.sendFrames frames the messages into the connection's bounded
//     send queue; a slow reader's IKE closes it, its ESP is dropped.
//  3. tcpConn.flush writes the queue to the socket.

import (
	"errors"
	"os"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// tcpFromBackend queues what a backend datagram of a TCP flow becomes for
// the client: IKE and ESP are framed as they are (IKE SA state learnt on
// the way), keepalives are not sent on a stream.
func (p *Proxy) tcpFromBackend(f *Flow, b *upBufs, payload []byte, now time.Time) {
	fr := (ike.Ports{NATT: 1}).Classify(1, 0, payload)
	switch fr.Kind {
	case ike.KindESP:
		p.promote(f, levelEstablished, now)
	case ike.KindIKE:
		p.tcpBackendIKE(f, fr.IKE, now)
		if out, held := p.tcpJoin(f, fr.IKE); held {
			if out != nil {
				p.observeTCP(f.ln.tcp, false, out)
				b.add(f, out)
			}
			return
		}
		p.observeTCP(f.ln.tcp, false, payload)
	case ike.KindKeepalive:
		p.tcp.ctr.keepalives.Add(1)
		return
	default:
		p.drop(f, DropInvalid, 1)
		return
	}
	b.add(f, payload)
}

// tcpBackendIKE learns what an IKE message from the backend says about
// its IKE SA (as backendIKE does); nothing is re-fragmented toward a
// stream.
func (p *Proxy) tcpBackendIKE(f *Flow, msg []byte, now time.Time) {
	h, err := ike.ParseHeader(msg)
	if err != nil || int(h.Length) != len(msg) {
		return
	}
	if h.IsIKEv1() {
		p.promote(f, levelEstablished, now)
		return
	}
	if !h.IsIKEv2() {
		return
	}
	if h.Exchange == ike.ExchangeIKESAInit {
		if h.Flags.Response() {
			p.learnInitResponse(f, h, msg, now)
		}
		return
	}
	p.learnBeyondInit(f, h, now)
}

// tcpJoin (keyed) turns the backend's RFC 7383 fragments into one SK
// message for the stream, where RFC 9329 says fragmentation should not be used:
// fragments are verified and held until the set is complete, then the
// message is sealed again as SK with a fresh IV. held reports that msg is
// not to be relayed as it is; out, when set, goes instead (with the
// marker). Without the IKE SA's keys, or for a fragment that does not
// verify, msg is relayed unchanged (counted as key misses).
func (p *Proxy) tcpJoin(f *Flow, msg []byte) (out []byte, held bool) {
	if !p.keyed {
		return nil, false
	}
	h, err := ike.ParseHeader(msg)
	if err != nil || !h.IsIKEv2() || int(h.Length) != len(msg) {
		return nil, false
	}
	typ, off, ok := encryptedPayload(msg, h.NextPayload)
	if !ok || typ != ike.PayloadEncryptedFragment {
		return nil, false
	}
	if number, total := skfNumbers(msg, typ, off); number == 0 || total == 0 || number > total {
		return nil, false
	}
	sa, err := p.keys.Lookup(h.SPIi, h.SPIr)
	if err != nil {
		p.count(f, func(c *counters) { c.keyMisses.Add(1) })
		return nil, false
	}
	c := f.ln.tcp
	res := p.reasm.Add(sa, msg)
	switch res.Status {
	case sk.StatusStored:
		p.drop(f, DropReassembly, 1)
		return nil, true
	case sk.StatusRetransmit:
		// the backend resends the set (RFC 7383 §2.6.1): the joined
		// message goes again, once, on fragment 1
		c.wmu.Lock()
		j := c.joined
		c.wmu.Unlock()
		if res.Number == 1 && j.msg != nil && j.key == sk.KeyOf(&h) {
			p.count(f, func(c *counters) { c.replays.Add(1) })
			return j.msg, true
		}
		p.drop(f, DropSuppressed, 1)
		return nil, true
	case sk.StatusComplete:
		sealed, err := sa.Seal(res.Message, nil)
		if err != nil {
			p.log.Debug("proxy: cannot seal the joined message, relaying the fragment", "client", f.key.client.Addr(), "err", err)
			return nil, false
		}
		out = append(make([]byte, ike.NonESPMarkerLen, ike.NonESPMarkerLen+len(sealed)), sealed...)
		c.wmu.Lock()
		c.joined.key, c.joined.msg = sk.KeyOf(&h), out
		c.wmu.Unlock()
		p.tcp.ctr.joined.Add(1)
		return out, true
	}
	// not ours to judge (no keys that verify it): relay it as it is
	p.count(f, func(c *counters) { c.keyMisses.Add(1) })
	return nil, false
}

// sendFrames queues a batch of the backend's datagrams, framed, toward the
// client, and counts them as sent.
func (c *tcpConn) sendFrames(f *Flow, ms []message) {
	p := c.srv.p
	t := c.srv
	limit := p.s.TCP.SendBuffer
	var n, bytes, esp, espBytes uint64
	c.wmu.Lock()
	if c.stopped {
		c.wmu.Unlock()
		p.drop(f, DropClosed, len(ms))
		return
	}
	slow := false
	for i := range ms {
		d := ms[i].Buffers[0]
		if len(d) > tcpMaxFrame-tcpLenField {
			t.ctr.sendErrors.Add(1)
			p.drop(f, DropSendError, 1)
			continue
		}
		isEsp := isESP(d)
		if len(c.queue)+c.inflight+tcpLenField+len(d) > limit {
			if isEsp {
				t.ctr.espDropped.Add(1)
				p.drop(f, DropTCPSendBuffer, 1)
				continue
			}
			slow = true
			break
		}
		c.queue = appendTCPFrame(c.queue, d)
		n++
		bytes += uint64(len(d))
		if isEsp {
			esp++
			espBytes += uint64(len(d))
		}
	}
	start := !slow && !c.writing && len(c.queue) > 0
	if start {
		c.writing = true
	}
	c.wmu.Unlock()
	if slow {
		c.end(tcpEndSlowReader)
		return
	}
	if n > 0 {
		t.ctr.framesOut.Add(n)
		t.ctr.bytesOut.Add(bytes)
		f.pktsOut.Add(n)
		f.espOut.Add(esp)
		for _, cc := range []*counters{&p.total, &f.be.ctr, &f.cl.ctr} {
			cc.pktsOut.Add(n)
			cc.bytesOut.Add(bytes)
			cc.espOut.Add(esp)
			cc.espBytesOut.Add(espBytes)
		}
	}
	if start {
		p.wg.Add(1)
		go c.flush()
	}
}

// tcpWriteChunk is the most written per deadline: a client that takes
// more than message_timeout to accept this much is a slow reader.
const tcpWriteChunk = 64 << 10

// flush writes the send queue until it is empty; it runs only while there
// is something to write, so idle connections keep no writer goroutine.
func (c *tcpConn) flush() {
	defer c.srv.p.wg.Done()
	timeout := c.srv.p.s.TCP.MessageTimeout
	for {
		c.wmu.Lock()
		if c.stopped || len(c.queue) == 0 {
			c.writing = false
			c.wmu.Unlock()
			return
		}
		out := c.queue
		c.queue = c.spare[:0]
		c.spare = nil
		c.inflight = len(out)
		c.wmu.Unlock()
		for off := 0; off < len(out); {
			end := min(off+tcpWriteChunk, len(out))
			_ = c.c.SetWriteDeadline(time.Now().Add(timeout))
			n, err := c.c.Write(out[off:end])
			off += n
			if err != nil {
				why := tcpEndError
				if errors.Is(err, os.ErrDeadlineExceeded) {
					why = tcpEndSlowReader
				}
				c.wmu.Lock()
				c.writing = false
				c.inflight = 0
				c.wmu.Unlock()
				c.end(why)
				return
			}
		}
		c.wmu.Lock()
		c.inflight = 0
		if cap(out) <= c.srv.p.s.TCP.SendBuffer && !c.stopped {
			c.spare = out[:0]
		}
		c.wmu.Unlock()
	}
}
