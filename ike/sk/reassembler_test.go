package sk_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var gcmSuite = sk.Suite{Encr: sk.EncrAESGCM16, KeyBits: 256}

// frags cuts payload into total equal chunks and seals them as SKF
// fragments of message msgID.
func frags(t *testing.T, sa *sk.SA, h ike.Header, payload []byte, total int) [][]byte {
	t.Helper()
	var out [][]byte
	n := (len(payload) + total - 1) / total
	for i := 0; i < total; i++ {
		chunk := payload[min(i*n, len(payload)):min((i+1)*n, len(payload))]
		np := ike.PayloadType(35)
		if i > 0 {
			np = 0
		}
		f, err := sa.SealFragment(&h, nil, np, uint16(i+1), uint16(total), chunk, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

func expect(t *testing.T, res sk.Result, st sk.Status, drop sk.DropReason) {
	t.Helper()
	if res.Status != st || res.Drop != drop {
		t.Fatalf("got %v/%v (%v), want %v/%v", res.Status, res.Drop, res.Err, st, drop)
	}
}

func TestReassemblerOutOfOrder(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 1))
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	p := testPayloads(1000, 1)
	fs := frags(t, sa, testHeader(false, true, 5), p, 4)
	for _, i := range []int{3, 1, 2} {
		expect(t, r.Add(sa, fs[i]), sk.StatusStored, sk.DropNone)
	}
	res := r.Add(sa, fs[0])
	expect(t, res, sk.StatusComplete, sk.DropNone)
	if !bytes.Equal(res.Message.Payloads, p) || res.Message.Inner != 35 || res.Message.Fragments != 4 {
		t.Fatal("wrong message")
	}
}

// RFC 7383 §2.6: a verified fragment with a higher Total Fragments throws
// the queue away and starts over with it; a forged one does not.
func TestReassemblerRestartOnHigherTotal(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 1))
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	h := testHeader(false, true, 5)
	p := testPayloads(1000, 1)
	three := frags(t, sa, h, p, 3)
	four := frags(t, sa, h, p, 4)
	expect(t, r.Add(sa, three[0]), sk.StatusStored, sk.DropNone)
	expect(t, r.Add(sa, three[1]), sk.StatusStored, sk.DropNone)
	// forged higher total: verified first, so no restart
	forged := bytes.Clone(four[0])
	forged[len(forged)-1] ^= 1
	expect(t, r.Add(sa, forged), sk.StatusDropped, sk.DropIntegrity)
	if st := r.Stats(); st.Fragments != 2 || st.Drops[sk.DropRestarted] != 0 {
		t.Fatalf("forged fragment restarted the set: %+v", st)
	}
	expect(t, r.Add(sa, four[2]), sk.StatusStored, sk.DropNone)
	if st := r.Stats(); st.Fragments != 1 || st.Drops[sk.DropRestarted] != 2 {
		t.Fatalf("after restart: %+v", st)
	}
	// the old total is now lower: dropped
	expect(t, r.Add(sa, three[2]), sk.StatusDropped, sk.DropLowerTotal)
	expect(t, r.Add(sa, four[0]), sk.StatusStored, sk.DropNone)
	expect(t, r.Add(sa, four[1]), sk.StatusStored, sk.DropNone)
	res := r.Add(sa, four[3])
	expect(t, res, sk.StatusComplete, sk.DropNone)
	if !bytes.Equal(res.Message.Payloads, p) {
		t.Fatal("wrong content")
	}
}

