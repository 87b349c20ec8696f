package ebpf

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ikefrag/ikefrag/diag/obs"
)

const tcActUnspec = 0xffffffff // TC_ACT_UNSPEC (-1), also TCX_NEXT

var (
	cli4 = netip.MustParseAddr("10.200.1.2")
	srv4 = netip.MustParseAddr("10.200.2.2")
	cli6 = netip.MustParseAddr("fd00:200:1::2")
	srv6 = netip.MustParseAddr("fd00:200:2::2")
)

// requireBPF skips tests that load programs when the process may not.
func requireBPF(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF and CAP_NET_ADMIN) to load BPF programs")
	}
}

// harness is an observer with one unattached instance on slot 0 whose
// programs are driven with BPF_PROG_TEST_RUN.
type harness struct {
	t       testing.TB
	o       *Observer
	ingress *ebpf.Program
	egress  *ebpf.Program
}

const testIfindex = 7

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	requireBPF(t)
	opts.NoDrops = true
	opts.build = testBuild
	if opts.TrainTimeout == 0 {
		opts.TrainTimeout = time.Hour // sweeps are driven by the test
	}
	o, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	if testBuild != "" && o.Features().Build != testBuild {
		t.Fatalf("observer runs the %s build, want %s", o.Features().Build, testBuild)
	}
	coll, err := o.loadInstance(0, testIfindex, false)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Logf("%+v", ve)
		}
		t.Fatalf("loadInstance: %v", err)
	}
	t.Cleanup(func() { coll.Close() })
	return &harness{t: t, o: o, ingress: coll.Programs[tcProgIkefragIngress], egress: coll.Programs[tcProgIkefragEgress]}
}

func (h *harness) run(frame []byte) {
	h.t.Helper()
	h.runOn(h.ingress, frame)
}

func (h *harness) runOn(p *ebpf.Program, frame []byte) {
	h.t.Helper()
	ret, err := p.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		h.t.Fatalf("run: %v", err)
	}
	if ret != tcActUnspec {
		h.t.Fatalf("program returned %#x, want TC_ACT_UNSPEC: it must never alter traffic", ret)
	}
}

func (h *harness) counters(dir int) DirCounters {
	h.t.Helper()
	var c DirCounters
	h.o.mu.Lock()
	defer h.o.mu.Unlock()
	if err := h.o.readSlot(0, dir, &c); err != nil {
		h.t.Fatal(err)
	}
	return c
}

// expect checks the ingress packet counts of the named counters; every
// counter not named must be zero.
func (h *harness) expect(want map[CounterID]uint64) {
	h.t.Helper()
	c := h.counters(0)
	for id := CounterID(0); id < NumCounters; id++ {
		if c[id].Packets != want[id] {
			h.t.Errorf("counter %s = %d, want %d", id, c[id].Packets, want[id])
		}
	}
}

// records collects n records, failing after a second.
func (h *harness) records(n int) []obs.Record {
	h.t.Helper()
	var out []obs.Record
	deadline := time.After(time.Second)
	for len(out) < n {
		select {
		case r := <-h.o.Records():
			out = append(out, r)
		case <-deadline:
			h.t.Fatalf("got %d records, want %d", len(out), n)
		}
	}
	return out
}

// none checks that no record arrives within a short while.
func (h *harness) none() {
	h.t.Helper()
	select {
	case r := <-h.o.Records():
		h.t.Fatalf("unexpected record %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
}

func ikeV4(sport, dport uint16, payload []byte) []byte {
	return cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, id: 1, df: true}.build(udp(sport, dport, payload)))
}

func TestNonIKETrafficIsIgnored(t *testing.T) {
	h := newHarness(t, Options{})
	tcp := cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 6}.build(make([]byte, 40)))
	dns := cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17}.build(udp(5353, 53, make([]byte, 30))))
	tcp6 := cat(eth(0x86dd), ipv6(cli6, srv6, 6, make([]byte, 40)))
	arp := cat(eth(0x0806), make([]byte, 28))
	ping := cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 1}.build([]byte{8, 0, 0, 0, 0, 1, 0, 1}))
	for _, f := range [][]byte{tcp, dns, tcp6, arp, ping} {
		h.run(f)
	}
	h.expect(nil)
	h.none()
}

