// Package diag turns observations of IKE traffic — from a capture file or
// from the live eBPF observer, as obs.Record values — into sessions,
// per-peer path-MTU estimates and verdicts an operator can act on.
package diag

import (
	"container/list"
	"hash/maphash"
	"net/netip"
	"sort"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/keys"
)

// Options bound the engine's memory and set its timing rules.
type Options struct {
	Ports ike.Ports
	// CopyWindow: the same datagram seen again within this time is another
	// copy of one send (a second interface, a capture duplicate), not a
	// retransmission. IKE retransmission timers start at 0.5 s or more.
	CopyWindow time.Duration
	// Settle: an exchange without a response is judged unanswered only when
	// the session has been quiet this long (or at the end of a capture).
	Settle time.Duration
	// Idle: sessions quiet this long are forgotten (live use).
	Idle time.Duration
	// MaxSessions caps the sessions kept; the least recently active one is
	// evicted first.
	MaxSessions int
	// MaxExchanges and MaxTransmissions cap what one session keeps.
	MaxExchanges     int
	MaxTransmissions int
	// RelayLeg, when set, names the addresses from which this host's own
	// proxy initiates toward its backends. A session initiated from one of
	// them is the proxy's relayed copy of a client's session: it is kept
	// and shown, but judged only on the client's side, so that one loss
	// does not give two verdicts.
	RelayLeg func(netip.Addr) bool
	// Keys, when set, opens SK and SKF messages of the IKE SAs it has keys
	// for: inner notifies such as AUTHENTICATION_FAILED and the CHILD SA
	// proposal become visible.
	Keys keys.Source
	// MaxMemory is the budget in bytes for what sessions keep (budget.go).
	MaxMemory int64
}

// DefaultOptions are the documented defaults.
var DefaultOptions = Options{
	Ports:            ike.DefaultPorts,
	CopyWindow:       250 * time.Millisecond,
	Settle:           30 * time.Second,
	Idle:             10 * time.Minute,
	MaxSessions:      10000,
	MaxExchanges:     64,
	MaxTransmissions: 16,
	MaxMemory:        DefaultMaxMemory,
}

func (o Options) withDefaults() Options {
	d := DefaultOptions
	if o.Ports.IKE == 0 && o.Ports.NATT == 0 {
		o.Ports = d.Ports
	}
	if o.CopyWindow <= 0 {
		o.CopyWindow = d.CopyWindow
	}
	if o.Settle <= 0 {
		o.Settle = d.Settle
	}
	if o.Idle <= 0 {
		o.Idle = d.Idle
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = d.MaxSessions
	}
	if o.MaxExchanges <= 0 {
		o.MaxExchanges = d.MaxExchanges
	}
	if o.MaxTransmissions <= 0 {
		o.MaxTransmissions = d.MaxTransmissions
	}
	if o.MaxMemory <= 0 {
		o.MaxMemory = d.MaxMemory
	}
	return o
}

// Stats counts what the engine took in and what it could not use.
type Stats struct {
	Datagrams      uint64 // IKE datagrams taken into sessions
	ESP            uint64 // ESP and ESP-in-UDP datagrams (counted, not kept)
	Keepalives     uint64
	Copies         uint64 // datagrams recognised as copies of one send
	Retransmits    uint64
	Undecodable    uint64 // IKE-port datagrams (or RFC 9329 frames) whose IKE header could not be read
	TCPFrames      uint64 // RFC 9329 frames (IKE and ESP over TCP) taken in
	Orphans        uint64 // fragment trains whose first fragment never arrived
	TooBig         uint64 // ICMP fragmentation-needed / packet-too-big messages
	Drops          uint64 // kernel drop reports
	Evicted        uint64 // sessions evicted by MaxSessions
	Quirks         uint64 // IKE messages decoded despite a departure from RFC 7296
	LimitedDropped uint64 // transmissions not kept because of per-session limits
}

// sessionKey identifies an IKE SA by the initiator's SPI and the two peers'
// addresses (not ports: NAT-T moves the SA from 500 to 4500).
type sessionKey struct {
	spi       ike.SPI
	initiator netip.Addr
	responder netip.Addr
	v1        bool
}

