package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ebpf"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/proxy"

	"github.com/ikefrag/ikefrag/cmd/ikefragd/internal/config"
)

// daemon is a running ikefragd.
type daemon struct {
	file    string
	log     *slog.Logger
	logSw   *logSwitch
	stderr  io.Writer
	started time.Time
	kernel  control.Kernel // what this kernel gives the daemon; set once at start

	obs    *ebpf.Observer
	pipe   *pipeline
	watch  *watcher
	events *eventHub
	m      *metrics
	ctl    *control.Server
	store  *keys.Store
	// keyListener is keys.listen's listener (nil when off), for status.
	keyListener *keys.Remote
	proxy       *proxy.Proxy
	sdn         *notifier // sd_notify; nil when not run by systemd

	mu             sync.Mutex // guards what follows
	cfg            config.Config
	loaded         time.Time
	reloads        uint64
	reloadFailures uint64
	lastErr        string
	pending        []string
	msrv           *metricsServer
}

// startError is a failure to start; configErr marks those caused by the
// configuration (exit status 2), the rest are exit status 1.
type startError struct {
	configErr bool
	err       error
}

func (e *startError) Error() string { return e.err.Error() }

func keyErr(key string, format string, a ...any) error {
	return &startError{configErr: true, err: config.Problems{{Key: key, Msg: fmt.Sprintf(format, a...)}}}
}