func TestReassemblerDuplicateKeepsFirst(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 1))
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	h := testHeader(true, false, 9)
	a := testPayloads(200, 1)
	b := testPayloads(200, 2)
	fa := frags(t, sa, h, a, 2)
	fb := frags(t, sa, h, b, 2)
	expect(t, r.Add(sa, fa[0]), sk.StatusStored, sk.DropNone)
	expect(t, r.Add(sa, fb[0]), sk.StatusDropped, sk.DropDuplicate) // valid, different: first kept
	expect(t, r.Add(sa, fa[0]), sk.StatusDropped, sk.DropDuplicate)
	res := r.Add(sa, fa[1])
	expect(t, res, sk.StatusComplete, sk.DropNone)
	if !bytes.Equal(res.Message.Payloads, a) {
		t.Fatal("duplicate replaced the first copy")
	}
	// the same bytes again: a retransmission, told apart without crypto
	expect(t, r.Add(sa, fa[1]), sk.StatusRetransmit, sk.DropNone)
	res = r.Add(sa, fa[0])
	expect(t, res, sk.StatusRetransmit, sk.DropNone)
	if res.Number != 1 || res.Total != 2 {
		t.Fatalf("retransmit of %d/%d", res.Number, res.Total)
	}
	// a re-encrypted copy (new IVs) is reassembled again
	fa2 := frags(t, sa, h, a, 2)
	expect(t, r.Add(sa, fa2[0]), sk.StatusStored, sk.DropNone)
	expect(t, r.Add(sa, fa2[1]), sk.StatusComplete, sk.DropNone)
	if st := r.Stats(); st.Drops[sk.DropDuplicate] != 2 || st.Retransmits != 2 || st.Completed != 2 {
		t.Fatalf("%+v", st)
	}
}

// Requests and responses with the same Message ID, and the two peers'
// requests, are different messages.
func TestReassemblerDirections(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 1))
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	p := testPayloads(300, 1)
	var sets [][][]byte
	for _, hd := range []ike.Header{testHeader(true, false, 4), testHeader(false, true, 4), testHeader(false, false, 4)} {
		sets = append(sets, frags(t, sa, hd, p, 2))
	}
	for _, s := range sets {
		expect(t, r.Add(sa, s[0]), sk.StatusStored, sk.DropNone)
	}
	for _, s := range sets {
		expect(t, r.Add(sa, s[1]), sk.StatusComplete, sk.DropNone)
	}
}

func TestReassemblerLimits(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 1))
	p := testPayloads(600, 1)

	r := sk.NewReassembler(sk.ReassemblerConfig{MaxFragments: 4})
	expect(t, r.Add(sa, frags(t, sa, testHeader(true, false, 1), p, 5)[0]), sk.StatusDropped, sk.DropTooManyFragments)

	r = sk.NewReassembler(sk.ReassemblerConfig{MaxMessageSize: 450})
	fs := frags(t, sa, testHeader(true, false, 1), p, 3) // 202+202+200 bytes
	expect(t, r.Add(sa, fs[0]), sk.StatusStored, sk.DropNone)
	expect(t, r.Add(sa, fs[1]), sk.StatusStored, sk.DropNone)
	expect(t, r.Add(sa, fs[2]), sk.StatusDropped, sk.DropTooLarge)
	if st := r.Stats(); st.Drops[sk.DropTooLarge] != 3 || st.Fragments != 0 || st.Bytes != 0 {
		t.Fatalf("too large: %+v", st)
	}

	r = sk.NewReassembler(sk.ReassemblerConfig{MaxFragmentsPerSA: 2})
	for id := uint32(1); id <= 3; id++ {
		want, drop := sk.StatusStored, sk.DropNone
		if id == 3 {
			want, drop = sk.StatusDropped, sk.DropSALimit
		}
		expect(t, r.Add(sa, frags(t, sa, testHeader(true, false, id), p, 3)[0]), want, drop)
	}
	other := testHeader(true, false, 1)
	other.SPIi[0] ^= 0xff
	expect(t, r.Add(sa, frags(t, sa, other, p, 3)[0]), sk.StatusStored, sk.DropNone)

	r = sk.NewReassembler(sk.ReassemblerConfig{MaxFragmentsTotal: 2})
	for i := 0; i < 3; i++ {
		h := testHeader(true, false, 1)
		h.SPIi[0] = byte(i)
		want, drop := sk.StatusStored, sk.DropNone
		if i == 2 {
			want, drop = sk.StatusDropped, sk.DropTotalLimit
		}
		expect(t, r.Add(sa, frags(t, sa, h, p, 3)[0]), want, drop)
	}

	r = sk.NewReassembler(sk.ReassemblerConfig{MaxBytesTotal: 300})
	expect(t, r.Add(sa, frags(t, sa, testHeader(true, false, 1), p, 3)[0]), sk.StatusStored, sk.DropNone)
	expect(t, r.Add(sa, frags(t, sa, testHeader(true, false, 2), p, 3)[0]), sk.StatusDropped, sk.DropTotalLimit)
}

