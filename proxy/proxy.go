package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/netcfg"
)

// Deps are what the proxy needs from the daemon.
type Deps struct {
	// Keys gives IKE SA keys for re-fragmentation; nil runs keyless.
	Keys keys.Source
	// Logger receives state changes (backend up/down, routes); never a
	// key and never one line per datagram. Default: discard.
	Logger *slog.Logger
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
	// Peer, when set, returns the diagnosis engine's path-MTU estimate
	// for a client (first-fragment sizes, largest unfragmented datagram
	// seen by the eBPF observer). It is asked only when an IKE message
	// toward the client is about to be judged, with a short deadline.
	Peer func(ctx context.Context, a netip.Addr) (diag.PMTUEstimate, bool)
}

// Buffer sizes: a whole IKE message fits one datagram up to 64 KiB.
const (
	rxBufSize      = 65536
	oobSize        = 128
	upstreamBatch  = 16
	sockBufBytes   = 4 << 20
	initUnanswered = 5 * time.Second
)

// Proxy is the fragmentation-aware UDP proxy for IKE and NAT-T.
type Proxy struct {
	s     *settings
	keys  keys.Source
	peer  func(ctx context.Context, a netip.Addr) (diag.PMTUEstimate, bool)
	log   *slog.Logger
	now   func() time.Time
	keyed bool

	listeners []*listener
	backends  []*backend
	flows     *FlowTable
	sas       *saTable
	msgs      *msgCache
	reasm     *sk.Reassembler
	frag      *sk.Fragmenter
	routes    *netcfg.MTURoutes
	tproxy    *transparentRules // source: client

	// ESP fast path (fast_path auto); nil when off or unavailable.
	fpx              *fastPath
	fpReason         string // why fpx is nil
	fpAttachFailures uint64 // of a fast path given up at start

	clientsMu sync.Mutex
	clients   map[netip.Addr]*client

	total      counters
	icmpErrors atomic.Uint64
	flowEnds   [numFlowEnds]atomic.Uint64
	localAddrs atomic.Pointer[localSet]
	probes     probeCounters

	// state file (state.go): stateDirty is set when the established
	// flows change; stateErr (janitor and Close only) the last error logged.
	stateDirty   atomic.Bool
	stateErr     string
	adopted      atomic.Uint64
	adoptSkipped atomic.Uint64

	cookies   *cookieJar
	cookieCtr struct{ sent, verified atomic.Uint64 }

	pool sync.Pool // *upBufs

	runOnce   sync.Once
	closeOnce sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeErr  error
}

// listener is one client-facing socket (an address and one of the two
// ports).
type listener struct {
	p        *Proxy
	idx      int
	sock     *udpSock
	addr     netip.AddrPort
	natt     bool
	wildcard bool
}

// New validates cfg, binds the listening sockets and returns a proxy
// ready to Run.
func New(cfg Config, deps Deps) (*Proxy, error) {
	s, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		s: s, keys: deps.Keys, log: deps.Logger, now: deps.Now, peer: deps.Peer,
		flows:   newFlowTable(s.MaxClients),
		sas:     newSATable(4 * s.MaxClients),
		msgs:    newMsgCache(4096, 32<<20),
		clients: map[netip.Addr]*client{},
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.cookies = newCookieJar(p.now())
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.keyed = p.keys != nil && s.Refragment == RefragmentAuto
	p.reasm = sk.NewReassembler(sk.ReassemblerConfig{Now: p.now})
	p.frag = sk.NewFragmenter(sk.FragmenterConfig{Now: p.now})
	p.pool.New = func() any { return newUpBufs(upstreamBatch) }
	for i, b := range s.backends {
		p.backends = append(p.backends, newBackend(i, b))
	}
	for _, la := range s.listen {
		wild := la.ap.Addr().IsUnspecified()
		sock, err := listenUDP(la.ap, sockOpts{recvErr: true, fragSize: true, pktInfo: wild, rcvBuf: sockBufBytes, sndBuf: sockBufBytes})
		if err != nil {
			p.closeSockets()
			return nil, fmt.Errorf("proxy: listen %s: %w", la.ap, err)
		}
		p.listeners = append(p.listeners, &listener{p: p, idx: len(p.listeners), sock: sock, addr: sock.addr,
			natt: la.natt, wildcard: wild})
	}
	if s.RouteMTU {
		var ports []uint16
		for _, la := range s.listen {
			if !slices.Contains(ports, la.ap.Port()) {
				ports = append(ports, la.ap.Port())
			}
		}
		r, err := netcfg.NewMTURoutes(netcfg.MTURoutesConfig{Table: s.RouteTable, Priority: s.RoutePriority, SourcePorts: ports})
		if err != nil {
			p.closeSockets()
			return nil, fmt.Errorf("proxy: route_mtu: %w", err)
		}
		p.routes = r
	}
	if s.Source == SourceClient {
		tr, err := p.transparentSetup()
		if err != nil {
			if p.routes != nil {
				p.routes.Close()
			}
			p.closeSockets()
			return nil, fmt.Errorf("proxy: source client: %w", err)
		}
		p.tproxy = tr
		// the fast path rewrites to the proxy's own upstream address
		p.fpReason = "not used with proxy.source client"
		return p, nil
	}
	// last: nothing after it can fail, so New never has to undo it
	p.startFastPath()
	return p, nil
}