// runDaemon starts everything, serves until ctx is done or SIGTERM/SIGINT,
// reloads on SIGHUP, and stops.
func runDaemon(ctx context.Context, file string, cfg config.Config, want ifaceSet, stderr io.Writer) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log, sw := newLogger(cfg.Log, stderr)
	d := &daemon{file: file, log: log, logSw: sw, stderr: stderr, started: time.Now(), cfg: cfg, loaded: time.Now(),
		events: newEventHub(), m: newMetrics(), sdn: newNotifier(log.With("component", "systemd"))}
	var wg sync.WaitGroup
	defer func() {
		d.shutdown()
		cancel()
		wg.Wait()
		// Not waited for: a notify socket nobody reads must not hold the
		// stop.
		d.sdn.close()
	}()
	goRun := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	// Signals from now on: a reload or stop asked for while the programs
	// load waits for the start to finish instead of killing the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	defer abortOnSIGABRT(stderr)()

	// Name the missing capabilities before the kernel refuses with
	// EPERM (or the BPF library with a memlock hint).
	if missing, port := missingCaps(cfg); len(missing) > 0 {
		return &startError{err: capsError(missing, port)}
	}
	if dropped, err := dropBindService(cfg); err != nil {
		log.Warn("keeping CAP_NET_BIND_SERVICE although the proxy is off", "err", err)
	} else if dropped {
		log.Info("dropped CAP_NET_BIND_SERVICE: no privileged port to bind (the proxy is off)")
	}
	if err := d.startKeys(ctx, goRun); err != nil {
		return err
	}
	loadStart := time.Now()
	d.obs, err = ebpf.New(ebpf.Options{
		IKEPort: uint16(cfg.Ports.IKE), NATTPort: uint16(cfg.Ports.NATT),
		CaptureBytes: cfg.Observe.CaptureBytes, LargeIKE: cfg.Observe.LargeIKE,
		TrainTimeout: cfg.Observe.FragmentTimeout, TrainMapSize: cfg.Observe.TrainMapSize,
		RingBufferSize: cfg.Observe.RingBufferSize, MaxInterfaces: cfg.Observe.MaxInterfaces,
		AttachMode: ebpf.AttachMode(cfg.Observe.AttachMode), NoDrops: !cfg.Observe.Drops,
		AllNamespaces: cfg.Observe.DropsAllNetns,
		RecordQueue:   cfg.Observe.RecordQueue, Logger: log.With("component", "observer"),
	})
	if err != nil {
		return &startError{err: fmt.Errorf("loading the BPF observer: %w%s", err, capHint(err))}
	}
	log.Debug("BPF observer loaded", "took", time.Since(loadStart).Round(time.Millisecond), "drop_reasons", d.obs.DropsEnabled())
	d.kernel = kernelFeatures(d.obs)
	log.Info("kernel features", "release", d.kernel.Release, "attach", d.kernel.Attach, "observer_build", d.kernel.ObserverBuild,
		"fast_path", d.kernel.FastPath, "drop_reasons", d.kernel.DropReasons)
	opt := diag.Options{
		Ports:  ike.Ports{IKE: uint16(cfg.Ports.IKE), NATT: uint16(cfg.Ports.NATT)},
		Settle: cfg.Diag.Settle, Idle: cfg.Diag.Idle, MaxSessions: cfg.Diag.MaxSessions,
		MaxMemory: int64(cfg.Diag.MaxMemory),
	}
	if d.store != nil {
		opt.Keys = d.store
	}
	if cfg.Proxy.Enabled {
		// The proxy re-initiates every client's IKE toward a backend from
		// this host: those sessions are judged on the client's side.
		opt.RelayLeg = localAddrs()
	}
	d.pipe = newPipeline(opt, cfg.Diag.VerdictLogRate, log.With("component", "diag"), d.events, d.m)
	goRun(func() { d.pipe.run(ctx, d.obs.Records()) })

	d.watch = newWatcher(d.obs, want, log.With("component", "interfaces"), d.events, d.m)
	d.watch.reconcile()
	if bad, err := d.unattached(want); len(bad) > 0 {
		return &startError{err: fmt.Errorf("cannot observe %s%s", joinAnd(bad), capHint(err))}
	}
	goRun(func() { d.watch.run(ctx) })
	d.m.reg.MustRegister(&collector{d: d})

	if cfg.Metrics.Listen != "" {
		ms, err := startMetrics(cfg.Metrics.Listen, d.m, d.problems, d.degraded, log.With("component", "metrics"))
		if err != nil {
			return &startError{err: fmt.Errorf("metrics.listen: %w", err)}
		}
		d.msrv = ms
	}
	d.ctl, err = control.Listen(control.ServerConfig{Path: cfg.Control.Socket, Group: cfg.Control.Group,
		Logger: log.With("component", "control")}, controlHandler{d})
	if err != nil {
		return &startError{err: fmt.Errorf("control.socket: %w", err)}
	}
	goRun(func() {
		if err := d.ctl.Serve(ctx); err != nil {
			log.Error("control socket stopped", "err", err)
		}
	})
	if cfg.Proxy.Enabled {
		if err := d.startProxy(ctx); err != nil {
			return err
		}
	}

	attached := d.watch.attached()
	names := make([]string, len(attached))
	for i, a := range attached {
		names[i] = a.Name + " (" + a.Mode + ")"
	}
	log.Info("ikefragd started", "version", version, "goversion", runtime.Version(), "config", displayFile(file), "interfaces", names,
		"drop_reasons", d.obs.DropsEnabled(), "metrics", d.metricsAddr(), "control", d.ctl.Path())
	d.events.publish(control.Event{Kind: control.EventDaemon, Message: "started"})
	d.notify(sd.SdNotifyReady, "STATUS="+d.statusLine())
	goRun(func() { d.notifyLoop(ctx) })

	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				d.reload()
				continue
			}
			log.Info("stopping", "signal", s.String())
			return nil
		}
	}
}

