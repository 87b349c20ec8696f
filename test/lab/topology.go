package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// DropMode selects which IP fragments the router's nftables rule drops.
type DropMode string

const (
	// DropNone installs no rule.
	DropNone DropMode = "none"
	// DropAll drops every fragment: first ones (MF set) and the rest.
	DropAll DropMode = "all"
	// DropNonFirst drops fragments with a non-zero offset only, like
	// firewalls that let the first fragment through for its port numbers.
	DropNonFirst DropMode = "nonfirst"
)

// MTUs of the lab's links; 0 means 1500. MidGw and GwSrv apply only with a
// gateway, MidSrv only without one.
type MTUs struct {
	CliMid, MidSrv, MidGw, GwSrv int
}

// Topology describes the lab New builds.
type Topology struct {
	// MTU per link.
	MTU MTUs
	// Drop is the fragment filter on the router named by DropAt.
	Drop DropMode
	// DropAt is "mid" (default) or "gw".
	DropAt string
	// IPv6 adds fd00:99::/32 addresses next to the IPv4 ones; without it
	// IPv6 is disabled in the namespaces to keep captures quiet.
	IPv6 bool
	// Gateway inserts a fourth namespace, gw, between mid and srv
	// (cli — mid — gw — srv), where a proxy under test can run.
	Gateway bool
	// Pair puts two gateways, gw and gw2, between mid and srv, each on
	// two shared bridges: the client side (a bridge in mid, 10.99.3.0/24:
	// mid .1, gw .2, gw2 .3) and the server side (a bridge in srv,
	// 10.99.2.0/24: srv .2, gw .3, gw2 .4). The virtual addresses
	// PairClientVIP4 and PairServerVIP4 belong to whichever gateway holds
	// them (keepalived, StartKeepalived): mid routes srv's subnet through
	// the first and srv routes everything through the second. IPv4 only;
	// not with Gateway.
	Pair bool
	// PKI selects the certificate hierarchy the charons use; default RSA4096.
	PKI KeyType
}

// Node is one network namespace of a lab.
type Node struct {
	// Name of the network namespace (ip netns).
	Name string
	// Role is "cli", "mid", "gw" or "srv".
	Role string
	// Addr4 and Addr6 are the node's main address: for cli and srv their
	// only link address, for mid its address toward cli, for gw its address
	// toward mid. Addr6 is invalid unless the topology has IPv6.
	Addr4, Addr6 netip.Addr
	// Inner4 and Inner6 (cli and srv only) sit on lo inside the node's
	// traffic selector (Inner4 is in InnerNet4, …): kernel-libipsec routes
	// tunnel traffic only for local addresses inside the selector.
	Inner4, Inner6       netip.Addr
	InnerNet4, InnerNet6 netip.Prefix

	lab *Lab
}

// Link is a veth pair between two nodes.
type Link struct {
	A, B       *Node
	IfA, IfB   string // interface names in A and B: "<self>-<peer>"
	Net4, Net6 netip.Prefix
	mtu        int
	// host part of each end's addresses
	hostA, hostB int
	// bridge: A's end is a port of A's bridge (Topology.Pair), which
	// holds A's address
	bridge bool
}

// Lab is a running topology. Fields are read-only for tests.
type Lab struct {
	Cli, Mid, Gw, Srv *Node // Gw is nil without Topology.Gateway or Topology.Pair
	Gw2               *Node // the second gateway of Topology.Pair, else nil
	// Prefix starts every namespace name of this lab.
	Prefix string
	// Dir holds configs, logs, keys and captures (mode 0700).
	Dir string

	t     testing.TB
	topo  Topology
	nodes []*Node
	links []*Link

	mu   sync.Mutex
	drop DropMode
	pki  *PKI
	seq  int
}

const (
	nsPrefix  = "ikl-"
	ownersDir = "/run/ikefrag-lab"
	nftTable  = "ikefrag_lab"
)

