package main

import (
	"bytes"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/test/shared"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := "testdata/" + name
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

// A label longer than the ladder widens the whole ladder: the fact at its
// end (IP fragments, INCOMPLETE) is shown whole, and every row keeps the
// same width.
func TestLadderLongLabelsGolden(t *testing.T) {
	s := diag.SessionReport{Ladder: []diag.LadderRow{
		{Offset: 0, FromClient: true, Exchange: "IKE_SA_INIT", Length: 584, IPFragments: 1, Complete: true, Copies: 1},
		{Offset: 2 * time.Millisecond, Exchange: "IKE_SA_INIT", Response: true, Length: 657, IPFragments: 1, Complete: true, Copies: 1},
		{Offset: 13 * time.Millisecond, FromClient: true, Exchange: "IKE_AUTH", MessageID: 1, Length: 1460, SKFNumber: 2, SKFTotal: 4, IPFragments: 2, Complete: true, Copies: 1},
		{Offset: 2014 * time.Millisecond, Exchange: "IKE_AUTH", Response: true, MessageID: 1, Length: 1460, SKFNumber: 2, SKFTotal: 4, IPFragments: 2, Complete: false, Retransmission: true, Copies: 2},
		{Offset: 3 * time.Second, FromClient: true, Exchange: "INFORMATIONAL", MessageID: 4294967295, Length: 65535, SKFNumber: 65535, SKFTotal: 65535, IPFragments: 45, Complete: false, Copies: 1},
	}}
	var b bytes.Buffer
	writeLadder(&b, &s)
	out := b.String()
	for i := range s.Ladder {
		if l := ladderLabel(&s.Ladder[i]); !strings.Contains(out, l+"--") {
			t.Errorf("row %d: label %q not whole", i, l)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines[1:] {
		if a, z := strings.Index(l, "|"), strings.LastIndex(l, "|"); z-a != len(lines[1][strings.Index(lines[1], "|"):strings.LastIndex(lines[1], "|")]) {
			t.Errorf("rows of different widths:\n%s", out)
			break
		}
	}
	golden(t, "ladder-long-labels.golden", out)
}

// A ladder whose labels fit keeps the 44-column width it always had.
func TestLadderShortLabelsGolden(t *testing.T) {
	s := diag.SessionReport{Ladder: []diag.LadderRow{
		{FromClient: true, Exchange: "IKE_SA_INIT", Length: 584, IPFragments: 1, Complete: true, Copies: 1},
		{Offset: time.Millisecond, Exchange: "IKE_SA_INIT", Response: true, Length: 657, IPFragments: 1, Complete: true, Copies: 1},
	}}
	var b bytes.Buffer
	writeLadder(&b, &s)
	golden(t, "ladder-short-labels.golden", b.String())
}

// On every capture of the repository and, when ../shared is there, of the
// corpus, each ladder label of the report appears whole in analyze's text.
func TestLadderLabelsNeverCut(t *testing.T) {
	var files []string
	for _, f := range repoCaptures(t) {
		files = append(files, f)
	}
	if _, ok := shared.Find(); ok {
		files = append(files, shared.CorpusFiles(t)...)
	}
	rows := 0
	for _, f := range files {
		r, _ := analyzeJSON(t, f)
		text, _ := runCtl(t, "analyze", f)
		for i := range r.Sessions {
			for j := range r.Sessions[i].Ladder {
				rows++
				if l := ladderLabel(&r.Sessions[i].Ladder[j]); !strings.Contains(text, l+"--") {
					t.Errorf("%s: session %d row %d: %q not whole in the text", f, r.Sessions[i].ID, j, l)
				}
			}
		}
	}
	if rows < 100 {
		t.Errorf("only %d ladder rows checked", rows)
	}
}

// stats labels every column.
func TestStatsColumnsLabelled(t *testing.T) {
	st := control.Stats{Interfaces: []control.IfaceStats{{Name: "eth0", Ifindex: 2, Mode: "tcx",
		Ingress: map[string]control.Counter{"ikev2": {Packets: 10, Bytes: 5000}, "trains_started": {Packets: 3}},
		Egress:  map[string]control.Counter{"ikev2": {Packets: 9, Bytes: 4000}}}}}
	var b bytes.Buffer
	writeStats(&b, &st)
	golden(t, "stats.golden", b.String())
	header := strings.Split(b.String(), "\n")[1]
	for _, col := range []string{"class", "ingress packets", "ingress bytes", "egress packets", "egress bytes"} {
		if !strings.Contains(header, col) {
			t.Errorf("stats header %q lacks %q", header, col)
		}
	}
}

// stats prints the classes in the order the daemon names them, and by
// name when it names none.
func TestStatsClassOrder(t *testing.T) {
	ifc := control.IfaceStats{Name: "eth0", Ifindex: 2, Mode: "tcx",
		Ingress: map[string]control.Counter{"ikev2": {Packets: 10}, "trains_started": {Packets: 3}, "esp": {Packets: 1}},
		Egress:  map[string]control.Counter{"natt_keepalive": {Packets: 2}}}
	cases := []struct {
		classes, want []string
	}{
		{nil, []string{"esp", "ikev2", "natt_keepalive", "trains_started"}},
		{[]string{"trains_started", "ikev2", "natt_keepalive", "esp"}, []string{"trains_started", "ikev2", "natt_keepalive", "esp"}},
		{[]string{"ikev2", "esp"}, []string{"ikev2", "esp"}}, // a class the daemon does not name is not printed
	}
	for _, c := range cases {
		st := control.Stats{Classes: c.classes, Interfaces: []control.IfaceStats{ifc}}
		var b bytes.Buffer
		writeStats(&b, &st)
		var got []string
		for _, l := range strings.Split(b.String(), "\n")[2:] {
			f := strings.Fields(l)
			if len(f) == 0 {
				break
			}
			got = append(got, f[0])
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("classes %v: printed %v, want %v\n%s", c.classes, got, c.want, b.String())
		}
	}
}
