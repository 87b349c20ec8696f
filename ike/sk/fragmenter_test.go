package sk_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

func sameOutput(a, b *sk.Output) bool {
	if len(a.Datagrams) != len(b.Datagrams) {
		return false
	}
	for i := range a.Datagrams {
		if !bytes.Equal(a.Datagrams[i], b.Datagrams[i]) {
			return false
		}
	}
	return true
}

func reassembleOutput(t *testing.T, sa *sk.SA, out *sk.Output) *sk.Decrypted {
	t.Helper()
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	for _, dg := range out.Datagrams {
		if out.Target.Marker {
			dg = dg[ike.NonESPMarkerLen:]
		}
		if len(dg)+out.Target.Overhead() > out.Target.MTU {
			t.Fatalf("%d-byte IKE message exceeds %s", len(dg), out.Target)
		}
		if res := r.Add(sa, dg); res.Status == sk.StatusComplete {
			return res.Message
		}
	}
	t.Fatal("output did not reassemble")
	return nil
}

// A retransmitted message gets byte-identical datagrams, whatever target
// is asked for later; only StepDown re-cuts, with a higher total.
func TestFragmenterCacheAndStepDown(t *testing.T) {
	for _, s := range []sk.Suite{gcmSuite, {Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}} {
		sa := mustSA(t, testKeys(s, 1))
		f := sk.NewFragmenter(sk.FragmenterConfig{})
		d := &sk.Decrypted{Header: testHeader(false, true, 1), Inner: 36, Payloads: testPayloads(5000, 1)}
		t1 := sk.Target{MTU: 1280, Marker: true}
		o1, err := f.Fragment(sa, d, t1)
		if err != nil {
			t.Fatal(err)
		}
		d2 := *d
		d2.Payloads = bytes.Clone(d.Payloads) // same content, different buffer
		o2, err := f.Fragment(sa, &d2, sk.Target{MTU: 576, Marker: true})
		if err != nil {
			t.Fatal(err)
		}
		if !sameOutput(o1, o2) || o2.Total != 5 {
			t.Fatalf("retransmission cut again (total %d -> %d)", o1.Total, o2.Total)
		}
		if c, ok := f.Cached(sk.KeyOf(&d.Header)); !ok || c != o1 {
			t.Fatal("Cached")
		}
		// step down to 576: more fragments, new bytes, same message
		o3, err := f.StepDown(sa, d, sk.Target{MTU: 576, Marker: true})
		if err != nil {
			t.Fatal(err)
		}
		if o3.Total != 11 {
			t.Fatalf("step-down total %d, want 11", o3.Total)
		}
		if got := reassembleOutput(t, sa, o3); !bytes.Equal(got.Payloads, d.Payloads) {
			t.Fatal("step-down output does not reassemble to the message")
		}
		// a step-down to the same size still raises the total, spread evenly
		o4, err := f.StepDown(sa, d, sk.Target{MTU: 576, Marker: true})
		if err != nil || o4.Total != 12 {
			t.Fatalf("second step-down: %v total %d", err, o4.Total)
		}
		if got := reassembleOutput(t, sa, o4); !bytes.Equal(got.Payloads, d.Payloads) {
			t.Fatal("even step-down does not reassemble")
		}
		if o5, _ := f.Fragment(sa, d, t1); o5 != o4 {
			t.Fatal("after step-down the cache does not answer with the new cut")
		}
		st := f.Stats()
		if st.Cuts != 3 || st.Hits != 2 || st.StepDowns != 2 || st.Entries != 1 || st.Bytes != o4.Bytes() {
			t.Fatalf("%+v", st)
		}
		// different content under the same key: a new cut
		d3 := *d
		d3.Payloads = testPayloads(5000, 2)
		o6, _ := f.Fragment(sa, &d3, t1)
		if sameOutput(o6, o4) || f.Stats().Replaced != 1 {
			t.Fatal("different content answered from the cache")
		}
	}
}

