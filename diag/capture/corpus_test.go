package capture

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// corpusFacts are per-file facts from the corpus MANIFEST.md (frame counts,
// link types, what is fragmented) and what follows from them for records.
var corpusFacts = []struct {
	name      string
	link      layers.LinkType
	frames    int
	skips     map[Reason]int // expected skipped frames
	udp, esp  int            // datagrams by protocol (ESP-in-UDP counts as UDP)
	other     int            // datagrams of other protocols
	reasm     int            // reassembled datagrams (all complete)
	ipVersion uint8
}{
	{name: "suricata-verify-detect-bypass-udp-input.pcap", link: layers.LinkTypeEthernet, frames: 66, udp: 66, ipVersion: 4},
	{name: "zeek-spicy-ipsec-ipsec_client.pcap", link: layers.LinkTypeEthernet, frames: 11, udp: 5, reasm: 3, ipVersion: 4},
	{name: "scapy-ikev2_notify_redirect.pcap", link: layers.LinkTypeEthernet, frames: 4, udp: 4, ipVersion: 4},
	{name: "nDPI-ipsec_isakmp_esp.pcap", link: layers.LinkTypeEthernet, frames: 834, udp: 834, ipVersion: 4},
	{name: "scapy-ikev2_nat_t.pcapng", link: layers.LinkTypeEthernet, frames: 54, udp: 54, ipVersion: 4},
	{name: "tcpdump-ikev2four.pcap", link: layers.LinkTypeNull, frames: 21, udp: 21, ipVersion: 4},
	{name: "nDPI-esp.pcapng", link: layers.LinkTypeEthernet, frames: 6, udp: 4, esp: 2, ipVersion: 4},
	{name: "arkime-IKEv2.pcap", link: layers.LinkTypeEthernet, frames: 197, udp: 35, esp: 162, ipVersion: 6},
	{name: "suricata-verify-IKEv2_SA_INIT_2-8-weak.pcap", link: layers.LinkTypeRaw, frames: 1, udp: 1, ipVersion: 4},
	{name: "zeek-spicy-ipsec-ipsec.cap", link: layers.LinkTypeEthernet, frames: 27, udp: 11, esp: 16, ipVersion: 4},
	{name: "tcpdump-isakmp4500.pcap", link: layers.LinkTypeEthernet, frames: 35, skips: map[Reason]int{ReasonNotIP: 8}, udp: 27, ipVersion: 4},
	{name: "zeek-spicy-ipsec-ipsec-ikev1-isakmp-aggressive-mode.pcap", link: layers.LinkTypeEthernet, frames: 6, udp: 6, ipVersion: 4},
	{name: "zeek-spicy-ipsec-ikev1-certs.pcap", link: layers.LinkTypeEthernet, frames: 10, udp: 10, ipVersion: 4},
	{name: "arkime-IKEv1.pcap", link: layers.LinkTypeEthernet, frames: 309, udp: 13, esp: 296, ipVersion: 6},
	{name: "tcpdump-ISAKMP_sa_setup.pcap", link: layers.LinkTypeEthernet, frames: 9, udp: 9, ipVersion: 4},
	{name: "tcpdump-espudp1.pcap", link: layers.LinkTypeEthernet, frames: 8, udp: 8, ipVersion: 4},
	{name: "tcpdump-02-sunrise-sunset-esp.pcap", link: layers.LinkTypeEthernet, frames: 8, esp: 8, ipVersion: 4},
	{name: "libreswan-espfrags1.pcap", link: layers.LinkTypeEthernet, frames: 16, esp: 8, reasm: 8, ipVersion: 4},
	{name: "zeek-ip6_esp.pcap", link: layers.LinkTypeEthernet, frames: 121, esp: 120, other: 1, ipVersion: 6},
}

