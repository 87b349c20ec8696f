package fastpath

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestExpire(t *testing.T) {
	fp := newTestFP(t, Options{})
	var offset time.Duration
	fp.clock = func() uint64 { return uint64(int64(coarseNow()) + int64(offset)) }

	idle := flow4()
	idle.Client = netip.MustParseAddrPort("10.201.1.7:40001")
	idle.Upstream = netip.MustParseAddrPort("10.201.2.1:51007")
	downOnly := flow6()
	offset = -time.Hour // mapped an hour ago
	mustPut(t, fp, idle)
	mustPut(t, fp, downOnly)
	offset = 0
	busy := flow4()
	mustPut(t, fp, busy)

	esp := espPayload(9, 1, 50)
	for _, p := range []udpPacket{{src: cli4, dst: loc4, payload: esp}, {src: back6, dst: ups6, payload: esp}} {
		if ret, _ := run(t, fp, p.frame(), nil); ret != tcActRedirect {
			t.Fatalf("not redirected")
		}
	}
	// IKE and keepalives do not keep a mapping alive: only ESP is the
	// fast path's to account for.
	run(t, fp, udpPacket{src: idle.Client, dst: loc4, payload: ikePayload(100)}.frame(), nil)
	run(t, fp, udpPacket{src: idle.Client, dst: loc4, payload: []byte{0xff}}.frame(), nil)

	gone, err := fp.Expire(30 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || gone[0].Key != idle.Key() {
		t.Fatalf("expired %+v, want only %v", gone, idle.Key())
	}
	if ret, _ := run(t, fp, udpPacket{src: idle.Client, dst: loc4, payload: esp}.frame(), nil); ret != tcActUnspec {
		t.Errorf("expired flow still redirected")
	}
	for _, f := range []Flow{busy, downOnly} {
		if _, err := fp.Counters(f.Key()); err != nil {
			t.Errorf("%v: %v", f.Key(), err)
		}
	}
	if ret, _ := run(t, fp, udpPacket{src: cli4, dst: loc4, payload: esp}.frame(), nil); ret != tcActRedirect {
		t.Errorf("busy flow no longer redirected")
	}

	// Two hours later everything is idle.
	offset = 2 * time.Hour
	gone, err = fp.Expire(30 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 2 {
		t.Fatalf("expired %d flows, want 2", len(gone))
	}
	for _, c := range gone {
		if c.Key == busy.Key() && (c.Up.Packets != 2 || c.Up.Bytes != 116) {
			t.Errorf("final counters of %v: %+v", c.Key, c)
		}
		if c.Key == downOnly.Key() && (c.Down.Packets != 1 || c.Up.Packets != 0) {
			t.Errorf("final counters of %v: %+v", c.Key, c)
		}
	}
	s := stats(t, fp)
	if s.Flows != 0 || s.Expired != 3 {
		t.Errorf("stats %+v", s)
	}
	for _, p := range []udpPacket{{src: cli4, dst: loc4, payload: esp}, {src: back6, dst: ups6, payload: esp}} {
		if ret, _ := run(t, fp, p.frame(), nil); ret != tcActUnspec {
			t.Errorf("expired flow still redirected")
		}
	}
	// The map is really empty, not just the loader's index.
	var k fastpathFpKey
	var v fastpathFpFlow
	if it := fp.objs.Flows.Iterate(); it.Next(&k, &v) {
		t.Errorf("map still holds %+v", k)
	}
}

func TestPutErrors(t *testing.T) {
	fp := newTestFP(t, Options{MaxFlows: 2})
	f := flow4()
	mustPut(t, fp, f)
	mustPut(t, fp, f) // the same again: no-op
	if s := stats(t, fp); s.Flows != 1 {
		t.Fatalf("flows %d", s.Flows)
	}

	bad := func(name string, mod func(*Flow), want error) {
		t.Helper()
		g := flow4()
		g.Client = netip.MustParseAddrPort("10.201.1.50:40001")
		g.Upstream = netip.MustParseAddrPort("10.201.2.1:51050")
		mod(&g)
		if err := fp.Put(g); !errors.Is(err, want) {
			t.Errorf("%s: Put = %v, want %v", name, err, want)
		}
	}
	bad("mixed families", func(g *Flow) { g.Backend = back6 }, ErrUnsupported)
	bad("IKE port", func(g *Flow) { g.Local = netip.AddrPortFrom(loc4.Addr(), 500) }, ErrUnsupported)
	bad("IKE port at the backend", func(g *Flow) { g.Backend = netip.AddrPortFrom(back4.Addr(), 500) }, ErrUnsupported)
	bad("zero port", func(g *Flow) { g.Upstream = netip.AddrPortFrom(ups4.Addr(), 0) }, ErrUnsupported)
	bad("wildcard", func(g *Flow) { g.Local = netip.MustParseAddrPort("0.0.0.0:4500") }, ErrUnsupported)
	bad("missing", func(g *Flow) { g.Backend = netip.AddrPort{} }, ErrUnsupported)
	bad("same upstream as another flow", func(g *Flow) { g.Upstream = ups4 }, ErrConflict)
	if s := stats(t, fp); s.PutErrors != 7 || s.MapFull != 0 {
		t.Errorf("stats %+v", s)
	}

	// IPv4-mapped IPv6 addresses are IPv4.
	m := flow4()
	m.Client = netip.MustParseAddrPort("[::ffff:10.201.1.60]:40001")
	m.Upstream = netip.MustParseAddrPort("[::ffff:10.201.2.1]:51060")
	mustPut(t, fp, m)
	if _, err := fp.Counters(FlowKey{Client: netip.MustParseAddrPort("10.201.1.60:40001"), Local: loc4}); err != nil {
		t.Errorf("mapped address not unmapped: %v", err)
	}

	// Full: the third flow is refused, counted, and nothing of it is in
	// the map.
	third := flow6()
	if err := fp.Put(third); !errors.Is(err, ErrMapFull) {
		t.Fatalf("Put into a full map = %v", err)
	}
	if s := stats(t, fp); s.MapFull != 1 || s.Flows != 2 {
		t.Errorf("stats %+v", s)
	}
	if ret, _ := run(t, fp, udpPacket{src: cli6, dst: loc6, payload: espPayload(1, 1, 10)}.frame(), nil); ret != tcActUnspec {
		t.Errorf("refused flow redirected")
	}
	if _, err := fp.Delete(f.Key()); err != nil {
		t.Fatal(err)
	}
	mustPut(t, fp, third)
	if _, err := fp.Delete(f.Key()); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v", err)
	}

	// A changed mapping for the same key replaces the old one.
	moved := m
	moved.Backend = netip.MustParseAddrPort("10.201.2.3:4500")
	mustPut(t, fp, moved)
	if ret, out := run(t, fp, udpPacket{src: unmap(moved.Client), dst: loc4, payload: espPayload(1, 1, 10)}.frame(), nil); ret != tcActRedirect {
		t.Errorf("replaced flow not redirected")
	} else if d, err := decode(out); err != nil || d.dst != moved.Backend {
		t.Errorf("replaced flow sent to %v (%v)", d.dst, err)
	}

	if err := fp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fp.Put(flow4()); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v", err)
	}
}

