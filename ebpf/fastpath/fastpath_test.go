package fastpath

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
)

const (
	tcActUnspec   = 0xffffffff // TC_ACT_UNSPEC (-1): go on, untouched
	tcActRedirect = 7          // TC_ACT_REDIRECT
	loIfindex     = 1
)

var (
	cli4  = netip.MustParseAddrPort("10.201.1.2:40001")
	loc4  = netip.MustParseAddrPort("10.201.1.1:4500")
	ups4  = netip.MustParseAddrPort("10.201.2.1:51000")
	back4 = netip.MustParseAddrPort("10.201.2.2:4500")
	cli6  = netip.MustParseAddrPort("[fd00:201:1::2]:40001")
	loc6  = netip.MustParseAddrPort("[fd00:201:1::1]:4500")
	ups6  = netip.MustParseAddrPort("[fd00:201:2::1]:51000")
	back6 = netip.MustParseAddrPort("[fd00:201:2::2]:4500")
)

func flow4() Flow {
	return Flow{Client: cli4, Local: loc4, Upstream: ups4, Backend: back4, ClientIfindex: loIfindex, BackendIfindex: loIfindex}
}

func flow6() Flow {
	return Flow{Client: cli6, Local: loc6, Upstream: ups6, Backend: back6, ClientIfindex: loIfindex, BackendIfindex: loIfindex}
}

// requireBPF skips tests that load programs when the process may not.
func requireBPF(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF and CAP_NET_ADMIN) to load BPF programs")
	}
	kfeattest.Require(t, kfeat.CheckMTU)
}

func newTestFP(t testing.TB, opts Options) *FastPath {
	t.Helper()
	requireBPF(t)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	fp, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { fp.Close() })
	return fp
}

func mustPut(t testing.TB, fp *FastPath, f Flow) {
	t.Helper()
	if err := fp.Put(f); err != nil {
		t.Fatalf("Put %v: %v", f.Key(), err)
	}
}

// run feeds frame to the program as if it arrived on ingress ifindex.
func run(t testing.TB, fp *FastPath, frame []byte, ctx *skbCtx) (uint32, []byte) {
	t.Helper()
	if ctx == nil {
		ctx = new(skbCtx).set(ctxIngressIfindex, loIfindex)
	}
	out := make([]byte, len(frame)+256)
	ret, err := fp.objs.EspFastpath.Run(&ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx[:]})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return ret, out[:len(frame)]
}

