package netcfg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/ikefrag/ikefrag/ebpf/kfeat"
)

// TCMode selects how programs are attached to a tc hook.
type TCMode string

const (
	// TCAuto uses tcx links where the kernel has them (6.6 and later) and
	// falls back to a clsact qdisc with cls_bpf filters.
	TCAuto TCMode = "auto"
	// TCX requires tcx links; they are owned by file descriptors, so the
	// kernel removes them when the process dies.
	TCX TCMode = "tcx"
	// TCLegacy uses clsact + cls_bpf filters. They outlive the process, so
	// stale ones carrying the same name prefix are removed at attach time.
	TCLegacy TCMode = "tc"
)

// Resolve returns the mode with the empty one meaning TCAuto, or an error
// naming a value that is none of the three.
func (m TCMode) Resolve() (TCMode, error) {
	switch m {
	case "":
		return TCAuto, nil
	case TCAuto, TCX, TCLegacy:
		return m, nil
	}
	return m, fmt.Errorf("attach mode %q is not auto, tcx or tc", string(m))
}

// TCProgram is one program for one hook of an interface.
type TCProgram struct {
	Dir  Dir
	Prog *ebpf.Program
	// Name of the legacy cls_bpf filter; it must start with
	// TCOptions.Prefix.
	Name string
}

// TCOptions configures AttachTC.
type TCOptions struct {
	Mode TCMode
	// Head puts tcx links before every program already attached: a
	// program that only watches must see packets before one that
	// redirects them, whatever the order of attachment.
	Head bool
	// Priority of the legacy filters; 0 means 1, ahead of hand-made
	// filters, which usually take the automatic priority (49152 and up).
	Priority uint16
	// Prefix names the legacy filters of one program set, so that those a
	// crashed run left behind are recognised and removed.
	Prefix string
}

// TCAttachment is a set of programs attached to one interface.
type TCAttachment struct {
	// Mode is how they are attached: TCX or TCLegacy.
	Mode TCMode
	// Fallback says why tcx was not used, in TCAuto mode on a kernel
	// without tcx links; nil otherwise.
	Fallback error
	// Stale counts the legacy filters of a crashed run removed first.
	Stale int

	links  []link.Link
	l      netlink.Link
	ns     netns.NsHandle // where the legacy filters are, for removal from any thread
	clsact bool           // the qdisc was added by this attachment
	prefix string
	dirs   []Dir
}

