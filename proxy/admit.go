package proxy

import (
	"net"
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// A flow (an upstream socket and a goroutine) is earned: only a
// well-formed first message of an IKE SA, or a datagram of an IKE SA or
// client the backend has answered, opens one, and only from a source that
// can be a client. Everything else is a counted drop before any
// allocation, so spoofed floods cost a table lookup each.

// localsRefresh is how often the addresses of this host are read again
// (an address added at run time is refused as a source from then on).
const localsRefresh = 10 * time.Second

// localSet is what the host's interfaces say about addresses: its own
// addresses and the IPv4 broadcast addresses of its subnets.
type localSet struct {
	local     map[netip.Addr]bool
	broadcast map[netip.Addr]bool
	at        time.Time
}

func readLocals(now time.Time) *localSet {
	ls := &localSet{local: map[netip.Addr]bool{}, broadcast: map[netip.Addr]bool{}, at: now}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ls
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ls.local[ip] = true
		ones, bits := ipn.Mask.Size()
		if ip.Is4() && bits == 32 && ones < 31 {
			b := ip.As4()
			m := ipn.Mask
			for i := range b {
				b[i] |= ^m[len(m)-4+i]
			}
			ls.broadcast[netip.AddrFrom4(b)] = true
		}
	}
	return ls
}

// locals returns the host's addresses, read again every localsRefresh.
func (p *Proxy) locals(now time.Time) *localSet {
	ls := p.localAddrs.Load()
	if ls == nil || now.Sub(ls.at) > localsRefresh || now.Before(ls.at) {
		ls = readLocals(now)
		p.localAddrs.Store(ls)
	}
	return ls
}

// refuseSource says why a datagram from src to local cannot open a flow
// (ok false), per proxy.clients and the rules against reflection: the
// proxy would send the backend's answers to src, so src must be a
// unicast address of some other host. mapped is set when the IPv6 socket
// saw an IPv4-mapped source (its IPV6_V6ONLY socket never receives IPv4,
// so such a source is forged).
func (p *Proxy) refuseSource(src netip.Addr, mapped bool, local netip.Addr, now time.Time) (DropReason, bool) {
	switch {
	case mapped:
		return DropSourceMapped, true
	case src.IsUnspecified() || !src.IsValid():
		return DropSourceUnspecified, true
	case src.IsMulticast():
		return DropSourceMulticast, true
	case src.Is4() && src == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return DropSourceBroadcast, true
	}
	for _, b := range p.backends {
		if src == b.cfg.IKE.Addr() {
			return DropSourceBackend, true
		}
	}
	// A datagram to a loopback address comes from this host (the kernel
	// drops loopback destinations arriving on other interfaces): local
	// clients are allowed there, and only there.
	if !local.IsLoopback() {
		if src.IsLoopback() {
			return DropSourceLoopback, true
		}
		ls := p.locals(now)
		if ls.local[src] {
			return DropSourceLocal, true
		}
		if ls.broadcast[src] {
			return DropSourceBroadcast, true
		}
	}
	for _, d := range p.s.deny {
		if d.Contains(src) {
			return DropClientDenied, true
		}
	}
	if len(p.s.allow) > 0 {
		for _, a := range p.s.allow {
			if a.Contains(src) {
				return 0, false
			}
		}
		return DropClientNotAllowed, true
	}
	return 0, false
}

// isInitRequest reports a well-formed first message of an IKE SA: an
// IKEv2 IKE_SA_INIT request (RFC 7296 §1.2, §3.1: I flag set, R flag
// clear, a non-zero initiator SPI, a zero responder SPI, Message ID 0, a
// Length equal to the datagram, a payload chain that decodes and carries
// SA, KE and Nonce), or the first message of an IKEv1 Main or Aggressive
// Mode exchange (RFC 2408 §3.1: a zero responder cookie, Message ID 0).
func isInitRequest(msg []byte) bool {
	h, err := ike.ParseHeader(msg)
	if err != nil || int(h.Length) != len(msg) || h.SPIi.IsZero() || !h.SPIr.IsZero() || h.MessageID != 0 {
		return false
	}
	if h.IsIKEv1() {
		// 2: Identity Protection (Main Mode), 4: Aggressive
		return h.Exchange == 2 || h.Exchange == 4
	}
	if !h.IsIKEv2() || h.Exchange != ike.ExchangeIKESAInit || !h.Flags.Initiator() || h.Flags.Response() {
		return false
	}
	m, err := ike.Decode(msg)
	if err != nil {
		return false
	}
	return m.Find(ike.PayloadSA) != nil && m.Find(ike.PayloadKE) != nil && m.Find(ike.PayloadNonce) != nil
}

