package main

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/ebpf"
)

// watcher keeps the observer attached to the interfaces the configuration
// asks for: links that appear are attached, links that go are released.
// Netlink link updates trigger a reconciliation against the full link
// list, and a periodic one repairs anything a lost update missed.
type watcher struct {
	obs    *ebpf.Observer
	log    *slog.Logger
	events *eventHub
	m      *metrics

	mu     sync.Mutex
	want   ifaceSet
	links  map[int]attachedIface // attached, by ifindex
	failed map[string]error      // name → last attach error
}

type attachedIface struct {
	name string
	mode ebpf.AttachMode
}

// resyncInterval is how often the link list is compared with what is
// attached even without netlink updates.
const resyncInterval = 30 * time.Second

func newWatcher(o *ebpf.Observer, want ifaceSet, log *slog.Logger, events *eventHub, m *metrics) *watcher {
	return &watcher{obs: o, log: log, events: events, m: m, want: want,
		links: map[int]attachedIface{}, failed: map[string]error{}}
}

// setWant replaces the set of interfaces (a reload) and reconciles.
func (w *watcher) setWant(want ifaceSet) {
	w.mu.Lock()
	w.want = want
	w.mu.Unlock()
	w.reconcile()
}

// run follows link and route updates until ctx is done.
func (w *watcher) run(ctx context.Context) {
	t := time.NewTicker(resyncInterval)
	defer t.Stop()
	for {
		updates := make(chan netlink.LinkUpdate, 64)
		routes := make(chan netlink.RouteUpdate, 64)
		done := make(chan struct{})
		subErr := make(chan error, 1)
		onErr := func(err error) {
			select {
			case subErr <- err:
			default:
			}
		}
		err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr})
		if err != nil {
			// Without updates, the periodic resync still finds new links.
			w.log.Warn("cannot follow link updates; checking links every 30 s instead", "err", err)
			updates = nil
		}
		// Route updates move "interfaces: default" with the default route.
		err = netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr})
		if err != nil {
			w.log.Warn("cannot follow route updates; checking the default route every 30 s instead", "err", err)
			routes = nil
		}
		broke := w.follow(ctx, t, updates, routes, subErr)
		close(done)
		if !broke {
			return
		}
		// The subscription failed (the socket overran, say): updates may
		// have been missed, so resubscribe and look at every link.
		w.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// follow reconciles on every burst of updates and on the timer.
// It returns false when ctx is done, true when the subscription broke.
func (w *watcher) follow(ctx context.Context, t *time.Ticker, updates chan netlink.LinkUpdate, routes chan netlink.RouteUpdate, subErr chan error) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case err := <-subErr:
			w.log.Warn("link updates interrupted; resubscribing", "err", err)
			return true
		case _, ok := <-updates:
			if !ok {
				return true
			}
			// Take the whole burst (a new veth pair is several messages)
			// before looking at the links once.
			for drained := false; !drained; {
				select {
				case _, ok := <-updates:
					if !ok {
						return true
					}
				default:
					drained = true
				}
			}
			w.reconcile()
		case u, ok := <-routes:
			if !ok {
				return true
			}
			moved := isDefaultRoute(u.Route)
			for drained := false; !drained; {
				select {
				case u, ok := <-routes:
					if !ok {
						return true
					}
					moved = moved || isDefaultRoute(u.Route)
				default:
					drained = true
				}
			}
			if moved && w.refreshDefault() {
				w.reconcile()
			}
		case <-t.C:
			w.refreshDefault()
			w.reconcile()
		}
	}
}