// TestCorpusFilesDecode reads every corpus capture: each frame decodes (or is
// skipped for the expected reason), and the records match the manifest.
func TestCorpusFilesDecode(t *testing.T) {
	dir := filepath.Join(sharedDir(t), "corpus", "ike-pcaps")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, e := range ents {
		if !e.IsDir() && !strings.HasSuffix(e.Name(), ".md") {
			onDisk = append(onDisk, e.Name())
		}
	}
	var known []string
	for _, f := range corpusFacts {
		known = append(known, f.name)
	}
	slices.Sort(onDisk)
	slices.Sort(known)
	if !slices.Equal(onDisk, known) {
		t.Errorf("corpus files changed:\n on disk %v\n in test %v", onDisk, known)
	}

	for _, f := range corpusFacts {
		t.Run(f.name, func(t *testing.T) {
			r, err := Open(filepath.Join(dir, f.name), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var recs []obs.Record
			for rec, err := range r.All() {
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				recs = append(recs, rec)
			}
			if r.LinkType() != f.link {
				t.Errorf("link type %d, want %d", r.LinkType(), f.link)
			}
			st := r.Stats()
			if st.Frames != f.frames {
				t.Errorf("frames %d, want %d", st.Frames, f.frames)
			}
			for reason := Reason(0); reason < NumReasons; reason++ {
				if st.Skipped[reason] != f.skips[reason] {
					t.Errorf("skipped %s: %d, want %d", reason, st.Skipped[reason], f.skips[reason])
				}
			}
			if st.Decoded+st.SkippedTotal() != st.Frames {
				t.Errorf("decoded %d + skipped %d != frames %d", st.Decoded, st.SkippedTotal(), st.Frames)
			}
			var udp, esp, other, reasm int
			for _, rec := range recs {
				d := rec.Datagram
				if d == nil {
					t.Fatalf("unexpected non-datagram record %+v", rec)
				}
				if !d.Complete || d.Truncated {
					t.Errorf("frame %d: incomplete=%v truncated=%v", d.Frame, !d.Complete, d.Truncated)
				}
				if d.IPVersion != f.ipVersion {
					t.Errorf("frame %d: IP version %d", d.Frame, d.IPVersion)
				}
				if d.Length != len(d.Payload) {
					t.Errorf("frame %d: Length %d, payload %d bytes", d.Frame, d.Length, len(d.Payload))
				}
				switch d.Proto {
				case 17:
					udp++
				case 50:
					esp++
				default:
					other++
				}
				if d.Fragmented() {
					reasm++
				}
			}
			if udp != f.udp || esp != f.esp || other != f.other || reasm != f.reasm {
				t.Errorf("udp/esp/other/reassembled = %d/%d/%d/%d, want %d/%d/%d/%d",
					udp, esp, other, reasm, f.udp, f.esp, f.other, f.reasm)
			}
			ds := st.Defrag
			if ds.Reassembled != f.reasm || ds.TimedOut+ds.Flushed+ds.Evicted+ds.OverlapDropped+
				ds.ConflictDropped+ds.TooManyFragments+ds.Oversize+ds.BadUDP+ds.Duplicates != 0 {
				t.Errorf("defragmenter stats %+v", ds)
			}
			if st.Datagrams != len(recs) || st.TooBig != 0 {
				t.Errorf("stats datagrams %d tooBig %d, records %d", st.Datagrams, st.TooBig, len(recs))
			}
		})
	}
}

// TestIPsecClientFragments checks the IP-fragmented IKE_AUTH of the Windows
// client capture against the manifest: 3 sends of 3 fragments each.
func TestIPsecClientFragments(t *testing.T) {
	recs, _ := readAll(t, corpusPath(t, "zeek-spicy-ipsec-ipsec_client.pcap"))
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5", len(recs))
	}
	// Records come in capture order: the two IKE_SA_INIT datagrams, then
	// one reassembled datagram per train, emitted at its last fragment.
	frags := fragmented(recs)
	if len(frags) != 3 || recs[0].Datagram.Fragmented() || recs[1].Datagram.Fragmented() {
		t.Fatalf("expected records 3-5 to be the reassembled ones")
	}
	client := netip.MustParseAddr("192.168.0.10")
	gw := netip.MustParseAddr("144.76.154.114")
	sends := []time.Time{
		time.Unix(1421270042, 910095000), time.Unix(1421270043, 910226000), time.Unix(1421270044, 910352000),
	}
	for i, d := range frags {
		if d.Src != netip.AddrPortFrom(client, 4500) || d.Dst != netip.AddrPortFrom(gw, 4500) || d.Proto != 17 {
			t.Errorf("train %d: %v -> %v proto %d", i, d.Src, d.Dst, d.Proto)
		}
		if want := uint32(0x1b1e + i); d.IPID != want {
			t.Errorf("train %d: IP ID %#x, want %#x", i, d.IPID, want)
		}
		if !d.Complete || d.Length != 3472 || len(d.Payload) != 3472 || d.TotalLen != 3480 || len(d.Missing) != 0 {
			t.Errorf("train %d: complete=%v length=%d payload=%d total=%d missing=%v",
				i, d.Complete, d.Length, len(d.Payload), d.TotalLen, d.Missing)
		}
		if d.Frame != 3+3*i || !d.Time.Equal(sends[i]) || !d.Last.After(d.Time) {
			t.Errorf("train %d: frame %d time %v last %v", i, d.Frame, d.Time, d.Last)
		}
		wantFrags := []obs.Frag{
			{Offset: 0, Len: 1440, MF: true, IPLen: 1460},
			{Offset: 1440, Len: 1440, MF: true, IPLen: 1460},
			{Offset: 2880, Len: 600, MF: false, IPLen: 620},
		}
		if len(d.Frags) != 3 {
			t.Fatalf("train %d: %d fragments", i, len(d.Frags))
		}
		for j, f := range d.Frags {
			w := wantFrags[j]
			if f.Offset != w.Offset || f.Len != w.Len || f.MF != w.MF || f.IPLen != w.IPLen || f.Frame != 3+3*i+j {
				t.Errorf("train %d frag %d: %+v, want %+v frame %d", i, j, f, w, 3+3*i+j)
			}
		}
		// UDP 4500 payload: the 4-byte non-ESP marker, then the IKE header
		// (manifest: SPIi 238671c80375a0fb, IKE_AUTH (35), flags 0x08,
		// length 3468).
		p := d.Payload
		if !bytes.Equal(p[:4], []byte{0, 0, 0, 0}) ||
			binary.BigEndian.Uint64(p[4:12]) != 0x238671c80375a0fb ||
			p[4+18] != 35 || p[4+19] != 0x08 || binary.BigEndian.Uint32(p[4+24:4+28]) != 3468 {
			t.Errorf("train %d: payload does not start with the IKE_AUTH header: % x", i, p[:32])
		}
		if i > 0 && !bytes.Equal(p, frags[0].Payload) {
			t.Errorf("train %d: retransmission differs from the first send", i)
		}
	}
}

