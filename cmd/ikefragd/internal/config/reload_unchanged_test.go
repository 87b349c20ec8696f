package config

import (
	"os"
	"path/filepath"
	"testing"
)

// A reload of an unchanged file changes nothing, pmtu_overrides included,
// in either of its two forms.
func TestReloadUnchangedFileChangesNothing(t *testing.T) {
	for _, ov := range []string{
		"  pmtu_overrides:\n    \"198.51.100.0/24\": 1400\n    \"2001:db8::/32\": 1280\n",
		"  pmtu_overrides:\n    - {prefix: 198.51.100.0/24, mtu: 1400}\n",
		"",
	} {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte("proxy:\n  backends: [192.0.2.1]\n"+ov), 0o644); err != nil {
			t.Fatal(err)
		}
		a, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if changed, restart := Changed(a, b); len(changed)+len(restart) != 0 {
			t.Errorf("%q: unchanged file reported as changed: %v (restart %v)", ov, changed, restart)
		}
	}
}
