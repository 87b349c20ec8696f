package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ikefrag/ikefrag/ebpf/fastpath"
)

// Fast path states of a flow (Flow.fpState, written under Flow.fpMu).
const (
	fpNone    uint32 = iota // not offered: IKE port, no reply yet, or no fast path
	fpMapped                // in the kernel's map
	fpFull                  // refused for lack of room; offered again when there is
	fpRefused               // cannot be carried (route, interface, address)
	fpDone                  // unmapped when the flow closed
)

var fpStateNames = [...]string{"", "mapped", "full", "user_space", "closed"}

// fastPath is the proxy's side of the ESP fast path: the program, the
// interfaces it is attached to and the counters of what it did not take.
type fastPath struct {
	fp  *fastpath.FastPath
	max int

	mu     sync.Mutex
	ifaces map[int]*fpIface // by ifindex, attached or failed

	mapped         atomic.Int64  // flows in the map now
	unmapped       atomic.Uint64 // NAT-T flows offered and left in user space
	attachFailures atomic.Uint64
}

type fpIface struct {
	name string
	err  error
}

// startFastPath loads the fast path (proxy.fast_path auto) and attaches it
// to the interfaces of the routes toward the backends; client-facing
// interfaces are attached as the first flow through each is mapped. Every
// failure leaves the relay in user space with one log line: the program
// was not loaded, or no backend is reached through an interface that can
// carry it.
func (p *Proxy) startFastPath() {
	if p.s.FastPath == FastPathOff {
		p.fpReason = "off in the configuration"
		p.removePinned()
		return
	}
	opts := fastpath.Options{MaxFlows: p.s.FastPathMaxFlows, IKEPort: uint16(p.s.IKEPort), Logger: p.log,
		PinPath: p.s.FastPathPin}
	fp, err := fastpath.New(opts)
	if err != nil && opts.PinPath != "" {
		// A fast path that stops with the proxy beats none at all.
		p.log.Warn("proxy: cannot pin the ESP fast path; it runs unpinned and stops with the proxy", "pin_path", opts.PinPath, "err", err)
		opts.PinPath = ""
		fp, err = fastpath.New(opts)
	}
	if err != nil {
		p.fpReason = "not loaded: " + err.Error()
		p.log.Warn("proxy: ESP fast path unavailable; ESP is relayed in user space", "err", err)
		return
	}
	x := &fastPath{fp: fp, max: p.s.FastPathMaxFlows, ifaces: map[int]*fpIface{}}
	var errs []string
	ok, later := 0, 0
	for _, b := range p.backends {
		if _, _, err := x.iface(b.cfg.NATT.Addr()); err != nil {
			errs = append(errs, fmt.Sprintf("backend %s: %v", b.cfg.Name, err))
			if errors.Is(err, fastpath.ErrNoRoute) {
				// the route may appear later; flows attach as they come
				later++
			}
			continue
		}
		ok++
	}
	if ok == 0 && later == 0 {
		_ = fp.Close()
		p.fpReason = "no backend route through an interface that can carry it: " + strings.Join(errs, "; ")
		p.fpAttachFailures = x.attachFailures.Load()
		p.log.Warn("proxy: ESP fast path not used; ESP is relayed in user space", "reason", p.fpReason)
		return
	}
	if len(errs) > 0 {
		p.log.Warn("proxy: ESP fast path not attached for some backends; their ESP is relayed in user space until a route through an interface it can use appears",
			"errors", strings.Join(errs, "; "))
	}
	p.fpx = x
	p.log.Info("proxy: ESP fast path on", "interfaces", x.names(), "max_flows", x.max)
}

// iface returns the interface the route toward a uses, attaching the
// program to it the first time; first reports that this call attached or
// failed, so that each interface's failure is logged once.
func (x *fastPath) iface(a netip.Addr) (idx int, first bool, err error) {
	idx, name, err := x.fp.RouteInterface(a)
	if err != nil {
		return 0, false, err
	}
	// Held across Attach: concurrent first flows through one interface
	// attach it once and see the same outcome.
	x.mu.Lock()
	defer x.mu.Unlock()
	if ifc := x.ifaces[idx]; ifc != nil && ifc.name == name {
		return idx, false, ifc.err
	}
	err = x.fp.Attach(name)
	if err != nil {
		x.attachFailures.Add(1)
	}
	x.ifaces[idx] = &fpIface{name: name, err: err}
	return idx, true, err
}

func (x *fastPath) names() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for _, ifc := range x.ifaces {
		if ifc.err == nil {
			out = append(out, ifc.name)
		}
	}
	sort.Strings(out)
	return out
}

func (x *fastPath) close() error { return x.fp.Close() }

// removePinned stops a fast path an earlier run left pinned at
// proxy.fast_path_pin, when this run does not use it: its mappings
// rewrite to upstream ports this run does not hold.
func (p *Proxy) removePinned() {
	if p.s.FastPathPin == "" {
		return
	}
	if err := fastpath.RemovePinned(p.s.FastPathPin); err != nil {
		p.log.Warn("proxy: cannot remove the pinned ESP fast path", "pin_path", p.s.FastPathPin, "err", err)
	}
}