// startKeys opens the key sources the configuration names. Refusals
// (owner, mode) are configuration errors naming the key.
func (d *daemon) startKeys(ctx context.Context, goRun func(func())) error {
	k := d.cfg.Keys
	if k.StrongswanTable == "" && k.Socket == "" && k.Listen.Address == "" {
		return nil
	}
	d.store = keys.NewStore(keys.StoreConfig{})
	goRun(func() { d.store.Run(ctx, 0) })
	klog := d.log.With("component", "keys")
	if p := k.StrongswanTable; p != "" {
		sk, err := keys.NewSaveKeys(d.store, keys.SaveKeysConfig{Path: p, Logger: klog})
		if err != nil {
			return keyErr("keys.strongswan_table", "%q: %v", p, err)
		}
		goRun(func() { _ = sk.Run(ctx) })
	}
	if p := k.Socket; p != "" {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return keyErr("keys.socket", "%q: %v", p, err)
		}
		s, err := keys.ListenSocket(d.store, keys.SocketConfig{Path: p, PeerUIDs: k.SocketPeerUIDs, Logger: klog})
		if err != nil {
			return keyErr("keys.socket", "%q: %v", p, err)
		}
		goRun(func() { _ = s.Serve(ctx) })
		goRun(func() { <-ctx.Done(); s.Close() })
	}
	if l := k.Listen; l.Address != "" {
		rc := keys.RemoteConfig{Address: l.Address, CertFile: l.Cert, KeyFile: l.Key, ClientCAFile: l.ClientCA,
			Insecure: !l.TLS, Logger: klog}
		for _, c := range l.Clients {
			cl, err := keys.ParseRemoteClient(c)
			if err != nil {
				return keyErr("keys.listen.clients", "%q: %v", c, err)
			}
			rc.Clients = append(rc.Clients, cl)
		}
		r, err := keys.ListenRemote(d.store, rc)
		if err != nil {
			return keyErr("keys.listen", "%v", err)
		}
		d.keyListener = r
		d.m.reg.MustRegister(r.Collector())
		goRun(func() { _ = r.Serve(ctx) })
	}
	return nil
}

// unattached lists the exact interface names that did not attach, and
// one of the errors.
func (d *daemon) unattached(want ifaceSet) ([]string, error) {
	have := map[string]bool{}
	for _, a := range d.watch.attached() {
		have[a.Name] = true
	}
	var bad []string
	var first error
	d.watch.mu.Lock()
	defer d.watch.mu.Unlock()
	for _, n := range want.wanted() {
		if have[n] {
			continue
		}
		msg := n
		if e, ok := d.watch.failed[n]; ok {
			msg += ": " + e.Error()
			if first == nil {
				first = e
			}
		}
		bad = append(bad, msg)
	}
	return bad, first
}

// bindHint names CAP_NET_BIND_SERVICE and the drop-in that grants it when
// a bind was refused for lack of it.
func bindHint(err error) string {
	if errors.Is(err, unix.EACCES) {
		return " (binding UDP ports below 1024 needs CAP_NET_BIND_SERVICE: the shipped unit grants it through the drop-in " + proxyDropIn + ")"
	}
	return ""
}

// capHint names the capabilities when the kernel refused for lack of one.
func capHint(err error) string {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return " (ikefragd needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
	}
	return ""
}

func (d *daemon) shutdown() {
	d.notify(sd.SdNotifyStopping)
	if d.ctl != nil {
		d.ctl.Close()
	}
	d.mu.Lock()
	ms := d.msrv
	d.msrv = nil
	d.mu.Unlock()
	ms.close()
	if d.proxy != nil {
		if err := d.proxy.Close(); err != nil {
			d.log.Warn("stopping the proxy", "err", err)
		}
	}
	if d.obs != nil {
		// Detaches every interface and closes the record stream, which
		// ends the pipeline.
		d.obs.Close()
	}
}

func (d *daemon) config() config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (d *daemon) metricsAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.msrv == nil {
		return ""
	}
	return d.msrv.addr
}

