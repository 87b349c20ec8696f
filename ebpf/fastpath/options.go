package fastpath

import (
	"fmt"
	"log/slog"

	"github.com/ikefrag/ikefrag/netcfg"
)

// FilterPrefix names the legacy tc filters of the fast path. It must not
// start with the observer's prefix ("ikefrag"), whose stale-filter cleanup
// would otherwise remove them.
const FilterPrefix = "ikfastpath"

// FilterPriority is the tc priority of the fast path's legacy filter: after
// the observer's (priority 1), so the observer still counts the ESP that is
// redirected here.
const FilterPriority = 2

// Options configures New. The zero value of every field means its
// documented default.
type Options struct {
	// MaxFlows is the number of flows that can be mapped at once; each
	// takes two entries (one per direction) of a preallocated hash map,
	// about 400 bytes of kernel memory per flow. Default 16384, at most
	// 1<<21.
	MaxFlows int
	// AttachMode selects how the program is attached to an interface,
	// as the observer's (ebpf.AttachMode): netcfg.TCAuto (default) for a
	// tcx link where the kernel has them (6.6 and later), netcfg.TCX for
	// tcx only, netcfg.TCLegacy for a clsact qdisc with a cls_bpf filter
	// named with FilterPrefix at FilterPriority, whose stale copies are
	// removed at attach time.
	AttachMode netcfg.TCMode
	// IKEPort is the proxy's IKE port (default 500). Put refuses flows
	// that use it on the proxy's listening side or the backend side: IKE
	// on that port has no non-ESP marker and would be taken for ESP.
	IKEPort uint16
	// PinPath, a directory in a BPF file system (for example
	// /sys/fs/bpf/ikefrag/fastpath), keeps the fast path running while
	// its owner restarts: the flow and counter maps are pinned there, and
	// so are the tcx links (legacy tc filters stay by themselves). Close
	// then leaves the program attached and every flow still mapped; the
	// next New with the same PinPath takes the maps over (Put of a flow
	// the earlier run mapped keeps its counters) and ReleaseInherited
	// unmaps what was not put again. Empty (the default): nothing is
	// pinned and Close detaches everything.
	PinPath string
	// Logger receives the few operational lines: the tcx → tc fallback,
	// stale filters removed, the first time the map is full. Default
	// slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.MaxFlows == 0 {
		o.MaxFlows = 16384
	}
	if o.MaxFlows < 1 || o.MaxFlows > 1<<21 {
		return o, fmt.Errorf("fastpath: max flows %d outside 1..%d", o.MaxFlows, 1<<21)
	}
	var err error
	if o.AttachMode, err = o.AttachMode.Resolve(); err != nil {
		return o, fmt.Errorf("fastpath: %w", err)
	}
	if o.IKEPort == 0 {
		o.IKEPort = 500
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