var staleNS = regexp.MustCompile(`^ikl-[a-z0-9-]*-[0-9a-f]{6}-(cli|mid|gw|gw2|srv)$`)

// The virtual addresses of Topology.Pair, and the names of its bridges.
var (
	// PairClientVIP4 is the gateways' shared address toward the clients
	// (the proxy's listen address).
	PairClientVIP4 = netip.MustParseAddr("10.99.3.10")
	// PairServerVIP4 is the gateways' shared address toward srv (srv's
	// default route).
	PairServerVIP4 = netip.MustParseAddr("10.99.2.1")
)

const pairBridge = "br-gws"

var sweepOnce sync.Once

// New builds the topology and registers its removal with t.Cleanup. It
// fails the test when any step fails.
func New(t testing.TB, topo Topology) *Lab {
	t.Helper()
	Require(t)
	if topo.Drop == "" {
		topo.Drop = DropNone
	}
	if topo.DropAt == "" {
		topo.DropAt = "mid"
	}
	if topo.Pair && (topo.Gateway || topo.IPv6) {
		t.Fatalf("lab: Topology.Pair is IPv4 only and replaces Gateway")
	}
	if topo.DropAt != "mid" && (topo.DropAt != "gw" || !topo.Gateway) {
		t.Fatalf("lab: DropAt %q: want mid, or gw with Gateway set", topo.DropAt)
	}
	if topo.PKI == "" {
		topo.PKI = RSA4096
	}
	sweepOnce.Do(func() { sweepStale(t) })

	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	l := &Lab{t: t, topo: topo, Prefix: labPrefix(t.Name(), hex.EncodeToString(rnd[:]))}
	// A short directory keeps the vici socket path below the 108-byte limit
	// of unix socket addresses.
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	l.Dir = filepath.Join(base, l.Prefix)
	if err := os.Mkdir(l.Dir, 0o700); err != nil {
		t.Fatalf("lab: %v", err)
	}
	// The owner record comes before the first namespace so that a sweep in
	// another process never sees our namespaces without it.
	if err := writeOwner(l.Prefix, l.Dir); err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(l.destroy)

	l.layout()
	if err := l.build(); err != nil {
		t.Fatalf("lab: building %s: %v", l.Prefix, err)
	}
	return l
}

