package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/netcfg"
)

// loadFailures counts failed New calls process-wide: when New fails there
// is no FastPath to keep the count in.
var loadFailures atomic.Uint64

// FastPath owns the program, its maps and its attachments.
type FastPath struct {
	opts Options

	objs  fastpathObjects
	ns    netns.NsHandle  // the namespace New ran in: attachments and routes
	nl    *netlink.Handle // netlink in ns, for route lookups
	nlMu  sync.Mutex
	clock func() uint64 // CLOCK_MONOTONIC_COARSE ns, what the program writes
	base  time.Time     // wall time of clock() == 0

	mu      sync.Mutex
	closed  bool
	flows   map[FlowKey]*entry
	owner   map[fastpathFpKey]FlowKey
	free    []uint32 // counter slots, reused oldest-freed first
	ifaces  map[string]*iface
	warned  bool // the map-full line was logged
	tcxNote bool // the tcx fallback line was logged

	mapFull, putErrors, expired, attachFailures atomic.Uint64

	mem *ebpf.Memory // the counters map, mapped; nil: read by lookups

	// inherited holds the entries a previous run left in the pinned flows
	// map (Options.PinPath) that this run has not put again; their
	// counter slots are not in free.
	inherited map[fastpathFpKey]fastpathFpFlow
	// linkPins are the names of the tcx link pins this run made.
	linkPins map[string]bool
}

// entry is one mapped flow.
type entry struct {
	flow     Flow // with resolved interface indexes
	up, down fastpathFpKey
	slots    [2]uint32 // counters of up, down
	mapped   uint64    // clock() at Put
}

type iface struct {
	name    string
	ifindex int
	mode    netcfg.TCMode
	tc      *netcfg.TCAttachment
}

// New loads the program and creates its maps; nothing is attached yet.
// Interfaces are added with Attach, in the calling thread's network
// namespace, which is also where Put looks up routes. When New fails the
// caller logs the error once and keeps relaying in user space.
func New(opts Options) (*FastPath, error) {
	fp, err := newFastPath(opts)
	if err != nil {
		loadFailures.Add(1)
		return nil, err
	}
	return fp, nil
}

func newFastPath(opts Options) (*FastPath, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	// The program checks each datagram against the egress route's MTU
	// with bpf_check_mtu; without it the relay stays in user space.
	if err := kfeat.CheckMTU(); err != nil {
		return nil, fmt.Errorf("fastpath: %w", err)
	}
	// Fails only where setrlimit is refused; the maps may fit anyway.
	memErr := kfeat.Memlock()
	spec, err := loadFastpath()
	if err != nil {
		return nil, fmt.Errorf("fastpath: %w", err)
	}
	if got := spec.Maps[fastpathMapStats].MaxEntries; got != uint32(numStats) {
		return nil, fmt.Errorf("fastpath: program has %d counters, loader knows %d", got, numStats)
	}
	spec.Maps[fastpathMapFlows].MaxEntries = uint32(2 * opts.MaxFlows)
	spec.Maps[fastpathMapCounters].MaxEntries = uint32(2 * opts.MaxFlows)
	// Memory-mapped, the counters of every flow are read without a
	// syscall: the proxy reads all of them once a second.
	spec.Maps[fastpathMapCounters].Flags |= unix.BPF_F_MMAPABLE
	fp := &FastPath{
		opts:   opts,
		clock:  coarseNow,
		flows:  map[FlowKey]*entry{},
		owner:  map[fastpathFpKey]FlowKey{},
		ifaces: map[string]*iface{},
		free:   make([]uint32, 2*opts.MaxFlows),
	}
	for i := range fp.free {
		fp.free[i] = uint32(i)
	}
	var copts *ebpf.CollectionOptions
	if opts.PinPath != "" {
		if err := os.MkdirAll(opts.PinPath, 0o700); err != nil {
			return nil, fmt.Errorf("fastpath: pin path: %w", err)
		}
		for _, name := range []string{fastpathMapFlows, fastpathMapCounters} {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
		copts = &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinPath}}
		fp.linkPins = map[string]bool{}
	}
	err = spec.LoadAndAssign(&fp.objs, copts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Pinned by a run with another max_flows or program version:
		// its flows cannot be carried over.
		opts.Logger.Warn("fastpath: pinned maps of an earlier run do not fit this configuration; its mapped flows are dropped", "pin_path", opts.PinPath, "err", err)
		if rerr := RemovePinned(opts.PinPath); rerr != nil {
			return nil, fmt.Errorf("fastpath: %w", rerr)
		}
		if err = os.MkdirAll(opts.PinPath, 0o700); err == nil {
			err = spec.LoadAndAssign(&fp.objs, copts)
		}
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("fastpath: load program: %w (verifier: %+v)", err, ve)
		}
		return nil, fmt.Errorf("fastpath: load program: %w%s", err, kfeat.MemlockHint(memErr))
	}
	// The namespace handle and the netlink sockets come from one thread,
	// so both are the namespace New runs in. netlink.NewHandleAt would
	// enter that namespace (setns), which needs CAP_SYS_ADMIN even for the
	// thread's own namespace; the daemon's unit does not grant it.
	runtime.LockOSThread()
	fp.ns, err = netcfg.CurrentNS()
	if err == nil {
		fp.nl, err = netlink.NewHandle()
		if err != nil {
			fp.ns.Close()
			err = fmt.Errorf("netlink: %w", err)
		}
	}
	runtime.UnlockOSThread()
	if err != nil {
		fp.objs.Close()
		return nil, fmt.Errorf("fastpath: %w", err)
	}
	// The base comes from the fine clock: the coarse one is only updated
	// at the kernel's tick and lags it by up to a tick, more when ticks
	// come late (a loaded or emulated machine). Coarse stamps then map to
	// at most their true time, never into the future.
	fp.base = time.Now().Add(-time.Duration(fineNow()))
	if mem, err := fp.objs.Counters.Memory(); err == nil {
		fp.mem = mem
	} else {
		opts.Logger.Debug("fastpath: counters read by syscall", "err", err)
	}
	if opts.PinPath != "" {
		if err := fp.inherit(); err != nil {
			fp.nl.Close()
			fp.ns.Close()
			fp.objs.Close()
			return nil, err
		}
	}
	return fp, nil
}

func fineNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

func coarseNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts)
	return uint64(ts.Nano())
}

func (fp *FastPath) wall(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return fp.base.Add(time.Duration(ns))
}

// Put maps f: from now on its ESP datagrams in both directions are relayed
// by the kernel. Putting a flow that is mapped the same way again does
// nothing; putting it with other interfaces or MTUs updates the mapping in
// place and keeps its counters; putting a key mapped to other addresses or
// ports replaces the mapping and restarts its counters. Interface indexes
// left zero are taken from the routing table. On error the flow is not
// mapped (no half of it is) and stays with the user-space relay;
// ErrMapFull is logged the first time only, every error is counted in
// Stats.
func (fp *FastPath) Put(f Flow) error {
	if fp == nil {
		return ErrDisabled
	}
	f = f.normalize()
	if err := f.check(fp.opts.IKEPort); err != nil {
		fp.putErrors.Add(1)
		return err
	}
	if err := fp.resolve(&f); err != nil {
		fp.putErrors.Add(1)
		return err
	}
	key := f.Key()
	up, down := mapKey(f.Client, f.Local), mapKey(f.Backend, f.Upstream)
	values := func(slots [2]uint32) (fastpathFpFlow, fastpathFpFlow) {
		return mapValue(f.Client, f.Local, f.Upstream, f.Backend, f.BackendIfindex, f.ClientIfindex, f.BackendMTU, slots[0]),
			mapValue(f.Backend, f.Upstream, f.Local, f.Client, f.ClientIfindex, f.BackendIfindex, f.ClientMTU, slots[1])
	}

	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return ErrClosed
	}
	if old := fp.flows[key]; old != nil {
		if old.flow == f {
			return nil
		}
		if old.flow.sameTuples(f) {
			upV, downV := values(old.slots)
			for _, kv := range []struct {
				k *fastpathFpKey
				v *fastpathFpFlow
			}{{&up, &upV}, {&down, &downV}} {
				if err := fp.objs.Flows.Update(kv.k, kv.v, ebpf.UpdateExist); err != nil {
					fp.putErrors.Add(1)
					fp.removeLocked(old)
					return fmt.Errorf("fastpath: update %v: %w", key, err)
				}
			}
			old.flow = f
			return nil
		}
		fp.removeLocked(old)
	}
	for _, k := range []fastpathFpKey{up, down} {
		if other, ok := fp.owner[k]; ok {
			fp.putErrors.Add(1)
			return fmt.Errorf("%w: %v already maps one direction of %v", ErrConflict, other, key)
		}
	}
	if len(fp.inherited) > 0 {
		if done, err := fp.adoptLocked(f, up, down, values); done || err != nil {
			return err
		}
	}
	if len(fp.flows) >= fp.opts.MaxFlows || len(fp.free) < 2 {
		return fp.full(key, nil)
	}
	slots := [2]uint32{fp.free[0], fp.free[1]}
	var zero fastpathFpCounters
	for _, s := range slots {
		if err := fp.objs.Counters.Update(s, &zero, ebpf.UpdateAny); err != nil {
			fp.putErrors.Add(1)
			return fmt.Errorf("fastpath: reset counters: %w", err)
		}
	}
	upV, downV := values(slots)
	if err := fp.objs.Flows.Update(&up, &upV, ebpf.UpdateNoExist); err != nil {
		return fp.updateErr(key, err)
	}
	if err := fp.objs.Flows.Update(&down, &downV, ebpf.UpdateNoExist); err != nil {
		_ = fp.objs.Flows.Delete(&up)
		return fp.updateErr(key, err)
	}
	fp.free = fp.free[2:]
	fp.flows[key] = &entry{flow: f, up: up, down: down, slots: slots, mapped: fp.clock()}
	fp.owner[up], fp.owner[down] = key, key
	return nil
}