// TestESPFragments checks the 8 IP-fragmented plain ESP packets.
func TestESPFragments(t *testing.T) {
	recs, _ := readAll(t, corpusPath(t, "libreswan-espfrags1.pcap"))
	ds := datagrams(recs)
	if len(ds) != 8 {
		t.Fatalf("%d datagrams, want 8", len(ds))
	}
	for i, d := range ds {
		if d.Proto != 50 || !d.Complete || len(d.Frags) != 2 {
			t.Fatalf("datagram %d: proto %d complete %v frags %d", i, d.Proto, d.Complete, len(d.Frags))
		}
		if d.Frags[0].IPLen != 1500 || !d.Frags[0].MF || d.Frags[1].Offset != 1480 || d.Frags[1].IPLen != 64 || d.Frags[1].MF {
			t.Errorf("datagram %d: fragments %+v", i, d.Frags)
		}
		if d.IPID != uint32(0x500c+i) || d.TotalLen != 1524 || d.Length != 1524 || len(d.Payload) != 1524 {
			t.Errorf("datagram %d: id %#x total %d length %d payload %d", i, d.IPID, d.TotalLen, d.Length, len(d.Payload))
		}
		// ESP header: SPI 0x12345678, sequence numbers 22..29.
		if spi, seq := binary.BigEndian.Uint32(d.Payload[0:4]), binary.BigEndian.Uint32(d.Payload[4:8]); spi != 0x12345678 || seq != uint32(22+i) {
			t.Errorf("datagram %d: SPI %#x seq %d", i, spi, seq)
		}
		if d.Src.Addr() != netip.MustParseAddr("192.1.2.23") || d.Dst.Addr() != netip.MustParseAddr("192.1.2.45") {
			t.Errorf("datagram %d: %v -> %v", i, d.Src, d.Dst)
		}
	}
}

// TestNullLinkType reads the BSD loopback capture.
func TestNullLinkType(t *testing.T) {
	recs, _ := readAll(t, corpusPath(t, "tcpdump-ikev2four.pcap"))
	a, b := netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("192.168.1.2")
	for _, d := range datagrams(recs) {
		ends := []netip.Addr{d.Src.Addr(), d.Dst.Addr()}
		if d.Src.Port() != 500 || d.Dst.Port() != 500 || !slices.Contains(ends, a) || !slices.Contains(ends, b) {
			t.Errorf("frame %d: %v -> %v", d.Frame, d.Src, d.Dst)
		}
		// IKEv2 header: version byte 0x20 at offset 17.
		if len(d.Payload) < 28 || d.Payload[17] != 0x20 || int(binary.BigEndian.Uint32(d.Payload[24:28])) != d.Length {
			t.Errorf("frame %d: not an IKEv2 message filling the datagram", d.Frame)
		}
	}
}

