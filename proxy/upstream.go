package proxy

// The upstream path: a datagram from a client toward its backend.
//
//  1. listener.run reads a batch of client datagrams (recvmmsg) with their
//     ancillary data (destination address, reassembled fragment size).
//  2. listener.sockError handles an ICMP error queued on the socket
//     (path-MTU evidence, counted).
//  3. The datagram goes to its flow by 5-tuple (FlowTable.get); a
//     datagram of no flow must earn one (Proxy.admit in admit.go: source
//     checks, a well-formed IKE_SA_INIT request, per-source limits), and
//     Proxy.newFlow places it on a backend (Proxy.place, by IKE SA
//     affinity or rendezvous hash) and opens its connected upstream socket.
//  4. Proxy.fromClient accounts it, inspects IKE (SA table, PMTU evidence)
//     and decides whether it is forwarded.
//  5. Proxy.sendUp writes each flow's share of the batch with one sendmmsg
//     on the flow's upstream socket (with the non-ESP marker when the
//     backend wants it); failures go to Proxy.drop.

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
)

// group collects the datagrams of one flow in a read batch.
type group struct {
	f  *Flow
	ms []message
}

// run reads client datagrams in batches and forwards each flow's share
// with one sendmmsg on its upstream socket.
func (l *listener) run() {
	p := l.p
	defer p.wg.Done()
	n := p.s.Batch
	ms := make([]message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, rxBufSize)}
		ms[i].OOB = make([]byte, oobSize)
	}
	var groups []group
	// one-element Buffers per slot, pointing at the datagram (not the
	// whole receive buffer)
	sendBufs := make([][][]byte, n)
	markBufs := make([][][]byte, n) // marker + datagram, gathered by sendmmsg
	marker := make([]byte, ike.NonESPMarkerLen)
	for i := range sendBufs {
		sendBufs[i] = make([][]byte, 1)
		markBufs[i] = [][]byte{marker, nil}
	}
	for {
		for i := range ms {
			ms[i].OOB = ms[i].OOB[:oobSize]
		}
		k, err := l.sock.b.ReadBatch(ms, 0)
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if isTemporary(err) {
				l.sock.drainErrors(l.sockError)
				continue
			}
			p.log.Warn("proxy: read", "listen", l.addr, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := p.now()
		for i := range groups {
			clear(groups[i].ms)
			groups[i].f = nil
		}
		groups = groups[:0]
		for i := 0; i < k; i++ {
			m := &ms[i]
			if m.Flags&unix.MSG_TRUNC != 0 {
				p.total.drops[DropTruncated].Add(1)
				continue
			}
			ua, _ := m.Addr.(*net.UDPAddr)
			if ua == nil {
				continue
			}
			src := ua.AddrPort()
			mapped := src.Addr().Is4In6()
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			rx := parseRx(m.OOB[:m.NN])
			local := l.addr
			if l.wildcard && rx.dst.IsValid() {
				local = netip.AddrPortFrom(rx.dst, l.addr.Port())
			}
			payload := m.Buffers[0][:m.N]
			f := p.flows.get(flowKey{src, local})
			if f != nil && f.ln.tcp != nil {
				// a TCP flow (tcp.go) of the same addresses and ports
				p.total.drops[DropTCPKeyClash].Add(1)
				continue
			}
			if f == nil || f.closed.Load() {
				if f = p.admit(l, src, mapped, local, payload, now); f == nil {
					continue
				}
			}
			if !p.fromClient(f, payload, rx, now) {
				continue
			}
			gi := -1
			for j := range groups {
				if groups[j].f == f {
					gi = j
					break
				}
			}
			if gi < 0 {
				// reuse the message slices of earlier batches
				if len(groups) < cap(groups) {
					groups = groups[:len(groups)+1]
					groups[len(groups)-1].f = f
					groups[len(groups)-1].ms = groups[len(groups)-1].ms[:0]
				} else {
					groups = append(groups, group{f: f})
				}
				gi = len(groups) - 1
			}
			bufs := sendBufs[i]
			if f.addMarker {
				bufs = markBufs[i]
				bufs[1] = payload
			} else {
				bufs[0] = payload
			}
			groups[gi].ms = append(groups[gi].ms, message{Buffers: bufs})
		}
		for _, g := range groups {
			p.sendUp(g.f, g.ms)
		}
	}
}

// sockError handles an ICMP error queued on a client-facing socket.
func (l *listener) sockError(e sockErr) {
	p := l.p
	p.icmpErrors.Add(1)
	mtu := e.MTU()
	if mtu <= 0 || !e.Dst.IsValid() {
		return
	}
	c := p.client(e.Dst.Addr())
	c.pmtu.mu.Lock()
	if c.pmtu.icmp.setMin(mtu, p.now(), p.s.PMTUExpiry) {
		c.pmtu.icmpFrom = e.From
	}
	c.pmtu.mu.Unlock()
	p.log.Info("proxy: path MTU from ICMP", "client", e.Dst.Addr(), "mtu", mtu, "from", e.From)
}

// sendUp writes datagrams of one flow to its backend.
func (p *Proxy) sendUp(f *Flow, ms []message) {
	retried := false
	for len(ms) > 0 {
		n, err := f.up.b.WriteBatch(ms, 0)
		if err != nil {
			if f.closed.Load() {
				p.drop(f, DropClosed, len(ms))
				return
			}
			if errnoOf(err) == unix.ECONNREFUSED {
				p.backendFailed(f.be, "connection refused (ICMP port unreachable)")
			}
			if !retried {
				// The error may be an earlier datagram's ICMP error,
				// reported by this send instead of sending: try once more.
				retried = true
				continue
			}
			p.drop(f, DropSendError, 1)
			p.log.Debug("proxy: send to backend", "backend", f.be.cfg.Name, "err", err)
			n = 1
		}
		retried = false
		ms = ms[n:]
	}
}

