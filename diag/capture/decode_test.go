package capture

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/test/packet"
)

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDecodeStackedVLAN builds Ethernet / 802.1ad / 802.1Q / IPv4 / UDP with
// gopacket's serializer and decodes it.
func TestDecodeStackedVLAN(t *testing.T) {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, Id: 0x1234,
		Flags: layers.IPv4DontFragment, SrcIP: net.IP(addrA.AsSlice()), DstIP: net.IP(addrB.AsSlice())}
	udp := &layers.UDP{SrcPort: 4500, DstPort: 4500}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	frame := serialize(t,
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: 0x88a8},
		&layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload([]byte("hello, world")))
	p, err := DecodeFrame(layers.LinkTypeEthernet, frame, ciFor(frame, t0))
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != 4 || p.Src != addrA || p.Dst != addrB || p.IPID != 0x1234 || !p.DF || p.Fragment ||
		p.SrcPort != 4500 || p.DstPort != 4500 || p.IPLen != 20+8+12 || p.PayloadLen != 20 || string(p.Payload[8:]) != "hello, world" {
		t.Errorf("decoded %+v", p)
	}
	if !p.Time.Equal(t0) || p.Dir != obs.DirUnknown || p.Ifindex != 0 {
		t.Errorf("time/source %v %+v", p.Time, p.Source)
	}

	// Five tags are more than the walk allows.
	deep := append([]byte{}, frame[:12]...)
	for range 5 {
		deep = append(deep, 0x81, 0x00, 0x00, 0x01)
	}
	deep = append(deep, frame[20:]...)
	if _, err := DecodeFrame(layers.LinkTypeEthernet, deep, ciFor(deep, t0)); err != ReasonVLANDepth {
		t.Errorf("5 tags: %v", err)
	}
}

// TestDecodeIPv6Serialized decodes gopacket-built IPv6 with a Hop-by-Hop
// header in front of UDP.
func TestDecodeIPv6Serialized(t *testing.T) {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6HopByHop,
		SrcIP: net.IP(addr6A.AsSlice()), DstIP: net.IP(addr6B.AsSlice())}
	hbh := &layers.IPv6HopByHop{}
	hbh.NextHeader = layers.IPProtocolUDP
	hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 5, OptionData: []byte{0, 0}}, {OptionType: 1, OptionData: []byte{}}} // Router Alert, PadN
	udp := &layers.UDP{SrcPort: 500, DstPort: 500}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	b := serialize(t, ip, hbh, udp, gopacket.Payload(make([]byte, 100)))
	p, err := DecodeFrame(layers.LinkTypeRaw, b, ciFor(b, t0))
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != 6 || p.Proto != 17 || p.SrcPort != 500 || p.PayloadLen != 108 || len(p.Payload) != 108 || p.IPLen != len(b) {
		t.Errorf("decoded %+v", p)
	}
}