func TestIKEv2Datagram(t *testing.T) {
	h := newHarness(t, Options{})
	msg := ike(2, 34, 0, 600)
	frame := ikeV4(500, 500, msg)
	h.run(frame)
	h.expect(map[CounterID]uint64{CounterIKEv2: 1})
	if c := h.counters(0); c[CounterIKEv2].Bytes != uint64(len(frame)-14) {
		t.Errorf("IKEv2 bytes = %d, want the IP length %d", c[CounterIKEv2].Bytes, len(frame)-14)
	}
	d := h.records(1)[0].Datagram
	if d == nil {
		t.Fatal("no datagram record")
	}
	if d.Src != netip.AddrPortFrom(cli4, 500) || d.Dst != netip.AddrPortFrom(srv4, 500) {
		t.Errorf("addresses %v -> %v", d.Src, d.Dst)
	}
	if d.Length != 600 || !bytes.Equal(d.Payload, msg) || d.Truncated || !d.Complete || d.Fragmented() {
		t.Errorf("datagram length %d payload %d truncated %v complete %v frags %d", d.Length, len(d.Payload), d.Truncated, d.Complete, len(d.Frags))
	}
	if d.IPVersion != 4 || d.Proto != 17 || !d.DF || d.Source.Ifindex != testIfindex || d.Source.Dir != obs.DirIngress {
		t.Errorf("datagram header fields %+v", d)
	}
	if time.Since(d.Time) > time.Minute || time.Since(d.Time) < 0 {
		t.Errorf("time %v is not now", d.Time)
	}
}

func TestEgressCountsSeparately(t *testing.T) {
	h := newHarness(t, Options{})
	h.runOn(h.egress, ikeV4(500, 500, ike(2, 34, 0, 300)))
	if c := h.counters(1); c[CounterIKEv2].Packets != 1 {
		t.Errorf("egress IKEv2 = %d", c[CounterIKEv2].Packets)
	}
	h.expect(nil)
	if d := h.records(1)[0].Datagram; d == nil || d.Source.Dir != obs.DirEgress {
		t.Fatalf("record %+v", d)
	}
}

func TestIKEv1AndIPv6AndVLAN(t *testing.T) {
	h := newHarness(t, Options{})
	v1 := ikeV4(500, 500, ike(1, 2, 0, 200))
	six := cat(eth(0x86dd), ipv6(cli6, srv6, 17, udp(500, 500, ike(2, 34, 0, 300))))
	// Hop-by-hop and destination options before UDP.
	sixExt := cat(eth(0x86dd), ipv6(cli6, srv6, 0, ext6(60, ext6(17, udp(500, 500, ike(2, 35, 1, 300))))))
	q := cat(eth(0x0800, vlanTag{tpidQ, 10}), v4{src: cli4, dst: srv4, proto: 17}.build(udp(500, 500, ike(2, 34, 0, 100))))
	qinq := cat(eth(0x86dd, vlanTag{tpidAD, 100}, vlanTag{tpidQ, 10}), ipv6(cli6, srv6, 17, udp(4500, 4500, cat([]byte{0, 0, 0, 0}, ike(2, 36, 2, 100)))))
	opts := cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, options: []byte{1, 1, 1, 0, 1, 1, 1, 0}}.build(udp(500, 500, ike(2, 34, 0, 100))))
	for _, f := range [][]byte{v1, six, sixExt, q, qinq, opts} {
		h.run(f)
	}
	h.expect(map[CounterID]uint64{CounterIKEv1: 1, CounterIKEv2: 5})
	recs := h.records(6)
	wantLen := []int{200, 300, 300, 100, 104, 100}
	for i, r := range recs {
		if r.Datagram == nil || r.Datagram.Length != wantLen[i] || len(r.Datagram.Payload) != wantLen[i] {
			t.Errorf("record %d: %+v", i, r.Datagram)
		}
	}
	if d := recs[1].Datagram; d.IPVersion != 6 || d.Src.Addr() != cli6 {
		t.Errorf("IPv6 record %v %v", d.IPVersion, d.Src)
	}
	if d := recs[4].Datagram; !bytes.Equal(d.Payload[:4], []byte{0, 0, 0, 0}) || d.Dst.Port() != 4500 {
		t.Errorf("NAT-T record payload %x port %d", d.Payload[:8], d.Dst.Port())
	}
}