func (p *Proxy) drop(f *Flow, r DropReason, n int) {
	p.total.drops[r].Add(uint64(n))
	if f != nil {
		f.be.ctr.drops[r].Add(uint64(n))
		f.cl.ctr.drops[r].Add(uint64(n))
	}
}

// newFlow places a new client flow on a backend and opens its upstream
// socket.
func (p *Proxy) newFlow(l *listener, src, local netip.AddrPort, payload []byte, now time.Time) *Flow {
	ca := src.Addr()
	be := p.place(l, ca, payload, now)
	to := be.cfg.IKE
	if l.natt {
		to = be.cfg.NATT
	}
	up, err := p.dialUpstream(src, to)
	if err != nil {
		p.total.drops[DropNoBackend].Add(1)
		p.backendFailed(be, err.Error())
		return nil
	}
	f := &Flow{p: p, key: flowKey{src, local}, ln: l, be: be, up: up, natt: l.natt, created: now,
		dst: net.UDPAddrFromAddrPort(src), addMarker: !l.natt && be.cfg.IKEMarker, prefix: p.clientPrefix(ca)}
	if l.wildcard {
		f.oob = srcCmsg(local.Addr())
	}
	f.last.Store(now.UnixNano())
	got, victim, why, ok := p.flows.insert(f, flowLimits{perAddr: p.s.NewFlowsPerAddress, perPrefix: p.s.NewFlowsPerPrefix})
	if victim != nil {
		end := EndEvictedUnanswered
		if victim.level.Load() == levelHalfOpen {
			end = EndEvictedHalfOpen
		}
		p.endFlow(victim, end)
	}
	if !ok {
		up.Close()
		if got == nil {
			p.total.drops[why].Add(1)
		}
		return got
	}
	f.cl = p.client(ca)
	f.cl.flows.Add(1)
	f.cl.last.Store(now.UnixNano())
	be.flows.Add(1)
	p.wg.Add(1)
	go f.readLoop()
	return f
}

// place chooses the backend of a new flow: an IKE SA already known (by
// client and SPI) keeps its backend, a new IKE SA is placed by rendezvous
// hash, and ESP or keepalives follow the client's latest IKE SA.
func (p *Proxy) place(l *listener, ca netip.Addr, payload []byte, now time.Time) *backend {
	fr := p.classify(l, payload)
	if fr.Kind == ike.KindIKE {
		if h, err := ike.ParseHeader(fr.IKE); err == nil {
			if sa := p.sas.get(ca, h.SPIi, h.SPIr, now); sa != nil {
				return sa.be
			}
			return pick(p.backends, placementKey(ca, h.SPIi), now)
		}
	}
	if c := p.lookupClient(ca); c != nil {
		c.mu.Lock()
		be := c.backend
		c.mu.Unlock()
		if be != nil {
			return be
		}
	}
	return pick(p.backends, clientKey(ca), now)
}

func (p *Proxy) classify(l *listener, payload []byte) ike.Framing {
	if l.natt {
		return ike.ClassifyNATT(payload)
	}
	return ike.Framing{Kind: ike.KindIKE, IKE: payload}
}

// countIn counts a datagram from a client on its flow, its backend, its
// client and the proxy's totals.
func (p *Proxy) countIn(f *Flow, n uint64, esp bool) {
	f.pktsIn.Add(1)
	if esp {
		f.espIn.Add(1)
	}
	for _, c := range []*counters{&p.total, &f.be.ctr, &f.cl.ctr} {
		c.pktsIn.Add(1)
		c.bytesIn.Add(n)
		if esp {
			c.espIn.Add(1)
			c.espBytesIn.Add(n)
		}
	}
}

// fromClient accounts a client datagram and inspects IKE; it reports
// whether to forward it (always, unless it is malformed framing).
func (p *Proxy) fromClient(f *Flow, payload []byte, rx rxInfo, now time.Time) bool {
	f.last.Store(now.UnixNano())
	fr := p.classify(f.ln, payload)
	if fr.Kind == ike.KindInvalid {
		p.drop(f, DropInvalid, 1)
		return false
	}
	if p.halfOpenRefused(f.key.client.Addr(), fr) {
		p.drop(f, DropHalfOpenLimit, 1)
		return false
	}
	esp := fr.Kind == ike.KindESP
	p.countIn(f, uint64(len(payload)), esp)
	if rx.fragSize > 0 {
		f.cl.pmtu.mu.Lock()
		f.cl.pmtu.frags.setMax(rx.fragSize, now, p.s.PMTUExpiry)
		f.cl.pmtu.mu.Unlock()
	}
	if fr.Kind == ike.KindIKE {
		f.cl.last.Store(now.UnixNano())
		if rx.fragSize == 0 {
			f.cl.pmtu.mu.Lock()
			f.cl.pmtu.unfrag.setMax(ipOverhead(f.key.client.Addr())+8+len(payload), now, p.s.PMTUExpiry)
			f.cl.pmtu.mu.Unlock()
		}
		p.clientIKE(f, fr, now)
	}
	return true
}

// isESP reports a NAT-T payload that is ESP: a non-zero first word (RFC
// 3948); the marker is zero and a keepalive is one byte.
func isESP(d []byte) bool {
	return len(d) >= 4 && d[0]|d[1]|d[2]|d[3] != 0
}

func ipOverhead(a netip.Addr) int {
	if a.Is4() {
		return 20
	}
	return 40
}