func TestDecodeIPv4Cases(t *testing.T) {
	udp := packet.UDPBytes(500, 500, pattern(40, 1), 0)
	base := packet.IPv4{Src: addrA, Dst: addrB, ID: 7, Proto: 17, Payload: udp}

	t.Run("options", func(t *testing.T) {
		h := base
		h.Options = []byte{0x94, 0x04, 0, 0, 1, 1, 1, 0} // Router Alert, NOPs, EOL
		b := h.Bytes()
		p := rawPacket(t, b, t0, 1)
		if p.IPLen != 28+48 || p.PayloadLen != 48 || p.SrcPort != 500 || p.Payload[8] != udp[8] {
			t.Errorf("decoded %+v", p)
		}
	})
	t.Run("ethernet padding", func(t *testing.T) {
		h := base
		h.Payload = packet.UDPBytes(4500, 4500, []byte{0xff}, 0) // NAT-keepalive
		ip := h.Bytes()
		frame := append(make([]byte, 14), ip...)
		binary.BigEndian.PutUint16(frame[12:], 0x0800)
		frame = append(frame, make([]byte, 60-len(frame))...) // pad to minimum
		p, err := DecodeFrame(layers.LinkTypeEthernet, frame, ciFor(frame, t0))
		if err != nil || len(p.Payload) != 9 || p.Snapped {
			t.Errorf("padding kept: %v %d", err, len(p.Payload))
		}
	})
	t.Run("snapped", func(t *testing.T) {
		b := base.Bytes()
		ci := gopacket.CaptureInfo{CaptureLength: 36, Length: len(b)}
		p, err := DecodeFrame(layers.LinkTypeRaw, b[:36], ci)
		if err != nil || !p.Snapped || len(p.Payload) != 16 || p.PayloadLen != 48 || p.SrcPort != 500 {
			t.Errorf("snapped: %v %+v", err, p)
		}
		// Snapped inside the IP header, and inside the UDP header.
		if _, err := DecodeFrame(layers.LinkTypeRaw, b[:16], gopacket.CaptureInfo{CaptureLength: 16, Length: len(b)}); err != ReasonSnapped {
			t.Errorf("snapped in IP header: %v", err)
		}
		if _, err := DecodeFrame(layers.LinkTypeRaw, b[:24], gopacket.CaptureInfo{CaptureLength: 24, Length: len(b)}); err != ReasonSnapped {
			t.Errorf("snapped in UDP header: %v", err)
		}
	})
	bad := []struct {
		name string
		mod  func(b []byte) []byte
		want Reason
	}{
		{"IHL 4", func(b []byte) []byte { b[0] = 0x44; return b }, ReasonIPHeader},
		{"short", func(b []byte) []byte { return b[:19] }, ReasonIPHeader},
		{"total below IHL", func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 19); return b }, ReasonIPLength},
		{"total beyond frame", func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], uint16(len(b)+1)); return b }, ReasonIPLength},
		{"options beyond total", func(b []byte) []byte { b[0] = 0x4f; binary.BigEndian.PutUint16(b[2:], 40); return b }, ReasonIPLength},
		{"version 5", func(b []byte) []byte { b[0] = 0x55; return b }, ReasonIPVersion},
		{"UDP length 7", func(b []byte) []byte { binary.BigEndian.PutUint16(b[24:], 7); return b }, ReasonUDPLength},
		{"UDP length past IP", func(b []byte) []byte { binary.BigEndian.PutUint16(b[24:], 49); return b }, ReasonUDPLength},
		{"UDP header cut", func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 26); return b[:26] }, ReasonUDPHeader},
		{"MF with 7 bytes", func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[6:], 0x2000|1)
			binary.BigEndian.PutUint16(b[2:], 27)
			return b[:27]
		}, ReasonFragLength},
		{"fragment past 64 KiB", func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], 0x1fff); return b }, ReasonFragOverflow},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			b := c.mod(base.Bytes())
			_, err := DecodeFrame(layers.LinkTypeRaw, b, ciFor(b, t0))
			if err != c.want {
				t.Errorf("got %v, want %v", err, c.want)
			}
			var r Reason
			if !errors.As(err, &r) || !r.Malformed() {
				t.Errorf("error %v is not a malformed Reason", err)
			}
		})
	}

	t.Run("tiny first fragment", func(t *testing.T) {
		h := base
		h.MF = true
		h.Payload = udp[:0] // no data at all: MF with 0 bytes is a multiple of 8
		p := rawPacket(t, h.Bytes(), t0, 1)
		if !p.Fragment || !p.IsFirstFragment() || p.SrcPort != 0 {
			t.Errorf("decoded %+v", p)
		}
	})
}

