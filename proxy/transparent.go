package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// proxy.source: client. The upstream socket of a flow is bound to the
// client's own address and port (IP_TRANSPARENT), so the backend sees the
// client, as nginx's "proxy_bind $remote_addr transparent" and HAProxy's
// "usesrc clientip" make it. The backend's replies are addressed to the
// client; routed back through this host, they would be forwarded on
// toward the client. Policy rules send UDP from each backend's IKE and
// NAT-T ports to a table whose only route is "local default", so the
// kernel delivers those replies here, to the socket bound to the client's
// address (the TPROXY recipe without a netfilter rule).

// transparentRules is what source: client installed.
type transparentRules struct {
	rules  []*netlink.Rule
	routes []*netlink.Route
}

func (p *Proxy) transparentSetup() (*transparentRules, error) {
	tr := &transparentRules{}
	fams := map[int]bool{}
	for _, b := range p.backends {
		fam := unix.AF_INET
		bits := 32
		if b.cfg.IKE.Addr().Is6() {
			fam, bits = unix.AF_INET6, 128
		}
		fams[fam] = true
		for _, port := range []uint16{b.cfg.IKE.Port(), b.cfg.NATT.Port()} {
			r := netlink.NewRule()
			r.Family = fam
			r.Priority = p.s.TransparentPriority
			r.Table = p.s.TransparentTable
			r.Src = &net.IPNet{IP: b.cfg.IKE.Addr().AsSlice(), Mask: net.CIDRMask(bits, bits)}
			r.IPProto = unix.IPPROTO_UDP
			r.Sport = netlink.NewRulePortRange(port, port)
			if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				tr.close()
				return nil, fmt.Errorf("policy rule from %s udp port %d: %w", b.cfg.IKE.Addr(), port, err)
			}
			tr.rules = append(tr.rules, r)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		tr.close()
		return nil, err
	}
	for fam := range fams {
		dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if fam == unix.AF_INET6 {
			dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		rt := &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst, Table: p.s.TransparentTable, Type: unix.RTN_LOCAL,
			Scope: netlink.SCOPE_HOST, Family: fam}
		if err := netlink.RouteReplace(rt); err != nil {
			tr.close()
			return nil, fmt.Errorf("local route in table %d: %w", p.s.TransparentTable, err)
		}
		tr.routes = append(tr.routes, rt)
	}
	return tr, nil
}

func (tr *transparentRules) close() error {
	var errs []error
	for _, r := range tr.rules {
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	for _, rt := range tr.routes {
		if err := netlink.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	tr.rules, tr.routes = nil, nil
	return errors.Join(errs...)
}

// dialUpstream opens a flow's upstream socket toward to: from the proxy's
// address, or with source: client from the client's address and port.
func (p *Proxy) dialUpstream(client, to netip.AddrPort) (*udpSock, error) {
	o := sockOpts{recvErr: true, rcvBuf: 1 << 20, sndBuf: 1 << 20}
	if p.s.Source != SourceClient {
		return dialUDP(to, o)
	}
	if client.Addr().Is4() != to.Addr().Is4() {
		return nil, fmt.Errorf("client %s and backend %s are of different address families", client, to)
	}
	o.transparent = true
	return dialUDPFrom(client, to, o)
}
