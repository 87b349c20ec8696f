package keytable

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A line in the format strongSwan's save-keys plugin writes (keys made up
// for the test).
const tableLine = `0d9231365d81f170,5465b4ff8a07696d,991926fdf2ddc7d4d26ae14ea10d643b7534b920b1dbc518fe86d4ca085cf9a6,c76219c23bf4a041ce3116f30fbb7eb63d9a78ff2438a8a6ab21b9d9998d5102,"AES-CBC-256 [RFC3602]",0ec654e763b621f3b6c7cf4527d02c2b4b42113cd2038c9f418c78ceac27418e,dd7ec1f0934bfe1be79a1d41dec02ffc6e2b69a566fd374dd32333d9cbc7ffc3,"HMAC_SHA2_256_128 [RFC4868]"` + "\n"

func TestCheckFormat(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, text := range map[string]string{
		"table":   tableLine + tableLine,
		"empty":   "",
		"partial": tableLine + tableLine[:40], // a line being written
	} {
		if err := CheckFormat(write(name, text)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := CheckFormat(filepath.Join(dir, "absent")); err != nil {
		t.Errorf("absent: %v", err)
	}
	for name, text := range map[string]string{
		"passwd":    "root:x:0:0:root:/root:/bin/bash\n",
		"csv":       "a,b,c,d,e,f,g,h\n",
		"long":      strings.Repeat("x", 10000) + "\n",
		"bad-later": tableLine + "garbage\n",
	} {
		err := CheckFormat(write(name, text))
		if !errors.Is(err, ErrNotTable) || strings.Contains(err.Error(), "991926fd") {
			t.Errorf("%s: %v, want ErrNotTable without key bytes", name, err)
		}
	}
	// A directory: its ikev2_decryption_table is what counts.
	sub := filepath.Join(dir, "d")
	_ = os.Mkdir(sub, 0o700)
	_ = os.WriteFile(filepath.Join(sub, "ikev2_decryption_table"), []byte("nope\n"), 0o600)
	if err := CheckFormat(sub); !errors.Is(err, ErrNotTable) {
		t.Errorf("directory holding a bad table: %v", err)
	}
	if err := CheckFormat("/dev/null"); !errors.Is(err, ErrNotTable) {
		t.Errorf("/dev/null: %v", err)
	}
}

// Any file content gives nil or ErrNotTable, never a panic, and never
// key bytes in the message.
func FuzzCheckFormat(f *testing.F) {
	f.Add([]byte(tableLine))
	f.Add([]byte("root:x:0:0::/root:/bin/sh\n"))
	f.Add([]byte(tableLine + tableLine[:20]))
	p := filepath.Join(f.TempDir(), "t")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := CheckFormat(p); err != nil && !errors.Is(err, ErrNotTable) {
			t.Fatalf("%v", err)
		}
	})
}
