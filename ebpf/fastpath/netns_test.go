package fastpath

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// lab is a set of network namespaces made by one test and deleted by its
// cleanup whatever the outcome; every address used lives inside them.
type lab struct {
	t      testing.TB
	prefix string
}

func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 nftables ethtool)", tool)
		}
	}
}

func newLab(t testing.TB, names ...string) *lab {
	t.Helper()
	requireBPF(t)
	requireTools(t, "ip")
	l := &lab{t: t, prefix: fmt.Sprintf("ikfp%d-", os.Getpid()%100000)}
	for _, n := range names {
		ns := l.ns(n)
		_ = exec.Command("ip", "netns", "del", ns).Run() // a crashed run's leftover
		l.sh("ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		l.in(n, "ip", "link", "set", "lo", "up")
	}
	return l
}

func (l *lab) ns(name string) string { return l.prefix + name }

func (l *lab) sh(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// in runs a command inside namespace name.
func (l *lab) in(name string, args ...string) string {
	l.t.Helper()
	return l.sh(append([]string{"ip", "netns", "exec", l.ns(name)}, args...)...)
}

// do runs fn on an OS thread switched into namespace name: sockets,
// netlink calls and New made there belong to that namespace.
func (l *lab) do(name string, fn func()) {
	l.t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(l.ns(name))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		defer func() {
			// A thread that cannot go back stays locked and dies with
			// this goroutine.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			errc <- nil
		}()
		fn()
	}()
	if err := <-errc; err != nil {
		l.t.Fatalf("enter namespace %s: %v", name, err)
	}
}

// veth joins a in namespace na to b in namespace nb.
func (l *lab) veth(na, a, nb, b string) {
	l.t.Helper()
	l.sh("ip", "link", "add", a, "netns", l.ns(na), "type", "veth", "peer", "name", b, "netns", l.ns(nb))
	l.in(na, "ip", "link", "set", a, "up")
	l.in(nb, "ip", "link", "set", b, "up")
}

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