func TestDecodeIPv6Cases(t *testing.T) {
	udp := packet.UDPBytes(500, 4500, pattern(24, 2), 0)
	t.Run("chain", func(t *testing.T) {
		// Hop-by-Hop, Routing (type 4, segments left 0), Destination
		// Options, AH, then UDP.
		rt := packet.OptionsHeader(protoDestOpts, 0)
		rt[2], rt[3] = 4, 0
		ah := make([]byte, 24) // 96-bit ICV: Payload Len = 24/4 - 2 = 4
		ah[0], ah[1] = protoUDP, 4
		b := packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoHopByHop,
			Ext: packet.Cat(packet.OptionsHeader(protoRouting, 0), rt, packet.OptionsHeader(protoAH, 1), ah), Payload: udp}.Bytes()
		p := rawPacket(t, b, t0, 1)
		if p.Proto != 17 || p.SrcPort != 500 || p.DstPort != 4500 || p.PayloadLen != len(udp) || p.Fragment {
			t.Errorf("decoded %+v", p)
		}
	})
	t.Run("ESP stops the walk", func(t *testing.T) {
		b := packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoDestOpts, Ext: packet.OptionsHeader(protoESP, 0), Payload: pattern(32, 3)}.Bytes()
		p := rawPacket(t, b, t0, 1)
		if p.Proto != protoESP || p.PayloadLen != 32 {
			t.Errorf("decoded %+v", p)
		}
	})
	t.Run("fragment", func(t *testing.T) {
		b := packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment, Ext: packet.FragmentHeader(protoUDP, 1448, true, 0xdeadbeef), Payload: pattern(16, 4)}.Bytes()
		p := rawPacket(t, b, t0, 1)
		if !p.Fragment || p.FragOffset != 1448 || !p.MF || p.IPID != 0xdeadbeef || p.Proto != 17 || p.SrcPort != 0 || p.PayloadLen != 16 {
			t.Errorf("decoded %+v", p)
		}
	})
	t.Run("first fragment with options after it", func(t *testing.T) {
		b := packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment, Ext: packet.FragmentHeader(protoDestOpts, 0, true, 9),
			Payload: packet.Cat(packet.OptionsHeader(protoUDP, 0), udp[:16])}.Bytes()
		p := rawPacket(t, b, t0, 1)
		// Payload starts after the Fragment header; Proto names what is there.
		if !p.IsFirstFragment() || p.Proto != protoDestOpts || p.PayloadLen != 24 {
			t.Errorf("decoded %+v", p)
		}
	})
	t.Run("atomic fragment", func(t *testing.T) {
		b := packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment, Ext: packet.FragmentHeader(protoUDP, 0, false, 77), Payload: udp}.Bytes()
		p := rawPacket(t, b, t0, 1)
		if p.Fragment || p.IPID != 77 || p.SrcPort != 500 {
			t.Errorf("decoded %+v", p)
		}
	})
	bad := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"hop-by-hop not first", packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoDestOpts, Ext: packet.Cat(packet.OptionsHeader(protoHopByHop, 0), packet.OptionsHeader(protoUDP, 0)), Payload: udp}.Bytes(), ReasonIPv6ExtHeader},
		{"header past payload", packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoDestOpts, Ext: packet.OptionsHeader(protoUDP, 0)[:4]}.Bytes(), ReasonIPv6ExtHeader},
		{"too many headers", packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoDestOpts, Ext: packet.Cat(
			packet.OptionsHeader(protoDestOpts, 0), packet.OptionsHeader(protoDestOpts, 0), packet.OptionsHeader(protoDestOpts, 0), packet.OptionsHeader(protoDestOpts, 0),
			packet.OptionsHeader(protoDestOpts, 0), packet.OptionsHeader(protoDestOpts, 0), packet.OptionsHeader(protoDestOpts, 0), packet.OptionsHeader(protoDestOpts, 0),
			packet.OptionsHeader(protoUDP, 0)), Payload: udp}.Bytes(), ReasonIPv6ExtHeader},
		{"jumbogram", packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoHopByHop}.Bytes(), ReasonJumbogram},
		{"short", packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoUDP}.Bytes()[:39], ReasonIPHeader},
		{"fragment 7 bytes with MF", packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment, Ext: packet.FragmentHeader(protoUDP, 8, true, 1), Payload: make([]byte, 7)}.Bytes(), ReasonFragLength},
		{"fragment past 64 KiB", packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment, Ext: packet.FragmentHeader(protoUDP, 65528, false, 1), Payload: make([]byte, 16)}.Bytes(), ReasonFragOverflow},
		{"UDP in 4 bytes", packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoUDP, Payload: udp[:4]}.Bytes(), ReasonUDPHeader},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			if _, err := DecodeFrame(layers.LinkTypeRaw, c.b, ciFor(c.b, t0)); err != c.want {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
}

