package fastpath

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	obsebpf "github.com/ikefrag/ikefrag/ebpf"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
	"github.com/ikefrag/ikefrag/netcfg"
)

// TestWithObserver: the observer and the fast path on the same interface,
// the observer attached first. The observer still counts the ESP the fast
// path takes away, each side's removal leaves the other in place, and the
// observer's stale-filter cleanup does not remove the fast path's filter.
func TestWithObserver(t *testing.T) {
	for _, mode := range []netcfg.TCMode{netcfg.TCX, netcfg.TCLegacy} {
		t.Run(string(mode), func(t *testing.T) { runWithObserver(t, mode) })
	}
}

func runWithObserver(t *testing.T, mode netcfg.TCMode) {
	if mode == netcfg.TCX {
		kfeattest.Require(t, kfeat.TCX)
	}
	l := proxyLab(t)
	a := labAddrs(false)
	o, err := obsebpf.New(obsebpf.Options{AttachMode: mode, NoDrops: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var fp *FastPath
	l.do("px", func() {
		if err = o.Attach("pc"); err != nil {
			return
		}
		fp, err = New(Options{AttachMode: mode, Logger: slog.New(slog.DiscardHandler)})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	for _, ifc := range []string{"pc", "pb"} {
		if err := fp.Attach(ifc); err != nil {
			t.Fatal(err)
		}
	}
	// An observer attaching after us (a restart) removes only its own
	// stale filters.
	l.do("px", func() { err = o.Attach("pb") })
	if err != nil {
		t.Fatal(err)
	}

	listen := l.listen("px", netip.AddrPortFrom(a.pc, 4500))
	up := l.listen("px", netip.AddrPortFrom(a.pb, 0))
	back := l.listen("bk", netip.AddrPortFrom(a.bk, 4500))
	cl := l.listen("cli", netip.AddrPortFrom(a.cli, 0))
	f := Flow{Client: localAP(cl), Local: localAP(listen), Upstream: localAP(up), Backend: localAP(back)}
	if err := fp.Put(f); err != nil {
		t.Fatal(err)
	}
	const n = 40
	var ps [][]byte
	for i := 0; i < n; i++ {
		ps = append(ps, espPayload(0xc0de0002, uint32(i+1), 200))
	}
	send(t, cl, f.Local, ps...)
	recvN(t, back, n, "backend")
	expectNothing(t, listen, 50*time.Millisecond, "proxy listen socket")

	snap, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var espIn uint64
	for _, ic := range snap.Interfaces {
		if ic.Name == "pc" {
			espIn = ic.Ingress[obsebpf.CounterESPInUDP].Packets
		}
	}
	if espIn != n {
		t.Errorf("observer counted %d ESP datagrams on pc ingress, want %d", espIn, n)
	}
	// The observer attached to pb after the fast path still sees the
	// backend's ESP before it is redirected: it runs first (tcx head, or
	// tc priority 1) whatever the order of attachment.
	send(t, back, f.Upstream, ps...)
	recvN(t, cl, n, "client")
	snap, err = o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, ic := range snap.Interfaces {
		if ic.Name == "pb" && ic.Ingress[obsebpf.CounterESPInUDP].Packets != n {
			t.Errorf("observer counted %d ESP datagrams on pb ingress, want %d", ic.Ingress[obsebpf.CounterESPInUDP].Packets, n)
		}
	}
	if mode == netcfg.TCLegacy {
		var names []string
		l.do("px", func() {
			ln, _ := netcfg.LinkByName("pb")
			names, _ = netcfg.BPFFilters(ln, netcfg.Ingress)
		})
		if !slices.Contains(names, FilterPrefix+"-ingress") || !slices.Contains(names, obsebpf.FilterPrefix+"-ingress") {
			t.Errorf("filters on pb ingress: %v", names)
		}
	}

	// The fast path goes; the observer stays and still sees ESP, which now
	// reaches the proxy's socket.
	if err := fp.Close(); err != nil {
		t.Fatal(err)
	}
	send(t, cl, f.Local, ps[0])
	recvN(t, listen, 1, "proxy listen socket after Close")
	snap, _ = o.Counters()
	for _, ic := range snap.Interfaces {
		if ic.Name == "pc" && ic.Ingress[obsebpf.CounterESPInUDP].Packets != n+1 {
			t.Errorf("observer after the fast path closed: %d ESP datagrams", ic.Ingress[obsebpf.CounterESPInUDP].Packets)
		}
	}
}
