package sk

import (
	"bytes"
	"testing"
)

// Close wipes the SA's copies of the keys, and NewSA copies them so the
// caller's may be wiped at once.
func TestCloseWipesKeys(t *testing.T) {
	for _, s := range []Suite{{Encr: EncrAESCBC, KeyBits: 256, Integ: AuthHMACSHA2_512_256}, {Encr: EncrAESGCM8, KeyBits: 128}} {
		k := &Keys{Suite: s, SK_ei: bytes.Repeat([]byte{1}, s.EncKeyLen()), SK_er: bytes.Repeat([]byte{2}, s.EncKeyLen()),
			SK_ai: bytes.Repeat([]byte{3}, s.AuthKeyLen()), SK_ar: bytes.Repeat([]byte{4}, s.AuthKeyLen())}
		sa, err := NewSA(k)
		if err != nil {
			t.Fatal(err)
		}
		k.Zero()
		for _, key := range [][]byte{k.SK_ei, k.SK_er, k.SK_ai, k.SK_ar} {
			if !allZero(key) {
				t.Fatal("Keys.Zero left bytes")
			}
		}
		held := [][]byte{sa.dir[0].encKey, sa.dir[0].authKey, sa.dir[1].encKey, sa.dir[1].authKey, sa.dir[0].salt[:], sa.dir[1].salt[:]}
		if allZero(held[0]) {
			t.Fatal("SA shares the caller's key slice")
		}
		sa.Close()
		for i, key := range held {
			if !allZero(key) {
				t.Fatalf("%s: key copy %d not wiped", s, i)
			}
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
