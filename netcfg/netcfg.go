// Package netcfg holds the netlink helpers the daemon needs: links by name
// or index, the interface of the default route, and the legacy tc
// attachment (clsact qdisc plus cls_bpf filters) used where tcx links are
// not available. Every function works in the network namespace of the
// calling OS thread.
package netcfg

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Dir is a tc hook.
type Dir int

const (
	Ingress Dir = iota
	Egress
)

func (d Dir) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

func (d Dir) parent() uint32 {
	if d == Egress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

// filterPriority is the tc priority of the filters installed here; a
// fixed value keeps them before most hand-made filters, which usually take
// the automatic priority (49152 and up).
const filterPriority = 1

// LinkByName returns the link called name.
func LinkByName(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %q: %w", name, err)
	}
	return l, nil
}

// LinkByIndex returns the link with index i.
func LinkByIndex(i int) (netlink.Link, error) {
	l, err := netlink.LinkByIndex(i)
	if err != nil {
		return nil, fmt.Errorf("link index %d: %w", i, err)
	}
	return l, nil
}

// ErrNoDefaultRoute is returned when the main table has no default route.
var ErrNoDefaultRoute = errors.New("no default route")

// DefaultRouteLink returns the link of the default route of family
// (unix.AF_INET or unix.AF_INET6) in the main table, the one with the
// lowest metric when there are several.
func DefaultRouteLink(family int) (netlink.Link, error) {
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	best := -1
	for i, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.LinkIndex <= 0 {
			continue
		}
		if best < 0 || r.Priority < routes[best].Priority {
			best = i
		}
	}
	if best < 0 {
		return nil, ErrNoDefaultRoute
	}
	return LinkByIndex(routes[best].LinkIndex)
}

// HasEthernetHeader reports whether packets on l start with an Ethernet
// header as tc sees them (Ethernet-like devices and loopback), as opposed
// to L3 devices such as tun, ppp or wireguard.
func HasEthernetHeader(l netlink.Link) bool {
	switch l.Attrs().EncapType {
	case "ether", "loopback":
		return true
	}
	return false
}

// EnsureClsact adds a clsact qdisc to l unless it has one. created says
// whether this call added it.
func EnsureClsact(l netlink.Link) (created bool, err error) {
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return false, nil
		}
	}
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add clsact to %s: %w", l.Attrs().Name, err)
	}
	return true, nil
}

// DeleteClsact removes the clsact qdisc of l and every filter on it.
func DeleteClsact(l netlink.Link) error {
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
	if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact of %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// AttachBPF adds a direct-action cls_bpf filter running the program fd on
// hook d of l (which needs a clsact qdisc) at priority 1. name identifies
// the filter for RemoveBPF.
func AttachBPF(l netlink.Link, d Dir, fd int, name string) error {
	return AttachBPFPriority(l, d, fd, name, filterPriority)
}

// BPFFilters lists the names of the cls_bpf filters on hook d of l.
func BPFFilters(l netlink.Link, d Dir) ([]string, error) {
	fs, err := netlink.FilterList(l, d.parent())
	if err != nil {
		return nil, fmt.Errorf("list %s filters of %s: %w", d, l.Attrs().Name, err)
	}
	var names []string
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok {
			names = append(names, bf.Name)
		}
	}
	return names, nil
}

// RemoveBPF deletes the cls_bpf filters on hook d of l whose name starts
// with prefix, such as those a crashed run left behind, and returns how
// many it deleted. A link without a clsact qdisc has none.
func RemoveBPF(l netlink.Link, d Dir, prefix string) (int, error) {
	fs, err := bpfFiltersNamed(l, d, prefix)
	if err != nil {
		return 0, err
	}
	return deleteFilters(l, d, fs)
}

// bpfFiltersNamed lists the cls_bpf filters on hook d of l whose name
// starts with prefix; a link without a clsact qdisc has none.
func bpfFiltersNamed(l netlink.Link, d Dir, prefix string) ([]*netlink.BpfFilter, error) {
	fs, err := netlink.FilterList(l, d.parent())
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s filters of %s: %w", d, l.Attrs().Name, err)
	}
	var out []*netlink.BpfFilter
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, prefix) {
			out = append(out, bf)
		}
	}
	return out, nil
}

// deleteFilters deletes fs (each by its handle) from hook d of l and
// returns how many it deleted; one already gone counts as deleted.
func deleteFilters(l netlink.Link, d Dir, fs []*netlink.BpfFilter) (int, error) {
	n := 0
	for _, bf := range fs {
		if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
			return n, fmt.Errorf("delete %s filter %q of %s: %w", d, bf.Name, l.Attrs().Name, err)
		}
		n++
	}
	return n, nil
}
