package proxy

import "time"

// route makes the kernel fragment datagrams toward c at mtu (route_mtu,
// keyless help): a host route with a locked MTU in the proxy's table.
func (p *Proxy) route(c *client, mtu int) {
	c.mu.Lock()
	have := c.routeMTU
	c.mu.Unlock()
	if have == mtu {
		return
	}
	if err := p.routes.Set(c.addr, mtu); err != nil {
		p.log.Warn("proxy: route_mtu", "client", c.addr, "mtu", mtu, "err", err)
		return
	}
	c.mu.Lock()
	c.routeMTU = mtu
	c.mu.Unlock()
	p.log.Info("proxy: host route with locked MTU", "client", c.addr, "mtu", mtu)
	p.fpClientMTU(c)
}

func (p *Proxy) unroute(c *client) {
	c.mu.Lock()
	had := c.routeMTU
	c.routeMTU = 0
	c.mu.Unlock()
	if had == 0 {
		return
	}
	if err := p.routes.Remove(c.addr); err != nil {
		p.log.Warn("proxy: route_mtu", "client", c.addr, "err", err)
	}
	p.fpClientMTU(c)
}

// refreshRoutes follows the estimates: a route whose client's path MTU
// changed is updated, one whose evidence expired is removed.
func (p *Proxy) refreshRoutes(now time.Time) {
	p.clientsMu.Lock()
	cs := make([]*client, 0, len(p.clients))
	for _, c := range p.clients {
		cs = append(cs, c)
	}
	p.clientsMu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		had := c.routeMTU
		c.mu.Unlock()
		if had == 0 {
			continue
		}
		in := c.pmtu.estimate(p.s, c.addr, now)
		if in.Source == SourceDefault && c.flows.Load() == 0 {
			p.unroute(c)
			continue
		}
		if in.MTU != had {
			p.route(c, in.MTU)
		}
	}
}
