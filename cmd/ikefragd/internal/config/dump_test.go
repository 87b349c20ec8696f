package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The dump reads back as the same configuration, for the defaults and for
// a file that sets values of every kind.
func TestDumpRoundTrips(t *testing.T) {
	cases := map[string]string{
		"defaults": "",
		"values": "interfaces: [lo, \"ppp*\"]\nobserve:\n  fragment_timeout: 2s\nproxy:\n  backends: [192.0.2.10]\n" +
			"  pmtu_overrides: {\"198.51.100.0/24\": 1400, \"2001:db8::/32\": 1280}\n  pmtu_step_down: [1400, 1280]\n  idle_timeout: 2m\n",
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			orig, err := load(t, text)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			Dump(&out, orig)
			if !strings.HasPrefix(out.String(), "# effective configuration") {
				t.Errorf("dump does not open with its comment:\n%s", out.String())
			}
			p := filepath.Join(t.TempDir(), "dump.yaml")
			if err := os.WriteFile(p, out.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			back, err := Load(p)
			if err != nil {
				t.Fatalf("the dump does not load: %v\n%s", err, out.String())
			}
			if !reflect.DeepEqual(Flatten(back), Flatten(orig)) {
				t.Errorf("dump does not round-trip:\n%v\n%v", Flatten(back), Flatten(orig))
			}
			if changed, _ := Changed(orig, back); len(changed) != 0 {
				t.Errorf("dump reloads with changes: %v", changed)
			}
		})
	}
}
