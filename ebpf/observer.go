package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/netcfg"
)

// Observer owns the BPF maps, the programs attached to each interface,
// the kfree_skb program, and the goroutines that turn ring-buffer records
// and train-map state into obs.Record values.
type Observer struct {
	opts Options

	tcSpec *ebpf.CollectionSpec
	build  Build                // which variant tcSpec is
	shared map[string]*ebpf.Map // maps every per-interface instance uses
	// counters, trains and events are entries of shared.
	counters, trains, events *ebpf.Map

	drop      *ebpf.Collection
	dropLink  link.Link
	dropStats *ebpf.Map
	reasons   map[uint32]string
	dropErr   error // why the drop reporter is off, when it is

	rd      *ringbuf.Reader
	clock   monoClock
	records chan obs.Record

	mu         sync.Mutex
	ifaces     map[int]*iface // by ifindex
	slots      []*iface
	pending    map[pendKey]*pendingFirst
	incomplete [][tcDirectionDIR_MAX]uint64 // per slot and direction
	swept      uint64                       // train entries the sweep removed
	live       uint64                       // train entries at the last sweep
	tcxWarned  bool

	recordsDropped atomic.Uint64
	// dropsOtherNetns counts drop records of namespaces with no observed
	// interface, left out unless Options.AllNamespaces.
	dropsOtherNetns atomic.Uint64
	pendingEvicted  atomic.Uint64
	decodeErrors    atomic.Uint64

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

type iface struct {
	ifindex int
	name    string
	netns   uint32 // inode of the interface's network namespace
	slot    int
	coll    *ebpf.Collection
	tc      *netcfg.TCAttachment
	mode    AttachMode
}

// pendKey identifies a fragment train across the first fragment's record
// and the train's later state.
type pendKey struct {
	src, dst [16]byte
	id       uint32
	family   uint8
	proto    uint8
	dir      uint8
	ifindex  uint32
}

type pendingFirst struct {
	d    *obs.Datagram
	seen uint64 // monotonic ns
}

// New loads the BPF objects and starts reading events. Interfaces are
// added with Attach. The kfree_skb program is optional: where it cannot be
// loaded, New logs why once and goes on without drop records.
func New(opts Options) (*Observer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	o := &Observer{
		opts:       opts,
		shared:     map[string]*ebpf.Map{},
		ifaces:     map[int]*iface{},
		slots:      make([]*iface, opts.MaxInterfaces),
		pending:    map[pendKey]*pendingFirst{},
		incomplete: make([][tcDirectionDIR_MAX]uint64, opts.MaxInterfaces),
		records:    make(chan obs.Record, opts.RecordQueue),
		done:       make(chan struct{}),
		clock:      newMonoClock(),
	}
	if err := o.loadShared(); err != nil {
		o.closeMaps()
		return nil, err
	}
	if !opts.NoDrops {
		if err := o.loadDrops(); err != nil {
			o.dropErr = err
			opts.Logger.Warn("kernel drop reasons are not reported: the kfree_skb tracepoint program cannot be used", "err", err)
		}
	}
	o.rd, err = ringbuf.NewReader(o.events)
	if err != nil {
		o.closeMaps()
		return nil, fmt.Errorf("ring buffer reader: %w", err)
	}
	o.wg.Add(2)
	go o.readLoop()
	go o.sweepLoop()
	return o, nil
}

func newMonoClock() monoClock {
	// The wall time first, the monotonic reading after it: the base then
	// errs early by the gap between the two calls, so a record is never
	// dated after the moment it is read (an emulated machine makes that
	// gap milliseconds).
	now := time.Now()
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoClock{base: now.Add(-time.Duration(ts.Nano()))}
}

func monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// be16 returns the value whose in-memory bytes are port in network order.
func be16(port uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], port)
	return binary.NativeEndian.Uint16(b[:])
}

