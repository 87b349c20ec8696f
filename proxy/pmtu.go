package proxy

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// PMTU sources, from the strongest evidence to the weakest.
const (
	SourceICMP         = "icmp"         // ICMP fragmentation needed / packet too big on a client-facing socket
	SourceStepDown     = "step-down"    // the client retransmitted a request whose re-fragmented response was lost
	SourceOverride     = "override"     // proxy.pmtu_overrides
	SourceFragments    = "fragments"    // the client's datagrams arrived in IP fragments of this size (its own MTU)
	SourceObserver     = "observer"     // the diagnosis engine's estimate, asked through Deps.Peer
	SourceUnfragmented = "unfragmented" // the largest unfragmented datagram from the client
	SourceDefault      = "default"      // proxy.pmtu_default
)

// Minimum MTUs: IPv4 hosts must reassemble 576-byte datagrams (RFC 791),
// IPv6 links carry 1280 (RFC 8200). Estimates never go below them.
const (
	minMTU4 = 576
	minMTU6 = 1280
)

// stepLadder is the sequence of sizes a step-down walks, as RFC 7383
// §2.5.2 suggests: common tunnel and minimum MTUs.
var stepLadder = []int{1500, 1400, 1280, 1000, 576}

// nextRung returns the largest ladder size below mtu, floored at the
// family minimum; ok is false when mtu is already there.
func nextRung(ladder []int, mtu int, v6 bool) (int, bool) {
	floor := minMTU4
	if v6 {
		floor = minMTU6
	}
	for _, r := range ladder {
		if r < mtu && r >= floor {
			return r, true
		}
	}
	return floor, mtu > floor
}

// evidence is one timed PMTU value.
type evidence struct {
	v  int
	at time.Time
}

func (e *evidence) get(now time.Time, ttl time.Duration) int {
	if e.v == 0 || now.Sub(e.at) > ttl {
		return 0
	}
	return e.v
}

func (e *evidence) setMin(v int, now time.Time, ttl time.Duration) bool {
	if cur := e.get(now, ttl); cur != 0 && cur <= v {
		e.at = now
		return false
	}
	e.v, e.at = v, now
	return true
}

func (e *evidence) setMax(v int, now time.Time, ttl time.Duration) {
	if cur := e.get(now, ttl); cur >= v {
		return
	}
	e.v, e.at = v, now
}

// clientPMTU is the path-MTU knowledge about one client address.
type clientPMTU struct {
	mu        sync.Mutex
	icmp      evidence
	icmpFrom  netip.Addr
	stepDown  evidence
	frags     evidence // largest IP fragment received (IP_RECVFRAGSIZE)
	unfrag    evidence // largest unfragmented datagram received
	observer  evidence
	stepDowns int
}

// PMTUInfo is a client's path MTU with where it comes from.
type PMTUInfo struct {
	MTU    int    `json:"mtu"`
	Source string `json:"source"`
	// Evidence values (0: none or expired).
	ICMP         int       `json:"icmp,omitempty"`
	StepDown     int       `json:"step_down,omitempty"`
	Override     int       `json:"override,omitempty"`
	Fragments    int       `json:"fragments,omitempty"`
	Observer     int       `json:"observer,omitempty"`
	Unfragmented int       `json:"unfragmented,omitempty"`
	Updated      time.Time `json:"updated,omitzero"`
}

// estimate combines the evidence (see Config.PMTUOverrides and the package
// documentation): the override or the observed client MTU is the base,
// without either the larger of the default and the biggest datagram the
// client got through; ICMP and step-down only ever lower it.
func (c *clientPMTU) estimate(s *settings, a netip.Addr, now time.Time) PMTUInfo {
	ttl := s.PMTUExpiry
	c.mu.Lock()
	in := PMTUInfo{
		ICMP: c.icmp.get(now, ttl), StepDown: c.stepDown.get(now, ttl), Fragments: c.frags.get(now, ttl),
		Observer: c.observer.get(now, ttl), Unfragmented: c.unfrag.get(now, ttl),
	}
	for _, e := range []*evidence{&c.icmp, &c.stepDown, &c.frags, &c.observer, &c.unfrag} {
		if e.v != 0 && e.at.After(in.Updated) {
			in.Updated = e.at
		}
	}
	c.mu.Unlock()
	if o, ok := s.override(a); ok {
		in.Override = o
		in.MTU, in.Source = o, SourceOverride
	} else {
		switch {
		case in.Fragments > 0 && (in.Observer == 0 || in.Fragments <= in.Observer):
			in.MTU, in.Source = in.Fragments, SourceFragments
		case in.Observer > 0:
			in.MTU, in.Source = in.Observer, SourceObserver
		case in.Unfragmented > s.PMTUDefault:
			in.MTU, in.Source = in.Unfragmented, SourceUnfragmented
		default:
			in.MTU, in.Source = s.PMTUDefault, SourceDefault
		}
	}
	if in.StepDown > 0 && in.StepDown < in.MTU {
		in.MTU, in.Source = in.StepDown, SourceStepDown
	}
	if in.ICMP > 0 && in.ICMP < in.MTU {
		in.MTU, in.Source = in.ICMP, SourceICMP
	}
	floor := minMTU4
	if a.Is6() {
		floor = minMTU6
	}
	if in.MTU < floor {
		in.MTU = floor
	}
	return in
}

// expired reports whether no evidence is left.
func (c *clientPMTU) expired(now time.Time, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range []*evidence{&c.icmp, &c.stepDown, &c.frags, &c.observer, &c.unfrag} {
		if e.get(now, ttl) != 0 {
			return false
		}
	}
	return true
}

// CanonicalOverrides rewrites a proxy.pmtu_overrides value in the one form
// the documentation gives for a list, []any of {prefix, mtu} maps, most
// specific prefix first, identical entries once. A map, a list and the
// nested maps viper makes of a map's dotted keys (sometimes keeping the
// joined key beside them) that give the same prefixes the same MTUs all
// come out equal, so a reload of an unchanged file changes nothing. An
// empty value gives nil; an unreadable one gives the error Validate
// reports.
func CanonicalOverrides(v any) (any, error) {
	ps, err := parseOverrides(v)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, nil
	}
	// The order parseOverrides gives (longest prefix first), and the MTU
	// for a prefix given twice, so that equal inputs give equal outputs.
	slices.SortFunc(ps, func(a, b prefixMTU) int {
		return cmp.Or(cmp.Compare(b.Prefix.Bits(), a.Prefix.Bits()),
			cmp.Compare(a.Prefix.String(), b.Prefix.String()), cmp.Compare(a.MTU, b.MTU))
	})
	ps = slices.Compact(ps)
	out := make([]any, len(ps))
	for i, p := range ps {
		out[i] = map[string]any{"prefix": p.Prefix.String(), "mtu": p.MTU}
	}
	return out, nil
}
