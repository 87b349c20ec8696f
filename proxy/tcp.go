package proxy

// The TCP path (proxy.tcp): IKE and ESP over TCP (RFC 9329) from clients,
// relayed to the backends over UDP.
//
//  1. tcpServer.acceptLoop accepts a connection and applies the limits
//     that need no byte from it: the source rules of admit.go,
//     connections_per_address and max_connections (evicting the oldest
//     connection that has no flow yet).
//  2. tcpConn.run reads the IKETCP prefix and the frames (tcpframe.go)
//     under message_timeout and idle_timeout. The first frame must earn a
//     flow like a datagram on the NAT-T port (Proxy.earned: a well-formed
//     IKE_SA_INIT request, or a message of an IKE SA the backend answered,
//     which keeps its backend by SPI affinity); Proxy.newFlow then places
//     it and opens its upstream UDP socket to the backend's NAT-T port.
//     The connection is the flow's listener (listener.tcp), so a flow
//     never reaches anything but its configured backend.
//  3. Proxy.tcpFromClient accounts each frame and inspects IKE as
//     fromClient does (no path-MTU evidence: TCP segments say nothing of
//     the client's datagrams); Proxy.tcpSplitUp sends its payload to the
//     backend: marked IKE or ESP-in-UDP as it is, or, keyed, an IKE
//     message too large for the path to the backend as RFC 7383
//     fragments (refragup.go).
//  4. Flow.readLoop hands the backend's datagrams to
//     Proxy.tcpFromBackend (downstream.go's hook), which learns IKE SA
//     state and queues them; tcpConn.sendFrames frames them into the
//     connection's bounded send queue, which tcpConn.flush writes.
//  5. A connection ends with its flow: either side's close ends the other
//     (Proxy.closeFlow's hook), each end counted by its reason.

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// tcpEnd says why a connection ended (or was refused).
type tcpEnd uint8

const (
	tcpEndClientClosed   tcpEnd = iota // the client closed (FIN or RST) between frames
	tcpEndPrefix                       // the stream did not start with IKETCP
	tcpEndFirstTimeout                 // no prefix and first message within message_timeout of the accept
	tcpEndMessageTimeout               // a message begun was not complete within message_timeout (slowloris)
	tcpEndIdle                         // no message either way for idle_timeout
	tcpEndShortFrame                   // a frame shorter than a marker or SPI
	tcpEndTooLong                      // a frame longer than max_message
	tcpEndIKETooLong                   // an IKE message longer than max_ike_message
	tcpEndTruncated                    // the stream ended inside a frame
	tcpEndUnsolicited                  // the first message did not earn a flow (admit.go)
	tcpEndNoFlow                       // a flow could not be opened (limits, no backend, a flow of the same addresses)
	tcpEndSlowReader                   // the client did not read: send_buffer full for IKE, or no write progress for message_timeout
	tcpEndFlowEnded                    // its flow ended (expiry, eviction)
	tcpEndEvicted                      // room made for a new connection at max_connections (no flow yet)
	tcpEndError                        // a read or write error
	tcpEndShutdown                     // the proxy stopped
	numTCPEnds
)

var tcpEndNames = [numTCPEnds]string{"client_closed", "bad_prefix", "first_message_timeout", "message_timeout",
	"idle", "short_frame", "too_long", "ike_too_long", "truncated", "unsolicited", "no_flow", "slow_reader",
	"flow_ended", "evicted_no_flow", "error", "shutdown"}

func (e tcpEnd) String() string {
	if e < numTCPEnds {
		return tcpEndNames[e]
	}
	return "unknown"
}

// tcpRefusal says why an accepted connection was closed at once.
type tcpRefusal uint8

const (
	tcpRefusedSource     tcpRefusal = iota // not a possible client (admit.go's rules; also counted in the drop reasons)
	tcpRefusedPerAddress                   // connections_per_address reached
	tcpRefusedTotal                        // max_connections reached, every connection has a flow
	numTCPRefusals
)

var tcpRefusalNames = [numTCPRefusals]string{"source", "per_address", "max_connections"}

