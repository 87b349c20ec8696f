package proxy

// Status: what the proxy reports (ikefragctl status and peers, metrics).

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"
)

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
		if r != DropCookieSent && r != DropTCPSendBuffer {
			refused += st.Total.Dropped[r.String()]
		}
	}
	evicted := st.FlowEnds[EndEvictedUnanswered.String()] + st.FlowEnds[EndEvictedHalfOpen.String()]
	pair := ""
	if vs := st.Pair.VIPs; len(vs) > 0 {
		role := "standby"
		if vipsHeld(vs) == len(vs) {
			role = "active"
		} else if vipsHeld(vs) > 0 {
			role = "partly active"
		}
		pair = fmt.Sprintf(", %s (holds %d/%d listen addresses)", role, vipsHeld(vs), len(vs))
	}
	if st.Pair.Adopt != AdoptOff {
		pair += fmt.Sprintf(", %d SAs adopted", st.Pair.AdoptedIKE+st.Pair.AdoptedESP)
	}
	if st.TCP != nil {
		var refusedTCP uint64
		for _, n := range st.TCP.Refused {
			refusedTCP += n
		}
		var unsplit uint64
		for _, n := range st.TCP.Unsplit {
			unsplit += n
		}
		pair += fmt.Sprintf(", TCP (RFC 9329) %d connections (%d without flow), %d refused, %d split toward backends into %d fragments (%d replays, %d key prompts, %d answered with keys), %d too large relayed whole",
			st.TCP.Connections, st.TCP.NoFlow, refusedTCP, st.TCP.Split, st.TCP.SplitFragments, st.TCP.SplitReplays,
			st.TCP.SplitKeyPrompts, st.TCP.SplitKeysAfterPrompt, unsplit)
		if unsplit > 0 {
			pair += " (" + reasonCounts(st.TCP.Unsplit) + ")"
		}
	}
	return fmt.Sprintf("proxy %s (refragment %s): %d/%d backends up, %d clients, %d flows (%d not established), %d re-fragmented, %d replays, %d step-downs, %d key misses, %d datagrams refused, %d flows evicted, %d cookies sent, ESP fast path %s%s",
		mode, st.Refragment, up, len(st.Backends), st.Clients, st.Flows, st.Unestablished, st.Total.Refragmented, st.Total.Replays,
		st.Total.StepDowns, st.Total.KeyMisses, refused, evicted, st.CookiesSent, fp, pair)
}

// reasonCounts prints counts by reason, sorted by reason: "a=1 b=2".
func reasonCounts(m map[string]uint64) string {
	parts := make([]string, 0, len(m))
	for r, n := range m {
		if n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", r, n))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// TCPStats returns the RFC 9329 listener's counters (Stats.TCP, without
// the rest of Stats); nil without a listener.
func (p *Proxy) TCPStats() *TCPStats { return p.tcpStats() }

// PMTU returns the path-MTU estimate toward a client.
func (p *Proxy) PMTU(a netip.Addr) PMTUInfo {
	a = a.Unmap()
	c := p.lookupClient(a)
	if c == nil {
		c = &client{addr: a}
	}
	return c.pmtu.estimate(p.s, a, p.now())
}

func (p *Proxy) listenStrings() []string {
	var out []string
	for _, l := range p.listeners {
		out = append(out, l.sock.addr.String())
	}
	return out
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
		Keyed: p.keyed, Refragment: p.s.Refragment, Listeners: p.listenStrings(), TCP: p.tcpStats(),
		Pair: PairStats{Adopt: p.s.Adopt, VIPs: p.vips.snapshot(), AdoptedIKE: p.pairCtr.ike.Load(),
			AdoptedESP: p.pairCtr.esp.Load(), AdoptUnknownSA: p.pairCtr.unknown.Load()}}
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
