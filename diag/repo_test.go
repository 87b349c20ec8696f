package diag_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/test/lab"
)

// Verdict tests that need only the repository: captures its own lab
// recorded with real strongSwan (testdata/lab, TestRecordLab), synthetic
// captures (testdata/synth, synth_test.go), and records no capture can
// hold (kernel drops). TestEveryCodeHasRepoTest fails when a verdict code
// of docs/diagnosis.md or the remedy table has no case here.

// repoCase is one input of the repository and every verdict it gives.
type repoCase struct {
	name string
	// path of a capture in testdata, or records for what only the live
	// observer reports.
	path    string
	records func() []obs.Record
	// keys is the save-keys table that opens the capture's SK payloads.
	keys string
	// want is every verdict, findings included, with its count.
	want map[verdict]int
}

func (c repoCase) opt(t *testing.T) diag.Options {
	if c.keys == "" {
		return diag.Options{}
	}
	return diag.Options{Keys: lab.KeyStore(t, c.keys)}
}

func (c repoCase) input(t *testing.T) []obs.Record {
	if c.records != nil {
		return c.records()
	}
	return readRecords(t, c.path)
}

func labFile(name string) string   { return filepath.Join("testdata", "lab", name) }
func synthFile(name string) string { return filepath.Join("testdata", "synth", name+".pcap") }

// repoLabCases are the captures recorded by the lab (TestRecordLab).
func repoLabCases() []repoCase {
	return []repoCase{
		{name: "lab-b", path: labFile("b.pcap"), want: map[verdict]int{{diag.FragmentsDropped, diag.TowardServer}: 1}},
		{name: "lab-c", path: labFile("c.pcap"), want: map[verdict]int{{diag.OK, ""}: 1}},
		{name: "lab-d", path: labFile("d.pcap"), want: map[verdict]int{{diag.IKEFragmentsExceedPMTU, diag.TowardClient}: 1}},
		{name: "lab-e", path: labFile("e.pcap"), want: map[verdict]int{{diag.FragmentsDropped, diag.TowardClient}: 1}},
		{name: "lab-f", path: labFile("f.pcap"), want: map[verdict]int{{diag.FragmentsDropped, diag.TowardServer}: 1}},
		{name: "lab-g", path: labFile("g.pcap"), want: map[verdict]int{{diag.FragmentsDropped, diag.TowardServer}: 1, {diag.FragmentationNotNegotiated, ""}: 1}},
		{name: "lab-no-responder", path: labFile("no-responder.pcap"), want: map[verdict]int{{diag.UnansweredSAInit, diag.TowardServer}: 1}},
		{name: "lab-auth-failed", path: labFile("auth-failed.pcap"), keys: labFile("auth-failed.keys"),
			want: map[verdict]int{{diag.AuthenticationFailed, diag.TowardClient}: 1}},
		{name: "lab-invalid-ke", path: labFile("invalid-ke.pcap"), want: map[verdict]int{{diag.InvalidKEPayload, ""}: 1, {diag.OK, ""}: 1}},
		{name: "lab-no-proposal", path: labFile("no-proposal.pcap"), want: map[verdict]int{{diag.NoProposalChosen, ""}: 1}},
		{name: "lab-weak", path: labFile("weak.pcap"), want: map[verdict]int{{diag.WeakCrypto, ""}: 1, {diag.OK, ""}: 1}},
		{name: "esp-blackhole", path: labFile("esp-blackhole.pcap"), want: map[verdict]int{{diag.OK, ""}: 1, {diag.ESPFragmentsDropped, diag.TowardServer}: 1}},
	}
}

// repoCases are every case: the lab's, the synthetic captures, and
// kernel drop records.
func repoCases() []repoCase {
	notifies := map[verdict]int{}
	for _, t := range errorNotifyTypes() {
		notifies[verdict{diag.Code(t.String()), ""}]++
	}
	return append(repoLabCases(),
		repoCase{name: "synth-unanswered-ike-auth", path: synthFile("unanswered-ike-auth"), want: map[verdict]int{{diag.UnansweredIKEAuth, diag.TowardServer}: 1}},
		repoCase{name: "synth-ike-auth-not-seen", path: synthFile("ike-auth-not-seen"), want: map[verdict]int{{diag.IKEAuthNotSeen, diag.TowardServer}: 1}},
		repoCase{name: "synth-ikev1-unanswered", path: synthFile("ikev1-unanswered"), want: map[verdict]int{{diag.IKEv1, ""}: 1, {diag.UnansweredIKEv1, diag.TowardServer}: 1}},
		repoCase{name: "synth-unsolicited", path: synthFile("unsolicited"), want: map[verdict]int{{diag.UnsolicitedResponses, ""}: 1}},
		repoCase{name: "synth-error-notifies", path: synthFile("error-notifies"), want: notifies},
		repoCase{name: "synth-esp-exceeds-pmtu", path: synthFile("esp-exceeds-pmtu"), want: map[verdict]int{{diag.OK, ""}: 1, {diag.ESPExceedsPMTU, diag.TowardServer}: 1}},
		// RFC 9329: IKE_AUTH over UDP loses its IP fragments; the client
		// starts again over TCP (a new IKE SA, synth_tcp_test.go), or
		// moves the same IKE SA to TCP.
		repoCase{name: "synth-tcp-fallback", path: synthFile("tcp-fallback"), want: map[verdict]int{{diag.FragmentsDropped, diag.TowardServer}: 1, {diag.OK, ""}: 1, {diag.TCPFallback, ""}: 1}},
		repoCase{name: "synth-tcp-switch", path: synthFile("tcp-switch"), want: map[verdict]int{{diag.OK, ""}: 1, {diag.TCPFallback, ""}: 1}},
		// IKE_AUTH over TCP retransmitted and never answered: no
		// fragment verdict on a TCP leg (tcp_test.go).
		repoCase{name: "records-tcp-unanswered-ike-auth", records: tcpUnansweredAuth,
			want: map[verdict]int{{diag.UnansweredIKEAuth, diag.TowardServer}: 1}},
		// The kernel of this host dropped an ICMP fragmentation-needed
		// on its way to a local client: only the live observer's drop
		// records show it.
		repoCase{name: "records-pmtud-blackhole-local", records: func() []obs.Record {
			at := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
			router := netip.MustParseAddr("192.0.2.1")
			return []obs.Record{{Drop: &obs.Drop{Time: at, Name: "NETFILTER_DROP", Reason: 6, Src: router, Dst: cliAddr, Proto: 1, ICMPType: 3, ICMPCode: 4}}}
		}, want: map[verdict]int{{diag.PMTUDBlackholeLocal, ""}: 1}},
	)
}

