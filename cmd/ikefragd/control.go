package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ebpf"
	"github.com/ikefrag/ikefrag/proxy"
)

// controlHandler answers the control socket. Engine data comes from the
// engine goroutine (a query) or its snapshot; nothing here touches the
// engine directly.
type controlHandler struct{ d *daemon }

// queryTimeout bounds how long a request waits for the engine goroutine.
const queryTimeout = 15 * time.Second

func (h controlHandler) Call(ctx context.Context, method string) (any, error) {
	d := h.d
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	switch method {
	case control.MethodStatus:
		return d.status(), nil
	case control.MethodStats:
		return d.stats()
	case control.MethodPeers:
		var out []diag.PMTUEstimate
		if err := d.pipe.query(ctx, func(e *diag.Engine) { out = e.Peers() }); err != nil {
			return nil, err
		}
		return out, nil
	case control.MethodProxyPeers:
		if d.proxy == nil {
			return []proxy.PeerInfo{}, nil
		}
		return d.proxy.Peers(), nil
	case control.MethodSessions:
		var out []diag.SessionReport
		if err := d.pipe.query(ctx, func(e *diag.Engine) { out = e.Report(false).Sessions }); err != nil {
			return nil, err
		}
		return out, nil
	case control.MethodVerdicts:
		var out diag.Report
		if err := d.pipe.query(ctx, func(e *diag.Engine) { out = e.Report(false) }); err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown method %q (status, peers, proxy-peers, sessions, verdicts, stats, events)", method)
}

func (h controlHandler) Events(ctx context.Context, follow bool, send func(control.Event) error) error {
	return h.d.events.serve(ctx, follow, send)
}

func (d *daemon) status() control.Status {
	cfg := d.config()
	snap := d.pipe.snapshot()
	probs := d.problems()
	st := control.Status{
		Version: version, GoVersion: runtime.Version(), PID: os.Getpid(), Started: d.started,
		Healthy: len(probs) == 0, Problems: probs, Degraded: d.degraded(),
		Interfaces: d.watch.status(), AttachMode: cfg.Observe.AttachMode, DropsEnabled: d.obs.DropsEnabled(),
		Sessions: snap.Sessions, Peers: snap.Peers, Verdicts: snap.Verdicts, Records: snap.Records,
		Metrics: d.metricsAddr(), Proxy: "disabled",
		Keys:   control.Keys{SaveKeys: cfg.Keys.StrongswanTable, Socket: cfg.Keys.Socket},
		Kernel: d.kernel,
	}
	d.mu.Lock()
	st.Config = control.ConfigStatus{File: displayFile(d.file), Loaded: d.loaded, Reloads: d.reloads,
		ReloadFailures: d.reloadFailures, LastError: d.lastErr, RestartPending: d.pending}
	d.mu.Unlock()
	if d.proxy != nil {
		st.Proxy = d.proxy.Status()
	}
	if d.store != nil {
		st.Keys.SAs = d.store.Stats().Entries
	}
	return st
}

func (d *daemon) stats() (control.Stats, error) {
	s, err := d.obs.Counters()
	if err != nil {
		return control.Stats{}, err
	}
	out := control.Stats{Classes: counterClasses(), Interfaces: []control.IfaceStats{}}
	for _, ic := range s.Interfaces {
		is := control.IfaceStats{Name: ic.Name, Ifindex: ic.Ifindex, Mode: string(d.obs.AttachedMode(ic.Ifindex)),
			Ingress: dirMap(&ic.Ingress), Egress: dirMap(&ic.Egress)}
		out.Interfaces = append(out.Interfaces, is)
	}
	out.Observer = control.ObserverStats{
		TrainsLive: s.TrainsLive, TrainsEvicted: s.TrainsEvicted, DropsEnabled: s.DropsEnabled,
		DropsReported: s.DropsReported, DropsRingbuf: s.DropsRingbuf, DropsUnreadable: s.DropsUnreadable,
		RecordsDropped: s.RecordsDropped, PendingEvicted: s.PendingEvicted, DecodeErrors: s.DecodeErrors,
	}
	snap := d.pipe.snapshot()
	out.Engine = engineStats(snap.Stats)
	out.Records = d.pipe.recordCounts()
	out.Engine.SessionsExpired = d.pipe.expired.Load()
	if k, err := readIPFragStats(); err == nil {
		out.Kernel = k
	}
	if d.proxy != nil {
		out.ProxyTCP = proxyTCP(d.proxy.TCPStats())
	}
	return out, nil
}

// proxyTCP is the wire form of the proxy's TCP listener counters, nil
// without a listener (TestProxyTCPWire checks that none is left behind).
func proxyTCP(st *proxy.TCPStats) *control.ProxyTCP {
	if st == nil {
		return nil
	}
	return &control.ProxyTCP{Listeners: st.Listeners, Connections: st.Connections, NoFlow: st.NoFlow,
		Accepted: st.Accepted, Refused: st.Refused, Ended: st.Ended, FramesIn: st.FramesIn, BytesIn: st.BytesIn,
		FramesOut: st.FramesOut, BytesOut: st.BytesOut, ESPDropped: st.ESPDropped,
		KeepalivesNotFramed: st.KeepalivesNotFramed, Joined: st.Joined, Split: st.Split,
		SplitFragments: st.SplitFragments, SplitReplays: st.SplitReplays, SplitKeyPrompts: st.SplitKeyPrompts,
		SplitKeysAfterPrompt: st.SplitKeysAfterPrompt, Unsplit: st.Unsplit, SplitCached: st.SplitCached}
}

// engineStats is the wire form of the engine's counters
// (TestEngineStatsWire checks that none is left behind).
func engineStats(st diag.Stats) control.EngineStats {
	return control.EngineStats{
		Datagrams: st.Datagrams, ESP: st.ESP, Keepalives: st.Keepalives, Copies: st.Copies,
		Retransmits: st.Retransmits, Undecodable: st.Undecodable, TCPFrames: st.TCPFrames, Orphans: st.Orphans,
		TooBig: st.TooBig, Drops: st.Drops, Evicted: st.Evicted, Quirks: st.Quirks, LimitedDropped: st.LimitedDropped,
	}
}

// counterClasses names the observer's counter classes in id order.
func counterClasses() []string {
	out := make([]string, 0, ebpf.NumCounters)
	for id := ebpf.CounterID(0); id < ebpf.NumCounters; id++ {
		out = append(out, id.String())
	}
	return out
}

func dirMap(dc *ebpf.DirCounters) map[string]control.Counter {
	m := make(map[string]control.Counter, ebpf.NumCounters)
	for id := ebpf.CounterID(0); id < ebpf.NumCounters; id++ {
		m[id.String()] = control.Counter{Packets: dc[id].Packets, Bytes: dc[id].Bytes}
	}
	return m
}
