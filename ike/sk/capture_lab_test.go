package sk_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/ike"
)

// The product's capture reader (diag/capture) reassembles a.pcap's
// IP-fragmented IKE_AUTH datagrams; every one of them decrypts and holds
// the expected payloads, in both directions.
func TestLabCaptureReaderA(t *testing.T) {
	lab := labDir(t)
	_, _, sa := labKeys(t, lab, "a")
	recs, _, err := capture.ReadFile(filepath.Join(lab, "pcaps", "a.pcap"), capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[bool]int{}
	for _, rec := range recs {
		d := rec.Datagram
		if d == nil || !d.Complete || d.Proto != 17 {
			continue
		}
		fr := ike.DefaultPorts.Classify(d.Src.Port(), d.Dst.Port(), d.Payload)
		if fr.Kind != ike.KindIKE || len(fr.IKE) < ike.HeaderLen || fr.IKE[18] != exIKEAuth {
			continue
		}
		if !d.Fragmented() {
			t.Errorf("frame %d: IKE_AUTH was not IP-fragmented in a.pcap", d.Frame)
		}
		o, err := sa.Open(fr.IKE)
		if err != nil {
			t.Fatalf("frame %d: %v", d.Frame, err)
		}
		m, _ := o.Decrypted()
		ps, err := m.Decode()
		if err != nil {
			t.Fatal(err)
		}
		want := wantAuthRequest
		if o.Header.Flags.Response() {
			want = wantAuthResponse
		}
		if got := payloadSeq(ps); !slices.Equal(got, want) {
			t.Fatalf("frame %d: payloads %v", d.Frame, got)
		}
		seen[o.Header.Flags.Response()]++
	}
	if seen[false] == 0 || seen[true] == 0 {
		t.Fatalf("decrypted requests %d, responses %d", seen[false], seen[true])
	}
}
