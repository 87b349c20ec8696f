package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Refragment modes (proxy.refragment).
const (
	RefragmentAuto = "auto" // re-cut server→client IKE messages when keys and RFC 7383 allow it
	RefragmentOff  = "off"  // relay every datagram unchanged
)

// ESP fast path modes (proxy.fast_path).
const (
	FastPathAuto = "auto" // relay ESP-in-UDP of NAT-T flows in the kernel where the program loads
	FastPathOff  = "off"  // relay everything in user space
)

// Config is the proxy section of the daemon's configuration. The
// mapstructure tags are the keys under "proxy". Zero values select the
// defaults documented on each field.
type Config struct {
	// Enabled turns the proxy on (proxy.enabled).
	Enabled bool `mapstructure:"enabled"`
	// Listen lists the addresses clients connect to (IPv4 or IPv6; "0.0.0.0"
	// and "::" listen on every address and answer from the one the client
	// used). An address alone binds IKEPort and NATTPort; "addr:port"
	// ("[::]:4500") binds that one port, NAT-T framed unless it is IKEPort.
	// Empty: "0.0.0.0" and "::".
	Listen []string `mapstructure:"listen"`
	// Backends lists the VPN servers: "host" (IKE on 500, NAT-T on 4500),
	// "host:port" (IKE on port, NAT-T on 4500) or "host:port/nattport";
	// IPv6 hosts with a port go in brackets: "[2001:db8::1]:500".
	Backends []string `mapstructure:"backends"`
	// Refragment is "auto" (default) or "off".
	Refragment string `mapstructure:"refragment"`
	// PMTUDefault is the path MTU (whole IP datagram) assumed toward a
	// client nothing is known about. Default 1280: what strongSwan and
	// most stacks use for IKE fragments, and the IPv6 minimum.
	PMTUDefault int `mapstructure:"pmtu_default"`
	// PMTUOverrides gives client prefixes a path MTU; the longest matching
	// prefix wins over observations and the default, ICMP and step-down
	// still lower it. Either a map ("198.51.100.0/24": 1280) or a list of
	// {prefix, mtu} objects or "prefix=mtu" strings.
	PMTUOverrides any `mapstructure:"pmtu_overrides"`
	// PMTUStepDown enables responder-side IKE PMTU discovery: a client
	// that retransmits a request whose response was re-fragmented gets the
	// response again in smaller fragments (higher Total Fragments). true
	// walks 1500, 1400, 1280, 1000, 576; a list of decreasing sizes sets
	// the ladder; false or empty turns it off (default).
	PMTUStepDown any `mapstructure:"pmtu_step_down"`
	// RouteMTU (keyless help) installs a host route with a locked MTU toward
	// each client whose path MTU is known to be smaller than the route's,
	// in RouteTable, so the kernel fragments once at the client's size.
	RouteMTU bool `mapstructure:"route_mtu"`
	// FastPath is "auto" (default) or "off". With auto the proxy loads the
	// ESP fast path (an eBPF tc program, see docs/esp-fastpath.md), attaches
	// it to the interfaces of its routes toward the backends and, as
	// clients appear, toward them, and hands it each NAT-T flow once the
	// backend has answered: the kernel then relays the flow's ESP-in-UDP
	// and the proxy keeps IKE, keepalives and everything else. When the
	// program cannot load or an interface is not Ethernet, that traffic is
	// relayed in user space, with one log line and a counter (Stats.FastPath).
	FastPath string `mapstructure:"fast_path"`

	// The keys below are additions to the documented contract; the
	// defaults suit production.

	// IKEPort and NATTPort are the ports listened on (default 500 and 4500).
	IKEPort  int `mapstructure:"ike_port"`
	NATTPort int `mapstructure:"natt_port"`
	// IdleTimeout ends a client flow (and its upstream socket) with no
	// traffic for this long. Default 5 minutes; NAT-T keepalives (20 s)
	// keep live ones open.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// UnrepliedTimeout ends a flow the backend has not answered, or has
	// answered only with COOKIE or INVALID_KE_PAYLOAD, this long after it
	// was created. Default 10 s, so spoofed sources cannot hold table slots:
	// a real client's IKE_SA_INIT is answered in a round trip, and a client
	// whose backend is slow gets a new flow at its next retransmission.
	UnrepliedTimeout time.Duration `mapstructure:"unreplied_timeout"`
	// HalfOpenTimeout ends a flow whose IKE_SA_INIT was answered with an SA
	// payload but which never carried anything more from the backend
	// (IKE_AUTH went elsewhere, or never happened), and is how long an IKE
	// SA counts as half-open for HalfOpenPerClient. Default 30 s,
	// strongSwan's charon.half_open_timeout.
	HalfOpenTimeout time.Duration `mapstructure:"half_open_timeout"`
	// HalfOpenPerClient bounds the half-open IKE SAs (IKE_SA_INIT answered,
	// IKE_AUTH not) of one client address; further IKE_SA_INIT requests of
	// new IKE SAs from it are dropped and counted. The backend sees every
	// client from the proxy's address and cannot tell them apart, so the
	// proxy applies a per-client limit itself. Default 2: one address then
	// leaves a strongSwan backend with its default block_threshold (5 per
	// IP, here the proxy's) room for every other client; raise it
	// together with the backend's per-IP limits (docs/proxy.md) for
	// clients behind large NATs.
	HalfOpenPerClient int `mapstructure:"half_open_per_client"`
	// NewFlowsPerAddress and NewFlowsPerPrefix bound the flows not yet
	// established (the backend has not answered beyond IKE_SA_INIT) of one
	// client address and of one client prefix (ClientPrefixV4,
	// ClientPrefixV6 bits); datagrams that would open more are dropped and
	// counted. Defaults 32 and 512: clients behind one NAT connecting at
	// once each hold a flow here for a round trip or two.
	NewFlowsPerAddress int `mapstructure:"new_flows_per_address"`
	NewFlowsPerPrefix  int `mapstructure:"new_flows_per_prefix"`
	ClientPrefixV4     int `mapstructure:"client_prefix_v4"`
	ClientPrefixV6     int `mapstructure:"client_prefix_v6"`
	// Clients restricts the client source addresses: a source in a deny
	// prefix is refused; when allow is not empty, a source in none of its
	// prefixes is refused. Sources that cannot be clients (a backend, an
	// address of this host, loopback unless the listener is loopback,
	// multicast, broadcast, unspecified, IPv4-mapped IPv6) are always
	// refused. Every refusal is counted.
	Clients ClientsConfig `mapstructure:"clients"`
	// CookieThreshold is the number of flows not yet established at which
	// the proxy answers IKE_SA_INIT requests that would open a flow with
	// its own N(COOKIE) (RFC 7296 §2.6), keeping no state, and opens
	// flows only for requests that bring a valid one back (cookie.go).
	// Default max_clients/100 (100 of the default 10000): few enough that
	// a spoofed flood gets the backend's answers relayed only that many
	// times per unreplied_timeout. max_clients or more turns it off.
	CookieThreshold int `mapstructure:"cookie_threshold"`
	// MaxClients bounds the client flows. When it is reached a new flow
	// takes the place of the oldest flow the backend never answered, then
	// of the oldest half-open one; established flows are never evicted.
	// A datagram that finds no room is dropped and counted. Default 10000.
	MaxClients int `mapstructure:"max_clients"`
	// PMTUExpiry is how long a learned path MTU is kept. Default 10 minutes.
	PMTUExpiry time.Duration `mapstructure:"pmtu_expiry"`
	// RouteTable and RoutePriority are the routing table and policy rule
	// priority of RouteMTU. Defaults 4500 and 4500.
	RouteTable    int `mapstructure:"route_table"`
	RoutePriority int `mapstructure:"route_priority"`
	// Batch is the number of datagrams read or written per system call.
	// Default 64.
	Batch int `mapstructure:"batch"`
	// HealthFailures is the number of failures that make the proxy doubt a
	// backend: ICMP unreachable errors, or well-formed IKE_SA_INIT requests
	// from that many distinct client addresses left unanswered while the
	// backend answered nothing else. HealthHold is how long a backend
	// found down stays down before it is tried again. Defaults 3 and 30 s.
	HealthFailures int           `mapstructure:"health_failures"`
	HealthHold     time.Duration `mapstructure:"health_hold"`
	// HealthProbe is "auto" (default) or "off". With auto a doubted backend
	// is marked down only when it also leaves unanswered an IKE_SA_INIT of
	// major version 3 that the proxy sends it, which an RFC 7296 §2.5
	// responder answers with INVALID_MAJOR_VERSION without creating state;
	// a down backend is probed again every HealthHold. With off the doubt
	// alone marks it down.
	HealthProbe string `mapstructure:"health_probe"`
	// MetricsPerClient adds per-client series to the Prometheus collector
	// (bounded by MaxClients). Default off: per-backend series only.
	MetricsPerClient bool `mapstructure:"metrics_per_client"`
	// Source is the address the backend sees: "proxy" (default) sends
	// from the proxy's own address, one port per flow; "client" sends
	// from the client's own address and port (IP_TRANSPARENT,
	// IPV6_TRANSPARENT; CAP_NET_ADMIN), so the backend's per-IP limits
	// and logs see real clients. Replies then reach the proxy only if the
	// backend routes client addresses through this host; the proxy adds
	// policy rules (TransparentTable, TransparentPriority) that deliver
	// UDP from the backends' IKE and NAT-T ports to its sockets. The ESP
	// fast path is not used with "client". See docs/proxy.md.
	Source string `mapstructure:"source"`
	// TransparentTable and TransparentPriority are the routing table and
	// rule priority of source: client. Defaults 4501 and 4501.
	TransparentTable    int `mapstructure:"transparent_table"`
	TransparentPriority int `mapstructure:"transparent_priority"`
	// StateFile keeps the established flows' client ↔ upstream port
	// mapping across restarts: written when they change (at most once a
	// second) and at Close, read at Run, which opens the same upstream
	// ports for the same clients so that the backend keeps seeing each
	// tunnel from where it knows it. Put it in the runtime directory
	// (/run/ikefrag/proxy-state.json; with systemd, keep that directory
	// across restarts: RuntimeDirectoryPreserve=restart). "": off.
	StateFile string `mapstructure:"state_file"`
	// FastPathMaxFlows is the number of flows the fast path holds at once;
	// NAT-T flows beyond it stay in user space (counted as map_full) and
	// move to the kernel when room appears. Default max_clients.
	FastPathMaxFlows int `mapstructure:"fast_path_max_flows"`
	// FastPathPin is a directory in a BPF file system where the fast
	// path's maps and links are pinned, so that ESP of established flows
	// keeps flowing in the kernel while the proxy restarts (or after it
	// was killed); the next start re-adopts the flows from state_file and
	// takes the maps over. It needs state_file. Stopping for good:
	// remove the directory. E.g. /sys/fs/bpf/ikefrag/fastpath. "": off.
	FastPathPin string `mapstructure:"fast_path_pin"`
	// Freebind binds the listen addresses whether or not this host holds
	// them (IP_FREEBIND, IPV6_FREEBIND): for a pair of proxies behind
	// keepalived virtual addresses, the backup listens before it becomes
	// the active box. The addresses are then followed through netlink for
	// status and the vip_held metric. Default false: a listen address
	// must be on the host. See docs/pair.md.
	Freebind bool `mapstructure:"freebind"`
	// Adopt is "off" (default) or "transparent". With transparent (which
	// needs source: client) the box of a pair that takes over opens a
	// flow from the first datagram of an SA the other box carried: an
	// IKEv2 message of an established IKE SA (with a key source, only of
	// an SPI pair it knows) or an ESP-in-UDP datagram; the flow starts
	// unestablished (limits, eviction, unreplied_timeout) until the
	// backend answers on it. See docs/pair.md.
	Adopt string `mapstructure:"adopt"`
	// TCP is proxy.tcp: IKE and ESP over TCP (RFC 9329) from clients,
	// relayed to the backends over UDP (tcp.go). Off unless TCP.Listen
	// names an address.
	TCP TCPConfig `mapstructure:"tcp"`
}