// TestDecodeLinkTypes wraps one IPv4 and one IPv6 packet in every link
// layer the decoder supports.
func TestDecodeLinkTypes(t *testing.T) {
	ip4 := packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17, Payload: packet.UDPBytes(500, 500, pattern(8, 5), 0)}.Bytes()
	ip6 := packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: 17, Payload: packet.UDPBytes(500, 500, pattern(8, 5), 0)}.Bytes()
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	sll := func(pkttype uint16, proto uint16) []byte {
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[0:], pkttype)
		binary.BigEndian.PutUint16(h[2:], 1)
		binary.BigEndian.PutUint16(h[4:], 6)
		binary.BigEndian.PutUint16(h[14:], proto)
		return h
	}
	sll2 := func(proto uint16, ifindex uint32, pkttype byte) []byte {
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], proto)
		binary.BigEndian.PutUint32(h[4:], ifindex)
		binary.BigEndian.PutUint16(h[8:], 1)
		h[10] = pkttype
		h[11] = 6
		return h
	}
	cases := []struct {
		name    string
		lt      layers.LinkType
		frame   []byte
		ver     uint8
		ifindex int
		dir     obs.Direction
		err     Reason
	}{
		{"null LE v4", layers.LinkTypeNull, packet.Cat(le32(2), ip4), 4, 0, 0, 0},
		{"null BE v4", layers.LinkTypeNull, packet.Cat(be32(2), ip4), 4, 0, 0, 0},
		{"null LE packet.IPv6 FreeBSD", layers.LinkTypeNull, packet.Cat(le32(28), ip6), 6, 0, 0, 0},
		{"null LE packet.IPv6 Darwin", layers.LinkTypeNull, packet.Cat(le32(30), ip6), 6, 0, 0, 0},
		{"null unknown family", layers.LinkTypeNull, packet.Cat(le32(7), ip4), 0, 0, 0, ReasonLinkFamily},
		{"null short", layers.LinkTypeNull, []byte{2, 0}, 0, 0, 0, ReasonLinkHeader},
		{"loop v6", layers.LinkTypeLoop, packet.Cat(be32(24), ip6), 6, 0, 0, 0},
		{"loop LE rejected", layers.LinkTypeLoop, packet.Cat(le32(2), ip4), 0, 0, 0, ReasonLinkFamily},
		{"raw 101 v6", layers.LinkTypeRaw, ip6, 6, 0, 0, 0},
		{"raw 12 v4", 12, ip4, 4, 0, 0, 0},
		{"raw 14 v6", 14, ip6, 6, 0, 0, 0},
		{"12 as OpenBSD loop", 12, packet.Cat(be32(2), ip4), 4, 0, 0, 0},
		{"ipv4 228", layers.LinkTypeIPv4, ip4, 4, 0, 0, 0},
		{"ipv4 228 holding v6", layers.LinkTypeIPv4, ip6, 0, 0, 0, ReasonIPVersion},
		{"ipv6 229", layers.LinkTypeIPv6, ip6, 6, 0, 0, 0},
		{"sll host v4", layers.LinkTypeLinuxSLL, packet.Cat(sll(0, 0x0800), ip4), 4, 0, obs.DirIngress, 0},
		{"sll outgoing v6", layers.LinkTypeLinuxSLL, packet.Cat(sll(4, 0x86dd), ip6), 6, 0, obs.DirEgress, 0},
		{"sll vlan", layers.LinkTypeLinuxSLL, packet.Cat(sll(0, 0x8100), []byte{0, 5, 0x08, 0x00}, ip4), 4, 0, obs.DirIngress, 0},
		{"sll arp", layers.LinkTypeLinuxSLL, packet.Cat(sll(1, 0x0806), make([]byte, 28)), 0, 0, 0, ReasonNotIP},
		{"sll2 in", layers.LinkTypeLinuxSLL2, packet.Cat(sll2(0x0800, 2, 0), ip4), 4, 2, obs.DirIngress, 0},
		{"sll2 out", layers.LinkTypeLinuxSLL2, packet.Cat(sll2(0x86dd, 7, 4), ip6), 6, 7, obs.DirEgress, 0},
		{"sll2 short", layers.LinkTypeLinuxSLL2, sll2(0x0800, 2, 0)[:19], 0, 0, 0, ReasonLinkHeader},
		{"ethernet packet.IPv6 claims v4", layers.LinkTypeEthernet, packet.Cat(make([]byte, 12), []byte{0x08, 0x00}, ip6), 0, 0, 0, ReasonIPVersion},
		{"ethernet 802.3 length", layers.LinkTypeEthernet, packet.Cat(make([]byte, 12), []byte{0x00, 0x40}, ip4), 0, 0, 0, ReasonNotIP},
		{"ethernet short", layers.LinkTypeEthernet, make([]byte, 13), 0, 0, 0, ReasonLinkHeader},
		{"802.11", layers.LinkTypeIEEE802_11, ip4, 0, 0, 0, ReasonLinkType},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := DecodeFrame(c.lt, c.frame, ciFor(c.frame, t0))
			if c.err != 0 {
				if err != c.err {
					t.Errorf("err %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Version != c.ver || p.Ifindex != c.ifindex || p.Dir != c.dir || p.SrcPort != 500 {
				t.Errorf("version %d ifindex %d dir %v ports %d", p.Version, p.Ifindex, p.Dir, p.SrcPort)
			}
		})
	}
}

