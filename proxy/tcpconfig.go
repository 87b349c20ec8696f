package proxy

// proxy.tcp: the RFC 9329 listener's settings, their defaults and parsing.

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// TCPConfig is proxy.tcp. Zero values select the defaults documented on
// each field.
type TCPConfig struct {
	// Listen lists the TCP addresses clients connect to with RFC 9329
	// streams: "addr:port", or an address alone for port 4500 (the port
	// RFC 9329 suggests); any other port works, 443 among them. Empty:
	// no TCP listener (default).
	Listen []string `mapstructure:"listen"`
	// MessageTimeout bounds the wait for the stream prefix and the first
	// message after a connection is accepted, and for the rest of any
	// message once its first byte arrived (slowloris senders). It also
	// bounds a write toward the client that makes no progress (a client
	// that does not read). Default 10 s.
	MessageTimeout time.Duration `mapstructure:"message_timeout"`
	// IdleTimeout closes a connection with no message either way for this
	// long (RFC 9329 streams carry no NAT-T keepalives). Default 5 min.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// MaxMessage bounds a frame's payload (ESP or marked IKE). Default
	// and maximum 65533: what RFC 9329's 16-bit Length (which counts its
	// own two bytes) can describe.
	MaxMessage int `mapstructure:"max_message"`
	// MaxIKEMessage bounds an IKE message from a client. Default 10000,
	// the bound strongSwan applies (charon.max_packet).
	MaxIKEMessage int `mapstructure:"max_ike_message"`
	// MaxConnections bounds the connections open at once. At the bound a
	// new connection takes the place of the oldest one that has not yet
	// sent a first message that opened a flow; when every connection has a
	// flow the new one is refused. Default max_clients.
	MaxConnections int `mapstructure:"max_connections"`
	// ConnectionsPerAddress bounds the connections of one client address.
	// Default 64.
	ConnectionsPerAddress int `mapstructure:"connections_per_address"`
	// SendBuffer bounds the bytes queued toward one client in the proxy
	// (beyond the kernel's socket buffer). ESP that does not fit is
	// dropped and counted, as a router queue would; an IKE message that
	// does not fit closes the connection as a slow reader. Default 256 KiB.
	SendBuffer int `mapstructure:"send_buffer"`
	// BackendMTU caps the path MTU (whole IP datagram) toward the
	// backends used to split a TCP client's large IKE message into RFC
	// 7383 fragments (keyed, and only when the backend announced
	// IKEV2_FRAGMENTATION_SUPPORTED; refragup.go). The path MTU is the
	// kernel's for the flow's socket toward the backend: its route's or
	// link's MTU, or a smaller one learnt from ICMP. Set it when a hop
	// further on is smaller and its ICMP errors do not come back. 0
	// (default): the kernel's alone. Otherwise 576..65535.
	BackendMTU int `mapstructure:"backend_mtu"`
}

func (t TCPConfig) withDefaults(maxClients int) TCPConfig {
	if t.MessageTimeout <= 0 {
		t.MessageTimeout = DefaultTCPMessageTimeout
	}
	if t.IdleTimeout <= 0 {
		t.IdleTimeout = DefaultTCPIdleTimeout
	}
	if t.MaxMessage <= 0 {
		t.MaxMessage = DefaultTCPMaxMessage
	}
	if t.MaxIKEMessage <= 0 {
		t.MaxIKEMessage = DefaultTCPMaxIKEMessage
	}
	if t.MaxConnections <= 0 {
		t.MaxConnections = maxClients
	}
	if t.ConnectionsPerAddress <= 0 {
		t.ConnectionsPerAddress = DefaultTCPConnectionsPerAddress
	}
	if t.SendBuffer <= 0 {
		t.SendBuffer = DefaultTCPSendBuffer
	}
	return t
}

// parseTCP validates proxy.tcp and returns its listen addresses.
func (t TCPConfig) parse() ([]netip.AddrPort, []error) {
	var errs []error
	var out []netip.AddrPort
	for i, l := range t.Listen {
		l = strings.TrimSpace(l)
		if ap, err := netip.ParseAddrPort(l); err == nil {
			out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			continue
		}
		a, err := netip.ParseAddr(strings.Trim(l, "[]"))
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy.tcp.listen[%d] %q: not an address or address:port", i, l))
			continue
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), DefaultTCPPort))
	}
	if t.MaxMessage < tcpMinPayload || t.MaxMessage > DefaultTCPMaxMessage {
		errs = append(errs, fmt.Errorf("proxy.tcp.max_message %d: want %d..%d (RFC 9329's 16-bit Length counts its own 2 bytes)",
			t.MaxMessage, tcpMinPayload, DefaultTCPMaxMessage))
	}
	if t.MaxIKEMessage < ike.HeaderLen || t.MaxIKEMessage > t.MaxMessage-ike.NonESPMarkerLen {
		errs = append(errs, fmt.Errorf("proxy.tcp.max_ike_message %d: want %d..%d (max_message less the non-ESP marker)",
			t.MaxIKEMessage, ike.HeaderLen, t.MaxMessage-ike.NonESPMarkerLen))
	}
	if t.BackendMTU != 0 && (t.BackendMTU < minMTU4 || t.BackendMTU > 65535) {
		errs = append(errs, fmt.Errorf("proxy.tcp.backend_mtu %d: want 0 (the route's) or %d..65535", t.BackendMTU, minMTU4))
	}
	if t.SendBuffer < tcpMaxFrame {
		errs = append(errs, fmt.Errorf("proxy.tcp.send_buffer %d: want at least %d (one whole frame)", t.SendBuffer, tcpMaxFrame))
	}
	return out, errs
}
