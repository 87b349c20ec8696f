package ebpf

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// lab is a set of network namespaces made by one test and removed by its
// cleanup, whatever the outcome. Traffic stays inside them.
type lab struct {
	t      *testing.T
	prefix string
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 nftables)", tool)
		}
	}
}

func newLab(t *testing.T, names ...string) *lab {
	t.Helper()
	requireBPF(t)
	requireTools(t, "ip", "nft")
	l := &lab{t: t, prefix: fmt.Sprintf("ikf%d-", os.Getpid()%100000)}
	for _, n := range names {
		ns := l.ns(n)
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

// do runs fn on an OS thread switched into namespace name: netlink calls,
// tcx attachment and sockets made there belong to that namespace.
func (l *lab) do(name string, fn func()) {
	l.t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: if restoring its namespace fails it
		// must die with the goroutine rather than serve other code.
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

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