// labPrefix makes a namespace prefix from a test name: short enough that
// names stay readable in `ip netns`, unique through the random suffix.
func labPrefix(testName, suffix string) string {
	s := strings.TrimPrefix(strings.ToLower(testName), "test")
	var b strings.Builder
	for _, r := range s {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	s = strings.Trim(b.String(), "-")
	if len(s) > 12 {
		// keep the start (test) and the end (subtest) of long names
		s = strings.Trim(s[:5], "-") + "-" + strings.Trim(s[len(s)-6:], "-")
	}
	if s == "" {
		s = "t"
	}
	return nsPrefix + s + "-" + suffix
}

// layout fills in nodes, links and addresses; nothing touches the system.
func (l *Lab) layout() {
	mk := func(role string) *Node {
		n := &Node{Name: l.Prefix + "-" + role, Role: role, lab: l}
		l.nodes = append(l.nodes, n)
		return n
	}
	l.Cli = mk("cli")
	l.Mid = mk("mid")
	if l.topo.Gateway || l.topo.Pair {
		l.Gw = mk("gw")
	}
	if l.topo.Pair {
		l.Gw2 = mk("gw2")
	}
	l.Srv = mk("srv")

	pick := func(v int) int {
		if v <= 0 {
			return 1500
		}
		return v
	}
	link := func(a, b *Node, subnet, mtu, hostA, hostB int) *Link {
		k := &Link{A: a, B: b, IfA: a.Role + "-" + b.Role, IfB: b.Role + "-" + a.Role,
			Net4:  netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", subnet)),
			Net6:  netip.MustParsePrefix(fmt.Sprintf("fd00:99:%d::/64", subnet)),
			mtu:   pick(mtu),
			hostA: hostA, hostB: hostB}
		l.links = append(l.links, k)
		return k
	}
	// Address plan: mid is .1 on both its links, cli is 10.99.1.2 and srv
	// 10.99.2.2 whether or not gw (10.99.3.2 toward mid, 10.99.2.1 toward
	// srv) sits in front of it.
	link(l.Cli, l.Mid, 1, l.topo.MTU.CliMid, 2, 1)
	if l.topo.Pair {
		// the bridge ends (mid's, srv's) are A; the links of one bridge
		// share its subnet and its address (hostA)
		for i, g := range []*Node{l.Gw, l.Gw2} {
			link(l.Mid, g, 3, l.topo.MTU.MidGw, 1, 2+i).bridge = true
		}
		for i, g := range []*Node{l.Gw, l.Gw2} {
			link(l.Srv, g, 2, l.topo.MTU.GwSrv, 2, 3+i).bridge = true
		}
	} else if l.topo.Gateway {
		link(l.Mid, l.Gw, 3, l.topo.MTU.MidGw, 1, 2)
		link(l.Gw, l.Srv, 2, l.topo.MTU.GwSrv, 1, 2)
	} else {
		link(l.Mid, l.Srv, 2, l.topo.MTU.MidSrv, 1, 2)
	}

	l.Cli.Addr4, l.Cli.Addr6 = l.links[0].addr(l.Cli)
	l.Mid.Addr4, l.Mid.Addr6 = l.links[0].addr(l.Mid)
	if l.Gw != nil {
		l.Gw.Addr4, l.Gw.Addr6 = l.links[1].addr(l.Gw)
	}
	if l.Gw2 != nil {
		l.Gw2.Addr4, l.Gw2.Addr6 = l.links[2].addr(l.Gw2)
	}
	l.Srv.Addr4, l.Srv.Addr6 = l.links[len(l.links)-1].addr(l.Srv)
	if !l.topo.IPv6 {
		for _, n := range l.nodes {
			n.Addr6 = netip.Addr{}
		}
	}
	inner := func(n *Node, subnet int) {
		n.InnerNet4 = netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", subnet))
		n.Inner4 = netip.MustParseAddr(fmt.Sprintf("10.99.%d.1", subnet))
		if l.topo.IPv6 {
			n.InnerNet6 = netip.MustParsePrefix(fmt.Sprintf("fd00:99:%d::/64", subnet))
			n.Inner6 = netip.MustParseAddr(fmt.Sprintf("fd00:99:%d::1", subnet))
		}
	}
	inner(l.Cli, 10)
	inner(l.Srv, 20)
}

// addr returns n's addresses on the link.
func (k *Link) addr(n *Node) (netip.Addr, netip.Addr) {
	host := k.hostA
	if n == k.B {
		host = k.hostB
	}
	a4 := k.Net4.Addr().As4()
	a4[3] = byte(host)
	a6 := k.Net6.Addr().As16()
	a6[15] = byte(host)
	return netip.AddrFrom4(a4), netip.AddrFrom16(a6)
}

// Addrs returns the IPv4 and IPv6 addresses of n on this link (IPv6
// invalid without Topology.IPv6).
func (k *Link) Addrs(n *Node) (netip.Addr, netip.Addr) {
	a4, a6 := k.addr(n)
	if !n.lab.topo.IPv6 {
		a6 = netip.Addr{}
	}
	return a4, a6
}

func (k *Link) ifname(n *Node) string {
	if n == k.A {
		return k.IfA
	}
	return k.IfB
}

func (l *Lab) build() error {
	ctx := context.Background()
	for _, n := range l.nodes {
		if _, err := run(ctx, "ip", "netns", "add", n.Name); err != nil {
			return err
		}
	}
	for _, k := range l.links {
		if _, err := run(ctx, "ip", "link", "add", k.IfA, "netns", k.A.Name, "type", "veth",
			"peer", "name", k.IfB, "netns", k.B.Name); err != nil {
			return err
		}
	}
	// One shell per namespace: every `ip netns exec` costs a mount
	// namespace and a sysfs mount, which adds up on a loaded machine.
	for _, n := range l.nodes {
		if _, err := runIn(ctx, nil, l.setupScript(n), "ip", "netns", "exec", n.Name, "sh", "-e"); err != nil {
			return err
		}
	}
	if err := l.SetDrop(l.topo.Drop); err != nil {
		return err
	}
	// Small pings across the whole path prove addressing and routing.
	targets := []netip.Addr{l.Srv.Addr4, l.Srv.Addr6}
	if l.Gw != nil {
		targets = append(targets, l.Gw.Addr4, l.Gw.Addr6)
	}
	if l.topo.Pair {
		// srv is reached through a virtual address nobody holds yet:
		// each gateway proves its side instead
		targets = []netip.Addr{l.Gw.Addr4, l.Gw2.Addr4}
		for _, g := range []*Node{l.Gw, l.Gw2} {
			if _, err := g.Run(ctx, "ping", "-n", "-q", "-c", "1", "-W", "2", l.Srv.Addr4.String()); err != nil {
				return fmt.Errorf("path check from %s: %w", g.Role, err)
			}
		}
	}
	for _, a := range targets {
		if !a.IsValid() {
			continue
		}
		if _, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", "1", "-W", "2", a.String()); err != nil {
			return fmt.Errorf("path check: %w", err)
		}
	}
	return nil
}