// tcpCounters are the TCP listener's own counters; the frames are also
// counted as datagrams in the proxy's, backends' and clients' counters.
type tcpCounters struct {
	accepted   atomic.Uint64
	refused    [numTCPRefusals]atomic.Uint64
	ended      [numTCPEnds]atomic.Uint64
	framesIn   atomic.Uint64
	bytesIn    atomic.Uint64 // frame payloads, client → backend
	framesOut  atomic.Uint64
	bytesOut   atomic.Uint64 // frame payloads, backend → client
	espDropped atomic.Uint64 // ESP toward a client that did not fit its send_buffer
	keepalives atomic.Uint64 // backend NAT-T keepalives, not framed (RFC 9329 §3)
	sendErrors atomic.Uint64 // frames not queued: too long for a frame
	joined     atomic.Uint64 // RFC 7383 sets from a backend sent as one SK message (keyed)
	split      tcpSplitCounters
}

// tcpServer is the RFC 9329 side of the proxy: its listeners and
// connections.
type tcpServer struct {
	p   *Proxy
	lns []*net.TCPListener
	ctr tcpCounters
	// frag caches the RFC 7383 cuts of clients' messages toward the
	// backends (refragup.go), so that a retransmission gets the same
	// fragments
	frag *sk.Fragmenter
	// cuts are the IKE SAs frag holds cuts of, so that they are dropped
	// with the SA (refragup.go)
	cuts tcpCuts

	// mu guards conns, byAddr and noFlow, and every connection's elem:
	// the limits are checked and the connection registered in one step.
	mu     sync.Mutex
	conns  map[*tcpConn]struct{}
	byAddr map[netip.Addr]int
	noFlow *list.List // connections without a flow yet, oldest first (eviction order)
	closed bool
}

// tcpConn is one client connection.
type tcpConn struct {
	srv    *tcpServer
	c      *net.TCPConn
	remote netip.AddrPort
	local  netip.AddrPort
	ln     *listener // the flow's listener: natt framing, tcp set
	at     time.Time
	elem   *list.Element // in srv.noFlow until a flow opens; under srv.mu
	flow   atomic.Pointer[Flow]
	done   atomic.Bool

	// wmu guards the send queue: queue holds framed bytes not yet handed
	// to flush, writing says a flush goroutine runs, and inflight the
	// bytes it holds; queue plus inflight stay within send_buffer.
	wmu    sync.Mutex
	joined struct { // the last SKF set joined into SK (tcpJoin), for a backend resend
		key sk.MessageKey
		msg []byte
	}
	// prompted and promptedKey: the message a key prompt was sent for
	// (refragup.go); touched by the connection's reader only
	prompted    bool
	promptedKey sk.MessageKey

	queue    []byte
	spare    []byte
	inflight int
	writing  bool
	stopped  bool
}

// tcpListen binds proxy.tcp.listen (called by New).
func (p *Proxy) tcpListen() error {
	if len(p.s.tcpListen) == 0 {
		return nil
	}
	t := &tcpServer{p: p, conns: map[*tcpConn]struct{}{}, byAddr: map[netip.Addr]int{}, noFlow: list.New(),
		frag: sk.NewFragmenter(sk.FragmenterConfig{Now: p.now})}
	for _, ap := range p.s.tcpListen {
		network := "tcp4"
		if ap.Addr().Is6() {
			network = "tcp6"
		}
		ln, err := net.ListenTCP(network, net.TCPAddrFromAddrPort(ap))
		if err != nil {
			for _, l := range t.lns {
				l.Close()
			}
			return fmt.Errorf("proxy: tcp listen %s: %w", ap, err)
		}
		t.lns = append(t.lns, ln)
	}
	p.tcp = t
	return nil
}

// TCPAddrs returns the bound TCP listening addresses (useful with port 0).
func (p *Proxy) TCPAddrs() []netip.AddrPort {
	if p.tcp == nil {
		return nil
	}
	out := make([]netip.AddrPort, len(p.tcp.lns))
	for i, l := range p.tcp.lns {
		out[i] = l.Addr().(*net.TCPAddr).AddrPort()
	}
	return out
}

// tcpStart starts the accept loops (called by Run).
func (p *Proxy) tcpStart() {
	if p.tcp == nil {
		return
	}
	for _, ln := range p.tcp.lns {
		p.wg.Add(1)
		go p.tcp.acceptLoop(ln)
	}
}

