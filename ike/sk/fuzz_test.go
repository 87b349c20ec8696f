package sk_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// fuzzSAs are fixed-key SAs of every cipher family.
var fuzzSAs = sync.OnceValue(func() []*sk.SA {
	var out []*sk.SA
	for i, s := range []sk.Suite{
		{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128},
		{Encr: sk.Encr3DES, KeyBits: 192, Integ: sk.AuthHMACSHA1_96},
		{Encr: sk.EncrAESGCM16, KeyBits: 128},
		{Encr: sk.EncrAESGCM8, KeyBits: 256},
		{Encr: sk.EncrChaCha20Poly1305, KeyBits: 256},
	} {
		sa, err := sk.NewSA(testKeys(s, byte(i)))
		if err != nil {
			panic(err)
		}
		out = append(out, sa)
	}
	return out
})

// FuzzOpen feeds arbitrary bytes to Open under fixed keys (and to a
// Reassembler): no input may panic, and whatever opens must be consistent.
func FuzzOpen(f *testing.F) {
	for i, sa := range fuzzSAs() {
		d := &sk.Decrypted{Header: testHeader(i%2 == 0, i%2 == 1, uint32(i)), Inner: 35, Payloads: testPayloads(20*i, byte(i))}
		msg, _ := sa.Seal(d, newSeq(byte(i)))
		f.Add(msg)
		h := d.Header
		frag, _ := sa.SealFragment(&h, nil, 35, 1, 2, d.Payloads, newSeq(byte(i)))
		f.Add(frag)
		h.NextPayload = 43
		frag, _ = sa.SealFragment(&h, []byte{53, 0, 0, 6, 1, 2}, 35, 2, 2, d.Payloads, newSeq(byte(i)))
		f.Add(frag)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 28))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := sk.NewReassembler(sk.ReassemblerConfig{})
		for _, sa := range fuzzSAs() {
			o, err := sa.Open(data)
			if err == nil {
				if int(o.Header.Length) != len(data) || (o.Fragment && (o.Number == 0 || o.Number > o.Total)) {
					t.Fatalf("opened an inconsistent message: %+v", o.Header)
				}
				// what opens re-seals to something that opens to the same
				var again []byte
				if o.Fragment {
					h := o.Header
					again, err = sa.SealFragment(&h, o.Unprotected, o.NextPayload, o.Number, o.Total, o.Content, nil)
				} else {
					d, _ := o.Decrypted()
					again, err = sa.Seal(d, nil)
				}
				if err != nil {
					t.Fatal(err)
				}
				o2, err := sa.Open(again)
				if err != nil || !bytes.Equal(o2.Content, o.Content) {
					t.Fatalf("re-sealed message does not open: %v", err)
				}
			}
			r.Add(sa, data)
		}
	})
}

// fuzzFragment returns fragment number of total for message msgID in the
// given direction: content is a fixed function of (msgID, dir), cut evenly.
type fragKey struct {
	msgID, total, number int
	resp                 bool
}

var (
	fuzzFragMu sync.Mutex
	fuzzFrags  = map[fragKey][]byte{}
)

func fuzzContent(msgID int, resp bool) []byte {
	seed := byte(msgID * 2)
	if resp {
		seed++
	}
	return testPayloads(60+40*msgID, seed)
}

func fuzzFragment(t *testing.T, sa *sk.SA, k fragKey) []byte {
	fuzzFragMu.Lock()
	defer fuzzFragMu.Unlock()
	if b, ok := fuzzFrags[k]; ok {
		return b
	}
	p := fuzzContent(k.msgID, k.resp)
	n := (len(p) + k.total - 1) / k.total
	chunk := p[min((k.number-1)*n, len(p)):min(k.number*n, len(p))]
	np := ike.PayloadType(35)
	if k.number > 1 {
		np = 0
	}
	h := testHeader(!k.resp, k.resp, uint32(k.msgID))
	b, err := sa.SealFragment(&h, nil, np, uint16(k.number), uint16(k.total), chunk, newSeq(byte(k.number)))
	if err != nil {
		t.Fatal(err)
	}
	fuzzFrags[k] = b
	return b
}

// FuzzReassembler drives a Reassembler with a sequence of fragment
// descriptors (3 bytes each): message, direction, corruption, exchange
// change, clock steps, Forget; Total Fragments; Fragment Number. Every
// complete message must be exactly the one sent, corrupted fragments are
// never kept, and the buffers stay within the limits.
func FuzzReassembler(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 1, 1})
	f.Add([]byte{1, 2, 0, 1, 3, 0, 1, 3, 1, 1, 3, 2, 1, 2, 1})
	f.Add([]byte{0x10, 1, 0, 0, 1, 0, 0x40, 1, 1, 0x80, 0, 0, 0x24, 7, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		sa := fuzzSAs()[2]
		clk := &fakeClock{t: time.Unix(1e9, 0)}
		cfg := sk.ReassemblerConfig{MaxFragments: 7, MaxMessageSize: 300, MaxFragmentsPerSA: 6,
			MaxFragmentsTotal: 10, MaxBytesTotal: 1000, MaxAge: 30 * time.Second, RetransmitMemory: time.Minute,
			MaxRemembered: 3, Now: clk.Now}
		r := sk.NewReassembler(cfg)
		for len(ops) >= 3 {
			b0, b1, b2 := ops[0], ops[1], ops[2]
			ops = ops[3:]
			if b0&0x80 != 0 {
				h := testHeader(true, false, 0)
				r.Forget(h.SPIi, h.SPIr)
				continue
			}
			if b0&0x40 != 0 {
				clk.Add(time.Duration(b1) * time.Second)
			}
			k := fragKey{msgID: int(b0 & 3), resp: b0&4 != 0, total: 1 + int(b1%8)}
			k.number = 1 + int(b2)%k.total
			msg := bytes.Clone(fuzzFragment(t, sa, k))
			corrupt := b0&0x10 != 0
			if corrupt {
				msg[len(msg)-1-int(b2)%16] ^= 1 << (b1 % 8)
			}
			if b0&0x20 != 0 {
				msg[18] = 37 // INFORMATIONAL: breaks the ICV too
				corrupt = true
			}
			res := r.Add(sa, msg)
			if corrupt && (res.Status == sk.StatusStored || res.Status == sk.StatusComplete) {
				t.Fatalf("corrupted fragment %+v kept", k)
			}
			if res.Status == sk.StatusComplete {
				want := fuzzContent(k.msgID, k.resp)
				if !bytes.Equal(res.Message.Payloads, want) || res.Message.Inner != 35 || int(res.Message.Fragments) != k.total {
					t.Fatalf("message %+v reassembled wrong", k)
				}
			}
			st := r.Stats()
			if st.Fragments > cfg.MaxFragmentsTotal || st.Fragments > cfg.MaxFragmentsPerSA || st.Bytes > cfg.MaxBytesTotal ||
				st.Sets > st.Fragments || st.RememberedSet > cfg.MaxRemembered || st.Fragments < 0 || st.Bytes < 0 {
				t.Fatalf("limits exceeded: %+v", st)
			}
		}
		r.Forget(testHeader(true, false, 0).SPIi, testHeader(true, false, 0).SPIr)
		if st := r.Stats(); st.Fragments != 0 || st.Bytes != 0 || st.Sets != 0 {
			t.Fatalf("Forget left %+v", st)
		}
	})
}