func TestNATTSubclasses(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(ikeV4(4500, 4500, []byte{0xff}))                                    // keepalive
	h.run(ikeV4(4500, 4500, cat([]byte{0, 0, 0x10, 0x01}, make([]byte, 96)))) // ESP, SPI 0x1001
	h.run(ikeV4(4500, 4500, cat([]byte{0, 0, 0, 0}, ike(2, 35, 1, 400))))     // IKE
	h.run(ikeV4(4500, 4500, []byte{1, 2}))                                    // too short for anything
	h.run(ikeV4(4500, 4500, cat([]byte{0, 0, 0, 0}, make([]byte, 10))))       // marker but no IKE header
	h.run(ikeV4(500, 500, ike(3, 34, 0, 100)))                                // unknown IKE major version
	h.expect(map[CounterID]uint64{CounterKeepalive: 1, CounterESPInUDP: 1, CounterIKEv2: 1, CounterOtherUDP: 3})
	d := h.records(1)[0].Datagram
	if d.Length != 404 || d.Payload[4+18] != 35 {
		t.Errorf("NAT-T IKE record length %d", d.Length)
	}
	h.none() // ESP and keepalives never reach user space
}

func TestCaptureTruncationAndLargeCounter(t *testing.T) {
	h := newHarness(t, Options{CaptureBytes: 256, LargeIKE: 1000})
	h.run(ikeV4(500, 500, ike(2, 35, 1, 1400)))
	h.run(ikeV4(500, 500, ike(2, 35, 1, 900)))
	h.expect(map[CounterID]uint64{CounterIKEv2: 2, CounterLargeIKE: 1})
	recs := h.records(2)
	if d := recs[0].Datagram; len(d.Payload) != 256 || !d.Truncated || d.Length != 1400 {
		t.Errorf("truncated record: %d bytes, truncated %v, length %d", len(d.Payload), d.Truncated, d.Length)
	}
}

func TestMalformed(t *testing.T) {
	h := newHarness(t, Options{})
	good := v4{src: cli4, dst: srv4, proto: 17}
	cases := map[string][]byte{
		"udp length beyond packet": cat(eth(0x0800), good.build(func() []byte {
			u := udp(500, 500, ike(2, 34, 0, 100))
			u[4], u[5] = 0x10, 0
			return u
		}())),
		"udp length below header": cat(eth(0x0800), good.build(func() []byte {
			u := udp(500, 500, ike(2, 34, 0, 100))
			u[4], u[5] = 0, 4
			return u
		}())),
		"ip total length beyond frame": cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, totLen: 2000}.build(udp(500, 500, ike(2, 34, 0, 100)))),
		"ihl below 5":                  cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, ihl: 3}.build(udp(500, 500, ike(2, 34, 0, 100)))),
		"header length beyond total":   cat(eth(0x0800), v4{src: cli4, dst: srv4, proto: 17, ihl: 15, totLen: 40}.build(udp(500, 500, ike(2, 34, 0, 100)))),
		"ipv6 fragment header cut off": func() []byte {
			b := cat(eth(0x86dd), ipv6(cli6, srv6, 44, []byte{17, 0, 0}))
			return b
		}(),
		"ipv6 payload beyond frame": func() []byte {
			b := cat(eth(0x86dd), ipv6(cli6, srv6, 17, udp(500, 500, ike(2, 34, 0, 100))))
			b[14+4] = 0x40
			return b
		}(),
		"udp header cut off": cat(eth(0x0800), good.build([]byte{1, 244, 1})),
	}
	for name, f := range cases {
		before := h.counters(0)[CounterMalformed].Packets
		h.run(f)
		if after := h.counters(0)[CounterMalformed].Packets; after != before+1 {
			t.Errorf("%s: malformed %d -> %d", name, before, after)
		}
	}
	h.none()
}

func TestIPv6ExtensionChainLimit(t *testing.T) {
	h := newHarness(t, Options{})
	p := udp(500, 500, ike(2, 34, 0, 100))
	nh := uint8(17)
	for i := 0; i < 7; i++ {
		p = ext6(nh, p)
		nh = 60
	}
	h.run(cat(eth(0x86dd), ipv6(cli6, srv6, nh, p)))
	h.expect(map[CounterID]uint64{CounterExtHdrLimit: 1})
}

