package capture

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/test/packet"
)

// BenchmarkReader measures decode + defragment throughput over whole
// capture files held in memory (so the disk is not measured).
func BenchmarkReader(b *testing.B) {
	for _, name := range []string{
		"corpus/nDPI-ipsec_isakmp_esp.pcap", // 834 frames, IKE and ESP-in-UDP
		"corpus/arkime-IKEv1.pcap",          // 309 frames, IPv6, mostly ESP
		"lab/d.pcap",                        // 76 frames, Linux cooked v2, IP fragments, ICMP
	} {
		b.Run(name, func(b *testing.B) {
			var path string
			if name[:4] == "lab/" {
				path = labPath(b, name[4:])
			} else {
				path = corpusPath(b, name[7:])
			}
			data, err := os.ReadFile(path)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			frames := 0
			for b.Loop() {
				r, err := NewReader(bytes.NewReader(data), name, Options{})
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := r.Next(); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
				frames += r.Stats().Frames
			}
			b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	ip := packet.IPv4{Src: addrA, Dst: addrB, Proto: 17, Payload: packet.UDPBytes(4500, 4500, pattern(1400, 1), 0)}.Bytes()
	frame := packet.Cat(make([]byte, 12), []byte{0x08, 0x00}, ip)
	ci := ciFor(frame, t0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeFrame(layers.LinkTypeEthernet, frame, ci); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDefragment reassembles a 4-fragment 5 KB datagram, the shape of
// an IKE_AUTH with a certificate chain.
func BenchmarkDefragment(b *testing.B) {
	pkts := packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 1, Proto: 17}, packet.UDPBytes(4500, 4500, pattern(5108, 1), 0), 1480, 2960, 4440)
	ps := make([]Packet, len(pkts))
	for i, raw := range pkts {
		ps[i] = rawPacket(b, raw, t0, i+1)
	}
	d := NewDefragmenter(DefragOptions{})
	out := make([]*obs.Datagram, 0, 4)
	b.SetBytes(5116)
	b.ReportAllocs()
	for b.Loop() {
		out = out[:0]
		for i := range ps {
			out = d.Add(&ps[i], out)
		}
	}
}