// ClientsConfig is proxy.clients: prefixes of client source addresses.
type ClientsConfig struct {
	Allow []string `mapstructure:"allow"`
	Deny  []string `mapstructure:"deny"`
}

// Upstream source modes (proxy.source).
const (
	SourceProxy  = "proxy"
	SourceClient = "client"
)

// Health probe modes (proxy.health_probe).
const (
	HealthProbeAuto = "auto"
	HealthProbeOff  = "off"
)

// Defaults.
const (
	DefaultPMTU               = 1280
	DefaultIdleTimeout        = 5 * time.Minute
	DefaultUnrepliedTimeout   = 10 * time.Second
	DefaultHalfOpenTimeout    = 30 * time.Second
	DefaultHalfOpenPerClient  = 2
	DefaultNewFlowsPerAddress = 32
	DefaultNewFlowsPerPrefix  = 512
	DefaultClientPrefixV4     = 24
	DefaultClientPrefixV6     = 56
	DefaultMaxClients         = 10000

	DefaultTransparentTable    = 4501
	DefaultTransparentPriority = 4501
	DefaultPMTUExpiry          = 10 * time.Minute
	DefaultRouteTable          = 4500
	DefaultRoutePriority       = 4500
	DefaultBatch               = 64
	DefaultHealthFailures      = 3
	DefaultHealthHold          = 30 * time.Second

	// RFC 9329 listener defaults (proxy.tcp).
	DefaultTCPPort                  = 4500 // RFC 9329 §2 suggests the NAT-T port
	DefaultTCPMessageTimeout        = 10 * time.Second
	DefaultTCPIdleTimeout           = 5 * time.Minute
	DefaultTCPMaxMessage            = tcpMaxFrame - tcpLenField
	DefaultTCPMaxIKEMessage         = 10000 // strongSwan's charon.max_packet
	DefaultTCPConnectionsPerAddress = 64
	DefaultTCPSendBuffer            = 256 << 10

	// maxFastPathFlows is the fast path's own limit (fastpath.Options).
	maxFastPathFlows = 1 << 21
)

