package proxy

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ikefrag/ikefrag/ebpf/fastpath"
)

// flowKey is a client flow as the client sees it: its own address and
// port, and the proxy address and port it sends to.
type flowKey struct {
	client netip.AddrPort
	local  netip.AddrPort
}

// Flow is one client flow and the upstream flow that carries it to its
// backend: one connected UDP socket per client flow, so each backend sees
// every client as a distinct address and port.
type Flow struct {
	p   *Proxy
	key flowKey
	ln  *listener
	be  *backend
	cl  *client
	up  *udpSock

	dst  *net.UDPAddr // the client, for sendmmsg
	oob  []byte       // IP_PKTINFO/IPV6_PKTINFO source for wildcard listeners
	natt bool
	// addMarker: the client uses the IKE port without a marker, the
	// backend's IKE port wants one (Backend.IKEMarker)
	addMarker bool

	created time.Time
	last    atomic.Int64 // unix nanoseconds of the last datagram either way
	replied atomic.Bool  // the backend answered at least once
	closed  atomic.Bool
	// level is levelPending, levelHalfOpen or levelEstablished; it only
	// rises, and is written under the table's lock (FlowTable.promote).
	level atomic.Uint32
	// estCounted: counted in cl.established (set by promote, cleared by
	// whichever of promote and closeFlow sees the flow closed first)
	estCounted atomic.Bool
	prefix     netip.Prefix  // the client's prefix for new_flows_per_prefix
	elem       *list.Element // in FlowTable.waiting[level] while not established; under the table's lock

	pktsIn, pktsOut atomic.Uint64 // every datagram, the fast path's included
	espIn, espOut   atomic.Uint64 // ESP relayed in user space
	fpIn, fpOut     atomic.Uint64 // ESP relayed by the fast path (read back)

	// ESP fast path: fpMu orders Put, Delete and counter reads of this
	// flow's mapping against each other and against close.
	fpMu    sync.Mutex
	fpState atomic.Uint32         // fp*; written under fpMu
	fpMTU   atomic.Int32          // the mapping's ClientMTU, for Info
	fpFlow  fastpath.Flow         // what was put
	fpSeen  fastpath.FlowCounters // counters already added to the proxy's
}

// FlowInfo describes one flow by its two 5-tuples (UDP): client ↔ proxy
// listen address, and proxy upstream address ↔ backend. A fast path (eBPF)
// can mirror this table to move ESP-in-UDP off the Go relay.
type FlowInfo struct {
	Client   netip.AddrPort `json:"client"`
	Local    netip.AddrPort `json:"local"`
	Upstream netip.AddrPort `json:"upstream"`
	Backend  netip.AddrPort `json:"backend"`
	NATT     bool           `json:"natt"`
	Replied  bool           `json:"replied"`
	Created  time.Time      `json:"created"`
	LastSeen time.Time      `json:"last_seen"`
	// PktsIn and PktsOut count every datagram, whichever path carried it.
	PktsIn  uint64 `json:"datagrams_in"`
	PktsOut uint64 `json:"datagrams_out"`
	// ESPIn and ESPOut are the ESP datagrams relayed in user space,
	// ESPFastPathIn and ESPFastPathOut those relayed by the ESP fast path
	// (as of the last read, at most a janitor period old).
	ESPIn          uint64 `json:"esp_in"`
	ESPOut         uint64 `json:"esp_out"`
	ESPFastPathIn  uint64 `json:"esp_fastpath_in"`
	ESPFastPathOut uint64 `json:"esp_fastpath_out"`
	// FastPath is the flow's fast path state: "mapped", "full" (waiting
	// for room), "user_space" (cannot be carried), or empty when it was
	// never offered (IKE port flows, no reply yet, fast path off).
	FastPath string `json:"fast_path,omitempty"`
	// Transport is "tcp" for a flow whose client speaks RFC 9329 over a
	// TCP connection (Client and Local are then TCP addresses), empty
	// for UDP.
	Transport string `json:"transport,omitempty"`
	// FastPathMTU is the largest ESP datagram (IP bytes) the mapping
	// sends toward the client: the client's route MTU (route_mtu), 0 when
	// only the interface's MTU limits it.
	FastPathMTU int `json:"fast_path_mtu,omitempty"`
}

// Info returns the flow's 5-tuples and counters.
func (f *Flow) Info() FlowInfo {
	fi := FlowInfo{Client: f.key.client, Local: f.key.local, Upstream: f.up.addr, Backend: f.backendAddr(),
		NATT: f.natt, Replied: f.replied.Load(), Created: f.created,
		LastSeen: time.Unix(0, f.last.Load()), PktsIn: f.pktsIn.Load(), PktsOut: f.pktsOut.Load(),
		ESPIn: f.espIn.Load(), ESPOut: f.espOut.Load(), ESPFastPathIn: f.fpIn.Load(), ESPFastPathOut: f.fpOut.Load(),
		FastPath: fpStateNames[f.fpState.Load()], FastPathMTU: int(f.fpMTU.Load())}
	if f.ln.tcp != nil {
		fi.Transport = "tcp"
	}
	return fi
}

func (f *Flow) backendAddr() netip.AddrPort {
	if f.natt {
		return f.be.cfg.NATT
	}
	return f.be.cfg.IKE
}

// Flow levels: what the backend has said on a flow. Spoofed sources never
// see the backend's answers, so they cannot raise a flow past
// levelHalfOpen, and the table evicts and expires the lower levels first.
const (
	levelPending     uint32 = iota // nothing, or only COOKIE / INVALID_KE_PAYLOAD (RFC 7296 §2.6, §1.3)
	levelHalfOpen                  // an IKE_SA_INIT response with an SA payload
	levelEstablished               // more than IKE_SA_INIT: IKE_AUTH and later exchanges, ESP
)

