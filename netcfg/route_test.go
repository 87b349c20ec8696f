package netcfg

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host routes with a locked MTU go into their own table, reached only by
// the proxy's UDP source ports, and everything goes away on Close.
func TestMTURoutes(t *testing.T) {
	ns := testNS(t)
	name := fmt.Sprintf("ikfnc%d", os.Getpid()%100000) // testNS's name
	ipIn := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
		return string(out)
	}
	var r *MTURoutes
	err := Do(ns, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "b0"}); err != nil {
			return err
		}
		for _, n := range []string{"a0", "b0", "lo"} {
			l, err := LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		a, _ := LinkByName("a0")
		addr, _ := netlink.ParseAddr("10.200.9.1/24")
		if err := netlink.AddrAdd(a, addr); err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("10.201.0.0/16")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: a.Attrs().Index, Dst: dst, Gw: net.IPv4(10, 200, 9, 254)}); err != nil {
			return err
		}
		var err error
		if _, err = NewMTURoutes(MTURoutesConfig{Table: unix.RT_TABLE_MAIN}); err == nil {
			return fmt.Errorf("the main table was accepted")
		}
		r, err = NewMTURoutes(MTURoutesConfig{Table: 4500, Priority: 4500, SourcePorts: []uint16{500, 4500}})
		if err != nil {
			return err
		}
		if err := r.Set(netip.MustParseAddr("10.201.0.7"), 1000); err != nil {
			return err
		}
		return r.Set(netip.MustParseAddr("10.201.0.7"), 1000) // idempotent
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := ipIn("route", "show", "table", "4500"); !strings.Contains(got, "10.201.0.7 via 10.200.9.254 dev a0") || !strings.Contains(got, "mtu lock 1000") {
		t.Errorf("table 4500:\n%s", got)
	}
	if got := ipIn("rule", "show"); strings.Count(got, "lookup 4500") < 2 || !strings.Contains(got, "sport 4500") {
		t.Errorf("rules:\n%s", got)
	}
	// only the proxy's ports see the route
	if got := ipIn("route", "get", "10.201.0.7", "ipproto", "udp", "sport", "4500"); !strings.Contains(got, "mtu lock 1000") {
		t.Errorf("route get from 4500: %s", got)
	}
	if got := ipIn("route", "get", "10.201.0.7", "ipproto", "udp", "sport", "5555"); strings.Contains(got, "mtu lock") {
		t.Errorf("route get from another port: %s", got)
	}
	if l := r.List(); len(l) != 1 || l[netip.MustParseAddr("10.201.0.7")] != 1000 {
		t.Errorf("List %v", l)
	}
	if err := Do(ns, func() error {
		if err := r.Set(netip.MustParseAddr("10.201.0.7"), 576); err != nil {
			return err
		}
		return r.Close()
	}); err != nil {
		t.Fatal(err)
	}
	if got := ipIn("route", "show", "table", "4500"); strings.TrimSpace(got) != "" {
		t.Errorf("table 4500 after Close:\n%s", got)
	}
	if got := ipIn("rule", "show"); strings.Contains(got, "lookup 4500") {
		t.Errorf("rules after Close:\n%s", got)
	}
}