// tcpShutdown closes the listeners and every connection (called by
// Close before it waits for the goroutines).
func (p *Proxy) tcpShutdown() {
	t := p.tcp
	if t == nil {
		return
	}
	t.mu.Lock()
	t.closed = true
	cs := make([]*tcpConn, 0, len(t.conns))
	for c := range t.conns {
		cs = append(cs, c)
	}
	t.mu.Unlock()
	for _, l := range t.lns {
		l.Close()
	}
	for _, c := range cs {
		c.end(tcpEndShutdown)
	}
}

func (t *tcpServer) acceptLoop(ln *net.TCPListener) {
	p := t.p
	defer p.wg.Done()
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: the backlog waits
			p.log.Warn("proxy: tcp accept", "listen", ln.Addr(), "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		t.accept(c)
	}
}

// refuse closes a connection at once with a reset (no TIME_WAIT kept for
// a flood) and counts why.
func (t *tcpServer) refuse(c *net.TCPConn, why tcpRefusal) {
	t.ctr.refused[why].Add(1)
	_ = c.SetLinger(0)
	c.Close()
}

func (t *tcpServer) accept(nc *net.TCPConn) {
	p := t.p
	now := p.now()
	ra, _ := nc.RemoteAddr().(*net.TCPAddr)
	la, _ := nc.LocalAddr().(*net.TCPAddr)
	if ra == nil || la == nil {
		nc.Close()
		return
	}
	remote, local := ra.AddrPort(), la.AddrPort()
	mapped := remote.Addr().Is4In6() && !local.Addr().Is4In6()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if why, refused := p.refuseSource(remote.Addr(), mapped, local.Addr(), now); refused {
		p.total.drops[why].Add(1)
		t.refuse(nc, tcpRefusedSource)
		return
	}
	c := &tcpConn{srv: t, c: nc, remote: remote, local: local, at: now}
	c.ln = &listener{p: p, idx: -1, addr: local, natt: true, tcp: c}
	var victim *tcpConn
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		nc.Close()
		return
	case t.byAddr[remote.Addr()] >= p.s.TCP.ConnectionsPerAddress:
		t.mu.Unlock()
		t.refuse(nc, tcpRefusedPerAddress)
		return
	case len(t.conns) >= p.s.TCP.MaxConnections:
		e := t.noFlow.Front()
		if e == nil {
			t.mu.Unlock()
			t.refuse(nc, tcpRefusedTotal)
			return
		}
		victim = e.Value.(*tcpConn)
		t.unregisterLocked(victim)
	}
	t.conns[c] = struct{}{}
	t.byAddr[remote.Addr()]++
	c.elem = t.noFlow.PushBack(c)
	t.mu.Unlock()
	t.ctr.accepted.Add(1)
	if victim != nil {
		victim.end(tcpEndEvicted)
	}
	p.wg.Add(1)
	go c.run()
}

// unregisterLocked takes c out of the server's tables (once).
func (t *tcpServer) unregisterLocked(c *tcpConn) {
	if _, ok := t.conns[c]; !ok {
		return
	}
	delete(t.conns, c)
	a := c.remote.Addr()
	if t.byAddr[a]--; t.byAddr[a] <= 0 {
		delete(t.byAddr, a)
	}
	if c.elem != nil {
		t.noFlow.Remove(c.elem)
		c.elem = nil
	}
}

// end closes the connection and its flow, counting why (the first reason
// wins).
func (c *tcpConn) end(why tcpEnd) {
	if c.done.Swap(true) {
		return
	}
	t := c.srv
	t.ctr.ended[why].Add(1)
	t.mu.Lock()
	t.unregisterLocked(c)
	t.mu.Unlock()
	c.wmu.Lock()
	c.stopped = true
	c.queue, c.spare = nil, nil
	c.wmu.Unlock()
	if why != tcpEndClientClosed && why != tcpEndShutdown {
		// a reset: the peer learns at once, and no TIME_WAIT is kept
		_ = c.c.SetLinger(0)
	}
	c.c.Close()
	switch f := c.flow.Load(); {
	case f == nil || why == tcpEndFlowEnded:
	case why == tcpEndShutdown:
		t.p.closeFlow(f) // (flow ends at shutdown are not counted)
	default:
		t.p.endFlow(f, EndTCPClosed)
	}
}

