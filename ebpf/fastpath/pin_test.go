package fastpath

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
	"github.com/ikefrag/ikefrag/netcfg"
)

// bpffsDir mounts a BPF file system of the test's own on a temporary
// directory (the host may have none at /sys/fs/bpf) and returns a pin
// path inside it.
func bpffsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Skipf("cannot mount a BPF file system: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir + "/fastpath"
}

// TestPinnedSurvivesRestart: with Options.PinPath the fast path keeps
// relaying a mapped flow after its owner closes it (as across a daemon
// restart or SIGKILL); the next run takes the maps over, a flow it puts
// again keeps its counters, and a flow it does not is released.
func TestPinnedSurvivesRestart(t *testing.T) {
	for _, c := range []struct {
		name string
		mode netcfg.TCMode
	}{{"tcx", netcfg.TCX}, {"tc", netcfg.TCLegacy}} {
		t.Run(c.name, func(t *testing.T) {
			if c.mode == netcfg.TCX {
				kfeattest.Require(t, kfeat.TCX)
			}
			runPinned(t, c.mode)
		})
	}
}

func runPinned(t *testing.T, mode netcfg.TCMode) {
	l := proxyLab(t)
	pin := bpffsDir(t)
	a := labAddrs(false)
	open := func() *FastPath {
		var fp *FastPath
		var err error
		l.do("px", func() {
			fp, err = New(Options{AttachMode: mode, PinPath: pin, MaxFlows: 64, Logger: slog.New(slog.DiscardHandler)})
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, ifc := range []string{"pc", "pb"} {
			if err := fp.Attach(ifc); err != nil {
				t.Fatal(err)
			}
		}
		return fp
	}
	t.Cleanup(func() { l.do("px", func() { _ = RemovePinned(pin) }) })

	listen := l.listen("px", netip.AddrPortFrom(a.pc, 4500))
	back := l.listen("bk", netip.AddrPortFrom(a.bk, 4500))
	type leg struct {
		f   Flow
		cl  *net.UDPConn
		up  *net.UDPConn
		spi uint32
	}
	var legs [2]leg
	for i := range legs {
		up := l.listen("px", netip.AddrPortFrom(a.pb, 0))
		cl := l.listen("cli", netip.AddrPortFrom(a.cli, 0))
		legs[i] = leg{f: Flow{Client: localAP(cl), Local: localAP(listen), Upstream: localAP(up), Backend: localAP(back)},
			cl: cl, up: up, spi: 0xc0de0100 + uint32(i)}
	}
	seq := uint32(0)
	// crosses sends n ESP datagrams of leg g each way and checks both
	// arrive through the fast path (the proxy namespace does not route).
	crosses := func(g leg, n int) {
		t.Helper()
		var sent [][]byte
		for i := 0; i < n; i++ {
			seq++
			sent = append(sent, espPayload(g.spi, seq, 100))
		}
		send(t, g.cl, g.f.Local, sent...)
		for _, d := range recvN(t, back, n, "backend") {
			if d.from != g.f.Upstream {
				t.Fatalf("backend got ESP from %v, want the upstream %v", d.from, g.f.Upstream)
			}
		}
		send(t, back, g.f.Upstream, sent...)
		for _, d := range recvN(t, g.cl, n, "client") {
			if d.from != g.f.Local {
				t.Fatalf("client got ESP from %v, want %v", d.from, g.f.Local)
			}
		}
	}

	fp1 := open()
	for _, g := range legs {
		mustPut(t, fp1, g.f)
		crosses(g, 5)
	}
	if err := fp1.Close(); err != nil {
		t.Fatal(err)
	}
	// the owner is gone: both flows are still relayed by the kernel
	for _, g := range legs {
		crosses(g, 5)
	}

	fp2 := open()
	defer fp2.Close()
	if n := fp2.Inherited(); n != 4 {
		t.Fatalf("Inherited() = %d map entries, want 4 (two flows, two directions)", n)
	}
	mustPut(t, fp2, legs[0].f)
	c, err := fp2.Counters(legs[0].f.Key())
	if err != nil {
		t.Fatal(err)
	}
	if c.Up.Packets != 10 || c.Down.Packets != 10 {
		t.Errorf("re-put flow counters up %d down %d, want 10 and 10 (kept from the first run)", c.Up.Packets, c.Down.Packets)
	}
	n, err := fp2.ReleaseInherited()
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("ReleaseInherited removed %d entries, want 2 (the flow not put again)", n)
	}
	crosses(legs[0], 5)
	// the released flow now reaches the proxy's own sockets
	send(t, legs[1].cl, legs[1].f.Local, espPayload(legs[1].spi, 999, 100))
	recvN(t, listen, 1, "proxy listen socket (released flow)")
	expectNothing(t, back, 100*time.Millisecond, "backend (released flow)")

	// fp2 keeps its pins on Close; RemovePinned stops the fast path
	if err := fp2.Close(); err != nil {
		t.Fatal(err)
	}
	crosses(legs[0], 2)
	var rerr error
	l.do("px", func() { rerr = RemovePinned(pin) })
	if rerr != nil {
		t.Fatal(rerr)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Errorf("pin path still there after RemovePinned: %v", err)
	}
	send(t, legs[0].cl, legs[0].f.Local, espPayload(legs[0].spi, 1000, 100))
	recvN(t, listen, 1, "proxy listen socket (after RemovePinned)")
	expectNothing(t, back, 100*time.Millisecond, "backend (after RemovePinned)")
}