// releaseInherited unmaps, after the state file's flows were re-adopted,
// what an earlier run left in the pinned maps and no adopted flow took
// over.
func (p *Proxy) releaseInherited() {
	if p.fpx == nil || p.s.FastPathPin == "" {
		return
	}
	kept := p.fpx.mapped.Load()
	n, err := p.fpx.fp.ReleaseInherited()
	if err != nil {
		p.log.Warn("proxy: ESP fast path: releasing an earlier run's mappings", "err", err)
	}
	if kept > 0 || n > 0 {
		p.log.Info("proxy: ESP fast path taken over from the earlier run", "flows_kept", kept, "entries_released", n)
	}
}

// fpMap offers a NAT-T flow to the fast path. It runs once the backend
// has answered on the flow, and again for a flow refused for lack of room
// when room appears.
func (p *Proxy) fpMap(f *Flow) {
	x := p.fpx
	f.fpMu.Lock()
	defer f.fpMu.Unlock()
	st := f.fpState.Load()
	if x == nil || f.closed.Load() || !f.natt || (st != fpNone && st != fpFull) {
		return
	}
	refuse := func(why string, err error, logIt bool) {
		if st == fpNone {
			x.unmapped.Add(1)
		}
		f.fpState.Store(fpRefused)
		if logIt {
			p.log.Warn("proxy: ESP fast path cannot use an interface; ESP through it is relayed in user space", "why", why, "err", err)
		} else {
			p.log.Debug("proxy: flow stays in user space", "client", f.key.client, "why", why, "err", err)
		}
	}
	ci, first, err := x.iface(f.key.client.Addr())
	if err != nil {
		refuse("route toward the client", err, first)
		return
	}
	bi, first, err := x.iface(f.backendAddr().Addr())
	if err != nil {
		refuse("route toward the backend", err, first)
		return
	}
	fl := fastpath.Flow{Client: f.key.client, Local: f.key.local, Upstream: f.up.addr, Backend: f.backendAddr(),
		ClientIfindex: ci, BackendIfindex: bi, ClientMTU: f.cl.mtu()}
	err = x.fp.Put(fl)
	switch {
	case err == nil:
	case errors.Is(err, fastpath.ErrMapFull):
		// the package logs the first time and counts every refusal
		if st == fpNone {
			x.unmapped.Add(1)
		}
		f.fpState.Store(fpFull)
		return
	default:
		refuse("put", err, false)
		return
	}
	// Counting starts from the mapping's own zero, not from a read
	// that may already include datagrams.
	c, _ := x.fp.Counters(fl.Key())
	f.fpSeen = fastpath.FlowCounters{Key: fl.Key(), Mapped: c.Mapped}
	f.fpFlow = fl
	f.fpMTU.Store(int32(fl.ClientMTU))
	f.fpState.Store(fpMapped)
	x.mapped.Add(1)
	// A route MTU set while the Put ran is caught here; later ones by
	// fpClientMTU.
	if m := f.cl.mtu(); m != fl.ClientMTU {
		p.fpRemapLocked(f, m)
	}
}

// fpRemapLocked puts a mapped flow again with another client MTU; the
// mapping is updated in place and keeps its counters. f.fpMu is held.
func (p *Proxy) fpRemapLocked(f *Flow, mtu int) {
	fl := f.fpFlow
	fl.ClientMTU = mtu
	if err := p.fpx.fp.Put(fl); err != nil {
		// The mapping may be gone; unmap it entirely and leave the flow to
		// user space rather than relay at a stale size.
		p.fpUnmapLocked(f)
		f.fpState.Store(fpRefused)
		p.fpx.unmapped.Add(1)
		p.log.Debug("proxy: fast path MTU update failed; flow stays in user space", "client", f.key.client, "err", err)
		return
	}
	f.fpFlow = fl
	f.fpMTU.Store(int32(mtu))
}

// fpClientMTU follows a change of a client's route MTU (route_mtu): the
// fast path does not see policy routes, so its mappings carry the MTU.
func (p *Proxy) fpClientMTU(c *client) {
	if p.fpx == nil || c.flows.Load() == 0 {
		return
	}
	mtu := c.mtu()
	for _, f := range p.flows.all() {
		// state first: a mapped flow's client was set before its reader
		// started, a flow being created may not have one yet
		if f.fpState.Load() != fpMapped || f.cl != c {
			continue
		}
		f.fpMu.Lock()
		if f.fpState.Load() == fpMapped && f.fpFlow.ClientMTU != mtu {
			p.fpRemapLocked(f, mtu)
		}
		f.fpMu.Unlock()
	}
}

