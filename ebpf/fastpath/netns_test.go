package fastpath

import (
	"fmt"
	"os"
	"testing"

	"github.com/ikefrag/ikefrag/test/netns"
)

// lab is a set of network namespaces made by one test and removed by its
// cleanup, whatever the outcome (test/netns); traffic stays inside them.
type lab struct {
	*netns.Lab
	t testing.TB
}

func newLab(t testing.TB, names ...string) *lab {
	t.Helper()
	requireBPF(t)
	netns.RequireTools(t, "ip")
	return &lab{Lab: netns.New(t, fmt.Sprintf("ikfp%d-", os.Getpid()%100000), names...), t: t}
}

func (l *lab) ns(name string) string                 { return l.NS(name) }
func (l *lab) in(name string, args ...string) string { return l.In(name, args...) }
func (l *lab) do(name string, fn func())             { l.Do(name, fn) }
func (l *lab) veth(na, a, nb, b string)              { l.Veth(na, a, nb, b) }

// proxyLab builds cli ── px ── bk: the client and the backend each share
// a /24 (and a /64) with one side of the proxy namespace, which does not
// forward. Returns the lab; interfaces are c0 | pc, pb | b0.
func proxyLab(t testing.TB) *lab {
	l := newLab(t, "cli", "px", "bk")
	l.veth("cli", "c0", "px", "pc")
	l.veth("px", "pb", "bk", "b0")
	for _, a := range []struct{ ns, dev, v4, v6 string }{
		{"cli", "c0", "10.201.1.2/24", "fd00:201:1::2/64"},
		{"px", "pc", "10.201.1.1/24", "fd00:201:1::1/64"},
		{"px", "pb", "10.201.2.1/24", "fd00:201:2::1/64"},
		{"bk", "b0", "10.201.2.2/24", "fd00:201:2::2/64"},
	} {
		l.in(a.ns, "ip", "addr", "add", a.v4, "dev", a.dev)
		l.in(a.ns, "ip", "-6", "addr", "add", a.v6, "dev", a.dev, "nodad")
	}
	// The proxy namespace is no router: whatever reaches the other side
	// was relayed by the fast path (or by a relay the test runs).
	l.in("px", "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward; echo 0 > /proc/sys/net/ipv6/conf/all/forwarding")
	return l
}