func (fp *FastPath) updateErr(key FlowKey, err error) error {
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) {
		return fp.full(key, err)
	}
	fp.putErrors.Add(1)
	if errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("%w: %v: an entry exists that this process did not write", ErrConflict, key)
	}
	return fmt.Errorf("fastpath: map %v: %w", key, err)
}

func (fp *FastPath) full(key FlowKey, cause error) error {
	fp.mapFull.Add(1)
	if !fp.warned {
		fp.warned = true
		fp.opts.Logger.Warn("ESP fast path is full; further flows are relayed in user space",
			"max_flows", fp.opts.MaxFlows, "flow", key.String())
	}
	if cause != nil {
		return fmt.Errorf("%w: %v", ErrMapFull, cause)
	}
	return ErrMapFull
}

// resolve fills in zero interface indexes from the routing table of the
// namespace New ran in, and refuses destinations that are local.
func (fp *FastPath) resolve(f *Flow) error {
	for _, r := range []struct {
		dst netip.Addr
		idx *int
	}{{f.Client.Addr(), &f.ClientIfindex}, {f.Backend.Addr(), &f.BackendIfindex}} {
		if *r.idx != 0 {
			continue
		}
		fp.nlMu.Lock()
		if fp.nl == nil {
			fp.nlMu.Unlock()
			return ErrClosed
		}
		routes, err := fp.nl.RouteGet(r.dst.AsSlice())
		fp.nlMu.Unlock()
		if err != nil {
			return fmt.Errorf("%w: no route to %v: %v", ErrUnsupported, r.dst, err)
		}
		if len(routes) == 0 || routes[0].LinkIndex <= 0 {
			return fmt.Errorf("%w: no route to %v", ErrUnsupported, r.dst)
		}
		if routes[0].Type == unix.RTN_LOCAL {
			return fmt.Errorf("%w: %v is an address of this host", ErrUnsupported, r.dst)
		}
		*r.idx = routes[0].LinkIndex
	}
	return nil
}

