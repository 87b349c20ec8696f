package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	Peer func(ctx context.Context, a netip.Addr) (mtu int, ok bool)
	// TCPFrames, when set, is handed every IKE message the RFC 9329
	// listener relays, either way: the diagnosis engine's view of TCP
	// clients, which the eBPF observer does not have. It is called on
	// the connections' goroutines: it must not block, and must copy
	// what it keeps.
	TCPFrames func(TCPFrame)
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
	peer  func(ctx context.Context, a netip.Addr) (mtu int, ok bool)
	log   *slog.Logger
	now   func() time.Time
	keyed bool

	// tcpFrames is Deps.TCPFrames (tcp.go's observeTCP).
	tcpFrames func(TCPFrame)

	listeners []*listener
	backends  []*backend
	flows     *FlowTable
	sas       *saTable
	msgs      *msgCache
	reasm     *sk.Reassembler
	frag      *sk.Fragmenter
	routes    *netcfg.MTURoutes
	tproxy    *transparentRules // source: client
	tcp       *tcpServer        // proxy.tcp; nil when it lists no address

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
	// keepMapped is set by Close with fast_path_pin: closeFlow leaves
	// established flows in the pinned fast path.
	keepMapped atomic.Bool

	// pair (pair.go, vip.go): proxy.adopt counters, and the listen
	// addresses held (proxy.freebind; nil otherwise)
	pairCtr pairCounters
	vips    *vipWatch

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
	// tcp is set on the listener of a TCP flow: the connection itself
	// (tcp.go), which carries its frames both ways; sock is nil then.
	tcp *tcpConn
}

// New validates cfg, binds the listening sockets and returns a proxy
// ready to Run.
func New(cfg Config, deps Deps) (*Proxy, error) {
	s, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		s: s, keys: deps.Keys, log: deps.Logger, now: deps.Now, peer: deps.Peer, tcpFrames: deps.TCPFrames,
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
		sock, err := listenUDP(la.ap, sockOpts{recvErr: true, fragSize: true, pktInfo: wild, rcvBuf: sockBufBytes, sndBuf: sockBufBytes,
			freebind: s.Freebind && !wild})
		if err != nil {
			p.closeSockets()
			return nil, fmt.Errorf("proxy: listen %s: %w", la.ap, err)
		}
		p.listeners = append(p.listeners, &listener{p: p, idx: len(p.listeners), sock: sock, addr: sock.addr,
			natt: la.natt, wildcard: wild})
	}
	if err := p.tcpListen(); err != nil {
		p.closeSockets()
		return nil, err
	}
	if s.Freebind {
		p.vips = newVIPWatch(s.listen)
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
		p.removePinned()
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
	if p.tcp != nil {
		for _, l := range p.tcp.lns {
			l.Close()
		}
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
	p.releaseInherited()
	for _, l := range p.listeners {
		p.wg.Add(1)
		go l.run()
	}
	p.tcpStart()
	p.wg.Add(1)
	go p.janitor()
	if p.vips != nil {
		p.wg.Add(1)
		go p.watchVIPs()
	}
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
		p.tcpShutdown()
		if p.s.StateFile != "" && p.ctx != nil {
			// the flows as they are, for the next start
			if err := p.saveState(p.now()); err != nil {
				p.log.Warn("proxy: cannot write the state file", "file", p.s.StateFile, "err", err)
			}
		}
		// With fast_path_pin the established flows stay mapped: their ESP
		// keeps flowing in the kernel until the next start re-adopts them
		// from the state file just written.
		p.keepMapped.Store(p.s.FastPathPin != "" && p.s.StateFile != "" && p.ctx != nil)
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

// askObserver refreshes a client's observer evidence from Deps.Peer.
func (p *Proxy) askObserver(c *client) {
	if p.peer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if mtu, ok := p.peer(ctx, c.addr); ok && mtu > 0 {
		c.pmtu.mu.Lock()
		c.pmtu.observer.v, c.pmtu.observer.at = mtu, p.now()
		c.pmtu.mu.Unlock()
	}
}
