package sk_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/ikefrag/ikefrag/ike/sk"
)

// The lab's IKE_AUTH messages (results/c.txt, a.txt: tshark with the same keys).
var (
	wantAuthRequest  = []string{"IDi", "CERT", "CERT", "CERT", "N", "CERTREQ", "IDr", "AUTH", "SA", "TSi", "TSr", "N", "N", "N"}
	wantAuthResponse = []string{"IDr", "CERT", "CERT", "CERT", "AUTH", "SA", "TSi", "TSr"}
)

func TestOpenLabFragmentsC(t *testing.T) {
	lab := labDir(t)
	spiI, spiR, sa := labKeys(t, lab, "c")
	msgs := readLabIKE(t, filepath.Join(lab, "pcaps", "c.pcap"))
	n := 0
	for _, m := range msgs {
		if m.msg[18] != exIKEAuth || m.outgoing {
			continue
		}
		o, err := sa.Open(m.msg)
		if err != nil {
			t.Fatalf("frame %d: %v", m.frame, err)
		}
		if o.Header.SPIi != spiI || o.Header.SPIr != spiR || !o.Fragment || o.Total != 5 {
			t.Fatalf("frame %d: header %+v fragment %d/%d", m.frame, o.Header, o.Number, o.Total)
		}
		n++
	}
	if n != 10 {
		t.Fatalf("opened %d IKE_AUTH fragments, want 10 (5 each way)", n)
	}
	_ = sk.ErrIntegrity
	_ = slices.Equal[[]string]
}