// Delete unmaps the flow and returns its final counters, to be added to
// the proxy's own. The proxy calls it before closing the flow's upstream
// socket.
func (fp *FastPath) Delete(key FlowKey) (FlowCounters, error) {
	if fp == nil {
		return FlowCounters{}, ErrDisabled
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	e, err := fp.entryLocked(key)
	if err != nil {
		return FlowCounters{}, err
	}
	c, _ := fp.readLocked(e)
	fp.removeLocked(e)
	return c, nil
}

// entryLocked finds a mapped flow; fp.mu must be held.
func (fp *FastPath) entryLocked(key FlowKey) (*entry, error) {
	if fp.closed {
		return nil, ErrClosed
	}
	e := fp.flows[key.normalize()]
	if e == nil {
		return nil, ErrNotFound
	}
	return e, nil
}

func (fp *FastPath) removeLocked(e *entry) {
	for _, k := range []fastpathFpKey{e.up, e.down} {
		_ = fp.objs.Flows.Delete(&k)
		delete(fp.owner, k)
	}
	delete(fp.flows, e.flow.Key())
	// Freed slots go to the back: a program run that found the entry
	// just before it was deleted may still count into them, and a slot
	// is reset when it is handed out again, as late as possible.
	fp.free = append(fp.free, e.slots[0], e.slots[1])
}

func (fp *FastPath) readLocked(e *entry) (FlowCounters, error) {
	c := FlowCounters{Key: e.flow.Key(), Mapped: fp.wall(e.mapped)}
	for i, dst := range []*DirCounters{&c.Up, &c.Down} {
		v, err := fp.slot(e.slots[i])
		if err != nil {
			return c, fmt.Errorf("fastpath: read %v: %w", c.Key, err)
		}
		*dst = DirCounters{Packets: v.Packets, Bytes: v.Bytes, LastSeen: fp.wall(v.LastNs)}
	}
	return c, nil
}

// counterSize is the size of one fp_counters element in the mapped array
// (value size rounded up to 8 bytes, which it already is).
const counterSize = int64(unsafe.Sizeof(fastpathFpCounters{}))

// slot reads one counters element: from the mapped array when there is
// one, else by a map lookup. Either way the program may be adding to it;
// the copy moves aligned words, so each field is one value it held.
func (fp *FastPath) slot(i uint32) (fastpathFpCounters, error) {
	var v fastpathFpCounters
	if fp.mem == nil {
		err := fp.objs.Counters.Lookup(i, &v)
		return v, err
	}
	var b [counterSize]byte
	if _, err := fp.mem.ReadAt(b[:], int64(i)*counterSize); err != nil {
		return v, err
	}
	v.Packets = binary.NativeEndian.Uint64(b[0:8])
	v.Bytes = binary.NativeEndian.Uint64(b[8:16])
	v.LastNs = binary.NativeEndian.Uint64(b[16:24])
	return v, nil
}

// Counters returns the counters of one mapped flow.
func (fp *FastPath) Counters(key FlowKey) (FlowCounters, error) {
	if fp == nil {
		return FlowCounters{}, ErrDisabled
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	e, err := fp.entryLocked(key)
	if err != nil {
		return FlowCounters{}, err
	}
	return fp.readLocked(e)
}

// All returns the counters of every mapped flow, read from the mapped
// counters array without a syscall (two map lookups per flow where the
// kernel cannot map it).
func (fp *FastPath) All() ([]FlowCounters, error) {
	if fp == nil {
		return nil, ErrDisabled
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return nil, ErrClosed
	}
	return fp.allLocked()
}

func (fp *FastPath) allLocked() ([]FlowCounters, error) {
	out := make([]FlowCounters, 0, len(fp.flows))
	for _, e := range fp.flows {
		c, err := fp.readLocked(e)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Expire unmaps every flow that carried no ESP either way for longer than
// idle (counting from its Put when it carried none) and returns their
// final counters. A proxy that merges LastSeen into its own flow state and
// calls Delete when it closes a flow needs it only as a safety net.
func (fp *FastPath) Expire(idle time.Duration) ([]FlowCounters, error) {
	if fp == nil {
		return nil, ErrDisabled
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return nil, ErrClosed
	}
	all, err := fp.allLocked()
	if err != nil {
		return nil, err
	}
	cut := fp.wall(fp.clock()).Add(-idle)
	var gone []FlowCounters
	for _, c := range all {
		if c.LastSeen().Before(cut) {
			fp.removeLocked(fp.flows[c.Key])
			gone = append(gone, c)
		}
	}
	fp.expired.Add(uint64(len(gone)))
	return gone, nil
}

// Stats returns the program's and the loader's counters. A nil FastPath
// reports only LoadFailures.
func (fp *FastPath) Stats() (Stats, error) {
	s := Stats{LoadFailures: loadFailures.Load(), Passed: map[PassReason]uint64{}}
	if fp == nil {
		return s, nil
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return s, ErrClosed
	}
	s.Flows, s.MaxFlows = len(fp.flows), fp.opts.MaxFlows
	s.MapFull, s.PutErrors, s.Expired = fp.mapFull.Load(), fp.putErrors.Load(), fp.expired.Load()
	s.AttachFailures = fp.attachFailures.Load()
	for i := uint32(0); i < uint32(numStats); i++ {
		var per []uint64
		if err := fp.objs.Stats.Lookup(i, &per); err != nil {
			return s, fmt.Errorf("fastpath: read stats: %w", err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		switch int(i) {
		case statRedirect:
			s.Redirected = n
		case statDropped:
			s.Dropped = n
		default:
			s.Passed[PassReason(i)] = n
		}
	}
	return s, nil
}

// Close detaches every interface and unloads the program. Mapped flows
// fall back to the proxy's sockets, which it must still hold.
func (fp *FastPath) Close() error {
	if fp == nil {
		return nil
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return nil
	}
	fp.closed = true
	var errs []error
	for _, ifc := range fp.ifaces {
		if fp.opts.PinPath != "" {
			// pinned links and legacy filters stay attached
			ifc.tc.Release()
			continue
		}
		if err := fp.detachLocked(ifc); err != nil {
			errs = append(errs, err)
		}
	}
	fp.objs.Close()
	fp.nlMu.Lock()
	fp.nl.Close()
	fp.nl = nil
	fp.nlMu.Unlock()
	fp.ns.Close()
	fp.flows, fp.owner, fp.free = nil, nil, nil
	return errors.Join(errs...)
}
