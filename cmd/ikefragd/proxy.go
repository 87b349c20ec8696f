package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/proxy"
)

// startProxy starts the re-fragmenting proxy (proxy.enabled): it reads the
// diagnosis engine's path-MTU estimates and the key store, and exports its
// counters on /metrics. The daemon's stop closes it.
func (d *daemon) startProxy(ctx context.Context) error {
	cfg := d.config()
	deps := proxy.Deps{Logger: d.log.With("component", "proxy"),
		Peer: func(ctx context.Context, a netip.Addr) (mtu int, ok bool) {
			_ = d.pipe.query(ctx, func(e *diag.Engine) {
				if est, found := e.PeerEstimate(a); found {
					mtu, ok = est.MTU, true
				}
			})
			return mtu, ok
		}}
	if d.store != nil {
		deps.Keys = d.store
	}
	// IKE over RFC 9329 streams reaches the engine from the proxy: the
	// eBPF observer sees only the UDP leg toward the backend.
	deps.TCPFrames = d.pipe.tcpFrame
	p, err := proxy.New(cfg.Proxy, deps)
	if err != nil {
		return &startError{err: fmt.Errorf("starting the proxy: %w%s", err, bindHint(err))}
	}
	// Run returns only when ctx ends, with Close's error; the daemon's
	// stop calls Close itself and reports that error.
	go func() { _ = p.Run(ctx) }()
	d.proxy = p
	d.m.reg.MustRegister(p.Collector())
	return nil
}

// localAddrs returns a test for this host's addresses, read now: the
// addresses the proxy's upstream sockets send from.
func localAddrs() func(netip.Addr) bool {
	set := map[netip.Addr]bool{}
	if as, err := net.InterfaceAddrs(); err == nil {
		for _, a := range as {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				set[p.Addr().Unmap()] = true
			}
		}
	}
	return func(a netip.Addr) bool { return set[a.Unmap()] }
}
