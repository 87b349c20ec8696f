package diag_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/test/shared"
)

var update = flag.Bool("update", false, "rewrite the golden reports in testdata/golden")

// TestGolden compares whole JSON reports (schema version 2) of every input
// the repository carries (repoCases) with testdata/golden/repo: any change
// of a verdict, remedy, evidence line or field shows up as a diff. After a
// deliberate change, run go test ./diag -run TestGolden -update and review
// the diff.
func TestGolden(t *testing.T) {
	for _, c := range repoCases() {
		t.Run(c.name, func(t *testing.T) {
			checkGolden(t, filepath.Join("testdata", "golden", "repo", c.name+".json"), reportOf(t, c))
		})
	}
}

// TestGoldenShared does the same for captures of ../shared, when present.
func TestGoldenShared(t *testing.T) {
	cases := map[string]func(t *testing.T) string{
		"lab-b":       func(t *testing.T) string { return shared.LabPcap(t, "b.pcap") },
		"lab-c":       func(t *testing.T) string { return shared.LabPcap(t, "c.pcap") },
		"lab-d":       func(t *testing.T) string { return shared.LabPcap(t, "d.pcap") },
		"lab-e":       func(t *testing.T) string { return shared.LabPcap(t, "e.pcap") },
		"windows-809": func(t *testing.T) string { return shared.Corpus(t, "zeek-spicy-ipsec-ipsec_client.pcap") },
		"no-proposal": func(t *testing.T) string { return shared.Corpus(t, "scapy-ikev2_notify_redirect.pcap") },
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			checkGolden(t, filepath.Join("testdata", "golden", name+".json"), analyze(t, path(t)))
		})
	}
}

func checkGolden(t *testing.T, file string, r diag.Report) {
	t.Helper()
	if r.Version != diag.SchemaVersion || diag.SchemaVersion != 2 {
		t.Fatalf("schema version %d", r.Version)
	}
	got, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("report differs from %s; run with -update after a deliberate change and review the diff.\ngot:\n%s", file, firstDiff(got, want))
	}
}

// firstDiff shows the lines around the first difference.
func firstDiff(a, b []byte) string {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := 0; i < len(la) && i < len(lb); i++ {
		if !bytes.Equal(la[i], lb[i]) {
			return "line " + itoa(i+1) + ":\n got: " + string(la[i]) + "\nwant: " + string(lb[i])
		}
	}
	return "lengths differ"
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