func TestNilFastPath(t *testing.T) {
	var fp *FastPath
	if err := fp.Put(flow4()); !errors.Is(err, ErrDisabled) {
		t.Errorf("Put = %v", err)
	}
	if _, err := fp.Delete(flow4().Key()); !errors.Is(err, ErrDisabled) {
		t.Errorf("Delete = %v", err)
	}
	if _, err := fp.All(); !errors.Is(err, ErrDisabled) {
		t.Errorf("All = %v", err)
	}
	if _, err := fp.Stats(); err != nil {
		t.Errorf("Stats = %v", err)
	}
	if err := fp.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

func TestOptions(t *testing.T) {
	before := loadFailures.Load()
	for _, o := range []Options{{MaxFlows: -1}, {MaxFlows: 1 << 22}, {AttachMode: "xdp"}} {
		if fp, err := New(o); err == nil {
			fp.Close()
			t.Errorf("New(%+v) accepted", o)
		}
	}
	if got := loadFailures.Load() - before; got != 3 {
		t.Errorf("load failures counted %d, want 3", got)
	}
	if s, _ := (*FastPath)(nil).Stats(); s.LoadFailures < 3 {
		t.Errorf("Stats.LoadFailures = %d", s.LoadFailures)
	}
}

// TestFlowMTU: datagrams above a flow's MTU (the proxy's locked route MTU)
// are left to the proxy; changing the MTU updates the mapping in place and
// keeps its counters.
func TestFlowMTU(t *testing.T) {
	fp := newTestFP(t, Options{})
	f := flow4()
	f.BackendMTU, f.ClientMTU = 1280, 576
	mustPut(t, fp, f)
	up := func(ipLen int) uint32 {
		ret, _ := run(t, fp, udpPacket{src: cli4, dst: loc4, payload: espPayload(1, 1, ipLen-28-8)}.frame(), nil)
		return ret
	}
	down := func(ipLen int) uint32 {
		ret, _ := run(t, fp, udpPacket{src: back4, dst: ups4, payload: espPayload(2, 1, ipLen-28-8)}.frame(), nil)
		return ret
	}
	for _, c := range []struct {
		ret  uint32
		want uint32
		what string
	}{
		{up(1280), tcActRedirect, "up at the MTU"},
		{up(1281), tcActUnspec, "up above the MTU"},
		{down(576), tcActRedirect, "down at the MTU"},
		{down(577), tcActUnspec, "down above the MTU"},
	} {
		if c.ret != c.want {
			t.Errorf("%s: returned %#x, want %#x", c.what, c.ret, c.want)
		}
	}
	if s := stats(t, fp); s.Passed[PassTooBig] != 2 {
		t.Errorf("too_big = %d, want 2", s.Passed[PassTooBig])
	}
	f.BackendMTU, f.ClientMTU = 0, 0
	mustPut(t, fp, f)
	if up(1281) != tcActRedirect || down(577) != tcActRedirect {
		t.Errorf("MTU change not applied")
	}
	c, err := fp.Counters(f.Key())
	if err != nil || c.Up.Packets != 2 || c.Down.Packets != 2 {
		t.Errorf("counters after the in-place update: %+v %v; want 2 each way", c, err)
	}
	bad := f
	bad.ClientMTU = 40
	if err := fp.Put(bad); !errors.Is(err, ErrUnsupported) {
		t.Errorf("MTU 40 accepted: %v", err)
	}
}

// TestSlotReuse: with room for one flow, a new flow gets the counter slots
// of the deleted one, starting from zero.
func TestSlotReuse(t *testing.T) {
	fp := newTestFP(t, Options{MaxFlows: 1})
	mustPut(t, fp, flow4())
	run(t, fp, udpPacket{src: cli4, dst: loc4, payload: espPayload(1, 1, 10)}.frame(), nil)
	if _, err := fp.Delete(flow4().Key()); err != nil {
		t.Fatal(err)
	}
	mustPut(t, fp, flow6())
	c, err := fp.Counters(flow6().Key())
	if err != nil || c.Up.Packets != 0 || !c.Up.LastSeen.IsZero() {
		t.Errorf("reused slot not reset: %+v %v", c, err)
	}
}
