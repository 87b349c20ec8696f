package ike

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// ikeSAInitRequest is a typical IKE_SA_INIT request: one proposal of four
// transforms, a MODP-2048 KE, a 32-byte nonce, NAT-D, fragmentation and
// signature hash notifies and two Vendor IDs (474 bytes).
func ikeSAInitRequest(tb testing.TB) []byte {
	return buildMessage(ExchangeIKESAInit, FlagInitiator, 0,
		rawPayload{t: PayloadSA, body: unhex(tb, `00 00 002c 01 01 00 04
			03 00 000c 01 00 000c 800e0080
			03 00 0008 02 00 0005
			03 00 0008 03 00 000c
			00 00 0008 04 00 000e`)},
		rawPayload{t: PayloadKE, body: unhex(tb, "000e 0000"+strings.Repeat("a5", 256))},
		rawPayload{t: PayloadNonce, body: bytes.Repeat([]byte{0x5a}, 32)},
		rawPayload{t: PayloadNotify, body: unhex(tb, "00 00 4004"+strings.Repeat("11", 20))},
		rawPayload{t: PayloadNotify, body: unhex(tb, "00 00 4005"+strings.Repeat("22", 20))},
		rawPayload{t: PayloadNotify, body: unhex(tb, "00 00 402e")},
		rawPayload{t: PayloadNotify, body: unhex(tb, "00 00 402f 0002 0003 0004")},
		rawPayload{t: PayloadVendorID, body: unhex(tb, "882fe56d6fd20dbc2251613b2ebe5beb")},
		rawPayload{t: PayloadVendorID, body: unhex(tb, "4048b7d56ebce88525e7de7f00d6c2d3")},
	)
}

// skMessage is an IKE_AUTH request of the given size whose only payload is SK.
func skMessage(size int) []byte {
	return buildMessage(ExchangeIKEAuth, FlagInitiator, 1,
		rawPayload{t: PayloadEncrypted, np: PayloadIDi, body: bytes.Repeat([]byte{0xee}, size-HeaderLen-4)})
}

func BenchmarkDecodeIKESAInit(b *testing.B) {
	msg := ikeSAInitRequest(b)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSK5K(b *testing.B) {
	msg := skMessage(5000)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeIKESAInit(b *testing.B) {
	m, err := Decode(ikeSAInitRequest(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Encode()
	}
}

// allocPerDecode returns the bytes Decode allocates for b, on average.
func allocPerDecode(t *testing.T, b []byte) uint64 {
	const runs = 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := Decode(b); err != nil {
			t.Fatalf("hostile input does not decode: %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}

// TestDecodeAllocationBound feeds Decode the inputs that maximise decoded
// structures per input byte and checks that memory stays within a small
// multiple of the input.
func TestDecodeAllocationBound(t *testing.T) {
	rep := func(n int, unit string) string { return strings.Repeat(unit, n) }
	var many []rawPayload
	for range MaxPayloads {
		many = append(many, rawPayload{t: PayloadVendorID})
	}
	// Proposals of 255 bare transforms, as many as fit a message.
	prop := "00 00 0800 01 01 00 ff" + rep(254, "03 00 0008 01 00 000c ") + "00 00 0008 01 00 000c"
	bigSA := strings.Repeat(strings.Replace(prop, "00 00 0800", "02 00 0800", 1), 30)
	// Transforms with MaxAttributes TV attributes each.
	attrTr := "03 00 0048 01 00 000c" + rep(MaxAttributes, " 800e 0080")
	attrProp := "00 00 " + "0248" + " 01 01 00 08" + rep(8, " "+attrTr)
	cpMax := "01 000000" + rep(MaxConfigAttributes, " 0001 0000")
	tsMax := "ff 000000" + rep(255, " 63 00 0004")
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"empty payloads", buildMessage(ExchangeInformational, 0, 0, many...)},
		{"bare proposals", buildMessage(ExchangeIKESAInit, 8, 0, rawPayload{t: PayloadSA, body: unhex(t, rep(MaxProposals-1, "02 00 0008 01 01 00 00 ")+"00 00 0008 01 01 00 00")})},
		{"bare transforms", buildMessage(ExchangeIKESAInit, 8, 0, rawPayload{t: PayloadSA, body: unhex(t, bigSA[:len(bigSA)-len(prop)]+prop)})},
		{"attributes", buildMessage(ExchangeIKESAInit, 8, 0, rawPayload{t: PayloadSA, body: unhex(t, attrProp)})},
		{"config attributes", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadCP, body: unhex(t, cpMax)})},
		{"traffic selectors", buildMessage(ExchangeIKEAuth, 8, 0, rawPayload{t: PayloadTSi, body: unhex(t, tsMax)})},
		{"delete SPIs", buildMessage(ExchangeInformational, 8, 0, rawPayload{t: PayloadDelete, body: unhex(t, "03 04 3e80"+rep(16000, "01020304"))})},
		{"SK", skMessage(60000)},
	} {
		n := allocPerDecode(t, tc.msg)
		ratio := float64(n) / float64(len(tc.msg))
		t.Logf("%-18s %6d bytes in, %7d bytes allocated (%.1f×)", tc.name, len(tc.msg), n, ratio)
		if n > uint64(16*len(tc.msg)+8192) {
			t.Errorf("%s: %d bytes allocated for %d bytes of input", tc.name, n, len(tc.msg))
		}
	}
}
