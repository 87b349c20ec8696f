package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// FlowKey names a flow as the proxy's flow table does: the client's
// address and port as its datagrams arrive, and the proxy's address and
// port they are sent to.
type FlowKey struct {
	Client netip.AddrPort
	Local  netip.AddrPort
}

func (k FlowKey) String() string { return k.Client.String() + "→" + k.Local.String() }

// Flow is one client flow and the upstream flow carrying it, both
// directions:
//
//	client ⇄ Client ── Local [proxy] Upstream ── Backend ⇄ VPN server
//
// A datagram from Client to Local leaves as Upstream → Backend, one from
// Backend to Upstream leaves as Local → Client. All four addresses are of
// one family; IPv4-mapped IPv6 addresses are taken as IPv4.
type Flow struct {
	Client   netip.AddrPort // the client (after any NAT on its path)
	Local    netip.AddrPort // the proxy's address and NAT-T port the client sends to (not a wildcard)
	Upstream netip.AddrPort // the local address and port of the proxy's upstream socket
	Backend  netip.AddrPort // the backend's NAT-T address and port
	// ClientIfindex is the interface toward the client: the egress of the
	// backend → client direction and the interface client datagrams are
	// expected on. 0: taken from the routing table at Put.
	ClientIfindex int
	// BackendIfindex is the same toward the backend.
	BackendIfindex int
	// ClientMTU is the largest IP packet (header included) the proxy's
	// socket would send toward the client unfragmented: the client's
	// route MTU when the proxy has locked one (route_mtu). Larger ESP
	// datagrams are left to the proxy, whose socket fragments them there.
	// 0: the egress interface's MTU only.
	ClientMTU int
	// BackendMTU is the same toward the backend.
	BackendMTU int
}

// sameTuples reports whether f and g rewrite the same addresses and
// ports (they may differ in interfaces and MTUs).
func (f Flow) sameTuples(g Flow) bool {
	return f.Client == g.Client && f.Local == g.Local && f.Upstream == g.Upstream && f.Backend == g.Backend
}

// Key is the flow's FlowKey.
func (f Flow) Key() FlowKey { return FlowKey{Client: f.Client, Local: f.Local} }

// DirCounters count what the fast path relayed in one direction.
type DirCounters struct {
	Packets  uint64    // ESP datagrams
	Bytes    uint64    // their UDP payload bytes, as the proxy counts its own
	LastSeen time.Time // the last one (a few ms resolution); zero when none
}

// FlowCounters are a flow's counters.
type FlowCounters struct {
	Key    FlowKey
	Up     DirCounters // client → backend
	Down   DirCounters // backend → client
	Mapped time.Time   // when Put installed the mapping
}

// LastSeen is the time of the last datagram either way, or of the Put
// when there was none: the time idleness counts from.
func (c FlowCounters) LastSeen() time.Time {
	t := c.Mapped
	for _, d := range []time.Time{c.Up.LastSeen, c.Down.LastSeen} {
		if d.After(t) {
			t = d
		}
	}
	return t
}

// Errors of Put, Delete and Counters. Every one leaves the flow to the
// user-space relay.
var (
	// ErrDisabled is returned by a nil *FastPath.
	ErrDisabled = errors.New("fastpath: not loaded")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("fastpath: closed")
	// ErrMapFull: MaxFlows flows are mapped.
	ErrMapFull = errors.New("fastpath: flow map is full")
	// ErrUnsupported: a flow the program cannot relay (mixed address
	// families, the IKE port, a local destination, ...).
	ErrUnsupported = errors.New("fastpath: flow not supported")
	// ErrConflict: one direction of the flow is already mapped by
	// another flow.
	ErrConflict = errors.New("fastpath: conflicting mapping")
	// ErrNotFound: the flow is not mapped.
	ErrNotFound = errors.New("fastpath: flow not mapped")
)

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func (f Flow) normalize() Flow {
	f.Client, f.Local, f.Upstream, f.Backend = unmap(f.Client), unmap(f.Local), unmap(f.Upstream), unmap(f.Backend)
	return f
}

