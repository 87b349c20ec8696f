package diag

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// FuzzEngine feeds records built from random bytes: IKE-port datagrams and
// RFC 9329 frames with arbitrary payloads, flags, fragment facts and
// timestamps (including going backwards), ICMP too-big messages and
// drops, with the live judge asked
// between records as the daemon does. The engine must never panic, must
// produce a report, and the live judge must remember no session the engine
// forgot.
func FuzzEngine(f *testing.F) {
	hdr := make([]byte, 32)
	hdr[17], hdr[18], hdr[19] = 0x20, 35, 0x08
	binary.BigEndian.PutUint32(hdr[24:], 28)
	f.Add(hdr)
	f.Add(append([]byte{1, 0, 0, 0, 0}, hdr...))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := New(Options{MaxSessions: 8, MaxExchanges: 4, MaxTransmissions: 3})
		base := time.Unix(1700000000, 0)
		for len(b) >= 6 {
			op, n := b[0], int(b[1])%64+1
			ts := base.Add(time.Duration(int8(b[2])) * 100 * time.Millisecond)
			port := []uint16{500, 4500, 1234}[int(b[3])%3]
			a := netip.AddrFrom4([4]byte{10, 0, 0, b[4] % 4})
			c := netip.AddrFrom4([4]byte{10, 0, 1, b[5] % 4})
			b = b[6:]
			payload := b[:min(n, len(b))]
			b = b[len(payload):]
			switch op % 4 {
			case 0, 1:
				d := &obs.Datagram{Time: ts, Proto: 17, Src: netip.AddrPortFrom(a, port), Dst: netip.AddrPortFrom(c, 4500), IPID: uint32(op >> 4),
					Length: len(payload), Payload: payload, Complete: op&0x10 == 0, TotalLen: -1}
				if op&0x20 != 0 {
					d.Frags = []obs.Frag{{Offset: 0, Len: 8, IPLen: 28}, {Offset: 8, Len: len(payload), IPLen: 20 + len(payload)}}
				}
				if op&0x40 != 0 {
					d.Length = -1
				}
				if op&0x80 != 0 {
					d.Src, d.Dst = d.Dst, d.Src
				}
				if op&0x08 != 0 && op&0x04 != 0 {
					d.Proto = 50 // ESP
				}
				if op&0x0c == 0x04 && op&0x20 != 0 {
					d.Proto = 6 // an RFC 9329 frame (diag/tcp.go)
				}
				e.Add(obs.Record{Datagram: d})
			case 2:
				e.Add(obs.Record{TooBig: &obs.ICMPTooBig{Time: ts, OrigDst: c, MTU: int(op) * 8}})
			case 3:
				e.Add(obs.Record{Drop: &obs.Drop{Time: ts, Src: a, Dst: c, Proto: []uint8{17, 1, 58}[n%3], ICMPType: uint8(n % 4), ICMPCode: 4,
					IPID: uint32(op >> 4), Fragment: op&0x10 != 0, FragOffset: 1480}})
			}
			if op&0x03 == 3 {
				_ = e.Judge()
			}
		}
		e.Advance(base.Add(time.Minute))
		_ = e.Judge()
		_ = e.Report(false)
		r := e.Report(true)
		if len(r.Sessions) > 8 {
			t.Fatalf("%d sessions kept, cap is 8", len(r.Sessions))
		}
		e.Expire(base.Add(time.Hour))
		_ = e.Judge()
		if n, _ := e.Counts(); e.Judged() > n {
			t.Fatalf("live judge remembers %d sessions, engine holds %d", e.Judged(), n)
		}
	})
}