// Engine builds sessions from observations. It is not safe for concurrent
// use; the daemon feeds it from one goroutine.
type Engine struct {
	opt      Options
	seed     maphash.Seed
	sessions map[sessionKey]*Session
	// lru orders sessions by last activity, least recent first, so that
	// eviction and expiry cost O(1) per session under a flood.
	lru     *list.List
	nextID  int
	peers   map[netip.Addr]*Peer
	orphans map[[2]netip.Addr]*orphanTrains
	// dropIndex files kernel drop records by datagram (drop.go);
	// dropOrder is their arrival order, for eviction.
	dropIndex map[dropKey][]*obs.Drop
	dropOrder []dropKey
	icmpDrops []*obs.Drop
	// bySig maps a datagram's addresses and IP ID to its session's key
	// (not the session: a forgotten one must not be kept alive), so a
	// drop record arriving later marks the session changed.
	bySig map[dropKey]sessionKey
	// esp holds ESP per direction between two peers (esp.go); espByID
	// finds the flow of a fragmented ESP datagram for a later drop;
	// pairLatest is the latest IKE session between two addresses, which
	// ESP verdicts attach to.
	esp        map[espKey]*espFlow
	espByID    map[dropKey]*espFlow
	pairLatest map[[2]netip.Addr]*Session
	now        time.Time
	stats      Stats
	dec        *Decryptor
	// warnings are report-level notes about the input (Warn).
	warnings []string
	// mem is the engine's memory budget (budget.go).
	mem *budget
	// live is what the live judge remembers (live.go).
	live liveState
}

// orphanTrains counts incomplete fragment trains between two addresses
// whose first fragment (with the UDP and IKE headers) never arrived.
type orphanTrains struct {
	Count       int
	Bytes       int
	First, Last time.Time
}

// New returns an engine with the given options (zero fields take defaults).
func New(opt Options) *Engine {
	e := &Engine{
		opt:        opt.withDefaults(),
		seed:       maphash.MakeSeed(),
		sessions:   make(map[sessionKey]*Session),
		lru:        list.New(),
		peers:      make(map[netip.Addr]*Peer),
		orphans:    make(map[[2]netip.Addr]*orphanTrains),
		dropIndex:  make(map[dropKey][]*obs.Drop),
		bySig:      make(map[dropKey]sessionKey),
		esp:        make(map[espKey]*espFlow),
		espByID:    make(map[dropKey]*espFlow),
		pairLatest: make(map[[2]netip.Addr]*Session),
	}
	e.mem = newBudget(e.opt.MaxMemory)
	if opt.Keys != nil {
		e.dec = NewDecryptor(opt.Keys, e.Now)
	}
	return e
}

// Stats returns the counters.
func (e *Engine) Stats() Stats { return e.stats }

// Add takes one observation.
func (e *Engine) Add(r obs.Record) {
	switch {
	case r.Datagram != nil:
		e.advance(r.Datagram.Time)
		e.addDatagram(r.Datagram)
	case r.TooBig != nil:
		e.advance(r.TooBig.Time)
		e.stats.TooBig++
		e.peer(r.TooBig.OrigDst).addTooBig(r.TooBig)
		e.espTooBig(r.TooBig)
	case r.Drop != nil:
		e.advance(r.Drop.Time)
		e.stats.Drops++
		e.addDrop(r.Drop)
	}
}

// advance moves the engine's clock; captures may hold out-of-order or zero
// timestamps, so the clock never goes back.
func (e *Engine) advance(t time.Time) {
	if t.After(e.now) {
		e.now = t
	}
}

const (
	protoTCP = 6 // an RFC 9329 frame (obs.Datagram)
	protoUDP = 17
	protoESP = 50
)

func (e *Engine) addDatagram(d *obs.Datagram) {
	switch {
	case d.Proto == protoESP:
		if d.Length < 0 {
			// No ESP header: a train whose first fragment is missing.
			e.addESP(d, false, 0)
			return
		}
		e.addESP(d, false, espSPI(d.Payload))
		return
	case d.Proto == protoTCP:
		e.addTCPFrame(d)
		return
	case d.Proto != protoUDP:
		return
	case d.Length < 0:
		// No UDP header: the first fragment is missing. Keep a count per
		// address pair; it corroborates a fragment-loss verdict.
		e.stats.Orphans++
		k := [2]netip.Addr{d.Src.Addr(), d.Dst.Addr()}
		o := e.orphans[k]
		if o == nil {
			if len(e.orphans) >= e.opt.MaxSessions {
				return
			}
			o = &orphanTrains{First: d.Time}
			e.orphans[k] = o
		}
		o.Count++
		for _, f := range d.Frags {
			o.Bytes += f.Len
		}
		o.Last = d.Time
		return
	case !e.opt.Ports.Carries(d.Src.Port(), d.Dst.Port()):
		return
	}
	fr := e.opt.Ports.Classify(d.Src.Port(), d.Dst.Port(), d.Payload)
	switch fr.Kind {
	case ike.KindESP:
		e.addESP(d, true, fr.SPI)
		return
	case ike.KindKeepalive:
		e.stats.Keepalives++
		return
	case ike.KindIKE:
	default:
		e.stats.Undecodable++
		return
	}
	e.addIKE(d, fr, false)
}

