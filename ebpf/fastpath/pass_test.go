package fastpath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// rawIP is an IPv4 or IPv6 frame with an arbitrary protocol and payload.
func rawIP(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	if src.Is4() {
		h := make([]byte, 20, 20+len(payload))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
		h[8], h[9] = 64, proto
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		binary.BigEndian.PutUint16(h[10:], ^uint16(sum16(0, h)))
		return ethFrame(0x0800, append(h, payload...))
	}
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = proto, 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return ethFrame(0x86dd, append(h, payload...))
}

// frag6 wraps a UDP datagram in an IPv6 fragment header (first fragment).
func frag6(p udpPacket) []byte {
	u := p.udp()
	body := append([]byte{17, 0, 0, 1, 0, 0, 0, 42}, u...) // offset 0, M set
	return rawIP(p.src.Addr(), p.dst.Addr(), 44, body)
}

// TestPassClasses checks every class that must not be fast-pathed: the
// program returns TC_ACT_UNSPEC, leaves the frame byte for byte as it was,
// and counts the reason once.
func TestPassClasses(t *testing.T) {
	fp := newTestFP(t, Options{})
	mustPut(t, fp, flow4())
	mustPut(t, fp, flow6())
	gone := Flow{Client: netip.MustParseAddrPort("10.201.1.3:40001"), Local: loc4,
		Upstream: netip.MustParseAddrPort("10.201.2.1:51001"), Backend: back4, ClientIfindex: loIfindex, BackendIfindex: 99999}
	mustPut(t, fp, gone)
	esp := espPayload(0x1001, 1, 100)
	ctx := func(off int, v uint32) *skbCtx { return new(skbCtx).set(ctxIngressIfindex, loIfindex).set(off, v) }
	vlan := udpPacket{src: cli4, dst: loc4, payload: esp}.frame()
	vlan = append(append(append([]byte{}, vlan[:12]...), 0x81, 0x00, 0x00, 0x05), vlan[12:]...)
	mcast := udpPacket{src: cli4, dst: loc4, payload: esp}.frame()
	mcast[0] = 0x01
	ipOpt := udpPacket{src: cli4, dst: loc4, payload: esp, ipOptions: []byte{1, 1, 1, 0}} // NOPs, EOL
	arp := ethFrame(0x0806, make([]byte, 28))

	cases := []struct {
		name  string
		frame []byte
		ctx   *skbCtx
		want  PassReason
	}{
		{"IKE up v4", udpPacket{src: cli4, dst: loc4, payload: ikePayload(300)}.frame(), nil, PassIKE},
		{"IKE down v4", udpPacket{src: back4, dst: ups4, payload: ikePayload(1200)}.frame(), nil, PassIKE},
		{"IKE up v6", udpPacket{src: cli6, dst: loc6, payload: ikePayload(300)}.frame(), nil, PassIKE},
		{"IKE down v6", udpPacket{src: back6, dst: ups6, payload: ikePayload(28)}.frame(), nil, PassIKE},
		{"marker alone", udpPacket{src: cli4, dst: loc4, payload: []byte{0, 0, 0, 0}}.frame(), nil, PassIKE},
		{"keepalive v4", udpPacket{src: cli4, dst: loc4, payload: []byte{0xff}}.frame(), nil, PassKeepalive},
		{"keepalive v4 no checksum", udpPacket{src: cli4, dst: loc4, payload: []byte{0xff}, noCsum: true}.frame(), nil, PassKeepalive},
		{"keepalive v6", udpPacket{src: cli6, dst: loc6, payload: []byte{0xff}}.frame(), nil, PassKeepalive},
		{"keepalive from backend", udpPacket{src: back4, dst: ups4, payload: []byte{0xff}}.frame(), nil, PassKeepalive},
		{"one other byte", udpPacket{src: cli4, dst: loc4, payload: []byte{0x01}}.frame(), nil, PassShort},
		{"empty", udpPacket{src: cli4, dst: loc4}.frame(), nil, PassShort},
		{"seven bytes", udpPacket{src: cli6, dst: loc6, payload: []byte{1, 2, 3, 4, 5, 6, 7}}.frame(), nil, PassShort},
		{"v4 first fragment", udpPacket{src: cli4, dst: loc4, payload: esp, mf: true}.frame(), nil, PassFragment},
		{"v4 last fragment", udpPacket{src: cli4, dst: loc4, payload: esp, fragOff: 1480}.frame(), nil, PassFragment},
		{"v6 fragment", frag6(udpPacket{src: cli6, dst: loc6, payload: esp}), nil, PassFragment},
		{"v4 options", ipOpt.frame(), nil, PassIPOptions},
		{"v6 hop-by-hop", udpPacket{src: cli6, dst: loc6, payload: esp, ext6: 0}.frame(), nil, PassUnmapped}, // placeholder, replaced below
		{"unmapped port", udpPacket{src: netip.AddrPortFrom(cli4.Addr(), 40002), dst: loc4, payload: esp}.frame(), nil, PassUnmapped},
		{"unmapped address", udpPacket{src: cli4, dst: netip.MustParseAddrPort("10.201.1.9:4500"), payload: esp}.frame(), nil, PassUnmapped},
		{"reverse of a mapping", udpPacket{src: loc4, dst: cli4, payload: esp}.frame(), nil, PassUnmapped},
		{"unmapped v6", udpPacket{src: back6, dst: netip.AddrPortFrom(ups6.Addr(), 51001), payload: esp}.frame(), nil, PassUnmapped},
		{"v4 TCP", rawIP(cli4.Addr(), loc4.Addr(), 6, make([]byte, 40)), nil, PassNotUDP},
		{"v4 ESP proper", rawIP(cli4.Addr(), loc4.Addr(), 50, esp), nil, PassNotUDP},
		{"v6 ICMPv6", rawIP(cli6.Addr(), loc6.Addr(), 58, make([]byte, 16)), nil, PassNotUDP},
		{"ARP", arp, nil, PassNotIP},
		{"VLAN tag in the frame", vlan, nil, PassNotIP},
		{"multicast MAC", mcast, nil, PassNotIP},
		{"v4 truncated", udpPacket{src: cli4, dst: loc4, payload: esp, truncateIP: 10}.frame(), nil, PassMalformed},
		{"v6 truncated", udpPacket{src: cli6, dst: loc6, payload: esp, truncateIP: 1}.frame(), nil, PassMalformed},
		{"v4 IP header only", udpPacket{src: cli4, dst: loc4, payload: esp}.frame()[:14+20], nil, PassMalformed},
		{"v6 IP header only", udpPacket{src: cli6, dst: loc6, payload: esp}.frame()[:14+40], nil, PassMalformed},
		{"v6 UDP header cut", udpPacket{src: cli6, dst: loc6}.frame()[:14+40+4], nil, PassMalformed},
		{"UDP header cut", udpPacket{src: cli4, dst: loc4}.frame()[:14+20+4], nil, PassMalformed},
		{"UDP length short", udpPacket{src: cli4, dst: loc4, payload: esp, badUDPLen: 50}.frame(), nil, PassMalformed},
		{"UDP length long", udpPacket{src: cli6, dst: loc6, payload: esp, badUDPLen: 200}.frame(), nil, PassMalformed},
		{"wrong interface", udpPacket{src: cli4, dst: loc4, payload: esp}.frame(), ctx(ctxIngressIfindex, 5), PassWrongIface},
		{"GSO", udpPacket{src: back6, dst: ups6, payload: esp}.frame(), ctx(ctxGSOSize, 1000).set(ctxGSOSegs, 2), PassGSO},
		{"egress interface gone", udpPacket{src: netip.MustParseAddrPort("10.201.1.3:40001"), dst: loc4, payload: esp}.frame(), nil, PassNoDevice},
		{"v6 zero checksum", zeroCsum6(udpPacket{src: cli6, dst: loc6, payload: esp}.frame()), nil, PassZeroCsum6},
	}
	// IPv6 with a hop-by-hop header before UDP.
	hbh := udpPacket{src: cli6, dst: loc6, payload: esp}
	hbh.ext6 = 0 // 0 means "none" to the builder; build by hand
	u := hbh.udp()
	cases[16].frame = rawIP(cli6.Addr(), loc6.Addr(), 0, append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, u...))
	cases[16].want = PassIPOptions
	// IPv6 with a fragment header behind a hop-by-hop header: the walk of
	// bpf/ipv6.h finds it, and the stack reassembles.
	cases = append(cases, struct {
		name  string
		frame []byte
		ctx   *skbCtx
		want  PassReason
	}{"v6 fragment behind hop-by-hop", rawIP(cli6.Addr(), loc6.Addr(), 0,
		append([]byte{44, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0, 7}, u...)), nil, PassFragment})

	seen := map[PassReason]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := stats(t, fp)
			in := append([]byte(nil), c.frame...)
			ret, out := run(t, fp, c.frame, c.ctx)
			if ret != tcActUnspec {
				t.Fatalf("returned %#x, want TC_ACT_UNSPEC", ret)
			}
			if !bytes.Equal(out, in) {
				t.Errorf("frame changed")
			}
			after := stats(t, fp)
			for _, r := range PassReasons() {
				want := before.Passed[r]
				if r == c.want {
					want++
				}
				if after.Passed[r] != want {
					t.Errorf("%s: %d → %d", r, before.Passed[r], after.Passed[r])
				}
			}
			if after.Redirected != before.Redirected || after.Dropped != before.Dropped {
				t.Errorf("redirected/dropped moved")
			}
		})
		seen[c.want] = true
	}
	for _, r := range PassReasons() {
		if !seen[r] && r != PassTooBig && r != PassRewriteFail {
			t.Errorf("no case for %s", r)
		}
	}
	// None of it counted as traffic of the flows.
	for _, k := range []FlowKey{flow4().Key(), flow6().Key(), gone.Key()} {
		c, err := fp.Counters(k)
		if err != nil || c.Up.Packets+c.Down.Packets != 0 {
			t.Errorf("%v: %+v %v", k, c, err)
		}
	}
}

func zeroCsum6(f []byte) []byte {
	f[14+40+6], f[14+40+7] = 0, 0
	return f
}