func TestReassemblerAge(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 1))
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	r := sk.NewReassembler(sk.ReassemblerConfig{MaxAge: 30 * time.Second, RetransmitMemory: time.Minute, Now: clk.Now})
	h := testHeader(true, false, 1)
	fs := frags(t, sa, h, testPayloads(500, 1), 2)
	expect(t, r.Add(sa, fs[0]), sk.StatusStored, sk.DropNone)
	clk.Add(29 * time.Second)
	if r.Expire() != 0 {
		t.Fatal("expired early")
	}
	clk.Add(2 * time.Second)
	// lazily expired by the next Add: fragment 2 starts a new set
	expect(t, r.Add(sa, fs[1]), sk.StatusStored, sk.DropNone)
	if st := r.Stats(); st.Drops[sk.DropExpired] != 1 || st.Sets != 1 {
		t.Fatalf("%+v", st)
	}
	clk.Add(31 * time.Second)
	if r.Expire() != 1 {
		t.Fatal("Expire did not discard")
	}
	// retransmission memory ends too
	expect(t, r.Add(sa, fs[0]), sk.StatusStored, sk.DropNone)
	expect(t, r.Add(sa, fs[1]), sk.StatusComplete, sk.DropNone)
	expect(t, r.Add(sa, fs[1]), sk.StatusRetransmit, sk.DropNone)
	clk.Add(61 * time.Second)
	expect(t, r.Add(sa, fs[1]), sk.StatusStored, sk.DropNone)
	if st := r.Stats(); st.Drops[sk.DropExpired] != 2 {
		t.Fatalf("%+v", st)
	}
}

func TestReassemblerInconsistentAndForget(t *testing.T) {
	sa := mustSA(t, testKeys(gcmSuite, 1))
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	h := testHeader(true, false, 1)
	p := testPayloads(500, 1)
	fs := frags(t, sa, h, p, 3)
	expect(t, r.Add(sa, fs[0]), sk.StatusStored, sk.DropNone)
	h2 := h
	h2.Exchange = 37 // INFORMATIONAL
	expect(t, r.Add(sa, frags(t, sa, h2, p, 3)[1]), sk.StatusDropped, sk.DropInconsistent)
	// unprotected payloads after fragment 1
	h3 := h
	h3.NextPayload = 43
	bad, err := sa.SealFragment(&h3, []byte{53, 0, 0, 5, 1}, 0, 2, 3, p[:10], nil)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, r.Add(sa, bad), sk.StatusDropped, sk.DropInconsistent)
	expect(t, r.Add(sa, []byte("short")), sk.StatusDropped, sk.DropMalformed)
	r.Forget(h.SPIi, h.SPIr)
	if st := r.Stats(); st.Sets != 0 || st.Drops[sk.DropForgotten] != 1 {
		t.Fatalf("%+v", st)
	}
	// keys deleted while fragments arrive
	sa.Close()
	expect(t, r.Add(sa, fs[1]), sk.StatusDropped, sk.DropKeysDeleted)
	if m := r.Stats(); len(m.DropCounts()) != 4 {
		t.Fatalf("%v", m.DropCounts())
	}
}