func TestICMPTooBig(t *testing.T) {
	h := newHarness(t, Options{})
	router := netip.MustParseAddr("10.200.1.1")
	orig := v4{src: srv4, dst: cli4, proto: 17, df: true, totLen: 1500}.build(udp(4500, 4500, cat([]byte{0, 0, 0, 0}, ike(2, 35, 1, 40))))[:28]
	icmp := cat([]byte{3, 4, 0, 0, 0, 0, 0x05, 0x00}, orig) // MTU 1280
	h.run(cat(eth(0x0800), v4{src: router, dst: srv4, proto: 1}.build(icmp)))
	// About other traffic: counted nowhere, not reported.
	origTCP := v4{src: srv4, dst: cli4, proto: 6, df: true}.build(make([]byte, 8))
	h.run(cat(eth(0x0800), v4{src: router, dst: srv4, proto: 1}.build(cat([]byte{3, 4, 0, 0, 0, 0, 0x05, 0x00}, origTCP))))
	// IPv6 packet too big.
	orig6 := ipv6(srv6, cli6, 17, udp(500, 500, ike(2, 35, 1, 40)))
	h.run(cat(eth(0x86dd), ipv6(netip.MustParseAddr("fd00:200:1::1"), srv6, 58, cat([]byte{2, 0, 0, 0, 0, 0, 0x05, 0x00}, orig6))))
	h.expect(map[CounterID]uint64{CounterICMPTooBig: 2})
	recs := h.records(2)
	tb := recs[0].TooBig
	if tb == nil || tb.MTU != 1280 || tb.From != router || tb.To != srv4 || tb.OrigSrc != srv4 || tb.OrigDst != cli4 || tb.OrigDstPort != 4500 || tb.OrigProto != 17 {
		t.Errorf("too big v4: %+v", tb)
	}
	if tb6 := recs[1].TooBig; tb6 == nil || tb6.MTU != 1280 || tb6.OrigSrc != srv6 || tb6.OrigSrcPort != 500 {
		t.Errorf("too big v6: %+v", tb6)
	}
}

func TestRingBufferFullIsCounted(t *testing.T) {
	h := newHarness(t, Options{RingBufferSize: os.Getpagesize()})
	// Stop consuming so the ring fills.
	h.o.rd.Close()
	for i := 0; i < 20; i++ {
		h.run(ikeV4(500, 500, ike(2, 34, 0, 1000)))
	}
	c := h.counters(0)
	if c[CounterIKEv2].Packets != 20 || c[CounterRingbufFail].Packets == 0 {
		t.Errorf("ikev2 %d, ringbuf failures %d", c[CounterIKEv2].Packets, c[CounterRingbufFail].Packets)
	}
}

// testBuild is the program build newHarness loads ("" lets the probe
// choose); TestCompatBuild sets it. The harness tests are not parallel.
var testBuild Build

// The compat build (kernels without fetching atomics) runs the same
// BPF_PROG_TEST_RUN tests on whatever kernel this is, so that it is tested
// where the default build is too, not only on old kernels.
func TestCompatBuild(t *testing.T) {
	requireBPF(t)
	testBuild = BuildCompat
	defer func() { testBuild = "" }()
	for _, c := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"NonIKETrafficIsIgnored", TestNonIKETrafficIsIgnored},
		{"IKEv2Datagram", TestIKEv2Datagram},
		{"EgressCountsSeparately", TestEgressCountsSeparately},
		{"IKEv1AndIPv6AndVLAN", TestIKEv1AndIPv6AndVLAN},
		{"NATTSubclasses", TestNATTSubclasses},
		{"CaptureTruncationAndLargeCounter", TestCaptureTruncationAndLargeCounter},
		{"Malformed", TestMalformed},
		{"IPv6ExtensionChainLimit", TestIPv6ExtensionChainLimit},
		{"ICMPTooBig", TestICMPTooBig},
		{"RingBufferFullIsCounted", TestRingBufferFullIsCounted},
		{"FragmentTrainsEveryOrder", TestFragmentTrainsEveryOrder},
		{"FragmentTrainsIPv6", TestFragmentTrainsIPv6},
		{"FragmentDuplicatesOverlapsAndLate", TestFragmentDuplicatesOverlapsAndLate},
		{"FragmentBogus", TestFragmentBogus},
		{"FragmentsOfOtherTraffic", TestFragmentsOfOtherTraffic},
		{"IncompleteTrains", TestIncompleteTrains},
	} {
		t.Run(c.name, c.fn)
	}
}
