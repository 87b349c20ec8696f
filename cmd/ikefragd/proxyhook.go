package main

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/proxy"
)

// proxyDeps is what the daemon hands the proxy.
type proxyDeps struct {
	// Config is the validated proxy section.
	Config proxy.Config
	// Keys is the key store when keys.* names a source, else nil.
	Keys keys.Source
	// Peer returns the diagnosis engine's path-MTU estimate for a client.
	Peer   func(ctx context.Context, a netip.Addr) (diag.PMTUEstimate, bool)
	Logger *slog.Logger
}

// proxyRunner is a running proxy.
type proxyRunner interface {
	// Status is one line for `ikefragctl status`.
	Status() string
	// Peers is the per-client state for `ikefragctl peers`.
	Peers() []proxy.PeerInfo
	// Collector exports the proxy's counters on /metrics.
	Collector() prometheus.Collector
	Close() error
}

// proxyStarter starts the re-fragmenting proxy (set in proxy.go). A build
// without it refuses proxy.enabled: true with exit status 2.
var proxyStarter func(ctx context.Context, deps proxyDeps) (proxyRunner, error)