// addIKE takes an IKE message carried in a UDP datagram, or (tcp) in an
// RFC 9329 frame of a TCP stream.
func (e *Engine) addIKE(d *obs.Datagram, fr ike.Framing, tcp bool) {
	h, err := ike.ParseHeader(fr.IKE)
	if err != nil || (h.MajorVersion != 1 && h.MajorVersion != 2) {
		e.stats.Undecodable++
		return
	}
	g := &Datagram{
		Time: d.Time, Src: d.Src, Dst: d.Dst, Header: h, Marker: fr.Marker,
		UDPLen: d.Length, IPFrags: max(1, len(d.Frags)), IPFragmented: len(d.Frags) > 0, Complete: d.Complete,
		Missing: d.Missing, Incomplete: d.Incomplete, Copies: 1, IPID: d.IPID, TCP: tcp,
	}
	if d.Frame != 0 {
		g.Frames = []int{d.Frame}
	}
	g.Sources = []obs.Source{d.Source}
	switch {
	case tcp:
		// A frame of a TCP stream says nothing of IP packet sizes on
		// the path (TCP segments it as it likes): no IP length, no
		// fragments, no IP ID (tcp.go).
		g.UDPLen, g.IPFrags, g.IPFragmented, g.IPID = -1, 1, false, 0
	case len(d.Frags) > 0:
		for _, f := range d.Frags {
			g.FragLens = append(g.FragLens, f.IPLen)
			g.IPLen += f.IPLen
		}
	default:
		g.IPLen = ipHeaderLen(d) + 8 + d.Length
		g.FragLens = []int{g.IPLen}
	}
	whole := d.Complete && !d.Truncated && len(fr.IKE) == int(h.Length)
	if whole && h.IsIKEv2() {
		// These exchanges are always encrypted (RFC 7296 §1.2, §3.14, RFC
		// 9242, RFC 9370; SKF: RFC 7383); anything else under their header
		// is junk. IKE_SA_INIT and IKE_SESSION_RESUME go in clear.
		switch h.Exchange {
		case ike.ExchangeIKEAuth, ike.ExchangeCreateChildSA, ike.ExchangeInformational,
			ike.ExchangeIKEIntermediate, ike.ExchangeIKEFollowupKE:
			g.Malformed = h.NextPayload != ike.PayloadEncrypted && h.NextPayload != ike.PayloadEncryptedFragment
		}
		if m, err := ike.Decode(fr.IKE); err != nil {
			g.Malformed = true
		} else {
			g.Message = m
			if len(m.Trailing) > 0 {
				e.stats.Quirks++
			}
			if p := m.Find(ike.PayloadEncryptedFragment); p != nil {
				g.SKF = p.Body.(*ike.EncryptedFragment)
			}
		}
	}
	e.stats.Datagrams++
	if !tcp {
		e.peerEvidence(g)
	}
	s := e.session(g)
	if s == nil {
		return
	}
	if tcp {
		s.TCPDatagrams++
	} else {
		s.UDPDatagrams++
	}
	e.place(s, g, fr.IKE)
	s.Changes++
	if !tcp {
		e.noteIPID(s, g)
	}
	if g.Message != nil {
		if q := g.Message.Quirks(); len(q) > 0 && len(s.Quirks) < 4 {
			s.Quirks = append(s.Quirks, sprintf("%s %s (Message ID %d): %s", h.Exchange, reqResp(h.Flags.Response()), h.MessageID, q[0]))
		}
	}
}

// ipHeaderLen estimates the IP header length of an unfragmented datagram.
func ipHeaderLen(d *obs.Datagram) int {
	if d.IPVersion == 6 {
		return 40
	}
	return 20
}

// session finds or creates the session a datagram belongs to.
func (e *Engine) session(g *Datagram) *Session {
	h := g.Header
	init, resp := g.Src, g.Dst
	if !h.Flags.Initiator() {
		init, resp = g.Dst, g.Src
	}
	k := sessionKey{spi: h.SPIi, initiator: init.Addr(), responder: resp.Addr(), v1: h.IsIKEv1()}
	if h.IsIKEv1() {
		// IKEv1 has no I flag semantics to rely on for direction here; key
		// by the unordered address pair.
		a, b := g.Src.Addr(), g.Dst.Addr()
		if b.Less(a) {
			a, b = b, a
		}
		k.initiator, k.responder = a, b
	}
	s := e.sessions[k]
	if s == nil {
		if len(e.sessions) >= e.opt.MaxSessions {
			e.evictOldest()
		}
		e.nextID++
		defer func() { e.pairLatest[pairOf(s.Initiator.Addr(), s.Responder.Addr())] = s }()
		s = &Session{ID: e.nextID, SPIi: h.SPIi, IKEv1: h.IsIKEv1(), First: g.Time, seen: make(map[sig]*Datagram), key: k}
		if p := e.pairLatest[pairOf(init.Addr(), resp.Addr())]; p != nil {
			// the key, not the session: a forgotten one must not be
			// kept alive (tcp.go reads it for a fallback to TCP)
			s.prev, s.hasPrev = p.key, true
		}
		s.RelayLeg = e.opt.RelayLeg != nil && !h.IsIKEv1() && e.opt.RelayLeg(init.Addr())
		if h.IsIKEv1() {
			s.Initiator, s.Responder = g.Src, g.Dst
		}
		e.sessions[k] = s
		s.elem = e.lru.PushBack(s)
	} else {
		e.lru.MoveToBack(s.elem)
	}
	if !h.IsIKEv1() {
		s.Initiator, s.Responder = init, resp
		if h.Flags.Initiator() {
			s.FromInitiator++
		} else {
			s.FromResponder++
		}
		if h.Flags.Response() {
			s.Responses++
		}
	} else {
		rolesV1(s, g)
	}
	if s.SPIr.IsZero() && !h.SPIr.IsZero() {
		s.SPIr = h.SPIr
	}
	if g.Time.After(s.Last) {
		s.Last = g.Time
	}
	return s
}