func (o *Observer) loadShared() error {
	// Fails only where setrlimit is refused; the maps may fit anyway.
	memErr := kfeat.Memlock()
	load, build := loadTc, BuildDefault
	if err := kfeat.FetchAtomics(); err != nil {
		if !kfeat.IsMissing(err) {
			return err
		}
		load, build = loadTcCompat, BuildCompat
		o.opts.Logger.Info("observer: compat BPF build", "reason", err.Error())
	}
	if o.opts.build == BuildCompat {
		load, build = loadTcCompat, BuildCompat
	}
	spec, err := load()
	if err != nil {
		return err
	}
	o.build = build
	spec.Maps[tcMapCounters].MaxEntries = uint32(int(tcDirectionDIR_MAX) * o.opts.MaxInterfaces)
	spec.Maps[tcMapTrains].MaxEntries = uint32(o.opts.TrainMapSize)
	spec.Maps[tcMapEvents].MaxEntries = uint32(o.opts.RingBufferSize)
	o.tcSpec = spec
	for _, name := range []string{tcMapCounters, tcMapTrains, tcMapEvents, tcMapDgramScratch, tcMapTrainScratch} {
		m, err := ebpf.NewMap(spec.Maps[name])
		if err != nil {
			return fmt.Errorf("create map %s: %w%s", name, err, kfeat.MemlockHint(memErr))
		}
		o.shared[name] = m
	}
	o.counters = o.shared[tcMapCounters]
	o.trains = o.shared[tcMapTrains]
	o.events = o.shared[tcMapEvents]
	return nil
}

// loadInstance loads the tc programs for one interface: the same maps,
// with the interface's slot and link type compiled in as constants.
func (o *Observer) loadInstance(slot, ifindex int, noEth bool) (*ebpf.Collection, error) {
	spec := o.tcSpec.Copy()
	var ne uint8
	if noEth {
		ne = 1
	}
	for name, v := range map[string]any{
		tcVarCfgIkePortBe:  be16(o.opts.IKEPort),
		tcVarCfgNattPortBe: be16(o.opts.NATTPort),
		tcVarCfgCaptureLen: uint32(o.opts.CaptureBytes),
		tcVarCfgLargeIke:   uint32(o.opts.LargeIKE),
		tcVarCfgSlot:       uint32(slot),
		tcVarCfgIfindex:    uint32(ifindex),
		tcVarCfgNoEth:      ne,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: o.shared})
	if err != nil {
		return nil, fmt.Errorf("load tc programs: %w", err)
	}
	return coll, nil
}

func (o *Observer) loadDrops() error {
	if err := kfeat.DropReasons(); err != nil {
		return err
	}
	spec, err := loadDrop()
	if err != nil {
		return err
	}
	spec.Maps[dropMapEvents].MaxEntries = uint32(o.opts.RingBufferSize)
	if err := spec.Variables[dropVarCfgIkePortBe].Set(be16(o.opts.IKEPort)); err != nil {
		return err
	}
	if err := spec.Variables[dropVarCfgNattPortBe].Set(be16(o.opts.NATTPort)); err != nil {
		return err
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{dropMapEvents: o.events},
	})
	if err != nil {
		return err
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[dropProgIkefragKfreeSkb]})
	if err != nil {
		coll.Close()
		return err
	}
	o.drop, o.dropLink, o.dropStats = coll, l, coll.Maps[dropMapDropStats]
	o.reasons = dropReasonNames()
	return nil
}

// dropReasonNames reads enum skb_drop_reason from the kernel's BTF: its
// values change between kernel versions.
func dropReasonNames() map[uint32]string {
	names := map[uint32]string{}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return names
	}
	t, err := spec.AnyTypeByName("skb_drop_reason")
	if err != nil {
		return names
	}
	if e, ok := t.(*btf.Enum); ok {
		for _, v := range e.Values {
			names[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SKB_DROP_REASON_")
		}
	}
	return names
}

// observedNetns says whether an attached interface is in the network
// namespace with inode ns.
func (o *Observer) observedNetns(ns uint32) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ifc := range o.ifaces {
		if ifc.netns == ns {
			return true
		}
	}
	return false
}

// DropsEnabled reports whether kernel drop reasons are being reported.
func (o *Observer) DropsEnabled() bool { return o.dropLink != nil }

// Build names the variant of the tc programs in use.
type Build string