// FlowTable holds the client flows, bounded by MaxClients.
type FlowTable struct {
	// mu guards the map, the waiting lists, the per-address and
	// per-prefix counts and every flow's elem and level changes, so that a
	// flow is always counted in exactly the places its level says.
	mu  sync.RWMutex
	m   map[flowKey]*Flow
	max int
	// waiting holds the flows not yet established, oldest first, per
	// level (pending, half-open): the eviction order.
	waiting  [2]*list.List
	byAddr   map[netip.Addr]int
	byPrefix map[netip.Prefix]int
}

func newFlowTable(max int) *FlowTable {
	return &FlowTable{m: make(map[flowKey]*Flow), max: max, waiting: [2]*list.List{list.New(), list.New()},
		byAddr: map[netip.Addr]int{}, byPrefix: map[netip.Prefix]int{}}
}

// flowLimits are the admission limits of insert.
type flowLimits struct {
	perAddr, perPrefix int
}

func (t *FlowTable) get(k flowKey) *Flow {
	t.mu.RLock()
	f := t.m[k]
	t.mu.RUnlock()
	return f
}

// insert adds f (a pending flow) unless the key exists (then the existing
// flow is returned), its address or prefix has lim's number of flows not
// yet established (DropAddressLimit, DropPrefixLimit), or the table is
// full and holds no flow that is not established (DropTableFull). When the
// table is full the oldest pending flow, else the oldest half-open one,
// leaves it and is returned as victim, for the caller to close.
func (t *FlowTable) insert(f *Flow, lim flowLimits) (got, victim *Flow, why DropReason, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.m[f.key]; old != nil {
		return old, nil, 0, false
	}
	a := f.key.client.Addr()
	if t.byAddr[a] >= lim.perAddr {
		return nil, nil, DropAddressLimit, false
	}
	if t.byPrefix[f.prefix] >= lim.perPrefix {
		return nil, nil, DropPrefixLimit, false
	}
	if len(t.m) >= t.max {
		for _, w := range t.waiting {
			if e := w.Front(); e != nil {
				victim = e.Value.(*Flow)
				break
			}
		}
		if victim == nil {
			return nil, nil, DropTableFull, false
		}
		t.removeLocked(victim)
	}
	t.m[f.key] = f
	f.elem = t.waiting[levelPending].PushBack(f)
	t.byAddr[a]++
	t.byPrefix[f.prefix]++
	return f, victim, 0, true
}

func (t *FlowTable) remove(f *Flow) {
	t.mu.Lock()
	t.removeLocked(f)
	t.mu.Unlock()
}

func (t *FlowTable) removeLocked(f *Flow) {
	if t.m[f.key] != f {
		return
	}
	delete(t.m, f.key)
	t.unwaitLocked(f)
}

// unwaitLocked takes f off its waiting list and out of the counts.
func (t *FlowTable) unwaitLocked(f *Flow) {
	if f.elem == nil {
		return
	}
	t.waiting[f.level.Load()].Remove(f.elem)
	f.elem = nil
	a := f.key.client.Addr()
	if t.byAddr[a]--; t.byAddr[a] <= 0 {
		delete(t.byAddr, a)
	}
	if t.byPrefix[f.prefix]--; t.byPrefix[f.prefix] <= 0 {
		delete(t.byPrefix, f.prefix)
	}
}

// promote raises f to level (never lowers it) and reports whether it rose.
func (t *FlowTable) promote(f *Flow, level uint32) bool {
	if f.level.Load() >= level {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.level.Load() >= level {
		return false
	}
	if t.m[f.key] != f || f.elem == nil {
		// closed meanwhile: only the level
		f.level.Store(level)
		return true
	}
	if level == levelEstablished {
		t.unwaitLocked(f)
		f.level.Store(level)
		return true
	}
	t.waiting[f.level.Load()].Remove(f.elem)
	f.level.Store(level)
	f.elem = t.waiting[level].PushBack(f)
	return true
}

// unestablished is the number of flows not yet established.
func (t *FlowTable) unestablished() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.waiting[0].Len() + t.waiting[1].Len()
}

// Len is the number of flows.
func (t *FlowTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// Snapshot returns every flow's 5-tuples.
func (t *FlowTable) Snapshot() []FlowInfo {
	t.mu.RLock()
	fs := make([]*Flow, 0, len(t.m))
	for _, f := range t.m {
		fs = append(fs, f)
	}
	t.mu.RUnlock()
	out := make([]FlowInfo, len(fs))
	for i, f := range fs {
		out[i] = f.Info()
	}
	return out
}

func (t *FlowTable) all() []*Flow {
	t.mu.RLock()
	defer t.mu.RUnlock()
	fs := make([]*Flow, 0, len(t.m))
	for _, f := range t.m {
		fs = append(fs, f)
	}
	return fs
}

// client is the state kept per client address: its path MTU and counters.
type client struct {
	addr  netip.Addr
	pmtu  clientPMTU
	ctr   counters
	flows atomic.Int32
	last  atomic.Int64

	// answered is when the backend last raised one of the client's flows
	// past pending (unix nanoseconds): the client may then open flows
	// with ESP, keepalives or IKEv1 (a NAT that moved its port).
	answered atomic.Int64
	// established counts its flows at levelEstablished: while it has one,
	// it may open flows as above.
	established atomic.Int32

	mu       sync.Mutex
	backend  *backend // backend of its latest IKE SA, for ESP on a new flow
	routeMTU int      // installed route MTU (route_mtu), 0 when none
}

// mtu is the client's installed route MTU, 0 when none.
func (c *client) mtu() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routeMTU
}
