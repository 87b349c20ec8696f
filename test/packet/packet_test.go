package packet

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

var (
	a4 = netip.MustParseAddr("192.0.2.1")
	b4 = netip.MustParseAddr("198.51.100.2")
	a6 = netip.MustParseAddr("2001:db8::1")
	b6 = netip.MustParseAddr("2001:db8::2")
)

// verifyIPv4 decodes an IPv4 packet and checks its header checksum.
func verifyIPv4(t *testing.T, b []byte) *layers.IPv4 {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	if err := p.ErrorLayer(); err != nil {
		t.Fatalf("decode: %v", err.Error())
	}
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if fold(sum(0, b[:ip.IHL*4])) != 0xffff {
		t.Errorf("IPv4 header checksum %#04x does not verify", ip.Checksum)
	}
	return ip
}

func TestIPv4UDPChecksums(t *testing.T) {
	payload := []byte("an IKE message, or close enough")
	u := UDP{SrcPort: 500, DstPort: 4500, Payload: payload, Src: a4, Dst: b4}.Bytes()
	b := IPv4{Src: a4, Dst: b4, ID: 7, Proto: ProtoUDP, DF: true, Payload: u}.Bytes()
	ip := verifyIPv4(t, b)
	if ip.SrcIP.String() != a4.String() || ip.DstIP.String() != b4.String() || ip.Id != 7 || ip.Flags != layers.IPv4DontFragment || int(ip.Length) != len(b) {
		t.Errorf("header %+v", ip)
	}
	p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if udp.SrcPort != 500 || udp.DstPort != 4500 || !bytes.Equal(udp.Payload, payload) {
		t.Errorf("UDP %+v", udp)
	}
	// The UDP checksum over the pseudo-header verifies (sums to 0xffff).
	if got := fold(sum(pseudo(a4, b4, ProtoUDP, len(u)), u)); got != 0xffff {
		t.Errorf("UDP checksum does not verify: %#04x", got)
	}
	// A wrong length field is written as given.
	if bad := UDPBytes(1, 2, payload, 3); bad[5] != 3 {
		t.Errorf("length override lost: % x", bad[:8])
	}
}

// A TCP segment decodes with its fields, and its checksum over the
// pseudo-header verifies, over IPv4 and IPv6.
func TestTCPSegment(t *testing.T) {
	payload := []byte("IKETCP\x00\x08\x00\x00\x00\x00ab")
	for _, c := range []struct{ src, dst netip.Addr }{{a4, b4}, {a6, b6}} {
		seg := TCP{SrcPort: 40001, DstPort: 4500, Seq: 1000, Ack: 77, Flags: TCPACK | TCPPSH, Payload: payload, Src: c.src, Dst: c.dst}.Bytes()
		if got := fold(sum(pseudo(c.src, c.dst, ProtoTCP, len(seg)), seg)); got != 0xffff {
			t.Errorf("%s: TCP checksum does not verify: %#04x", c.src, got)
		}
		p := gopacket.NewPacket(seg, layers.LayerTypeTCP, gopacket.Default)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil || tcp.SrcPort != 40001 || tcp.DstPort != 4500 || tcp.Seq != 1000 || tcp.Ack != 77 || !tcp.ACK || !tcp.PSH || tcp.SYN ||
			tcp.DataOffset != 5 || tcp.Window != 65535 || !bytes.Equal(tcp.Payload, payload) {
			t.Errorf("%s: TCP %+v", c.src, tcp)
		}
	}
}