// Backend is a parsed backend address.
type Backend struct {
	Name string // as configured
	IKE  netip.AddrPort
	NATT netip.AddrPort
	// IKEMarker is set when the IKE port is not 500: IKE stacks frame
	// every port but 500 like the NAT-T port (strongSwan expects the
	// non-ESP marker there), so the proxy adds it on the way in and
	// removes it on the way out.
	IKEMarker bool
}

// listenAddr is one socket to bind.
type listenAddr struct {
	ap   netip.AddrPort
	natt bool
}

// settings is a validated Config with defaults filled in.
type settings struct {
	Config
	listen    []listenAddr
	backends  []Backend
	overrides []prefixMTU // longest prefix first
	allow     []netip.Prefix
	deny      []netip.Prefix
	tcpListen []netip.AddrPort
	stepDown  bool
	ladder    []int // decreasing
}

func (c Config) withDefaults() Config {
	if c.Refragment == "" {
		c.Refragment = RefragmentAuto
	}
	if c.FastPath == "" {
		c.FastPath = FastPathAuto
	}
	if c.PMTUDefault <= 0 {
		c.PMTUDefault = DefaultPMTU
	}
	if c.IKEPort <= 0 {
		c.IKEPort = 500
	}
	if c.NATTPort <= 0 {
		c.NATTPort = 4500
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.UnrepliedTimeout <= 0 {
		c.UnrepliedTimeout = DefaultUnrepliedTimeout
	}
	if c.MaxClients <= 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.CookieThreshold <= 0 {
		c.CookieThreshold = max(1, c.MaxClients/100)
	}
	if c.HalfOpenTimeout <= 0 {
		c.HalfOpenTimeout = DefaultHalfOpenTimeout
	}
	if c.HalfOpenPerClient <= 0 {
		c.HalfOpenPerClient = DefaultHalfOpenPerClient
	}
	if c.NewFlowsPerAddress <= 0 {
		c.NewFlowsPerAddress = DefaultNewFlowsPerAddress
	}
	if c.NewFlowsPerPrefix <= 0 {
		c.NewFlowsPerPrefix = DefaultNewFlowsPerPrefix
	}
	if c.ClientPrefixV4 <= 0 {
		c.ClientPrefixV4 = DefaultClientPrefixV4
	}
	if c.ClientPrefixV6 <= 0 {
		c.ClientPrefixV6 = DefaultClientPrefixV6
	}
	if c.HealthProbe == "" {
		c.HealthProbe = HealthProbeAuto
	}
	if c.Source == "" {
		c.Source = SourceProxy
	}
	if c.Adopt == "" {
		c.Adopt = AdoptOff
	}
	if c.TransparentTable <= 0 {
		c.TransparentTable = DefaultTransparentTable
	}
	if c.TransparentPriority <= 0 {
		c.TransparentPriority = DefaultTransparentPriority
	}
	if c.PMTUExpiry <= 0 {
		c.PMTUExpiry = DefaultPMTUExpiry
	}
	if c.RouteTable <= 0 {
		c.RouteTable = DefaultRouteTable
	}
	if c.RoutePriority <= 0 {
		c.RoutePriority = DefaultRoutePriority
	}
	if c.FastPathMaxFlows <= 0 {
		c.FastPathMaxFlows = min(c.MaxClients, maxFastPathFlows)
	}
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.Batch > 1024 {
		c.Batch = 1024
	}
	if c.HealthFailures <= 0 {
		c.HealthFailures = DefaultHealthFailures
	}
	if c.HealthHold <= 0 {
		c.HealthHold = DefaultHealthHold
	}
	c.TCP = c.TCP.withDefaults(c.MaxClients)
	return c
}

// Validate checks the configuration as New would.
func (c Config) Validate() error {
	_, err := c.parse()
	return err
}

func (c Config) parse() (*settings, error) {
	c = c.withDefaults()
	s := &settings{Config: c}
	var errs []error
	switch c.Refragment {
	case RefragmentAuto, RefragmentOff:
	default:
		errs = append(errs, fmt.Errorf("proxy.refragment %q: want auto or off", c.Refragment))
	}
	switch c.FastPath {
	case FastPathAuto, FastPathOff:
	default:
		errs = append(errs, fmt.Errorf("proxy.fast_path %q: want auto or off", c.FastPath))
	}
	switch c.Source {
	case SourceProxy, SourceClient:
	default:
		errs = append(errs, fmt.Errorf("proxy.source %q: want proxy or client", c.Source))
	}
	switch c.Adopt {
	case AdoptOff:
	case AdoptTransparent:
		if c.Source != SourceClient {
			errs = append(errs, fmt.Errorf("proxy.adopt %q: needs proxy.source client (with source %s the backend would see the tunnel move to the other box's address)", c.Adopt, c.Source))
		}
	default:
		errs = append(errs, fmt.Errorf("proxy.adopt %q: want off or transparent", c.Adopt))
	}
	switch c.HealthProbe {
	case HealthProbeAuto, HealthProbeOff:
	default:
		errs = append(errs, fmt.Errorf("proxy.health_probe %q: want auto or off", c.HealthProbe))
	}
	if c.ClientPrefixV4 > 32 {
		errs = append(errs, fmt.Errorf("proxy.client_prefix_v4 %d: want 1..32", c.ClientPrefixV4))
	}
	if c.ClientPrefixV6 > 128 {
		errs = append(errs, fmt.Errorf("proxy.client_prefix_v6 %d: want 1..128", c.ClientPrefixV6))
	}
	var perr error
	if s.allow, perr = parsePrefixes("proxy.clients.allow", c.Clients.Allow); perr != nil {
		errs = append(errs, perr)
	}
	if s.deny, perr = parsePrefixes("proxy.clients.deny", c.Clients.Deny); perr != nil {
		errs = append(errs, perr)
	}
	if c.FastPathPin != "" {
		switch {
		case !filepath.IsAbs(c.FastPathPin):
			errs = append(errs, fmt.Errorf("proxy.fast_path_pin %q: want an absolute path in a BPF file system", c.FastPathPin))
		case c.StateFile == "":
			errs = append(errs, fmt.Errorf("proxy.fast_path_pin %q needs proxy.state_file: flows kept in the kernel must be re-adopted at the next start", c.FastPathPin))
		}
	}
	if c.FastPathMaxFlows > maxFastPathFlows {
		errs = append(errs, fmt.Errorf("proxy.fast_path_max_flows %d: at most %d", c.FastPathMaxFlows, maxFastPathFlows))
	}
	if c.IKEPort > 65535 || c.NATTPort > 65535 || c.IKEPort == c.NATTPort {
		errs = append(errs, fmt.Errorf("proxy ports %d/%d: want two different ports", c.IKEPort, c.NATTPort))
	}
	if c.PMTUDefault < 576 || c.PMTUDefault > 65535 {
		errs = append(errs, fmt.Errorf("proxy.pmtu_default %d: want 576..65535", c.PMTUDefault))
	}
	listen := c.Listen
	if len(listen) == 0 {
		listen = []string{"0.0.0.0", "::"}
	}
	for _, l := range listen {
		l = strings.TrimSpace(l)
		if ap, err := netip.ParseAddrPort(l); err == nil {
			a := ap.Addr().Unmap()
			s.listen = append(s.listen, listenAddr{netip.AddrPortFrom(a, ap.Port()), int(ap.Port()) != c.IKEPort})
			continue
		}
		a, err := netip.ParseAddr(strings.Trim(l, "[]"))
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy.listen %q: not an address or address:port", l))
			continue
		}
		a = a.Unmap()
		s.listen = append(s.listen, listenAddr{netip.AddrPortFrom(a, uint16(c.IKEPort)), false},
			listenAddr{netip.AddrPortFrom(a, uint16(c.NATTPort)), true})
	}
	if len(c.Backends) == 0 {
		errs = append(errs, errors.New("proxy.backends: no backend"))
	}
	for _, b := range c.Backends {
		be, err := ParseBackend(b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.backends = append(s.backends, be)
	}
	ov, err := parseOverrides(c.PMTUOverrides)
	if err != nil {
		errs = append(errs, err)
	}
	s.overrides = ov
	if s.stepDown, s.ladder, err = parseStepDown(c.PMTUStepDown); err != nil {
		errs = append(errs, err)
	}
	tl, terrs := c.TCP.parse()
	s.tcpListen = tl
	errs = append(errs, terrs...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// parsePrefixes reads a list of prefixes or addresses (a host prefix);
// IPv4-mapped IPv6 prefixes are taken as IPv4.
func parsePrefixes(key string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for i, e := range in {
		e = strings.TrimSpace(e)
		p, err := netip.ParsePrefix(e)
		if err != nil {
			a, aerr := netip.ParseAddr(e)
			if aerr != nil {
				errs = append(errs, fmt.Errorf("%s[%d] %q: not a prefix or an address", key, i, e))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, errors.Join(errs...)
}

// ParseBackend parses one proxy.backends entry.
func ParseBackend(s string) (Backend, error) {
	b := Backend{Name: s}
	hostport, natt, hasNATT := strings.Cut(strings.TrimSpace(s), "/")
	host, port := hostport, "500"
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hostport, "[") {
		host = strings.Trim(hostport, "[]")
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return b, fmt.Errorf("proxy.backends %q: %v (a literal address is needed)", s, err)
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() {
		return b, fmt.Errorf("proxy.backends %q: not a unicast address", s)
	}
	ike, err := parsePort(port)
	if err != nil {
		return b, fmt.Errorf("proxy.backends %q: %v", s, err)
	}
	nattPort := uint16(4500)
	if hasNATT {
		if nattPort, err = parsePort(natt); err != nil {
			return b, fmt.Errorf("proxy.backends %q: %v", s, err)
		}
	}
	if nattPort == ike {
		return b, fmt.Errorf("proxy.backends %q: IKE and NAT-T ports are the same", s)
	}
	b.IKE, b.NATT = netip.AddrPortFrom(a, ike), netip.AddrPortFrom(a, nattPort)
	b.IKEMarker = ike != 500
	return b, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q", s)
	}
	return uint16(n), nil
}
