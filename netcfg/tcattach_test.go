package netcfg

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

func hasClsact(l netlink.Link) (bool, error) {
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return false, err
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true, nil
		}
	}
	return false, nil
}

// Legacy tc: a crashed run's filters are replaced, not added to; Close
// (from a thread outside the namespace) removes the filters and the
// qdisc it added, and leaves other filters alone.
func TestAttachTCLegacy(t *testing.T) {
	ns := testNS(t)
	p := noopTC(t)
	progs := []TCProgram{{Dir: Ingress, Prog: p, Name: "ikt-ingress"}, {Dir: Egress, Prog: p, Name: "ikt-egress"}}
	opts := TCOptions{Mode: TCLegacy, Prefix: "ikt", Priority: 3}
	var l netlink.Link
	var a *TCAttachment
	err := Do(ns, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "b0"}); err != nil {
			return err
		}
		var err error
		if l, err = LinkByName("a0"); err != nil {
			return err
		}
		crashed, err := AttachTC(l, progs, opts)
		if err != nil {
			return err
		}
		if crashed.Mode != TCLegacy || crashed.Stale != 0 {
			return fmt.Errorf("first attachment: mode %s, stale %d", crashed.Mode, crashed.Stale)
		}
		// the crashed run never closes; a filter of someone else stays
		if err := AttachBPF(l, Ingress, p.FD(), "other"); err != nil {
			return err
		}
		if a, err = AttachTC(l, progs, opts); err != nil {
			return err
		}
		if a.Stale != 2 {
			return fmt.Errorf("stale filters removed: %d, want 2", a.Stale)
		}
		in, _ := BPFFilters(l, Ingress)
		eg, _ := BPFFilters(l, Egress)
		slices.Sort(in)
		if !slices.Equal(in, []string{"ikt-ingress", "other"}) || !slices.Equal(eg, []string{"ikt-egress"}) {
			return fmt.Errorf("filters: ingress %v, egress %v", in, eg)
		}
		fs, err := netlink.FilterList(l, Egress.parent())
		if err != nil || len(fs) != 1 || fs[0].Attrs().Priority != 3 {
			return fmt.Errorf("egress filter priority: %v %v", fs, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Close runs here, on a thread outside the namespace.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	err = Do(ns, func() error {
		in, _ := BPFFilters(l, Ingress)
		eg, _ := BPFFilters(l, Egress)
		if !slices.Equal(in, []string{"other"}) || len(eg) != 0 {
			return fmt.Errorf("after Close: ingress %v, egress %v", in, eg)
		}
		// the qdisc was there before a (the crashed run added it) and
		// still carries a filter: it stays
		if ok, err := hasClsact(l); err != nil || !ok {
			return fmt.Errorf("clsact gone with a filter on it: %v %v", ok, err)
		}
		if err := DeleteClsact(l); err != nil {
			return err
		}
		// an attachment that added the qdisc removes it
		b, err := AttachTC(l, progs[:1], opts)
		if err != nil {
			return err
		}
		if err := b.Close(); err != nil {
			return err
		}
		if ok, err := hasClsact(l); err != nil || ok {
			return fmt.Errorf("clsact left by the attachment that added it: %v %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tcx: the links are the attachment; Head puts a program before one
// attached earlier; Close removes them.
func TestAttachTCX(t *testing.T) {
	ns := testNS(t)
	first, head := noopTC(t), noopTC(t)
	var noTCX error
	err := Do(ns, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "b0"}); err != nil {
			return err
		}
		l, err := LinkByName("a0")
		if err != nil {
			return err
		}
		a, err := AttachTC(l, []TCProgram{{Dir: Ingress, Prog: first, Name: "ikt-ingress"}}, TCOptions{Mode: TCAuto, Prefix: "ikt"})
		if err != nil {
			return err
		}
		if a.Mode != TCX {
			noTCX = a.Fallback
			return a.Close()
		}
		b, err := AttachTC(l, []TCProgram{{Dir: Ingress, Prog: head, Name: "ikt-ingress"}}, TCOptions{Mode: TCX, Head: true, Prefix: "ikt"})
		if err != nil {
			return err
		}
		ids := func() ([]uint32, error) {
			r, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				return nil, err
			}
			var out []uint32
			for _, p := range r.Programs {
				out = append(out, uint32(p.ID))
			}
			return out, nil
		}
		got, err := ids()
		if err != nil {
			return err
		}
		hi, _ := head.Info()
		fi, _ := first.Info()
		hid, _ := hi.ID()
		fid, _ := fi.ID()
		if !slices.Equal(got, []uint32{uint32(hid), uint32(fid)}) {
			return fmt.Errorf("tcx ingress order %v, want head %d then %d", got, hid, fid)
		}
		if in, _ := BPFFilters(l, Ingress); len(in) != 0 {
			return fmt.Errorf("tcx mode added filters %v", in)
		}
		if err := errors.Join(a.Close(), b.Close()); err != nil {
			return err
		}
		if got, err = ids(); err != nil || len(got) != 0 {
			return fmt.Errorf("after Close: %v %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if noTCX != nil {
		t.Skipf("kernel without tcx links: %v", noTCX)
	}
}