const (
	// BuildDefault uses the fetching atomics of kernel 5.12 and later.
	BuildDefault Build = "default"
	// BuildCompat is for older kernels: the same programs without them
	// (see ATOMIC_* in bpf/common.h for what that costs).
	BuildCompat Build = "compat"
)

// Features says what the observer runs with on this kernel: its program
// build, and why drop reasons are off when they are.
type Features struct {
	Build       Build  `json:"build"`
	DropReasons bool   `json:"drop_reasons"`
	DropsWhy    string `json:"drops_why,omitempty"`
}

// Features reports the observer's choices on this kernel.
func (o *Observer) Features() Features {
	f := Features{Build: o.build, DropReasons: o.dropLink != nil}
	if o.dropErr != nil {
		f.DropsWhy = o.dropErr.Error()
	} else if o.opts.NoDrops {
		f.DropsWhy = "disabled by configuration"
	}
	return f
}

// Records is the observation stream. It is closed by Close.
func (o *Observer) Records() <-chan obs.Record { return o.records }

func (o *Observer) emit(r obs.Record) {
	select {
	case o.records <- r:
	default:
		o.recordsDropped.Add(1)
	}
}

// Attach starts observing ingress and egress of the interface called name
// (in the calling thread's network namespace). Attaching an interface
// twice is a no-op.
func (o *Observer) Attach(name string) error {
	l, err := netcfg.LinkByName(name)
	if err != nil {
		return err
	}
	return o.attachLink(l)
}

// AttachIndex is Attach by interface index.
func (o *Observer) AttachIndex(ifindex int) error {
	l, err := netcfg.LinkByIndex(ifindex)
	if err != nil {
		return err
	}
	return o.attachLink(l)
}

func (o *Observer) attachLink(l netlink.Link) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	select {
	case <-o.done:
		return errors.New("observer is closed")
	default:
	}
	idx := l.Attrs().Index
	if _, ok := o.ifaces[idx]; ok {
		return nil
	}
	slot := -1
	for i, s := range o.slots {
		if s == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		return fmt.Errorf("attach %s: all %d interface slots in use", l.Attrs().Name, len(o.slots))
	}
	coll, err := o.loadInstance(slot, idx, !netcfg.HasEthernetHeader(l))
	if err != nil {
		return err
	}
	// attachLink runs in the interface's namespace (the caller's thread).
	ns, err := netcfg.CurrentNSInode()
	if err != nil {
		coll.Close()
		return err
	}
	ifc := &iface{ifindex: idx, name: l.Attrs().Name, netns: ns, slot: slot, coll: coll}
	if err := o.attachHooks(ifc, l); err != nil {
		coll.Close()
		return err
	}
	// A reused slot starts from zero.
	o.resetSlot(slot)
	o.ifaces[idx] = ifc
	o.slots[slot] = ifc
	return nil
}

func (o *Observer) attachHooks(ifc *iface, l netlink.Link) error {
	// At the head with tcx, and at priority 1 with tc: the observer only
	// watches, so it must see every packet before a program that
	// redirects it (the ESP fast path), whatever the order of attachment.
	at, err := netcfg.AttachTC(l, []netcfg.TCProgram{
		{Dir: netcfg.Ingress, Prog: ifc.coll.Programs[tcProgIkefragIngress], Name: FilterPrefix + "-ingress"},
		{Dir: netcfg.Egress, Prog: ifc.coll.Programs[tcProgIkefragEgress], Name: FilterPrefix + "-egress"},
	}, netcfg.TCOptions{Mode: o.opts.AttachMode, Head: true, Prefix: FilterPrefix})
	if err != nil {
		return err
	}
	if at.Fallback != nil && !o.tcxWarned {
		o.tcxWarned = true
		o.opts.Logger.Info("tcx links are not supported by this kernel; using clsact and cls_bpf filters", "err", at.Fallback)
	}
	if at.Stale > 0 {
		o.opts.Logger.Info("removed stale tc filters", "interface", ifc.name, "count", at.Stale)
	}
	ifc.tc, ifc.mode = at, at.Mode
	return nil
}