// fpUnmap removes a closing flow's mapping and adds its final counters.
// It runs before the upstream socket closes: a mapping must never outlive
// the port it rewrites to.
func (p *Proxy) fpUnmap(f *Flow) {
	if p.fpx == nil {
		return
	}
	f.fpMu.Lock()
	p.fpUnmapLocked(f)
	f.fpState.Store(fpDone)
	f.fpMu.Unlock()
}

func (p *Proxy) fpUnmapLocked(f *Flow) {
	if f.fpState.Load() != fpMapped {
		return
	}
	f.fpMTU.Store(0)
	c, err := p.fpx.fp.Delete(f.fpFlow.Key())
	if err == nil {
		p.fpAbsorbLocked(f, c)
	}
	p.fpx.mapped.Add(-1)
}

// fpSync reads every mapping's counters once, adds what each flow's ESP
// did since the last read to the proxy's counters and returns the time
// of each mapped flow's last ESP datagram (or of its Put).
func (p *Proxy) fpSync() map[flowKey]time.Time {
	if p.fpx == nil {
		return nil
	}
	all, err := p.fpx.fp.All()
	if err != nil {
		return nil
	}
	out := make(map[flowKey]time.Time, len(all))
	for _, c := range all {
		k := flowKey{client: c.Key.Client, local: c.Key.Local}
		f := p.flows.get(k)
		if f == nil {
			continue
		}
		f.fpMu.Lock()
		// A snapshot of an earlier flow with the same key (closed and
		// unmapped since) has another Put time and is not this flow's.
		if f.fpState.Load() == fpMapped && c.Mapped.Equal(f.fpSeen.Mapped) {
			p.fpAbsorbLocked(f, c)
			out[k] = c.LastSeen()
		}
		f.fpMu.Unlock()
	}
	return out
}

// fpAbsorbLocked adds the part of c not yet counted to the flow's,
// backend's, client's and total counters. Counters only grow, so a stale
// snapshot adds nothing. f.fpMu is held.
func (p *Proxy) fpAbsorbLocked(f *Flow, c fastpath.FlowCounters) {
	s := &f.fpSeen
	d := func(now, seen *uint64) uint64 {
		if *now <= *seen {
			return 0
		}
		v := *now - *seen
		*seen = *now
		return v
	}
	in, inB := d(&c.Up.Packets, &s.Up.Packets), d(&c.Up.Bytes, &s.Up.Bytes)
	out, outB := d(&c.Down.Packets, &s.Down.Packets), d(&c.Down.Bytes, &s.Down.Bytes)
	if in|inB|out|outB == 0 {
		return
	}
	f.pktsIn.Add(in)
	f.pktsOut.Add(out)
	f.fpIn.Add(in)
	f.fpOut.Add(out)
	p.count(f, func(k *counters) {
		k.pktsIn.Add(in)
		k.bytesIn.Add(inB)
		k.fpIn.Add(in)
		k.fpBytesIn.Add(inB)
		k.pktsOut.Add(out)
		k.bytesOut.Add(outB)
		k.fpOut.Add(out)
		k.fpBytesOut.Add(outB)
	})
}

// fpSweep runs once per janitor sweep: flows refused for lack of room
// are offered again when there is room.
func (p *Proxy) fpSweep(flows []*Flow) {
	x := p.fpx
	if x == nil {
		return
	}
	for _, f := range flows {
		if x.mapped.Load() >= int64(x.max) {
			return
		}
		if f.fpState.Load() == fpFull && !f.closed.Load() {
			p.fpMap(f)
		}
	}
}

// fastPathStats is Stats.FastPath.
func (p *Proxy) fastPathStats() FastPathStats {
	s := FastPathStats{Mode: p.s.FastPath, Reason: p.fpReason, AttachFailures: p.fpAttachFailures}
	x := p.fpx
	if x == nil {
		// a nil fast path still reports the process's load failures
		fs, _ := (*fastpath.FastPath)(nil).Stats()
		s.LoadFailures = fs.LoadFailures
		return s
	}
	s.Active = true
	s.MaxFlows = x.max
	s.Unmapped = x.unmapped.Load()
	s.AttachFailures += x.attachFailures.Load()
	x.mu.Lock()
	for _, ifc := range x.ifaces {
		if ifc.err == nil {
			if s.Interfaces == nil {
				s.Interfaces = map[string]string{}
			}
			s.Interfaces[ifc.name] = string(x.fp.AttachedMode(ifc.name))
		}
	}
	x.mu.Unlock()
	fs, err := x.fp.Stats()
	if err != nil {
		s.Reason = err.Error()
	}
	s.Flows, s.Redirected, s.Dropped = fs.Flows, fs.Redirected, fs.Dropped
	s.MapFull, s.PutErrors, s.LoadFailures = fs.MapFull, fs.PutErrors, fs.LoadFailures
	for r, n := range fs.Passed {
		if n == 0 {
			continue
		}
		if s.Passed == nil {
			s.Passed = map[string]uint64{}
		}
		s.Passed[r.String()] = n
	}
	return s
}