// earned reports whether a datagram of no known flow may open one: a
// well-formed first message of an IKE SA, an IKEv2 message of an IKE SA
// whose IKE_SA_INIT the backend answered (the client moved to the NAT-T
// port, or its NAT moved it), or anything (ESP, keepalive, IKEv1) from a
// client address with an established flow, or with a flow the backend
// answered within idle_timeout.
func (p *Proxy) earned(l *listener, ca netip.Addr, payload []byte, now time.Time) (ok, init bool) {
	fr := p.classify(l, payload)
	if fr.Kind == ike.KindIKE {
		if isInitRequest(fr.IKE) {
			return true, true
		}
		if h, err := ike.ParseHeader(fr.IKE); err == nil && h.IsIKEv2() && !h.SPIr.IsZero() {
			if sa := p.sas.get(ca, h.SPIi, h.SPIr, now); sa != nil {
				sa.mu.Lock()
				known := sa.spiR == h.SPIr
				sa.mu.Unlock()
				if known {
					return true, false
				}
			}
		}
	}
	if fr.Kind == ike.KindInvalid {
		return false, false
	}
	if c := p.lookupClient(ca); c != nil {
		if c.established.Load() > 0 {
			return true, false
		}
		if at := c.answered.Load(); at != 0 && now.Sub(time.Unix(0, at)) <= p.s.IdleTimeout {
			return true, false
		}
	}
	return false, false
}

// admit opens a flow for a datagram of no known flow, or counts why not.
func (p *Proxy) admit(l *listener, src netip.AddrPort, mapped bool, local netip.AddrPort, payload []byte, now time.Time) *Flow {
	ca := src.Addr()
	if why, refused := p.refuseSource(ca, mapped, local.Addr(), now); refused {
		p.total.drops[why].Add(1)
		return nil
	}
	ok, init := p.earned(l, ca, payload, now)
	if !ok && p.adoptable(l, payload) {
		// proxy.adopt: the other box of a pair carried this SA (pair.go);
		// the flow starts pending like any unverified one
		ok = true
	}
	if !ok {
		p.total.drops[DropUnsolicited].Add(1)
		return nil
	}
	fr := p.classify(l, payload)
	if p.halfOpenRefused(ca, fr) {
		p.total.drops[DropHalfOpenLimit].Add(1)
		return nil
	}
	verified := false
	if init {
		pass, v := p.cookieGate(l, src, local, fr.IKE, fr.Marker, now)
		if !pass {
			return nil
		}
		verified = v
	}
	f := p.newFlow(l, src, local, payload, now)
	if f != nil && verified {
		// the client has the proxy's answers: it goes after the
		// unverified flows when room is needed
		p.promote(f, levelHalfOpen, now)
		if f.cl != nil {
			f.cl.answered.Store(now.UnixNano())
		}
	}
	return f
}

// clientPrefix is the prefix new_flows_per_prefix counts a client in.
func (p *Proxy) clientPrefix(a netip.Addr) netip.Prefix {
	bits := p.s.ClientPrefixV6
	if a.Is4() {
		bits = p.s.ClientPrefixV4
	}
	pf, _ := a.Prefix(min(bits, a.BitLen()))
	return pf
}

// promote raises a flow's level after a backend datagram; an established
// flow marks its client answered.
func (p *Proxy) promote(f *Flow, level uint32, now time.Time) {
	if p.flows.promote(f, level) && f.cl != nil {
		if level == levelEstablished {
			// (half-open proves nothing about the client: the backend
			// answers a spoofed IKE_SA_INIT too)
			f.cl.answered.Store(now.UnixNano())
			p.stateDirty.Store(true)
		}
		if level == levelEstablished && f.estCounted.CompareAndSwap(false, true) {
			f.cl.established.Add(1)
			if f.closed.Load() && f.estCounted.CompareAndSwap(true, false) {
				// closed while rising: closeFlow may not have seen it
				f.cl.established.Add(-1)
			}
		}
	}
}

// endFlow closes a flow and counts why.
func (p *Proxy) endFlow(f *Flow, why FlowEnd) {
	if !f.closed.Load() {
		p.flowEnds[why].Add(1)
	}
	p.closeFlow(f)
}
