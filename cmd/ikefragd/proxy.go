package main

import (
	"context"
	"net"
	"net/netip"

	"github.com/ikefrag/ikefrag/proxy"
)

// The proxy package is part of this build: proxy.enabled starts it.
func init() { proxyStarter = startProxyRunner }

// proxyProc is a running proxy.Proxy.
type proxyProc struct {
	*proxy.Proxy
	done chan error
}

func startProxyRunner(ctx context.Context, deps proxyDeps) (proxyRunner, error) {
	p, err := proxy.New(deps.Config, proxy.Deps{Keys: deps.Keys, Logger: deps.Logger, Peer: deps.Peer})
	if err != nil {
		return nil, err
	}
	pp := &proxyProc{Proxy: p, done: make(chan error, 1)}
	go func() { pp.done <- p.Run(ctx) }()
	return pp, nil
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
