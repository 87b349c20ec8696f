package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// MTURoutesConfig configures MTURoutes.
type MTURoutesConfig struct {
	// Table is the routing table the host routes go into; it must not be
	// used by anything else (every route in it is removed on Close).
	Table int
	// Priority is the priority of the policy rules that send the proxy's
	// traffic through Table.
	Priority int
	// SourcePorts limits the rules to UDP datagrams from these local ports
	// (the proxy's IKE and NAT-T ports), so no other traffic of the host
	// sees the routes. Empty: all traffic.
	SourcePorts []uint16
}

// MTURoutes installs host routes with a locked MTU ("ip route add ADDR
// via GW mtu lock M table T") toward single destinations, in a dedicated
// table consulted through policy rules. With the MTU locked the kernel
// neither sets DF nor lowers the MTU from ICMP: it fragments datagrams to
// the destination once, at M, so nothing on the path has to fragment
// again. It works in the network namespace of the calling thread.
type MTURoutes struct {
	cfg   MTURoutesConfig
	mu    sync.Mutex
	rules []*netlink.Rule
	m     map[netip.Addr]*netlink.Route
}

// NewMTURoutes adds the policy rules (IPv4 and IPv6, one per source
// port) and removes routes a previous run left in the table.
func NewMTURoutes(cfg MTURoutesConfig) (*MTURoutes, error) {
	if cfg.Table <= 0 || cfg.Table == unix.RT_TABLE_MAIN || cfg.Table == unix.RT_TABLE_LOCAL || cfg.Table == unix.RT_TABLE_DEFAULT {
		return nil, fmt.Errorf("route table %d: want a dedicated table", cfg.Table)
	}
	r := &MTURoutes{cfg: cfg, m: map[netip.Addr]*netlink.Route{}}
	if err := r.flushTable(); err != nil {
		return nil, err
	}
	ports := cfg.SourcePorts
	if len(ports) == 0 {
		ports = []uint16{0}
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		for _, port := range ports {
			rule := netlink.NewRule()
			rule.Family = fam
			rule.Table = cfg.Table
			rule.Priority = cfg.Priority
			if port != 0 {
				rule.IPProto = unix.IPPROTO_UDP
				rule.Sport = netlink.NewRulePortRange(port, port)
			}
			// a leftover identical rule from a crashed run is reused
			_ = netlink.RuleDel(rule)
			if err := netlink.RuleAdd(rule); err != nil {
				if fam == unix.AF_INET6 && (errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP)) {
					continue // IPv6 disabled
				}
				_ = r.Close()
				return nil, fmt.Errorf("add rule sport %d table %d: %w", port, cfg.Table, err)
			}
			r.rules = append(r.rules, rule)
		}
	}
	return r, nil
}

func (r *MTURoutes) flushTable() error {
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: r.cfg.Table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			if fam == unix.AF_INET6 {
				continue
			}
			return fmt.Errorf("list table %d: %w", r.cfg.Table, err)
		}
		for i := range routes {
			if err := netlink.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("flush table %d: %w", r.cfg.Table, err)
			}
		}
	}
	return nil
}

// Set installs (or changes) the route toward dst with MTU mtu. The
// gateway, device and source come from the main table's route to dst.
// It returns the MTU the main route's device allows when that is not
// larger than mtu (nothing is installed then: the path needs no lock).
func (r *MTURoutes) Set(dst netip.Addr, mtu int) error {
	dst = dst.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.m[dst]; old != nil && old.MTU == mtu {
		return nil
	}
	routes, err := netlink.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("route to %s: %v", dst, err)
	}
	base := routes[0]
	bits := 32
	if dst.Is6() {
		bits = 128
	}
	rt := &netlink.Route{
		LinkIndex: base.LinkIndex,
		Dst:       &net.IPNet{IP: net.IP(dst.AsSlice()), Mask: net.CIDRMask(bits, bits)},
		Gw:        base.Gw,
		Src:       base.Src,
		Table:     r.cfg.Table,
		MTU:       mtu,
		MTULock:   true,
		Protocol:  netlink.RouteProtocol(unix.RTPROT_STATIC),
	}
	if err := netlink.RouteReplace(rt); err != nil {
		return fmt.Errorf("route %s mtu lock %d table %d: %w", dst, mtu, r.cfg.Table, err)
	}
	r.m[dst] = rt
	return nil
}

// Remove deletes the route toward dst.
func (r *MTURoutes) Remove(dst netip.Addr) error {
	dst = dst.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.m[dst]
	if rt == nil {
		return nil
	}
	delete(r.m, dst)
	if err := netlink.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s table %d: %w", dst, r.cfg.Table, err)
	}
	return nil
}

// List returns the installed routes: destination → MTU.
func (r *MTURoutes) List() map[netip.Addr]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[netip.Addr]int, len(r.m))
	for a, rt := range r.m {
		out[a] = rt.MTU
	}
	return out
}

// Close removes every route of the table and the policy rules.
func (r *MTURoutes) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for a, rt := range r.m {
		if err := netlink.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
		delete(r.m, a)
	}
	if err := r.flushTable(); err != nil {
		errs = append(errs, err)
	}
	for _, rule := range r.rules {
		if err := netlink.RuleDel(rule); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	r.rules = nil
	return errors.Join(errs...)
}