// AttachTC attaches progs to l in the calling thread's namespace: all as
// tcx links, or, when the mode allows and the kernel has no tcx, all as
// legacy filters. Nothing stays attached when it fails.
func AttachTC(l netlink.Link, progs []TCProgram, o TCOptions) (*TCAttachment, error) {
	a := &TCAttachment{l: l, prefix: o.Prefix}
	name := l.Attrs().Name
	for _, p := range progs {
		if !containsDir(a.dirs, p.Dir) {
			a.dirs = append(a.dirs, p.Dir)
		}
	}
	if o.Mode != TCLegacy {
		err := kfeat.TCX()
		if err == nil {
			err = a.attachTCX(l, progs, o.Head)
		}
		if err == nil {
			a.Mode = TCX
			// A run in legacy mode that crashed left its filters; they
			// would see every packet twice beside the links.
			a.Stale = removeStale(l, a.dirs, o.Prefix)
			return a, nil
		}
		if o.Mode == TCX || !(errors.Is(err, ebpf.ErrNotSupported) || kfeat.IsMissing(err)) {
			return nil, fmt.Errorf("attach tcx to %s: %w", name, err)
		}
		a.Fallback = err
	}
	// An earlier run's filters (a crashed run's, or a pinned fast path
	// that kept relaying while no daemon ran) go once this run's are in,
	// not before: no packet meets neither program in between. Both run on
	// the same pinned maps; a filter is deleted by its own handle.
	old := map[Dir][]*netlink.BpfFilter{}
	for _, d := range a.dirs {
		fs, err := bpfFiltersNamed(l, d, o.Prefix)
		if err != nil {
			return nil, err
		}
		old[d] = fs
	}
	created, err := EnsureClsact(l)
	if err != nil {
		return nil, err
	}
	if a.ns, err = CurrentNS(); err != nil {
		if created {
			_ = DeleteClsact(l)
		}
		return nil, err
	}
	a.clsact, a.Mode = created, TCLegacy
	prio := o.Priority
	if prio == 0 {
		prio = filterPriority
	}
	for _, p := range progs {
		if err := AttachBPFPriority(l, p.Dir, p.Prog.FD(), p.Name, prio); err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	for _, d := range a.dirs {
		n, err := deleteFilters(l, d, old[d])
		a.Stale += n
		if err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	return a, nil
}

// removeStale removes legacy filters named with prefix where a clsact
// qdisc exists; an interface without one has none to remove.
func removeStale(l netlink.Link, dirs []Dir, prefix string) int {
	if prefix == "" {
		return 0
	}
	total := 0
	for _, d := range dirs {
		n, err := RemoveBPF(l, d, prefix)
		if err == nil {
			total += n
		}
	}
	return total
}

func (a *TCAttachment) attachTCX(l netlink.Link, progs []TCProgram, head bool) error {
	for _, p := range progs {
		at := ebpf.AttachTCXIngress
		if p.Dir == Egress {
			at = ebpf.AttachTCXEgress
		}
		opts := link.TCXOptions{Interface: l.Attrs().Index, Program: p.Prog, Attach: at}
		if head {
			opts.Anchor = link.Head()
		}
		lk, err := link.AttachTCX(opts)
		if err != nil {
			for _, lk := range a.links {
				lk.Close()
			}
			a.links = nil
			return err
		}
		a.links = append(a.links, lk)
	}
	return nil
}

// Close detaches the programs. Legacy filters are removed in the
// namespace they were added in, from whichever thread calls; the clsact
// qdisc goes too when this attachment added it and no cls_bpf filter is
// left on it.
func (a *TCAttachment) Close() error {
	var err error
	for _, lk := range a.links {
		err = errors.Join(err, lk.Close())
	}
	a.links = nil
	if a.Mode != TCLegacy || !a.ns.IsOpen() {
		return err
	}
	err = errors.Join(err, Do(a.ns, func() error {
		for _, d := range a.dirs {
			if _, err := RemoveBPF(a.l, d, a.prefix); err != nil {
				return err
			}
		}
		if a.clsact {
			in, _ := BPFFilters(a.l, Ingress)
			eg, _ := BPFFilters(a.l, Egress)
			if len(in) == 0 && len(eg) == 0 {
				return DeleteClsact(a.l)
			}
		}
		return nil
	}))
	a.ns.Close()
	a.ns = netns.None()
	return err
}

// Pin pins the attachment's tcx links in dir (a directory in a BPF file
// system), one file each, named base for the first and base-N for the
// next: a pinned link stays attached after its process exits or is
// killed. Legacy filters need no pin, they stay until removed. Call
// Release, not Close, to leave them attached.
func (a *TCAttachment) Pin(dir, base string) error {
	for i, lk := range a.links {
		name := base
		if i > 0 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		if err := lk.Pin(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("pin tcx link of %s: %w", a.l.Attrs().Name, err)
		}
	}
	return nil
}

// Release drops this process's handles and leaves the programs attached:
// pinned tcx links (see Pin) and legacy filters stay; an unpinned tcx link
// goes with its handle.
func (a *TCAttachment) Release() {
	for _, lk := range a.links {
		lk.Close()
	}
	a.links = nil
	if a.ns.IsOpen() {
		a.ns.Close()
	}
	a.ns = netns.None()
}

// DetachPinned detaches and removes the tcx link pinned at path, if there
// is one; it reports whether there was.
func DetachPinned(path string) (bool, error) {
	lk, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		// not a link (a stray file): remove it so the name can be used
		return false, errors.Join(err, os.Remove(path))
	}
	err = lk.Unpin()
	return true, errors.Join(err, lk.Close())
}

func containsDir(ds []Dir, d Dir) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}
