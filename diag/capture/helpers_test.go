package capture

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/test/shared"
)

// sharedDir returns ../shared relative to the module root, or skips the
// test when the shared captures are not there.
func sharedDir(tb testing.TB) string {
	tb.Helper()
	return shared.Dir(tb)
}

func findShared() (string, bool) { return shared.Find() }

func corpusPath(tb testing.TB, name string) string {
	tb.Helper()
	return shared.Corpus(tb, name)
}

func labPath(tb testing.TB, name string) string {
	tb.Helper()
	return shared.LabPcap(tb, name)
}

func readAll(tb testing.TB, path string) ([]obs.Record, Stats) {
	tb.Helper()
	recs, st, err := ReadFile(path, Options{})
	if err != nil {
		tb.Fatalf("ReadFile(%s): %v", filepath.Base(path), err)
	}
	return recs, st
}

func datagrams(recs []obs.Record) []*obs.Datagram {
	var out []*obs.Datagram
	for _, r := range recs {
		if r.Datagram != nil {
			out = append(out, r.Datagram)
		}
	}
	return out
}

func fragmented(recs []obs.Record) []*obs.Datagram {
	var out []*obs.Datagram
	for _, d := range datagrams(recs) {
		if d.Fragmented() {
			out = append(out, d)
		}
	}
	return out
}

var (
	addrA  = netip.MustParseAddr("192.0.2.1")
	addrB  = netip.MustParseAddr("198.51.100.2")
	addr6A = netip.MustParseAddr("2001:db8::1")
	addr6B = netip.MustParseAddr("2001:db8::2")
	t0     = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
)

func ciFor(b []byte, ts time.Time) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(b), Length: len(b)}
}

// rawPacket decodes a raw IP packet and fails the test on error.
func rawPacket(tb testing.TB, b []byte, ts time.Time, frame int) Packet {
	tb.Helper()
	p, err := DecodeFrame(layers.LinkTypeRaw, b, ciFor(b, ts))
	if err != nil {
		tb.Fatalf("DecodeFrame: %v", err)
	}
	p.Frame = frame
	return p
}

// pattern returns n deterministic bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>8)
	}
	return b
}