// TestTooBig parses ICMPv4 fragmentation-needed and ICMPv6 packet-too-big
// messages quoting an IKE packet.
func TestTooBig(t *testing.T) {
	router := netip.MustParseAddr("203.0.113.1")
	orig := packet.IPv4{Src: addrA, Dst: addrB, ID: 9, Proto: 17, DF: true, Payload: packet.UDPBytes(4500, 4500, pattern(1464, 6), 0)}.Bytes()
	icmp := make([]byte, 8)
	icmp[0], icmp[1] = 3, 4
	binary.BigEndian.PutUint16(icmp[6:], 1280)
	b := packet.IPv4{Src: router, Dst: addrA, Proto: 1, Payload: packet.Cat(icmp, orig[:28])}.Bytes()
	d := NewDefragmenter(DefragOptions{}).Add(ptr(rawPacket(t, b, t0, 5)), nil)
	tb, ok := TooBig(d[0])
	if !ok || tb.MTU != 1280 || tb.From != router || tb.To != addrA || tb.OrigSrc != addrA || tb.OrigDst != addrB ||
		tb.OrigProto != 17 || tb.OrigSrcPort != 4500 || tb.OrigDstPort != 4500 || tb.Frame != 5 || !tb.Time.Equal(t0) {
		t.Errorf("v4: %v %+v", ok, tb)
	}
	// Code 1 (host unreachable) is not a too-big message.
	b[20+1] = 1
	d = NewDefragmenter(DefragOptions{}).Add(ptr(rawPacket(t, b, t0, 5)), nil)
	if _, ok := TooBig(d[0]); ok {
		t.Error("host unreachable taken for fragmentation needed")
	}

	// ICMPv6: the quoted packet is a non-first fragment, so no ports.
	router6 := netip.MustParseAddr("2001:db8:ffff::1")
	orig6 := packet.IPv6{Src: addr6A, Dst: addr6B, NextHeader: protoFragment, Ext: packet.FragmentHeader(protoUDP, 1232, true, 3), Payload: pattern(64, 7)}.Bytes()
	icmp6 := make([]byte, 8)
	icmp6[0] = 2
	binary.BigEndian.PutUint32(icmp6[4:], 1400)
	b6 := packet.IPv6{Src: router6, Dst: addr6A, NextHeader: protoICMPv6, Payload: packet.Cat(icmp6, orig6)}.Bytes()
	d = NewDefragmenter(DefragOptions{}).Add(ptr(rawPacket(t, b6, t0, 6)), nil)
	tb, ok = TooBig(d[0])
	if !ok || tb.MTU != 1400 || tb.From != router6 || tb.OrigSrc != addr6A || tb.OrigDst != addr6B || tb.OrigProto != 17 || tb.OrigSrcPort != 0 {
		t.Errorf("v6: %v %+v", ok, tb)
	}
	// A quote cut inside the IP header still gives the MTU.
	b6 = packet.IPv6{Src: router6, Dst: addr6A, NextHeader: protoICMPv6, Payload: packet.Cat(icmp6, orig6[:30])}.Bytes()
	d = NewDefragmenter(DefragOptions{}).Add(ptr(rawPacket(t, b6, t0, 6)), nil)
	if tb, ok = TooBig(d[0]); !ok || tb.MTU != 1400 || tb.OrigSrc.IsValid() {
		t.Errorf("short quote: %v %+v", ok, tb)
	}
}

func ptr[T any](v T) *T { return &v }

// TestDecodeAllocs: decoding a frame allocates nothing.
func TestDecodeAllocs(t *testing.T) {
	b := packet.IPv4{Src: addrA, Dst: addrB, Proto: 17, Payload: packet.UDPBytes(500, 500, pattern(100, 1), 0)}.Bytes()
	ci := ciFor(b, t0)
	n := testing.AllocsPerRun(100, func() {
		if _, err := DecodeFrame(layers.LinkTypeRaw, b, ci); err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeFrame(layers.LinkTypeRaw, b[:10], ci); err == nil {
			t.Fatal("no error")
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per decode", n)
	}
}
