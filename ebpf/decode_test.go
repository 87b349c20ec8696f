package ebpf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

func TestMissing(t *testing.T) {
	f := func(ranges ...int) []obs.Frag {
		var out []obs.Frag
		for i := 0; i < len(ranges); i += 2 {
			out = append(out, obs.Frag{Offset: ranges[i], Len: ranges[i+1] - ranges[i]})
		}
		return out
	}
	cases := []struct {
		frags []obs.Frag
		total int
		want  string
	}{
		{f(0, 1480, 2960, 3000), 3000, "[{1480 2960}]"},
		{f(1480, 2960), -1, "[{0 1480} {2960 -1}]"},
		{f(0, 1480, 1000, 2000, 2000, 3000), 3000, "[]"},
		{f(0, 100), 300, "[{100 300}]"},
		{nil, -1, "[{0 -1}]"},
	}
	for _, c := range cases {
		if got := fmt.Sprint(missing(c.frags, c.total)); got != c.want && !(c.want == "[]" && got == "[]") {
			t.Errorf("missing(%v, %d) = %s, want %s", c.frags, c.total, got, c.want)
		}
	}
}

func encodeEvent(ev tcEvent) []byte {
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.NativeEndian, ev)
	return buf.Bytes()
}

func TestDecodeRejectsBadRecords(t *testing.T) {
	good := encodeEvent(tcEvent{Type: tcEventTypeEV_DATAGRAM, Family: 4, CapLen: 4})
	cases := map[string][]byte{
		"empty":              nil,
		"short header":       good[:10],
		"payload missing":    good,
		"unknown type":       encodeEvent(tcEvent{Type: 99}),
		"train missing":      encodeEvent(tcEvent{Type: tcEventTypeEV_TRAIN}),
		"too big missing":    encodeEvent(tcEvent{Type: tcEventTypeEV_TOO_BIG}),
		"cap beyond maximum": encodeEvent(tcEvent{Type: tcEventTypeEV_DATAGRAM, CapLen: uint32(CaptureMax) + 1}),
	}
	for name, b := range cases {
		if _, err := decodeRecord(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	r, err := decodeRecord(append(good, 1, 2, 3, 4))
	if err != nil || !bytes.Equal(r.payload, []byte{1, 2, 3, 4}) {
		t.Fatalf("good record: %v %x", err, r.payload)
	}
}

// FuzzRecord feeds arbitrary ring-buffer records through the decoder and
// the record builders: bad input is an error or a record, never a panic.
func FuzzRecord(f *testing.F) {
	f.Add(encodeEvent(tcEvent{Type: tcEventTypeEV_DATAGRAM, Family: 4, UdpLen: 9, CapLen: 1, IpFlags: tcIpFlagIPF_FRAG}))
	f.Add(append(encodeEvent(tcEvent{Type: tcEventTypeEV_TRAIN, Family: 6}), make([]byte, trainSize)...))
	f.Add(append(encodeEvent(tcEvent{Type: tcEventTypeEV_TOO_BIG, Family: 4}), make([]byte, tooBigSize)...))
	f.Add(encodeEvent(tcEvent{Type: tcEventTypeEV_DROP, Family: 6}))
	f.Fuzz(func(t *testing.T, b []byte) {
		o := &Observer{
			opts:       Options{TrainMapSize: 4, TrainTimeout: time.Second},
			records:    make(chan obs.Record, 1),
			pending:    map[pendKey]*pendingFirst{},
			incomplete: make([][tcDirectionDIR_MAX]uint64, 1),
		}
		o.handleRecord(b)
		if len(o.pending) > 4 {
			t.Fatalf("pending grew to %d", len(o.pending))
		}
	})
}

func TestTrainRecordWithoutFirstRecord(t *testing.T) {
	// The first fragment's record was lost: the train's IKE header stands
	// in for the payload.
	var tr tcTrain
	tr.Flags = tcTrainFlagTF_HAVE_FIRST | tcTrainFlagTF_HAVE_LAST | tcTrainFlagTF_IKE | tcTrainFlagTF_MARKER
	tr.UdpLen = 3008
	tr.Total = 3008
	tr.Nfrags = 20 // more than recorded
	copy(tr.Ike[:], ike(2, 35, 1, 28))
	ev := tcEvent{Family: 4, Proto: 17}
	d := datagramFromTrain(monoClock{}, &ev, &tr, nil, false)
	if len(d.Payload) != 32 || !d.Truncated || d.Length != 3000 || len(d.Frags) != int(tcLimitTRAIN_MAX_FRAGS) {
		t.Fatalf("%+v", d)
	}
}

// TestRecordSizes checks the generated Go layouts against the C compiler's
// sizes of the same records (enum record_size in bpf/tc.c): a field added
// in C with a padding or alignment the Go type does not reproduce would
// otherwise shift every field after it.
func TestRecordSizes(t *testing.T) {
	for _, c := range []struct {
		name string
		got  int
		want tcRecordSize
	}{
		{"struct event", eventSize, tcRecordSizeEVENT_SIZE},
		{"struct train", trainSize, tcRecordSizeTRAIN_SIZE},
		{"struct too_big", tooBigSize, tcRecordSizeTOO_BIG_SIZE},
	} {
		if c.got != int(c.want) {
			t.Errorf("%s: Go layout has %d bytes, C has %d", c.name, c.got, c.want)
		}
	}
	if got := len(tcTrain{}.Frags); got != int(tcLimitTRAIN_MAX_FRAGS) {
		t.Errorf("train records %d fragments, TRAIN_MAX_FRAGS is %d", got, tcLimitTRAIN_MAX_FRAGS)
	}
	if got := len(tcTrain{}.Ike); got != int(tcLimitIKE_HDR_LEN) {
		t.Errorf("train keeps %d IKE header bytes, IKE_HDR_LEN is %d", got, tcLimitIKE_HDR_LEN)
	}
	if got := len(tcCounterSet{}.C); got != int(counterBPF) {
		t.Errorf("counter set has %d counters, C_MAX is %d", got, counterBPF)
	}
}