// tcpFlowClosed is Proxy.closeFlow's hook: a flow that ends for its own
// reasons (expiry, eviction, shutdown) takes its connection with it.
func (c *tcpConn) flowClosed() {
	why := tcpEndFlowEnded
	if c.srv.p.ctx != nil && c.srv.p.ctx.Err() != nil {
		why = tcpEndShutdown
	}
	c.end(why)
}

// tcpSmallBuf is the buffer a connection keeps for its frames: an
// IKE_SA_INIT or a full-size ESP packet of a 1500-byte path fits. Larger
// frames borrow from tcpBigBufs while they are read and relayed, so a
// connection holds no more than this between frames.
const tcpSmallBuf = 2048

// tcpBigBufs are buffers of a whole frame (tcpMaxFrame bytes).
var tcpBigBufs = sync.Pool{New: func() any { b := make([]byte, tcpMaxFrame); return &b }}

// run reads the client's frames until the connection ends.
func (c *tcpConn) run() {
	t := c.srv
	p := t.p
	defer p.wg.Done()
	s := &p.s.TCP
	first, inFrame := true, false
	_ = c.c.SetReadDeadline(c.at.Add(s.MessageTimeout))
	fr := &tcpFrameReader{r: c.c}
	fr.started = func() {
		inFrame = true
		if !first {
			_ = c.c.SetReadDeadline(time.Now().Add(s.MessageTimeout))
		}
	}
	var small []byte
	var big *[]byte
	alloc := func(n int) []byte {
		if n <= tcpSmallBuf {
			if small == nil {
				small = make([]byte, tcpSmallBuf)
			}
			return small[:n]
		}
		big = tcpBigBufs.Get().(*[]byte)
		return (*big)[:n]
	}
	ms := []message{{Buffers: [][]byte{nil}}}
	for {
		max := s.MaxMessage
		if first {
			// the first message must be IKE (or ESP of a client with an
			// established flow): max_ike_message bounds what a
			// connection without a flow can make the proxy hold
			max = s.MaxIKEMessage + ike.NonESPMarkerLen
		}
		payload, err := fr.next(alloc, max)
		if err != nil {
			if big != nil {
				tcpBigBufs.Put(big)
				big = nil
			}
			if !first && !inFrame && errors.Is(err, os.ErrDeadlineExceeded) && !c.done.Load() {
				// idle_timeout between frames; the backend's traffic
				// toward the client counts as activity too
				if f := c.flow.Load(); f != nil {
					left := s.IdleTimeout - p.now().Sub(time.Unix(0, f.last.Load()))
					if left > 0 {
						_ = c.c.SetReadDeadline(time.Now().Add(left))
						continue
					}
				}
				c.end(tcpEndIdle)
				return
			}
			c.end(c.readEnd(err, first, inFrame))
			return
		}
		inFrame = false
		ok := c.frame(payload, ms)
		if big != nil {
			// sendmmsg copied the payload into the kernel
			tcpBigBufs.Put(big)
			big = nil
		}
		if !ok {
			return
		}
		first = false
		_ = c.c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
	}
}

// frame relays one frame from the client; false ends the connection.
func (c *tcpConn) frame(payload []byte, ms []message) bool {
	t := c.srv
	p := t.p
	now := p.now()
	t.ctr.framesIn.Add(1)
	t.ctr.bytesIn.Add(uint64(len(payload)))
	fk := (ike.Ports{NATT: 1}).Classify(1, 0, payload)
	if fk.Kind == ike.KindIKE && len(fk.IKE) > p.s.TCP.MaxIKEMessage {
		c.end(tcpEndIKETooLong)
		return false
	}
	f := c.flow.Load()
	if f == nil {
		var why tcpEnd
		if f, why = c.admit(payload, now); f == nil {
			c.end(why)
			return false
		}
	}
	if f.closed.Load() {
		c.end(tcpEndFlowEnded)
		return false
	}
	if p.tcpFromClient(f, payload, fk, now) {
		if fk.Kind == ike.KindIKE {
			p.observeTCP(c, true, payload)
		}
		p.tcpSplitUp(f, payload, fk, ms, now)
	}
	return true
}

