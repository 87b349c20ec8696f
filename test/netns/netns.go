// Package netns gives tests a set of network namespaces of their own, joined
// by veth pairs, and removes them in the test's cleanup whatever the
// outcome. Every address a test uses lives inside them. For labs with
// strongSwan peers, see test/lab.
package netns

import (
	"os/exec"
	"strings"
	"testing"

	vnetns "github.com/vishvananda/netns"

	"github.com/ikefrag/ikefrag/netcfg"
)

// Lab is a set of namespaces named Prefix+name.
type Lab struct {
	t      testing.TB
	Prefix string
}

// RequireTools skips the test when a command is missing.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 nftables ethtool)", tool)
		}
	}
}

// New creates the namespaces (removing leftovers of a crashed run with the
// same names first) with their loopback up.
func New(t testing.TB, prefix string, names ...string) *Lab {
	t.Helper()
	RequireTools(t, "ip")
	l := &Lab{t: t, Prefix: prefix}
	for _, n := range names {
		ns := l.NS(n)
		_ = exec.Command("ip", "netns", "del", ns).Run()
		l.Sh("ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		l.In(n, "ip", "link", "set", "lo", "up")
	}
	return l
}

// NS is the full name of namespace name.
func (l *Lab) NS(name string) string { return l.Prefix + name }

// Sh runs a command and fails the test when it fails.
func (l *Lab) Sh(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// In runs a command inside namespace name.
func (l *Lab) In(name string, args ...string) string {
	l.t.Helper()
	return l.Sh(append([]string{"ip", "netns", "exec", l.NS(name)}, args...)...)
}

// Do runs fn on an OS thread switched into namespace name: netlink calls,
// tcx attachment and sockets made there belong to that namespace.
func (l *Lab) Do(name string, fn func()) {
	l.t.Helper()
	target, err := vnetns.GetFromName(l.NS(name))
	if err != nil {
		l.t.Fatalf("namespace %s: %v", name, err)
	}
	defer target.Close()
	if err := netcfg.Do(target, func() error { fn(); return nil }); err != nil {
		l.t.Fatalf("enter namespace %s: %v", name, err)
	}
}

// Veth joins a in namespace na to b in namespace nb, both up.
func (l *Lab) Veth(na, a, nb, b string) {
	l.t.Helper()
	l.Sh("ip", "link", "add", a, "netns", l.NS(na), "type", "veth", "peer", "name", b, "netns", l.NS(nb))
	l.In(na, "ip", "link", "set", a, "up")
	l.In(nb, "ip", "link", "set", b, "up")
}
