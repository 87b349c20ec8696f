package diag

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// BenchmarkEngineNewSessions feeds IKE_SA_INIT requests with distinct SPIs:
// the flood a daemon sees from scanners. "under_cap" stays below
// MaxSessions; "at_cap" evicts one session per datagram. The two should
// cost about the same: eviction is O(1).
func BenchmarkEngineNewSessions(b *testing.B) {
	for _, c := range []struct {
		name string
		max  int
	}{{"under_cap", 1 << 30}, {"at_cap", 1000}} {
		b.Run(c.name, func(b *testing.B) {
			e := New(Options{MaxSessions: c.max})
			msg := make([]byte, 28)
			msg[17], msg[18], msg[19] = 0x20, 34, 0x08
			binary.BigEndian.PutUint32(msg[24:], 28)
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 1}), 500)
			dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 2}), 500)
			t0 := time.Unix(1700000000, 0)
			b.ReportAllocs()
			for i := range b.N {
				binary.BigEndian.PutUint64(msg[0:8], uint64(i)+1)
				e.Add(obs.Record{Datagram: &obs.Datagram{Time: t0.Add(time.Duration(i) * time.Microsecond), Proto: 17,
					Src: src, Dst: dst, Length: len(msg), Payload: msg, Complete: true, TotalLen: -1}})
			}
		})
	}
}