func (n *Node) isRouter() bool { return n.Role == "mid" || n.Role == "gw" || n.Role == "gw2" }

// setupScript configures one namespace once its veths are in place:
// sysctls (the "all" values also reach existing interfaces), then links,
// addresses and routes, then offloads.
func (l *Lab) setupScript(n *Node) string {
	v6 := l.topo.IPv6
	sysctls := []string{"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}
	if v6 {
		sysctls = []string{"net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
			"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"}
	}
	if n.isRouter() {
		sysctls = append(sysctls, "net.ipv4.ip_forward=1")
		if v6 {
			sysctls = append(sysctls, "net.ipv6.conf.all.forwarding=1")
		}
	}
	for _, k := range l.links {
		if v6 && (k.A == n || k.B == n) {
			// the veths exist already, so "default" no longer reaches them;
			// without DAD their link-local addresses are usable at once
			sysctls = append(sysctls, "net.ipv6.conf."+k.ifname(n)+".accept_dad=0")
		}
	}
	var b strings.Builder
	for _, kv := range sysctls {
		// /proc/sys rather than sysctl(8): procps is not always installed
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "echo %s > /proc/sys/%s\n", v, strings.ReplaceAll(k, ".", "/"))
	}
	fmt.Fprintf(&b, "ip -batch - <<'EOF'\n%sEOF\n", l.batch(n))
	// Offloads would hand tcpdump packets larger than the MTU; with them
	// off the capture shows what a real wire carries.
	for _, k := range l.links {
		if k.A == n || k.B == n {
			fmt.Fprintf(&b, "ethtool -K %s gro off gso off tso off\n", k.ifname(n))
		}
	}
	return b.String()
}