func TestFragmenterStepDownFromWholeAndLimits(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 2))
	f := sk.NewFragmenter(sk.FragmenterConfig{MaxFragments: 3})
	d := &sk.Decrypted{Header: testHeader(true, false, 2), Inner: 35, Payloads: testPayloads(300, 1)}
	tg := sk.Target{MTU: 1500}
	o, err := f.Fragment(sa, d, tg)
	if err != nil || o.Total != 0 || len(o.Datagrams) != 1 || o.Datagrams[0][16] != 46 {
		t.Fatalf("small message not sent whole: %v", err)
	}
	o, err = f.StepDown(sa, d, tg)
	if err != nil || o.Total != 2 {
		t.Fatalf("step-down from whole: %v total %d", err, o.Total)
	}
	if _, err := f.StepDown(sa, d, tg); err != nil {
		t.Fatal(err)
	}
	if _, err := f.StepDown(sa, d, tg); !errors.Is(err, sk.ErrStepDown) {
		t.Fatalf("step-down past MaxFragments: %v", err)
	}
	big := &sk.Decrypted{Header: testHeader(true, false, 3), Inner: 35, Payloads: testPayloads(3000, 1)}
	if _, err := f.Fragment(sa, big, sk.Target{MTU: 576}); !errors.Is(err, sk.ErrTooManyFragments) {
		t.Fatalf("7 fragments with MaxFragments 3: %v", err)
	}
	if st := f.Stats(); st.Entries != 1 {
		t.Fatalf("failed cut left an entry: %+v", st)
	}
}

func TestFragmenterEviction(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 2))
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	f := sk.NewFragmenter(sk.FragmenterConfig{MaxEntries: 2, TTL: time.Minute, Now: clk.Now})
	var ds []*sk.Decrypted
	for id := uint32(1); id <= 3; id++ {
		d := &sk.Decrypted{Header: testHeader(true, false, id), Inner: 35, Payloads: testPayloads(2000, 1)}
		ds = append(ds, d)
		if _, err := f.Fragment(sa, d, sk.Target{MTU: 576}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := f.Cached(sk.KeyOf(&ds[0].Header)); ok {
		t.Fatal("least recently used entry kept")
	}
	if st := f.Stats(); st.Entries != 2 || st.Evicted != 1 {
		t.Fatalf("%+v", st)
	}
	clk.Add(2 * time.Minute)
	f.Fragment(sa, ds[0], sk.Target{MTU: 576})
	if st := f.Stats(); st.Entries != 1 || st.Evicted != 3 {
		t.Fatalf("TTL: %+v", st)
	}
	f.Forget(ds[0].Header.SPIi, ds[0].Header.SPIr)
	if st := f.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("Forget: %+v", st)
	}
}

// Concurrent requests for one message produce one cut.
func TestFragmenterConcurrent(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 3))
	f := sk.NewFragmenter(sk.FragmenterConfig{})
	d := &sk.Decrypted{Header: testHeader(false, true, 1), Inner: 36, Payloads: testPayloads(5000, 1)}
	var wg sync.WaitGroup
	outs := make([]*sk.Output, 16)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], _ = f.Fragment(sa, d, sk.Target{MTU: 576})
		}()
	}
	wg.Wait()
	for _, o := range outs {
		if o != outs[0] {
			t.Fatal("two cuts of one message")
		}
	}
	if st := f.Stats(); st.Cuts != 1 {
		t.Fatalf("%+v", st)
	}
}

// IVs are fresh for every fragment of every cut (no AEAD nonce reuse), and
// an injected IV source makes output reproducible.
func TestFragmenterIVs(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 4))
	f := sk.NewFragmenter(sk.FragmenterConfig{MaxFragments: 64})
	seen := map[string]bool{}
	for id := uint32(0); id < 50; id++ {
		d := &sk.Decrypted{Header: testHeader(false, true, id), Inner: 36, Payloads: testPayloads(4000, 1)}
		o, _ := f.Fragment(sa, d, sk.Target{MTU: 576})
		o2, _ := f.StepDown(sa, d, sk.Target{MTU: 576})
		for _, dg := range append(o.Datagrams, o2.Datagrams...) {
			iv := string(dg[36:44])
			if seen[iv] {
				t.Fatal("IV used twice")
			}
			seen[iv] = true
		}
	}
	d := &sk.Decrypted{Header: testHeader(false, true, 1), Inner: 36, Payloads: testPayloads(4000, 1)}
	a, _ := sk.NewFragmenter(sk.FragmenterConfig{IVs: newSeq(1)}).Fragment(sa, d, sk.Target{MTU: 576})
	b, _ := sk.NewFragmenter(sk.FragmenterConfig{IVs: newSeq(1)}).Fragment(sa, d, sk.Target{MTU: 576})
	if !sameOutput(a, b) {
		t.Fatal("same IV source, different output")
	}
}