// reload reads the file again. Nothing changes unless the whole new
// configuration is valid; then interfaces, log and metrics.listen take
// effect, and keys that need a restart are reported as pending.
func (d *daemon) reload() {
	d.notify(sd.SdNotifyReloading, fmt.Sprintf("MONOTONIC_USEC=%d", monotonicUsec()))
	defer d.notify(sd.SdNotifyReady, "STATUS="+d.statusLine())
	nc, want, err := loadAndCheck(d.file)
	old := d.config()
	var newMetrics *metricsServer
	if err == nil && nc.Metrics.Listen != old.Metrics.Listen && nc.Metrics.Listen != "" {
		// Bind the new listener before anything changes, so a busy
		// address refuses the whole reload.
		newMetrics, err = startMetrics(nc.Metrics.Listen, d.m, d.problems, d.degraded, d.log.With("component", "metrics"))
		if err != nil {
			err = config.Problems{{Key: "metrics.listen", Msg: err.Error()}}
		}
	}
	if err != nil {
		d.mu.Lock()
		d.reloadFailures++
		d.lastErr = err.Error()
		d.mu.Unlock()
		d.m.reloadFailures.Inc()
		d.m.reloadOK.Set(0)
		var ps config.Problems
		if !errors.As(err, &ps) {
			ps = config.Problems{{Msg: err.Error()}}
		}
		for _, p := range ps {
			d.log.Error("configuration reload refused; the running configuration stays", "file", displayFile(d.file), "problem", p.String())
		}
		d.events.publish(control.Event{Kind: control.EventConfig, Message: "reload refused; the running configuration stays", Error: err.Error()})
		return
	}
	changed, restart := config.Changed(old, nc)
	running := old
	running.Interfaces, running.Log, running.Metrics = nc.Interfaces, nc.Log, nc.Metrics
	d.mu.Lock()
	oldMetrics := d.msrv
	if running.Metrics.Listen != old.Metrics.Listen {
		d.msrv = newMetrics
	} else {
		oldMetrics = nil
	}
	d.cfg, d.loaded, d.pending, d.lastErr = running, time.Now(), restart, ""
	d.reloads++
	d.mu.Unlock()
	oldMetrics.close()
	d.logSw.apply(running.Log, d.stderr)
	d.watch.setWant(want)
	d.m.reloads.Inc()
	d.m.reloadOK.Set(1)
	d.log.Info("configuration reloaded", "file", displayFile(d.file), "changed", changed, "interfaces", want.String())
	if len(restart) > 0 {
		d.log.Warn("some changed keys take effect only after a restart; their running values stay", "keys", restart)
	}
	d.events.publish(control.Event{Kind: control.EventConfig, Message: "reloaded"})
}

// problems lists what is wrong with the running daemon, for /healthz,
// status and the watchdog.
func (d *daemon) problems() []string {
	var p []string
	if !d.pipe.healthy() {
		p = append(p, "the diagnosis engine stopped ticking")
	}
	if len(d.watch.attached()) == 0 {
		p = append(p, "no interface is attached")
	}
	return p
}

// degraded says what works with reduced fidelity: the daemon is healthy,
// but the diagnosis is forgetting state to stay within its memory budget.
func (d *daemon) degraded() []string {
	var out []string
	if m := d.pipe.snapshot().Memory; m.Degraded {
		out = append(out, m.Why)
	}
	return out
}

func (d *daemon) statusLine() string {
	s := d.pipe.snapshot()
	errs := 0
	for code, n := range s.Verdicts {
		if code != diag.OK && code != diag.IKEv1 {
			errs += n
		}
	}
	return fmt.Sprintf("observing %d interface(s); %d session(s), %d peer(s), %d problem verdict(s)",
		len(d.watch.attached()), s.Sessions, s.Peers, errs)
}

// notify queues sd_notify states and returns at once (see notifier);
// without NOTIFY_SOCKET it does nothing.
func (d *daemon) notify(states ...string) { d.sdn.state(states...) }

// notifyLoop pets the watchdog while the daemon is healthy (a stalled
// engine stops the petting and systemd restarts the service) and refreshes
// the status line.
func (d *daemon) notifyLoop(ctx context.Context) {
	wd, _ := sd.SdWatchdogEnabled(false)
	iv := 10 * time.Second
	if wd > 0 && wd/2 < iv {
		iv = wd / 2
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	lastStatus := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		states := []string{}
		if wd > 0 {
			// Only a stalled engine stops the petting: with no interface
			// present (patterns waiting for links) the daemon still works.
			if d.pipe.healthy() {
				states = append(states, sd.SdNotifyWatchdog)
			} else {
				d.log.Error("the diagnosis engine stopped ticking; not petting the watchdog")
			}
		}
		if time.Since(lastStatus) >= 10*time.Second {
			states = append(states, "STATUS="+d.statusLine())
			lastStatus = time.Now()
		}
		d.sdn.periodicState(states...)
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants
// with RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}

func displayFile(f string) string {
	if f == "" {
		return "(built-in defaults)"
	}
	return f
}

func joinAnd(s []string) string {
	sort.Strings(s)
	out := ""
	for i, x := range s {
		switch {
		case i == 0:
		case i == len(s)-1:
			out += " and "
		default:
			out += ", "
		}
		out += x
	}
	return out
}
