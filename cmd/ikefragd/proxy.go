package main

import (
	"context"

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
