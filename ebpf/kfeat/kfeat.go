// Package kfeat probes, once per process, the kernel features the BPF
// programs depend on, so that each loader picks a program variant or a
// fallback and says why, and tests of a missing feature skip naming it.
//
// The probes load tiny programs or read the kernel's BTF; none attaches
// anything or touches an interface.
package kfeat

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Missing is the error of a probe that found a feature absent.
type Missing struct {
	Feature string // what the kernel lacks, e.g. "tcx links"
	Since   string // the first kernel version that has it
	Detail  string // what the probe saw, if useful
}

func (m *Missing) Error() string {
	s := fmt.Sprintf("kernel lacks %s (Linux %s and later)", m.Feature, m.Since)
	if m.Detail != "" {
		s += ": " + m.Detail
	}
	return s
}

// IsMissing reports whether err says a kernel feature is absent.
func IsMissing(err error) bool {
	var m *Missing
	return errors.As(err, &m)
}

type probe struct {
	once sync.Once
	err  error
	fn   func() error
}

func (p *probe) get() error {
	p.once.Do(func() { p.err = p.fn() })
	return p.err
}

var (
	memlock = probe{fn: func() error {
		// A no-op on kernels that charge BPF memory to the memory cgroup
		// (5.11 and later); before that, maps count against
		// RLIMIT_MEMLOCK, whose default is far too small.
		return rlimit.RemoveMemlock()
	}}
	tcx = probe{fn: func() error {
		p, err := trivialSchedCLS()
		if err != nil {
			return err
		}
		defer p.Close()
		// No interface has this index: a kernel with tcx answers
		// "no such device", one without it "not supported".
		l, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxInt32, Program: p, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			l.Close()
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return &Missing{Feature: "tcx links", Since: "6.6"}
		}
		return nil
	}}
	fetchAtomics = probe{fn: func() error {
		insns := asm.Instructions{
			asm.Mov.Imm(asm.R1, 0),
			asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R1, 1),
			// BPF_STX|BPF_ATOMIC with imm BPF_ADD|BPF_FETCH, written out:
			// asm.FetchAdd.Mem leaves imm 0, the non-fetching add that
			// every kernel accepts.
			{OpCode: asm.OpCode(asm.StXClass).SetMode(asm.AtomicMode).SetSize(asm.DWord),
				Dst: asm.R10, Src: asm.R1, Offset: -8, Constant: bpfAdd | bpfFetch},
			asm.Mov.Imm(asm.R0, -1),
			asm.Return(),
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "Dual BSD/GPL", Instructions: insns})
		if err != nil {
			if _, terr := trivialSchedCLS(); terr != nil {
				return terr
			}
			return &Missing{Feature: "fetching atomic instructions (BPF_FETCH)", Since: "5.12"}
		}
		p.Close()
		return nil
	}}
	checkMTU = probe{fn: func() error {
		if err := features.HaveProgramHelper(ebpf.SchedCLS, asm.FnCheckMtu); err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return &Missing{Feature: "the bpf_check_mtu helper", Since: "5.12"}
			}
			return err
		}
		return nil
	}}
	dropReasons = probe{fn: func() error {
		spec, err := btf.LoadKernelSpec()
		if err != nil {
			return &Missing{Feature: "kernel BTF", Since: "5.2 with CONFIG_DEBUG_INFO_BTF", Detail: err.Error()}
		}
		var tp *btf.Typedef
		if err := spec.TypeByName("btf_trace_kfree_skb", &tp); err != nil {
			return &Missing{Feature: "the kfree_skb tracepoint in BTF", Since: "5.5", Detail: err.Error()}
		}
		ptr, ok := tp.Type.(*btf.Pointer)
		if !ok {
			return &Missing{Feature: "the kfree_skb drop reason argument", Since: "5.17", Detail: "unexpected tracepoint type"}
		}
		proto, ok := ptr.Target.(*btf.FuncProto)
		// (void *ctx, struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...)
		if !ok || len(proto.Params) < 4 {
			return &Missing{Feature: "the kfree_skb drop reason argument", Since: "5.17"}
		}
		return nil
	}}
)

// The imm of an atomic instruction: the operation and the fetch flag.
const (
	bpfAdd   = 0x00
	bpfFetch = 0x01
)

func trivialSchedCLS() (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("cannot load BPF programs (needs CAP_BPF and CAP_NET_ADMIN, or root): %w", err)
	}
	return p, nil
}

// Memlock lifts RLIMIT_MEMLOCK where the kernel charges BPF maps to it
// (before 5.11). Every loader calls it before creating maps.
func Memlock() error { return memlock.get() }

// MemlockHint explains a map that could not be created after Memlock
// failed with err; "" when Memlock succeeded.
func MemlockHint(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf(" (RLIMIT_MEMLOCK could not be lifted: %v; kernels before 5.11 charge BPF maps to it: run with LimitMEMLOCK=infinity)", err)
}

// TCX says whether tcx links exist (6.6); nil when they do.
func TCX() error { return tcx.get() }

// FetchAtomics says whether BPF_FETCH atomics exist (5.12), which the
// observer's default build uses for fragment trains shared by CPUs.
func FetchAtomics() error { return fetchAtomics.get() }

// CheckMTU says whether the bpf_check_mtu helper exists (5.12), which the
// ESP fast path needs.
func CheckMTU() error { return checkMTU.get() }

// DropReasons says whether the kfree_skb tracepoint carries the drop
// reason (5.17), which the kernel-drop reporter needs.
func DropReasons() error { return dropReasons.get() }

// Report is what the probes found, for logs, status and metrics.
type Report struct {
	TCX          string `json:"tcx"`
	FetchAtomics string `json:"fetch_atomics"`
	CheckMTU     string `json:"check_mtu"`
	DropReasons  string `json:"drop_reasons"`
}

func state(err error) string {
	if err == nil {
		return "yes"
	}
	return "no: " + err.Error()
}

// Probe runs every probe (once per process) and reports them.
func Probe() Report {
	return Report{
		TCX:          state(TCX()),
		FetchAtomics: state(FetchAtomics()),
		CheckMTU:     state(CheckMTU()),
		DropReasons:  state(DropReasons()),
	}
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tcx=%s fetch_atomics=%s check_mtu=%s drop_reasons=%s",
		short(r.TCX), short(r.FetchAtomics), short(r.CheckMTU), short(r.DropReasons))
	return b.String()
}

func short(s string) string {
	if s == "yes" {
		return "yes"
	}
	return "no"
}