func (k FlowKey) normalize() FlowKey {
	return FlowKey{Client: unmap(k.Client), Local: unmap(k.Local)}
}

// check validates a normalized flow.
func (f Flow) check(ikePort uint16) error {
	aps := []netip.AddrPort{f.Client, f.Local, f.Upstream, f.Backend}
	for _, a := range aps {
		if !a.IsValid() || a.Port() == 0 {
			return fmt.Errorf("%w: address %v is incomplete", ErrUnsupported, a)
		}
		if a.Addr().Zone() != "" {
			return fmt.Errorf("%w: address %v has a zone", ErrUnsupported, a)
		}
		if a.Addr().IsUnspecified() || a.Addr().IsMulticast() {
			return fmt.Errorf("%w: address %v is not unicast", ErrUnsupported, a)
		}
		if a.Addr().Is4() != f.Client.Addr().Is4() {
			return fmt.Errorf("%w: mixed address families", ErrUnsupported)
		}
	}
	if f.Local.Port() == ikePort || f.Backend.Port() == ikePort {
		return fmt.Errorf("%w: port %d is the IKE port, where IKE has no non-ESP marker", ErrUnsupported, ikePort)
	}
	if f.Client == f.Backend && f.Local == f.Upstream {
		return fmt.Errorf("%w: both directions have the same key", ErrUnsupported)
	}
	if f.ClientIfindex < 0 || f.BackendIfindex < 0 {
		return fmt.Errorf("%w: negative interface index", ErrUnsupported)
	}
	minMTU := 68
	if f.Client.Addr().Is6() {
		minMTU = 1280
	}
	for _, m := range []int{f.ClientMTU, f.BackendMTU} {
		if m != 0 && (m < minMTU || m > 65535) {
			return fmt.Errorf("%w: MTU %d outside %d..65535", ErrUnsupported, m, minMTU)
		}
	}
	return nil
}

// be16 returns the value whose in-memory bytes are v in network order.
func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func addrBytes(a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}

// mapKey is the key of datagrams from src to dst.
func mapKey(src, dst netip.AddrPort) fastpathFpKey {
	k := fastpathFpKey{Family: 6, Sport: be16(src.Port()), Dport: be16(dst.Port())}
	if src.Addr().Is4() {
		k.Family = 4
	}
	copy(k.Saddr[:], addrBytes(src.Addr()))
	copy(k.Daddr[:], addrBytes(dst.Addr()))
	return k
}

// mapValue is the rewrite of datagrams from src to dst into datagrams from
// nsrc to ndst of at most mtu bytes, sent out of ifindex, arriving on
// inIfindex, counted in slot.
func mapValue(src, dst, nsrc, ndst netip.AddrPort, ifindex, inIfindex, mtu int, slot uint32) fastpathFpFlow {
	oldA := append(addrBytes(src.Addr()), addrBytes(dst.Addr())...)
	newA := append(addrBytes(nsrc.Addr()), addrBytes(ndst.Addr())...)
	oldP := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, src.Port()), dst.Port())
	newP := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, nsrc.Port()), ndst.Port())
	v := fastpathFpFlow{
		Ifindex:   uint32(ifindex),
		InIfindex: uint32(inIfindex),
		CsumAddr:  csumDiff(oldA, newA),
		CsumPort:  csumDiff(oldP, newP),
		Slot:      slot,
		Mtu:       uint16(mtu),
	}
	copy(v.Hdr[:], append(newA, newP...))
	return v
}

// csumDiff is the one's complement difference that turns a checksum over
// old into one over new (RFC 1624: sum of new words and complemented old
// words), folded to 16 bits and laid out in memory the way the kernel's
// checksum helpers add it. One's complement sums do not depend on byte
// order, so the big-endian sum only needs its two bytes read natively.
func csumDiff(old, new []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(new); i += 2 {
		s += uint32(binary.BigEndian.Uint16(new[i:]))
		s += uint32(^binary.BigEndian.Uint16(old[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint32(be16(uint16(s)))
}