// batch is the `ip -batch` script configuring one namespace.
func (l *Lab) batch(n *Node) string {
	var b strings.Builder
	line := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	v6 := l.topo.IPv6
	bridged := false
	line("link set dev lo up")
	for _, k := range l.links {
		if k.A != n && k.B != n {
			continue
		}
		ifn := k.ifname(n)
		a4, a6 := k.addr(n)
		line("link set dev %s mtu %d up", ifn, k.mtu)
		if k.bridge && n == k.A {
			if !bridged {
				line("link add name %s type bridge", pairBridge)
				line("link set dev %s mtu %d up", pairBridge, k.mtu)
				line("addr add %s/24 dev %s", a4, pairBridge)
				bridged = true
			}
			line("link set dev %s master %s", ifn, pairBridge)
			continue
		}
		line("addr add %s/24 dev %s", a4, ifn)
		if v6 {
			line("addr add %s/64 dev %s nodad", a6, ifn)
		}
	}
	if n.Inner4.IsValid() {
		line("addr add %s/32 dev lo", n.Inner4)
	}
	if n.Inner6.IsValid() {
		line("addr add %s/128 dev lo nodad", n.Inner6)
	}
	if l.topo.Pair {
		switch n.Role {
		case "cli":
			line("route add default via %s", l.links[0].Net4.Addr().Next())
		case "mid":
			line("route add %s via %s", l.links[3].Net4, PairClientVIP4)
		case "gw", "gw2":
			line("route add default via %s", l.links[1].Net4.Addr().Next())
		case "srv":
			line("route add default via %s", PairServerVIP4)
		}
		return b.String()
	}
	// next hop of a node toward the far side of the lab
	via := func(k *Link) {
		g4, g6 := k.addr(k.A)
		if k.B != n {
			g4, g6 = k.addr(k.B)
		}
		line("route add default via %s", g4)
		if v6 {
			line("route add ::/0 via %s", g6)
		}
	}
	switch n.Role {
	case "cli":
		via(l.links[0])
	case "srv":
		via(l.links[len(l.links)-1])
	case "gw":
		via(l.links[1]) // toward mid, which knows cli's subnet
	case "mid":
		if l.Gw != nil {
			// srv's subnet lies behind gw
			g4, g6 := l.links[1].addr(l.Gw)
			line("route add %s via %s", l.links[2].Net4, g4)
			if v6 {
				line("route add %s via %s", l.links[2].Net6, g6)
			}
		}
	}
	return b.String()
}

// Node returns the node with the given role, or nil.
func (l *Lab) Node(role string) *Node {
	for _, n := range l.nodes {
		if n.Role == role {
			return n
		}
	}
	return nil
}

// Nodes lists the lab's namespaces from cli to srv.
func (l *Lab) Nodes() []*Node { return append([]*Node(nil), l.nodes...) }

// Link returns the veth pair between two adjacent nodes, or nil.
func (l *Lab) Link(a, b *Node) *Link {
	for _, k := range l.links {
		if (k.A == a && k.B == b) || (k.A == b && k.B == a) {
			return k
		}
	}
	return nil
}

// MTU is the link's current MTU.
func (k *Link) MTU() int { return k.mtu }

// SetMTU changes the MTU on both ends of the link.
func (k *Link) SetMTU(mtu int) error {
	for _, n := range []*Node{k.A, k.B} {
		if _, err := run(context.Background(), "ip", "-n", n.Name, "link", "set", "dev", k.ifname(n), "mtu", strconv.Itoa(mtu)); err != nil {
			return err
		}
	}
	k.mtu = mtu
	return nil
}

// Command prepares a command that runs inside the node's namespace, e.g. a
// daemon under test; the caller starts and stops it.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the node's namespace and returns its combined
// output. Without a deadline on ctx it gives up after 30 s.
func (n *Node) Run(ctx context.Context, name string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Ping sends three echo requests from one node to an address and succeeds
// when any reply arrives. Toward a tunnel inner address the source is the
// sender's inner address of the same family, so the packets take the tunnel.
func (l *Lab) Ping(ctx context.Context, from *Node, to netip.Addr) error {
	args := []string{"-n", "-q", "-c", "3", "-i", "0.2", "-W", "2"}
	isInner := false
	for _, n := range l.nodes {
		if to.IsValid() && (to == n.Inner4 || to == n.Inner6) {
			isInner = true
		}
	}
	if isInner {
		src := from.Inner4
		if to.Is6() {
			src = from.Inner6
		}
		if !src.IsValid() {
			return fmt.Errorf("lab: %s has no inner address of the family of %s", from.Role, to)
		}
		args = append(args, "-I", src.String())
	}
	args = append(args, to.String())
	_, err := from.Run(ctx, "ping", args...)
	return err
}