// AttachedMode reports how the interface with index ifindex is attached,
// or "" when it is not.
func (o *Observer) AttachedMode(ifindex int) AttachMode {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ifc, ok := o.ifaces[ifindex]; ok {
		return ifc.mode
	}
	return ""
}

// Detach stops observing the interface with index ifindex.
func (o *Observer) Detach(ifindex int) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	ifc, ok := o.ifaces[ifindex]
	if !ok {
		return fmt.Errorf("interface %d is not attached", ifindex)
	}
	o.detachLocked(ifc)
	return nil
}

func (o *Observer) detachLocked(ifc *iface) {
	if err := ifc.tc.Close(); err != nil {
		o.opts.Logger.Warn("detaching the tc programs failed", "interface", ifc.name, "err", err)
	}
	ifc.coll.Close()
	delete(o.ifaces, ifc.ifindex)
	o.slots[ifc.slot] = nil
}

func (o *Observer) resetSlot(slot int) {
	zero := make([]tcCounterSet, ebpf.MustPossibleCPU())
	for d := 0; d < int(tcDirectionDIR_MAX); d++ {
		_ = o.counters.Put(counterKey(slot, d), zero)
	}
	o.incomplete[slot] = [tcDirectionDIR_MAX]uint64{}
}

// Close detaches every interface, unloads the programs and closes the
// Records channel.
func (o *Observer) Close() error {
	o.closeOnce.Do(func() {
		o.mu.Lock()
		close(o.done)
		for _, ifc := range o.ifaces {
			o.detachLocked(ifc)
		}
		o.mu.Unlock()
		if o.rd != nil {
			o.rd.Close()
		}
		o.wg.Wait()
		close(o.records)
		o.closeMaps()
	})
	return nil
}

func (o *Observer) closeMaps() {
	if o.dropLink != nil {
		o.dropLink.Close()
	}
	if o.drop != nil {
		o.drop.Close()
	}
	for _, m := range o.shared {
		m.Close()
	}
}

// Counters returns the counters of every attached interface.
func (o *Observer) Counters() (Snapshot, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var s Snapshot
	var started uint64
	for slot, ifc := range o.slots {
		var ic IfaceCounters
		for d, dst := range []*DirCounters{&ic.Ingress, &ic.Egress} {
			if err := o.readSlot(slot, d, dst); err != nil {
				return s, err
			}
			// Trains of a detached interface may still be in the map.
			started += dst[CounterTrainsStarted].Packets
		}
		if ifc != nil {
			ic.Ifindex, ic.Name = ifc.ifindex, ifc.name
			s.Interfaces = append(s.Interfaces, ic)
		}
	}
	s.TrainsLive = o.live
	if started > o.swept+o.live {
		s.TrainsEvicted = started - o.swept - o.live
	}
	if o.dropStats != nil {
		s.DropsEnabled = true
		var vals []dropDropCounters
		if err := o.dropStats.Lookup(uint32(0), &vals); err == nil {
			for _, v := range vals {
				s.DropsReported += v.Reported
				s.DropsRingbuf += v.RingbufFail
				s.DropsUnreadable += v.Unreadable
			}
		}
	}
	s.RecordsDropped = o.recordsDropped.Load()
	s.DropsOtherNetns = o.dropsOtherNetns.Load()
	s.PendingEvicted = o.pendingEvicted.Load()
	s.DecodeErrors = o.decodeErrors.Load()
	return s, nil
}

// counterKey is the key of a slot's counter set for one direction in the
// counters map, as counters_get in bpf/counters.h computes it.
func counterKey(slot, dir int) uint32 { return uint32(slot*int(tcDirectionDIR_MAX) + dir) }

func (o *Observer) readSlot(slot, dir int, dst *DirCounters) error {
	var vals []tcCounterSet
	if err := o.counters.Lookup(counterKey(slot, dir), &vals); err != nil {
		return fmt.Errorf("read counters: %w", err)
	}
	for _, v := range vals {
		for i := 0; i < int(counterBPF); i++ {
			dst[i].Packets += v.C[i].Packets
			dst[i].Bytes += v.C[i].Bytes
		}
	}
	dst[CounterTrainsIncomplete].Packets = o.incomplete[slot][dir]
	return nil
}