// TCPFrame is an IKE message the RFC 9329 listener relays
// (Deps.TCPFrames).
type TCPFrame struct {
	// Client is the client's TCP endpoint, Local the listener's.
	Client, Local netip.AddrPort
	FromClient    bool
	// Payload is what a datagram on the NAT-T port would carry: the
	// non-ESP marker, then the IKE message. Valid only during the call.
	Payload []byte
}

// observeTCP hands an IKE message relayed on c to Deps.TCPFrames.
func (p *Proxy) observeTCP(c *tcpConn, fromClient bool, payload []byte) {
	if p.tcpFrames != nil && c != nil {
		p.tcpFrames(TCPFrame{Client: c.remote, Local: c.local, FromClient: fromClient, Payload: payload})
	}
}

// readEnd maps a read error to the reason the connection ends.
func (c *tcpConn) readEnd(err error, first, inFrame bool) tcpEnd {
	switch {
	case c.done.Load():
		return tcpEndFlowEnded // ended elsewhere, already counted
	case errors.Is(err, os.ErrDeadlineExceeded):
		if first {
			return tcpEndFirstTimeout
		}
		if inFrame {
			return tcpEndMessageTimeout
		}
		return tcpEndIdle
	case errors.Is(err, errTCPPrefix):
		if errors.Is(err, io.EOF) {
			return tcpEndClientClosed
		}
		return tcpEndPrefix
	case errors.Is(err, errTCPShort):
		return tcpEndShortFrame
	case errors.Is(err, errTCPTooLong):
		if first {
			return tcpEndIKETooLong
		}
		return tcpEndTooLong
	case errors.Is(err, errTCPTruncEOF):
		return tcpEndTruncated
	case errors.Is(err, io.EOF), errnoOf(err) == unix.ECONNRESET:
		return tcpEndClientClosed
	}
	return tcpEndError
}

// admit opens the connection's flow for its first message, or says why
// not. The TCP handshake has shown the client owns its address, so the
// flow starts half-open, like one whose COOKIE came back (cookie.go), and
// no COOKIE is sent on a stream.
func (c *tcpConn) admit(payload []byte, now time.Time) (*Flow, tcpEnd) {
	p := c.srv.p
	ca := c.remote.Addr()
	ok, _ := p.earned(c.ln, ca, payload, now)
	if !ok {
		p.total.drops[DropUnsolicited].Add(1)
		return nil, tcpEndUnsolicited
	}
	if p.halfOpenRefused(ca, p.classify(c.ln, payload)) {
		p.total.drops[DropHalfOpenLimit].Add(1)
		return nil, tcpEndNoFlow
	}
	f := p.newFlow(c.ln, c.remote, c.local, payload, now)
	if f == nil {
		return nil, tcpEndNoFlow
	}
	if f.ln != c.ln {
		// a UDP flow from the same address and port to the same address
		// and port: the two cannot share the flow table's key
		p.total.drops[DropTCPKeyClash].Add(1)
		return nil, tcpEndNoFlow
	}
	c.flow.Store(f)
	t := c.srv
	t.mu.Lock()
	if c.elem != nil {
		t.noFlow.Remove(c.elem)
		c.elem = nil
	}
	t.mu.Unlock()
	if c.done.Load() {
		// ended (evicted, shut down) while the flow opened
		p.endFlow(f, EndTCPClosed)
		return nil, tcpEndFlowEnded
	}
	p.promote(f, levelHalfOpen, now)
	if f.cl != nil {
		f.cl.answered.Store(now.UnixNano())
	}
	return f, 0
}

// tcpFromClient accounts a frame from a client and inspects IKE; it
// reports whether to forward it.
func (p *Proxy) tcpFromClient(f *Flow, payload []byte, fr ike.Framing, now time.Time) bool {
	f.last.Store(now.UnixNano())
	if fr.Kind != ike.KindIKE && fr.Kind != ike.KindESP {
		p.drop(f, DropInvalid, 1)
		return false
	}
	if p.halfOpenRefused(f.key.client.Addr(), fr) {
		p.drop(f, DropHalfOpenLimit, 1)
		return false
	}
	esp := fr.Kind == ike.KindESP
	p.countIn(f, uint64(len(payload)), esp)
	if fr.Kind == ike.KindIKE {
		f.cl.last.Store(now.UnixNano())
		p.clientIKE(f, fr, now)
	}
	return true
}
