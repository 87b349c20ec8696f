// Package shared locates the read-only material that sits beside the
// repository (../shared relative to the module root): the public IKE capture
// corpus and the lab captures with their key tables. Tests use it to read
// those files in place and skip, saying why, when they are absent.
package shared

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Find returns the shared directory, if present.
func Find() (string, bool) {
	wd, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for d := wd; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			s := filepath.Join(d, "..", "shared")
			if fi, err := os.Stat(s); err == nil && fi.IsDir() {
				return s, true
			}
			return "", false
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", false
		}
		d = parent
	}
}

// Dir returns the shared directory or skips the test.
func Dir(tb testing.TB) string {
	tb.Helper()
	d, ok := Find()
	if !ok {
		tb.Skip("shared material not found: expected ../shared next to the module root (go.mod)")
	}
	return d
}

func file(tb testing.TB, parts ...string) string {
	tb.Helper()
	p := filepath.Join(append([]string{Dir(tb)}, parts...)...)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("shared file %s not present: %v", filepath.Join(parts...), err)
	}
	return p
}

// Corpus returns the path of a file of the public capture corpus.
func Corpus(tb testing.TB, name string) string {
	tb.Helper()
	return file(tb, "corpus", "ike-pcaps", name)
}

// CorpusFiles lists every capture of the corpus (pcap and pcapng).
func CorpusFiles(tb testing.TB) []string {
	tb.Helper()
	var out []string
	for _, pat := range []string{"*.pcap", "*.pcapng", "*.cap"} {
		m, _ := filepath.Glob(filepath.Join(Dir(tb), "corpus", "ike-pcaps", pat))
		out = append(out, m...)
	}
	sort.Strings(out)
	if len(out) == 0 {
		tb.Skip("no captures in the shared corpus")
	}
	return out
}

// LabPcap returns the path of a lab capture (pcaps/NAME).
func LabPcap(tb testing.TB, name string) string {
	tb.Helper()
	return file(tb, "lab", "pcaps", name)
}

// LabResult returns the path of a lab result file (results/NAME), such as
// the save-keys table "a-keys.txt".
func LabResult(tb testing.TB, name string) string {
	tb.Helper()
	return file(tb, "lab", "results", name)
}