// TestIPv6Captures reads the IPv6 captures: the retransmitted IKE_SA_INIT
// (frames 1 and 38 carry the same UDP payload), and ICMPv6 behind a
// Hop-by-Hop header.
func TestIPv6Captures(t *testing.T) {
	recs, _ := readAll(t, corpusPath(t, "arkime-IKEv2.pcap"))
	ds := datagrams(recs)
	byFrame := map[int]*obs.Datagram{}
	p2, p4 := netip.MustParseAddr("2003:51:6012::2"), netip.MustParseAddr("2003:51:6012::4")
	for _, d := range ds {
		byFrame[d.Frame] = d
		if (d.Src.Addr() != p2 || d.Dst.Addr() != p4) && (d.Src.Addr() != p4 || d.Dst.Addr() != p2) {
			t.Errorf("frame %d: %v -> %v", d.Frame, d.Src, d.Dst)
		}
	}
	f1, f38 := byFrame[1], byFrame[38]
	if f1 == nil || f38 == nil || f1.Src != netip.AddrPortFrom(p2, 500) || !bytes.Equal(f1.Payload, f38.Payload) {
		t.Fatalf("frames 1 and 38 should be the same IKE_SA_INIT from %v:500", p2)
	}
	if dt := f38.Time.Sub(f1.Time); dt < 39*time.Second || dt > 41*time.Second {
		t.Errorf("retransmission after %v, want about 40 s", dt)
	}

	recs, _ = readAll(t, corpusPath(t, "zeek-ip6_esp.pcap"))
	var icmp int
	for _, d := range datagrams(recs) {
		if d.Proto == 58 {
			icmp++
			// MLD messages are ICMPv6 types 130-143.
			if len(d.Payload) == 0 || d.Payload[0] < 130 || d.Payload[0] > 143 {
				t.Errorf("frame %d: ICMPv6 type %v, want MLD", d.Frame, d.Payload[:min(1, len(d.Payload))])
			}
		}
	}
	if icmp != 1 {
		t.Errorf("%d ICMPv6 datagrams, want 1", icmp)
	}
}

// TestOddTimestamps: out-of-order (nDPI) and all-zero (tcpdump) timestamps
// are passed through and break nothing.
func TestOddTimestamps(t *testing.T) {
	recs, _ := readAll(t, corpusPath(t, "nDPI-ipsec_isakmp_esp.pcap"))
	back := 0
	for i := 1; i < len(recs); i++ {
		if recs[i].Datagram.Time.Before(recs[i-1].Datagram.Time) {
			back++
		}
	}
	if back == 0 {
		t.Error("expected timestamps that go backwards in the nDPI capture")
	}
	for i, rec := range recs {
		if rec.Datagram.Frame != i+1 {
			t.Fatalf("record %d is frame %d: capture order lost", i, rec.Datagram.Frame)
		}
	}

	recs, _ = readAll(t, corpusPath(t, "tcpdump-isakmp4500.pcap"))
	for _, rec := range recs {
		if !rec.Datagram.Time.Equal(time.Unix(0, 0)) {
			t.Errorf("frame %d: time %v, want the epoch", rec.Datagram.Frame, rec.Datagram.Time)
		}
	}
	// NAT-keepalives: UDP 4500, one 0xff byte (manifest frames 18, 23, 28, 34).
	var ka []int
	for _, rec := range recs {
		d := rec.Datagram
		if d.Dst.Port() == 4500 && d.Length == 1 && d.Payload[0] == 0xff {
			ka = append(ka, d.Frame)
		}
	}
	if !slices.Equal(ka, []int{18, 23, 28, 34}) {
		t.Errorf("NAT-keepalives in frames %v", ka)
	}
}

// TestRawLinkType reads the single-frame LINKTYPE_RAW capture.
func TestRawLinkType(t *testing.T) {
	recs, _ := readAll(t, corpusPath(t, "suricata-verify-IKEv2_SA_INIT_2-8-weak.pcap"))
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	d := recs[0].Datagram
	if d.Src != netip.MustParseAddrPort("212.158.157.2:500") || d.Dst != netip.MustParseAddrPort("212.158.157.8:500") || d.Length != 240 {
		t.Errorf("%v -> %v length %d", d.Src, d.Dst, d.Length)
	}
	if binary.BigEndian.Uint64(d.Payload[0:8]) != 0x61d3693ce12af528 || d.Payload[18] != 34 {
		t.Errorf("not the IKE_SA_INIT with SPIi 61d3693ce12af528")
	}
}

// TestDuplicateCapture: the SKF capture holds every datagram twice; the
// reader reports both (deduplication is the diagnosis engine's business,
// not IP reassembly's).
func TestDuplicateCapture(t *testing.T) {
	recs, _ := readAll(t, corpusPath(t, "suricata-verify-detect-bypass-udp-input.pcap"))
	ds := datagrams(recs)
	if len(ds) != 66 {
		t.Fatalf("%d datagrams", len(ds))
	}
	for k := 0; k+1 < len(ds); k += 2 {
		a, b := ds[k], ds[k+1]
		if a.IPID != b.IPID || !bytes.Equal(a.Payload, b.Payload) || a.Frame+1 != b.Frame {
			t.Errorf("frames %d and %d are not the same datagram", a.Frame, b.Frame)
		}
	}
}