// readRecords reads a capture as ikefragctl analyze does: RFC 9329
// streams decoded into their frames (capture.EncapReader).
func readRecords(t *testing.T, path string) []obs.Record {
	t.Helper()
	cr, err := capture.Open(path, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := capture.NewEncapReader(cr, capture.TCPOptions{})
	defer r.Close()
	var out []obs.Record
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
}

func reportOf(t *testing.T, c repoCase) diag.Report {
	e := diag.New(c.opt(t))
	for _, r := range c.input(t) {
		e.Add(r)
	}
	return e.Report(true)
}

// allVerdicts counts session verdicts and findings.
func allVerdicts(r diag.Report) map[verdict]int {
	m := verdictsOf(r)
	for _, v := range r.Findings {
		m[verdict{v.Code, v.Direction}]++
	}
	return m
}

// TestRepoVerdicts: every input the repository carries gives exactly the
// verdicts it was made for.
func TestRepoVerdicts(t *testing.T) {
	for _, c := range repoCases() {
		t.Run(c.name, func(t *testing.T) {
			got := allVerdicts(reportOf(t, c))
			for v, n := range c.want {
				if got[v] != n {
					t.Errorf("%v: %d, want %d", v, got[v], n)
				}
			}
			for v, n := range got {
				if _, ok := c.want[v]; !ok {
					t.Errorf("unexpected %v ×%d", v, n)
				}
			}
		})
	}
}

// docCodes returns the verdict codes docs/diagnosis.md lists in the first
// column of its tables under "## Verdicts".
func docCodes(t *testing.T) []diag.Code {
	b, err := os.ReadFile(filepath.Join("..", "docs", "diagnosis.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n## Verdicts")
	if i < 0 {
		t.Fatal("docs/diagnosis.md has no ## Verdicts section")
	}
	doc = doc[i+1:]
	if j := strings.Index(doc[3:], "\n## "); j >= 0 {
		doc = doc[:j+3]
	}
	code := regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")
	var out []diag.Code
	for _, line := range strings.Split(doc, "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "|") || len(cells) < 3 {
			continue
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			out = append(out, diag.Code(m[1]))
		}
	}
	return out
}

// TestEveryCodeHasRepoTest: every verdict code listed in docs/diagnosis.md
// or in the remedy table (diag/remedy.go) is given by some input of
// repoCases, so a code added without a test that needs only the
// repository fails here.
func TestEveryCodeHasRepoTest(t *testing.T) {
	tested := map[diag.Code]bool{}
	for _, c := range repoCases() {
		for v := range c.want {
			tested[v.code] = true
		}
	}
	codes := map[diag.Code]string{}
	for _, c := range docCodes(t) {
		codes[c] = "docs/diagnosis.md"
	}
	if len(codes) < 30 {
		t.Fatalf("only %d codes read from docs/diagnosis.md: %v", len(codes), codes)
	}
	for _, c := range diag.RemedyCodes() {
		codes[c] = "the remedy table"
	}
	for _, v := range diag.OtherVerdicts() {
		codes[v.Code] = "diag.OtherVerdicts"
	}
	var missing []string
	for c, where := range codes {
		if !tested[c] {
			missing = append(missing, string(c)+" (from "+where+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("verdict codes without a repository-only test (add a case to repoCases):\n%s", strings.Join(missing, "\n"))
	}
}

// TestReportsDeterministic: the same input gives the same report, byte for
// byte, though the engine walks its sessions in map order.
func TestReportsDeterministic(t *testing.T) {
	for _, c := range repoCases() {
		t.Run(c.name, func(t *testing.T) {
			first, err := json.Marshal(reportOf(t, c))
			if err != nil {
				t.Fatal(err)
			}
			for range 8 {
				again, _ := json.Marshal(reportOf(t, c))
				if !bytes.Equal(first, again) {
					t.Fatalf("reports differ:\n%s", firstDiff(first, again))
				}
			}
		})
	}
}