// place files a datagram under its exchange as a new transmission, as part
// of the current SKF transmission, or as a copy of a datagram already seen.
func (e *Engine) place(s *Session, g *Datagram, raw []byte) {
	h := g.Header
	k := sig{
		tcp:           g.TCP,
		fromInitiator: h.Flags.Initiator(),
		response:      h.Flags.Response(),
		mid:           h.MessageID,
		length:        h.Length,
		sum:           maphash.Bytes(e.seed, raw),
	}
	if g.SKF != nil {
		k.frag = g.SKF.Number
	}
	if prev := s.seen[k]; prev != nil && g.Time.Sub(prev.Time) <= e.opt.CopyWindow && !g.Time.Before(prev.Time.Add(-e.opt.CopyWindow)) {
		e.stats.Copies++
		prev.Copies++
		prev.Frames = append(prev.Frames, g.Frames...)
		if len(prev.Sources) < 8 {
			prev.Sources = append(prev.Sources, g.Sources...)
		}
		// A copy seen whole makes up for a copy whose fragments were lost
		// past the first observation point: keep the most complete view.
		if g.Complete && !prev.Complete {
			prev.Complete, prev.Missing, prev.Incomplete = true, nil, obs.NotIncomplete
		}
		if prev.Message == nil && g.Message != nil {
			prev.Message, prev.SKF = g.Message, g.SKF
		}
		return
	}
	if !e.charge(s, g, raw) {
		s.dropped++
		e.stats.LimitedDropped++
		return
	}
	prev := s.seen[k]
	if prev == nil {
		// the same bytes over the other transport are a retransmission
		// too: a client that moves to TCP resends its request there
		other := k
		other.tcp = !k.tcp
		prev = s.seen[other]
	}
	// The same bytes again are a retransmission (RFC 7296 §2.1); for
	// IKEv1, whose header has no request/response flag, only when also
	// sent between the same addresses and ports.
	retrans := prev != nil && (!h.IsIKEv1() || prev.Src == g.Src && prev.Dst == g.Dst)
	if len(s.seen) < 4*e.opt.MaxExchanges*e.opt.MaxTransmissions {
		s.seen[k] = g
	}
	x := s.exchange(h, e.opt.MaxExchanges)
	if x == nil {
		s.dropped++
		e.stats.LimitedDropped++
		return
	}
	list := &x.Requests
	if h.Flags.Response() {
		list = &x.Responses
	}
	// Fragments 2..n of an RFC 7383 message join the transmission that the
	// latest fragment 1 started.
	if g.SKF != nil && g.SKF.Number > 1 && len(*list) > 0 {
		t := (*list)[len(*list)-1]
		if len(t.Datagrams) < int(g.SKF.Total) && len(t.Datagrams) < 256 {
			t.Datagrams = append(t.Datagrams, g)
			e.open(s, x, g, raw)
			return
		}
	}
	if len(*list) >= e.opt.MaxTransmissions {
		s.dropped++
		e.stats.LimitedDropped++
		return
	}
	t := &Transmission{Time: g.Time, Datagrams: []*Datagram{g}, Retransmission: retrans || len(*list) > 0 && sameLength(x, *list, g)}
	if t.Retransmission {
		e.stats.Retransmits++
	}
	*list = append(*list, t)
	e.delivered(s, x, t)
	e.learn(s, x, g)
	if g.Message != nil && h.Flags.Response() {
		noteErrors(s, x, g, g.Message.Payloads, false)
	}
	e.open(s, x, g, raw)
}

// Sessions returns the sessions in order of first appearance.
func (e *Engine) Sessions() []*Session {
	out := make([]*Session, 0, len(e.sessions))
	for _, s := range e.sessions {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Now returns the engine's clock: the latest observation time.
func (e *Engine) Now() time.Time { return e.now }