// Fragments cover the datagram exactly, in 8-byte units, each within mtu.
func TestUDPPacketsFragments(t *testing.T) {
	payload := bytes.Repeat([]byte{0xab}, 3000)
	for _, c := range []struct {
		src, dst netip.Addr
		mtu      int
	}{{a4, b4, 1280}, {a4, b4, 576}, {a6, b6, 1280}} {
		ps := UDPPackets(netip.AddrPortFrom(c.src, 500), netip.AddrPortFrom(c.dst, 500), 0x1234, payload, c.mtu)
		if len(ps) < 3 {
			t.Fatalf("%v mtu %d: %d packets", c.src, c.mtu, len(ps))
		}
		var l4 []byte
		for i, p := range ps {
			at := len(l4)
			if len(p) > c.mtu {
				t.Errorf("%v: packet %d is %d bytes, over %d", c.src, i, len(p), c.mtu)
			}
			var off int
			var mf bool
			if c.src.Is4() {
				ip := verifyIPv4(t, p)
				off, mf = int(ip.FragOffset)*8, ip.Flags&layers.IPv4MoreFragments != 0
				if ip.Id != 0x1234 {
					t.Errorf("ID %#x", ip.Id)
				}
				l4 = append(l4, ip.Payload...)
			} else {
				pk := gopacket.NewPacket(p, layers.LayerTypeIPv6, gopacket.Default)
				fr := pk.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment)
				off, mf = int(fr.FragmentOffset)*8, fr.MoreFragments
				if fr.Identification != 0x1234 || fr.NextHeader != layers.IPProtocolUDP {
					t.Errorf("fragment header %+v", fr)
				}
				l4 = append(l4, fr.Payload...)
			}
			if off != at || mf != (i < len(ps)-1) {
				t.Errorf("%v: packet %d offset %d MF %v", c.src, i, off, mf)
			}
		}
		if len(l4) != 8+len(payload) || !bytes.Equal(l4[8:], payload) {
			t.Errorf("%v: reassembled %d bytes", c.src, len(l4))
		}
	}
	if n := len(UDPPackets(netip.AddrPortFrom(a4, 500), netip.AddrPortFrom(b4, 500), 1, payload, 0)); n != 1 {
		t.Errorf("no mtu: %d packets", n)
	}
}

func TestICMPTooBig(t *testing.T) {
	orig := IPv4{Src: a4, Dst: b4, Proto: ProtoUDP, DF: true, Payload: UDPBytes(4500, 4500, make([]byte, 1400), 0)}.Bytes()
	b := ICMPTooBig(netip.MustParseAddr("192.0.2.254"), orig, 1280)
	p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || ic.Seq != 1280 || len(ic.Payload) != 28 {
		t.Errorf("ICMP %+v, %d bytes quoted", ic, len(ic.Payload))
	}
	if net := p.NetworkLayer().NetworkFlow().Dst().String(); net != a4.String() {
		t.Errorf("sent to %s, want the original source", net)
	}
	if got := fold(sum(0, b[20:])); got != 0xffff {
		t.Errorf("ICMP checksum does not verify: %#04x", got)
	}
	orig6 := IPv6{Src: a6, Dst: b6, NextHeader: ProtoUDP, Payload: UDPBytes(500, 500, make([]byte, 1400), 0)}.Bytes()
	b = ICMPTooBig(netip.MustParseAddr("2001:db8::fe"), orig6, 1280)
	if len(b) > 1280 {
		t.Errorf("ICMPv6 of %d bytes exceeds the minimum MTU", len(b))
	}
	p = gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.Default)
	ic6 := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if ic6.TypeCode.Type() != layers.ICMPv6TypePacketTooBig {
		t.Errorf("ICMPv6 %+v", ic6)
	}
	if got := fold(sum(pseudo(netip.MustParseAddr("2001:db8::fe"), a6, ProtoICMPv6, len(b)-40), b[40:])); got != 0xffff {
		t.Errorf("ICMPv6 checksum does not verify: %#04x", got)
	}
}

// Pcap files read back with gopacket's reader, frame for frame.
func TestPcapRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 123456000, time.UTC)
	frames := []Frame{
		{t0, IPv4{Src: a4, Dst: b4, Proto: ProtoUDP, Payload: UDPBytes(500, 500, []byte{1}, 0)}.Bytes()},
		{t0.Add(time.Second), IPv6{Src: a6, Dst: b6, NextHeader: ProtoUDP, Payload: UDPBytes(500, 500, []byte{2}, 0)}.Bytes()},
	}
	for _, lt := range []uint32{LinkTypeRaw, LinkTypeLinuxSLL2} {
		in := frames
		if lt == LinkTypeLinuxSLL2 {
			in = []Frame{{frames[0].Time, SLL2(frames[0].Data)}, {frames[1].Time, SLL2(frames[1].Data)}}
		}
		r, err := pcapgo.NewReader(bytes.NewReader(Pcap(lt, in)))
		if err != nil {
			t.Fatal(err)
		}
		if uint32(r.LinkType()) != lt {
			t.Errorf("link type %d, want %d", r.LinkType(), lt)
		}
		for i, f := range in {
			data, ci, err := r.ReadPacketData()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, f.Data) || !ci.Timestamp.Equal(f.Time) {
				t.Errorf("link type %d frame %d: %v % x", lt, i, ci.Timestamp, data)
			}
		}
	}
}