func (p *Proxy) closeSockets() {
	for _, l := range p.listeners {
		l.sock.Close()
	}
}

// Addrs returns the bound listening addresses (useful with port 0).
func (p *Proxy) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(p.listeners))
	for i, l := range p.listeners {
		out[i] = l.sock.addr
	}
	return out
}

// Run relays until ctx is done or Close is called, then releases
// everything (flows, routes). It returns nil on a clean stop.
func (p *Proxy) Run(ctx context.Context) error {
	started := false
	p.runOnce.Do(func() {
		started = true
		p.ctx, p.cancel = context.WithCancel(ctx)
	})
	if !started {
		return errors.New("proxy: Run called twice")
	}
	p.log.Info("proxy running", "listen", p.listenStrings(), "backends", len(p.backends),
		"refragment", p.s.Refragment, "keyed", p.keyed, "pmtu_step_down", p.s.stepDown, "route_mtu", p.s.RouteMTU,
		"fast_path", p.fpx != nil)
	p.adopt(p.now())
	for _, l := range p.listeners {
		p.wg.Add(1)
		go l.run()
	}
	p.wg.Add(1)
	go p.janitor()
	<-p.ctx.Done()
	return p.Close()
}

// Close stops the proxy: listeners and flows are closed, routes removed.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		if p.cancel != nil {
			p.cancel()
		}
		p.closeSockets()
		if p.s.StateFile != "" && p.ctx != nil {
			// the flows as they are, for the next start
			if err := p.saveState(p.now()); err != nil {
				p.log.Warn("proxy: cannot write the state file", "file", p.s.StateFile, "err", err)
			}
		}
		for _, f := range p.flows.all() {
			p.closeFlow(f)
		}
		p.wg.Wait()
		var errs []error
		if p.fpx != nil {
			// every mapping went with its flow; this detaches the program
			errs = append(errs, p.fpx.close())
		}
		if p.routes != nil {
			errs = append(errs, p.routes.Close())
		}
		if p.tproxy != nil {
			errs = append(errs, p.tproxy.close())
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

func (p *Proxy) listenStrings() []string {
	var out []string
	for _, l := range p.listeners {
		out = append(out, l.sock.addr.String())
	}
	return out
}

func (p *Proxy) client(a netip.Addr) *client {
	p.clientsMu.Lock()
	defer p.clientsMu.Unlock()
	c := p.clients[a]
	if c == nil {
		c = &client{addr: a}
		// bounded: clients beyond twice the flow limit (ICMP errors,
		// observer hints for addresses without flows) are not kept
		if len(p.clients) < 2*p.s.MaxClients {
			p.clients[a] = c
		}
	}
	return c
}

func (p *Proxy) lookupClient(a netip.Addr) *client {
	p.clientsMu.Lock()
	defer p.clientsMu.Unlock()
	return p.clients[a]
}

// LearnPMTU hands the proxy a path-MTU estimate toward a client from the
// diagnosis engine (diag.PMTUEstimate.MTU): first-fragment sizes and the
// largest unfragmented datagram seen on the wire.
func (p *Proxy) LearnPMTU(a netip.Addr, mtu int) {
	if mtu <= 0 || !a.IsValid() {
		return
	}
	c := p.client(a.Unmap())
	c.pmtu.mu.Lock()
	c.pmtu.observer.v, c.pmtu.observer.at = mtu, p.now()
	c.pmtu.mu.Unlock()
}

// askObserver refreshes a client's observer evidence from Deps.Peer.
func (p *Proxy) askObserver(c *client) {
	if p.peer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if est, ok := p.peer(ctx, c.addr); ok && est.MTU > 0 {
		c.pmtu.mu.Lock()
		c.pmtu.observer.v, c.pmtu.observer.at = est.MTU, p.now()
		c.pmtu.mu.Unlock()
	}
}

// Status is one line for `ikefragctl status`.
func (p *Proxy) Status() string {
	st := p.Stats()
	up := 0
	for _, b := range st.Backends {
		if b.Up {
			up++
		}
	}
	mode := "keyless"
	if st.Keyed {
		mode = "keyed"
	}
	fp := "off"
	switch {
	case st.FastPath.Active:
		fp = fmt.Sprintf("%d flows", st.FastPath.Flows)
	case st.FastPath.Mode != FastPathOff:
		fp = "unavailable"
	}
	refused := uint64(0)
	for r := DropUnsolicited; r < numDropReasons; r++ {
		if r != DropCookieSent {
			refused += st.Total.Dropped[r.String()]
		}
	}
	evicted := st.FlowEnds[EndEvictedUnanswered.String()] + st.FlowEnds[EndEvictedHalfOpen.String()]
	return fmt.Sprintf("proxy %s (refragment %s): %d/%d backends up, %d clients, %d flows (%d not established), %d re-fragmented, %d replays, %d step-downs, %d key misses, %d datagrams refused, %d flows evicted, %d cookies sent, ESP fast path %s",
		mode, st.Refragment, up, len(st.Backends), st.Clients, st.Flows, st.Unestablished, st.Total.Refragmented, st.Total.Replays,
		st.Total.StepDowns, st.Total.KeyMisses, refused, evicted, st.CookiesSent, fp)
}

// PMTU returns the path-MTU estimate toward a client.
func (p *Proxy) PMTU(a netip.Addr) PMTUInfo {
	a = a.Unmap()
	c := p.lookupClient(a)
	if c == nil {
		c = &client{addr: a}
	}
	return c.pmtu.estimate(p.s, a, p.now())
}

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
		return ike.Ports{NATT: 1}.Classify(1, 0, payload)
	}
	return ike.Framing{Kind: ike.KindIKE, IKE: payload}
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
	n := uint64(len(payload))
	f.pktsIn.Add(1)
	esp := fr.Kind == ike.KindESP
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
		if first && f.natt && p.fpx != nil {
			// Mapped before the backend's first reply reaches the client:
			// on a new NAT-T flow that reply ends IKE_AUTH, and only then
			// can the client send ESP, so the tunnel's ESP never crosses
			// user space. It costs this flow's reader, once, two route
			// lookups and the map updates (tens of microseconds; the first
			// flow through an interface also attaches the program), and
			// it sees a route MTU set while this batch was judged.
			p.fpMap(f)
		}
		p.sendClient(f, b.out)
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
	fr := p.classify(f.ln, payload)
	if f.addMarker {
		// the backend framed IKE with a marker; the client expects none
		if fr = (ike.Ports{NATT: 1}).Classify(1, 0, payload); fr.Kind == ike.KindIKE {
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

func (p *Proxy) closeFlow(f *Flow) {
	if f.closed.Swap(true) {
		return
	}
	if f.level.Load() == levelEstablished {
		p.stateDirty.Store(true)
	}
	p.flows.remove(f)
	p.fpUnmap(f)
	f.up.Close()
	f.be.flows.Add(-1)
	if f.cl != nil {
		f.cl.flows.Add(-1)
		if f.estCounted.CompareAndSwap(true, false) {
			f.cl.established.Add(-1)
		}
	}
}

// janitor expires flows, IKE SAs, clients and routes, and checks backend
// health, once a second.
func (p *Proxy) janitor() {
	defer p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.sweep(p.now())
	}
}

func (p *Proxy) sweep(now time.Time) {
	// The fast path's ESP does not pass through the flows: its last
	// datagram counts as the flow's activity.
	esp := p.fpSync()
	flows := p.flows.all()
	for _, f := range flows {
		last := f.last.Load()
		if t, ok := esp[f.key]; ok && t.UnixNano() > last {
			last = t.UnixNano()
			f.last.Store(last)
		}
		idle := now.Sub(time.Unix(0, last))
		age := now.Sub(f.created)
		switch lvl := f.level.Load(); {
		case idle > p.s.IdleTimeout:
			p.endFlow(f, EndIdle)
		case lvl == levelPending && age > p.s.UnrepliedTimeout:
			p.endFlow(f, EndUnanswered)
		case lvl == levelHalfOpen && age > p.s.HalfOpenTimeout:
			p.endFlow(f, EndHalfOpen)
		}
	}
	p.fpSweep(flows)
	for _, s := range p.sas.pendingInits(now, initUnanswered) {
		p.initUnanswered(s.be, s.key.client, now)
	}
	p.sas.expireHalfOpen(now, p.s.HalfOpenTimeout)
	p.healthSweep(now)
	p.stateSweep(now)
	for _, s := range p.sas.expire(now, p.s.IdleTimeout) {
		s.mu.Lock()
		spiR := s.spiR
		s.mu.Unlock()
		p.msgs.forget(s.key.spiI, spiR)
		p.reasm.Forget(s.key.spiI, spiR)
		p.frag.Forget(s.key.spiI, spiR)
	}
	p.reasm.Expire()
	p.clientsMu.Lock()
	var gone []*client
	for a, c := range p.clients {
		if c.flows.Load() <= 0 && now.Sub(time.Unix(0, c.last.Load())) > p.s.IdleTimeout && c.pmtu.expired(now, p.s.PMTUExpiry) {
			delete(p.clients, a)
			gone = append(gone, c)
		}
	}
	p.clientsMu.Unlock()
	if p.routes != nil {
		for _, c := range gone {
			p.unroute(c)
		}
		p.refreshRoutes(now)
	}
}

// PeerInfo is the per-client state `ikefragctl peers` shows.
type PeerInfo struct {
	Client  netip.Addr `json:"client"`
	Flows   []FlowInfo `json:"flows"`
	Backend string     `json:"backend,omitempty"`
	PMTU    PMTUInfo   `json:"pmtu"`
	// RouteMTU is the MTU of the host route installed toward the client
	// (route_mtu), 0 when none.
	RouteMTU int       `json:"route_mtu,omitempty"`
	LastSeen time.Time `json:"last_seen"`
	Counters Counters  `json:"counters"`
}

// Peers returns the state of every client, sorted by address.
func (p *Proxy) Peers() []PeerInfo {
	p.fpSync()
	now := p.now()
	byClient := map[netip.Addr][]FlowInfo{}
	for _, fi := range p.flows.Snapshot() {
		byClient[fi.Client.Addr()] = append(byClient[fi.Client.Addr()], fi)
	}
	p.clientsMu.Lock()
	cs := make([]*client, 0, len(p.clients))
	for _, c := range p.clients {
		cs = append(cs, c)
	}
	p.clientsMu.Unlock()
	out := make([]PeerInfo, 0, len(cs))
	for _, c := range cs {
		pi := PeerInfo{Client: c.addr, Flows: byClient[c.addr], PMTU: c.pmtu.estimate(p.s, c.addr, now),
			LastSeen: time.Unix(0, c.last.Load()), Counters: c.ctr.snapshot()}
		c.mu.Lock()
		if c.backend != nil {
			pi.Backend = c.backend.cfg.Name
		}
		pi.RouteMTU = c.routeMTU
		c.mu.Unlock()
		sort.Slice(pi.Flows, func(i, j int) bool { return pi.Flows[i].Client.Port() < pi.Flows[j].Client.Port() })
		out = append(out, pi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Client.Less(out[j].Client) })
	return out
}

// Flows returns the flow table's 5-tuples (the seam for an ESP fast path).
func (p *Proxy) Flows() []FlowInfo {
	p.fpSync()
	return p.flows.Snapshot()
}

// Stats returns the counters and table sizes.
func (p *Proxy) Stats() Stats {
	p.fpSync()
	st := Stats{Flows: p.flows.Len(), IKESAs: p.sas.len(), Total: p.total.snapshot(),
		Unestablished: p.flows.unestablished(), HalfOpenSAs: p.sas.halfOpenTotal(),
		Probes: p.probes.sent.Load(), ProbesAnswered: p.probes.answered.Load(),
		Adopted: p.adopted.Load(), AdoptSkipped: p.adoptSkipped.Load(),
		CookiesSent: p.cookieCtr.sent.Load(), CookiesVerified: p.cookieCtr.verified.Load(),
		Reassembler: p.reasm.Stats(), Fragmenter: p.frag.Stats(), ICMPErrors: p.icmpErrors.Load(),
		Keyed: p.keyed, Refragment: p.s.Refragment, Listeners: p.listenStrings()}
	p.clientsMu.Lock()
	st.Clients = len(p.clients)
	p.clientsMu.Unlock()
	if p.routes != nil {
		st.Routes = len(p.routes.List())
	}
	now := p.now()
	for _, b := range p.backends {
		bs := BackendStats{Name: b.cfg.Name, IKE: b.cfg.IKE.String(), NATT: b.cfg.NATT.String(),
			Flows: b.flows.Load(), Counters: b.ctr.snapshot()}
		bs.Up = b.usable(now)
		b.mu.Lock()
		bs.Failures, bs.LastError, bs.Doubt = b.failures, b.lastFail, len(b.doubt)
		b.mu.Unlock()
		st.Backends = append(st.Backends, bs)
	}
	st.FastPath = p.fastPathStats()
	for e := FlowEnd(0); e < numFlowEnds; e++ {
		if n := p.flowEnds[e].Load(); n != 0 {
			if st.FlowEnds == nil {
				st.FlowEnds = map[string]uint64{}
			}
			st.FlowEnds[e.String()] = n
		}
	}
	return st
}
