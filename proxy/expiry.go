package proxy

// Expiry: what leaves the tables, and when.
//
//  1. Proxy.janitor ticks once a second.
//  2. Proxy.sweep expires idle and unanswered flows, IKE SAs, clients and
//     routes, checks backend health and writes the state file.
//  3. Proxy.closeFlow releases one flow: table entry, fast-path mapping,
//     upstream socket and the per-backend and per-client counts.

import (
	"time"
)

func (p *Proxy) closeFlow(f *Flow) {
	if f.closed.Swap(true) {
		return
	}
	if f.level.Load() == levelEstablished {
		p.stateDirty.Store(true)
	}
	p.flows.remove(f)
	if !p.keepMapped.Load() || f.level.Load() != levelEstablished {
		p.fpUnmap(f)
	}
	f.up.Close()
	if f.ln.tcp != nil {
		f.ln.tcp.flowClosed()
	}
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
		p.forgetTCPCuts(s.key.spiI, spiR)
	}
	p.sweepTCPCuts(now)
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