// isDefaultRoute: a route to 0.0.0.0/0 or ::/0 (netlink leaves Dst nil
// for those).
func isDefaultRoute(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// refreshDefault looks up the default route's link again when the
// configuration follows it, and says whether it changed. With no default
// route the last link stays: a route that is replaced (DHCP renewal, a
// routing daemon) goes away for a moment.
func (w *watcher) refreshDefault() bool {
	w.mu.Lock()
	follow, old := w.want.followDefault, w.want.defaultLink
	w.mu.Unlock()
	if !follow {
		return false
	}
	name, err := defaultRouteInterface()
	if err != nil || name == old {
		return false
	}
	w.mu.Lock()
	w.want.defaultLink = name
	w.mu.Unlock()
	w.log.Info("the default route moved; following it", "from", old, "to", name)
	w.events.publish(control.Event{Kind: control.EventInterface, Interface: name, Message: "default route now via " + name + " (was " + old + ")"})
	return true
}

// reconcile attaches every wanted link that is not attached and releases
// attached ones that are gone, renamed or no longer wanted.
func (w *watcher) reconcile() {
	links, err := netlink.LinkList()
	if err != nil {
		w.log.Warn("listing links failed", "err", err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	present := map[int]string{}
	for _, l := range links {
		present[l.Attrs().Index] = l.Attrs().Name
	}
	for idx, a := range w.links {
		name, ok := present[idx]
		if ok && name == a.name && w.want.match(name) {
			continue
		}
		if err := w.obs.Detach(idx); err != nil && ok {
			w.log.Warn("releasing interface failed", "interface", a.name, "ifindex", idx, "err", err)
		}
		delete(w.links, idx)
		why := "gone"
		if ok {
			why = "no longer configured"
			if name != a.name {
				why = "renamed to " + name
			}
		}
		w.log.Info("interface released", "interface", a.name, "ifindex", idx, "reason", why)
		w.m.ifaceEvents.WithLabelValues("released").Inc()
		w.events.publish(control.Event{Kind: control.EventInterface, Interface: a.name, Ifindex: idx, Message: "released: " + why})
	}
	for _, l := range links {
		name, idx := l.Attrs().Name, l.Attrs().Index
		if _, ok := w.links[idx]; ok || !w.want.match(name) {
			continue
		}
		if err := w.obs.AttachIndex(idx); err != nil {
			w.m.ifaceEvents.WithLabelValues("attach_failed").Inc()
			// Log a failure when it is new or changes, not every resync.
			if prev := w.failed[name]; prev == nil || prev.Error() != err.Error() {
				w.failed[name] = err
				w.log.Error("attaching interface failed", "interface", name, "ifindex", idx, "err", err)
				w.events.publish(control.Event{Kind: control.EventInterface, Interface: name, Ifindex: idx, Message: "attach failed", Error: err.Error()})
			}
			continue
		}
		delete(w.failed, name)
		mode := w.obs.AttachedMode(idx)
		w.links[idx] = attachedIface{name: name, mode: mode}
		w.log.Info("interface attached", "interface", name, "ifindex", idx, "mode", string(mode))
		w.m.ifaceEvents.WithLabelValues("attached").Inc()
		w.events.publish(control.Event{Kind: control.EventInterface, Interface: name, Ifindex: idx, Message: "attached (" + string(mode) + ")"})
	}
	for name := range w.failed {
		if !w.want.match(name) {
			delete(w.failed, name)
		}
	}
}

// attached lists the attached interfaces, by name.
func (w *watcher) attached() []control.Interface {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]control.Interface, 0, len(w.links))
	for idx, a := range w.links {
		out = append(out, control.Interface{Name: a.name, Ifindex: idx, State: "attached", Mode: string(a.mode)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// status lists the attached interfaces and the configured names that are
// absent or failed.
func (w *watcher) status() []control.Interface {
	out := w.attached()
	have := map[string]bool{}
	for i := range out {
		have[out[i].Name] = true
		if l, err := netlink.LinkByIndex(out[i].Ifindex); err == nil {
			out[i].MTU = l.Attrs().MTU
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.want.wanted() {
		if have[n] {
			continue
		}
		ifc := control.Interface{Name: n, State: "absent"}
		if e, ok := w.failed[n]; ok {
			ifc.State, ifc.Error = "error", e.Error()
		}
		out = append(out, ifc)
	}
	for n, e := range w.failed {
		if !have[n] && !slices.Contains(w.want.wanted(), n) {
			out = append(out, control.Interface{Name: n, State: "error", Error: e.Error()})
		}
	}
	for _, p := range w.want.patterns {
		out = append(out, control.Interface{Name: p, State: "pattern"})
	}
	if w.want.followDefault {
		out = append(out, control.Interface{Name: defaultKeyword, State: "default", Follows: w.want.defaultLink})
	}
	return out
}
