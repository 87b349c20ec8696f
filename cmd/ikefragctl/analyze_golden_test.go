package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/test/lab"
)

// repoLab is a capture of diag/testdata/lab, recorded by the project's lab
// with real strongSwan (diag's TestRecordLab).
func repoLab(name string) string {
	return filepath.Join("..", "..", "diag", "testdata", "lab", name)
}

// repoCaptures lists the captures the repository carries for the verdict
// tests (diag/testdata: recorded by the lab, or built), by golden name.
func repoCaptures(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range []string{"lab", "synth"} {
		m, err := filepath.Glob(filepath.Join("..", "..", "diag", "testdata", dir, "*.pcap"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			out[dir+"-"+strings.TrimSuffix(filepath.Base(p), ".pcap")] = p
		}
	}
	if len(out) < 15 {
		t.Fatalf("only %d captures in diag/testdata", len(out))
	}
	return out
}

// TestAnalyzeGolden keeps `ikefragctl analyze` of every repository capture,
// text and --json, with its exit status, equal to
// testdata/analyze/NAME.{txt,json}. After a deliberate change run
// go test ./cmd/ikefragctl -run TestAnalyzeGolden -update and review the
// diff. A capture with a key table next to it (NAME.keys) is analysed
// with --keys, through a private copy.
func TestAnalyzeGolden(t *testing.T) {
	caps := repoCaptures(t)
	names := make([]string, 0, len(caps))
	for n := range caps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		path := caps[name]
		t.Run(name, func(t *testing.T) {
			var extra []string
			if k := strings.TrimSuffix(path, ".pcap") + ".keys"; fileExists(k) {
				extra = []string{"--keys", lab.PrivateCopy(t, k)}
			}
			for _, c := range []struct{ ext, flag string }{{"txt", ""}, {"json", "--json"}} {
				args := append([]string{"analyze"}, extra...)
				if c.flag != "" {
					args = append(args, c.flag)
				}
				out, code := runCtl(t, append(args, path)...)
				golden(t, filepath.Join("analyze", name+"."+c.ext), fmt.Sprintf("exit %d\n%s\n", code, out))
			}
		})
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