func stats(t testing.TB, fp *FastPath) Stats {
	t.Helper()
	s, err := fp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// expectRedirect runs in through the program and checks that it is
// redirected as want: addresses and ports rewritten, TTL, TOS, ID, flags
// and payload unchanged, checksums valid (or a zero IPv4 UDP checksum
// still zero).
func expectRedirect(t *testing.T, fp *FastPath, in udpPacket, wantSrc, wantDst netip.AddrPort) {
	t.Helper()
	frame := in.frame()
	before := stats(t, fp)
	ret, out := run(t, fp, frame, nil)
	if ret != tcActRedirect {
		t.Fatalf("%v → %v: returned %#x, want TC_ACT_REDIRECT; stats %+v", in.src, in.dst, ret, stats(t, fp))
	}
	if got := stats(t, fp).Redirected - before.Redirected; got != 1 {
		t.Errorf("redirect counter moved by %d", got)
	}
	if !bytes.Equal(out[:14], frame[:14]) {
		t.Errorf("Ethernet header changed: the neighbour redirect fills it in, not the program")
	}
	d, err := decode(out)
	if err != nil {
		t.Fatalf("%v → %v: output: %v", in.src, in.dst, err)
	}
	orig, err := decode(frame)
	if err != nil {
		t.Fatalf("input: %v", err)
	}
	if d.src != wantSrc || d.dst != wantDst {
		t.Errorf("rewritten to %v → %v, want %v → %v", d.src, d.dst, wantSrc, wantDst)
	}
	if d.ttl != orig.ttl || d.tos != orig.tos || d.id != orig.id || d.flags != orig.flags {
		t.Errorf("ttl/tos/id/flags %d/%d/%d/%#x, want %d/%d/%d/%#x", d.ttl, d.tos, d.id, d.flags, orig.ttl, orig.tos, orig.id, orig.flags)
	}
	if !bytes.Equal(d.payload, orig.payload) {
		t.Errorf("payload changed")
	}
	if (orig.udpCsum == 0) != (d.udpCsum == 0) {
		t.Errorf("UDP checksum %#04x from %#04x: zero must stay zero, non-zero non-zero", d.udpCsum, orig.udpCsum)
	}
}

func TestRewriteBothDirections(t *testing.T) {
	fp := newTestFP(t, Options{})
	mustPut(t, fp, flow4())
	mustPut(t, fp, flow6())
	for _, c := range []struct {
		name string
		pkt  udpPacket
		src  netip.AddrPort
		dst  netip.AddrPort
	}{
		{"v4 up", udpPacket{src: cli4, dst: loc4, payload: espPayload(0x1001, 1, 100), df: true, tos: 0xb8, id: 77}, ups4, back4},
		{"v4 down", udpPacket{src: back4, dst: ups4, payload: espPayload(0x2002, 1, 100)}, loc4, cli4},
		{"v4 up zero checksum", udpPacket{src: cli4, dst: loc4, payload: espPayload(0x1001, 2, 61), noCsum: true}, ups4, back4},
		{"v4 down zero checksum", udpPacket{src: back4, dst: ups4, payload: espPayload(0x2002, 2, 3), noCsum: true}, loc4, cli4},
		{"v4 odd length", udpPacket{src: cli4, dst: loc4, payload: espPayload(0x1001, 3, 1)}, ups4, back4},
		{"v4 large", udpPacket{src: back4, dst: ups4, payload: espPayload(0xffffffff, 4, 1400), ttl: 1}, loc4, cli4},
		{"v6 up", udpPacket{src: cli6, dst: loc6, payload: espPayload(0x1001, 1, 100), tos: 0x2e}, ups6, back6},
		{"v6 down", udpPacket{src: back6, dst: ups6, payload: espPayload(0x2002, 1, 1200)}, loc6, cli6},
		{"v6 odd length", udpPacket{src: cli6, dst: loc6, payload: espPayload(0x1001, 2, 7)}, ups6, back6},
	} {
		t.Run(c.name, func(t *testing.T) { expectRedirect(t, fp, c.pkt, c.src, c.dst) })
	}
	// Many checksum values: the incremental update must hold for every
	// one, including those that fold to 0x0000/0xffff.
	for seq := uint32(0); seq < 3000; seq++ {
		expectRedirect(t, fp, udpPacket{src: cli4, dst: loc4, payload: espPayload(0x1001, seq, int(seq%40))}, ups4, back4)
		expectRedirect(t, fp, udpPacket{src: back6, dst: ups6, payload: espPayload(0x2002, seq, int(seq%40))}, loc6, cli6)
		if t.Failed() {
			t.Fatalf("seq %d", seq)
		}
	}
}

func TestCountersPerDirection(t *testing.T) {
	fp := newTestFP(t, Options{})
	f := flow4()
	mustPut(t, fp, f)
	start := time.Now()
	for i := 0; i < 5; i++ {
		run(t, fp, udpPacket{src: cli4, dst: loc4, payload: espPayload(1, uint32(i), 92)}.frame(), nil)
	}
	for i := 0; i < 3; i++ {
		run(t, fp, udpPacket{src: back4, dst: ups4, payload: espPayload(2, uint32(i), 192)}.frame(), nil)
	}
	// Not ESP: not counted in the flow.
	run(t, fp, udpPacket{src: cli4, dst: loc4, payload: ikePayload(100)}.frame(), nil)
	run(t, fp, udpPacket{src: cli4, dst: loc4, payload: []byte{0xff}}.frame(), nil)

	c, err := fp.Counters(f.Key())
	if err != nil {
		t.Fatal(err)
	}
	if c.Up.Packets != 5 || c.Up.Bytes != 5*100 || c.Down.Packets != 3 || c.Down.Bytes != 3*200 {
		t.Errorf("counters %+v, want up 5/500 down 3/600", c)
	}
	// The coarse clock lags the fine one by up to a tick (4 ms at HZ=250),
	// more where ticks come late (an emulated guest): measured, not assumed.
	slack := 10*time.Millisecond + coarseLag()
	for _, ts := range []time.Time{c.Up.LastSeen, c.Down.LastSeen, c.Mapped} {
		if ts.Before(start.Add(-slack)) || ts.After(time.Now()) {
			t.Errorf("time %v outside the test's run (%v)", ts, start)
		}
	}
	all, err := fp.All()
	if err != nil || len(all) != 1 || all[0] != c {
		t.Errorf("All = %+v, %v; want [%+v]", all, err, c)
	}
	final, err := fp.Delete(f.Key())
	if err != nil || final != c {
		t.Errorf("Delete = %+v, %v; want %+v", final, err, c)
	}
	if _, err := fp.Counters(f.Key()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Counters after Delete: %v", err)
	}
	ret, _ := run(t, fp, udpPacket{src: cli4, dst: loc4, payload: espPayload(1, 9, 92)}.frame(), nil)
	if ret != tcActUnspec {
		t.Errorf("deleted flow still redirected")
	}
}

// coarseLag is the largest lag of CLOCK_MONOTONIC_COARSE behind
// CLOCK_MONOTONIC seen over a few samples.
func coarseLag() time.Duration {
	var lag time.Duration
	for i := 0; i < 20; i++ {
		fine, coarse := fineNow(), coarseNow()
		if d := time.Duration(fine - coarse); d > lag {
			lag = d
		}
		time.Sleep(time.Millisecond)
	}
	return lag
}
