package netcfg

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS makes a network namespace for one test and removes it afterwards.
func testNS(t *testing.T) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	name := fmt.Sprintf("ikfnc%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func noopTC(t *testing.T) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestLinksAndDefaultRoute(t *testing.T) {
	ns := testNS(t)
	err := Do(ns, func() error {
		if _, err := DefaultRouteLink(unix.AF_INET); err != ErrNoDefaultRoute {
			return fmt.Errorf("empty namespace: default route link err %v", err)
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "b0"}); err != nil {
			return err
		}
		a, err := LinkByName("a0")
		if err != nil {
			return err
		}
		if !HasEthernetHeader(a) {
			return fmt.Errorf("veth has no Ethernet header? encap %q", a.Attrs().EncapType)
		}
		if b, err := LinkByIndex(a.Attrs().Index); err != nil || b.Attrs().Name != "a0" {
			return fmt.Errorf("by index: %v %v", b, err)
		}
		if _, err := LinkByName("nonexistent0"); err == nil {
			return fmt.Errorf("missing link found")
		}
		if err := netlink.LinkSetUp(a); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.200.9.1/24")
		if err := netlink.AddrAdd(a, addr); err != nil {
			return err
		}
		gw, _ := netlink.ParseIPNet("0.0.0.0/0")
		r := &netlink.Route{LinkIndex: a.Attrs().Index, Dst: gw, Gw: []byte{10, 200, 9, 254}}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("route add: %w", err)
		}
		d, err := DefaultRouteLink(unix.AF_INET)
		if err != nil || d.Attrs().Name != "a0" {
			return fmt.Errorf("default route link %v %v", d, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Filters added by a run that never cleaned up are found by name and
// removed; filters of others stay.
func TestBPFFiltersAttachAndStaleRemoval(t *testing.T) {
	ns := testNS(t)
	p := noopTC(t)
	err := Do(ns, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "b0"}); err != nil {
			return err
		}
		l, err := LinkByName("a0")
		if err != nil {
			return err
		}
		if n, err := RemoveBPF(l, Ingress, "ikefrag"); err != nil || n != 0 {
			return fmt.Errorf("no qdisc yet: removed %d, %v", n, err)
		}
		created, err := EnsureClsact(l)
		if err != nil || !created {
			return fmt.Errorf("clsact created %v, %v", created, err)
		}
		if again, err := EnsureClsact(l); err != nil || again {
			return fmt.Errorf("second clsact created %v, %v", again, err)
		}
		for _, name := range []string{"ikefrag-ingress", "other-filter"} {
			if err := AttachBPF(l, Ingress, p.FD(), name); err != nil {
				return err
			}
		}
		if err := AttachBPF(l, Egress, p.FD(), "ikefrag-egress"); err != nil {
			return err
		}
		in, err := BPFFilters(l, Ingress)
		if err != nil || len(in) != 2 {
			return fmt.Errorf("ingress filters %v, %v", in, err)
		}
		if n, err := RemoveBPF(l, Ingress, "ikefrag"); err != nil || n != 1 {
			return fmt.Errorf("removed %d ingress, %v", n, err)
		}
		if n, err := RemoveBPF(l, Egress, "ikefrag"); err != nil || n != 1 {
			return fmt.Errorf("removed %d egress, %v", n, err)
		}
		in, _ = BPFFilters(l, Ingress)
		eg, _ := BPFFilters(l, Egress)
		if len(in) != 1 || in[0] != "other-filter" || len(eg) != 0 {
			return fmt.Errorf("left: ingress %v egress %v", in, eg)
		}
		if err := DeleteClsact(l); err != nil {
			return err
		}
		qs, err := netlink.QdiscList(l)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Type() == "clsact" {
				return fmt.Errorf("clsact still there")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDirString(t *testing.T) {
	if Ingress.String() != "ingress" || Egress.String() != "egress" {
		t.Fatal(Ingress.String(), Egress.String())
	}
}
