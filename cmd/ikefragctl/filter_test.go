package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/test/shared"
)

// runCtlIn is runCtl with standard input.
func runCtlIn(t *testing.T, stdin []byte, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(bytes.NewReader(stdin))
	root.SetArgs(args)
	code := 0
	if err := root.Execute(); err != nil {
		code = 2
		if ee, ok := err.(*exitError); ok {
			code = ee.code
		}
		out.WriteString(err.Error())
	}
	return out.String(), code
}

// analyze - reads pcap and pcapng from standard input and says the same
// as for the file.
func TestAnalyzeStdin(t *testing.T) {
	for name, file := range map[string]func(t *testing.T) string{
		"repo b.pcap":              func(*testing.T) string { return repoLab("b.pcap") },
		"corpus scapy-ikev2_nat_t": func(t *testing.T) string { return shared.Corpus(t, "scapy-ikev2_nat_t.pcapng") },
	} {
		t.Run(name, func(t *testing.T) {
			f := file(t)
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want, wcode := runCtl(t, "analyze", f)
			got, gcode := runCtlIn(t, b, "analyze", "-")
			if got != want || gcode != wcode || !strings.Contains(got, "session(s)") {
				t.Errorf("%s: analyze - exit %d:\n%s\nwant exit %d:\n%s", f, gcode, got, wcode, want)
			}
			if got, code := runCtlIn(t, b, "decode", "-"); code != 0 || !strings.Contains(got, "IKE_SA_INIT") {
				t.Errorf("%s: decode -: exit %d\n%s", f, code, got)
			}
		})
	}
	if out, code := runCtlIn(t, []byte("not a capture at all"), "analyze", "-"); code != 2 || !strings.Contains(out, "standard input") {
		t.Errorf("garbage on stdin: exit %d: %s", code, out)
	}
	if out, code := runCtlIn(t, nil, "analyze", "-", "-"); code != 2 || !strings.Contains(out, "given 2 times") {
		t.Errorf("stdin twice: exit %d: %s", code, out)
	}
}

func analyzeJSON(t *testing.T, args ...string) (diag.Report, int) {
	t.Helper()
	out, code := runCtl(t, append([]string{"analyze", "--json"}, args...)...)
	var r diag.Report
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&r); err != nil {
		t.Fatalf("analyze --json %v: %v\n%s", args, err, out)
	}
	return r, code
}

func hostOf(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// The filters on a 70-session capture, checked against the unfiltered
// report.
func TestAnalyzeFilters(t *testing.T) {
	f := shared.Corpus(t, "nDPI-ipsec_isakmp_esp.pcap")
	all, _ := analyzeJSON(t, f)
	if len(all.Sessions) < 20 {
		t.Fatalf("%d sessions; the test wants a capture with many", len(all.Sessions))
	}
	// --severity warning: the sessions with a warning or error verdict,
	// showing only those verdicts.
	var wantIDs []int
	for _, s := range all.Sessions {
		for _, v := range s.Verdicts {
			if v.Severity != diag.Info {
				wantIDs = append(wantIDs, s.ID)
				break
			}
		}
	}
	r, code := analyzeJSON(t, "--severity", "warning", f)
	var ids []int
	for _, s := range r.Sessions {
		ids = append(ids, s.ID)
		for _, v := range s.Verdicts {
			if v.Severity == diag.Info {
				t.Errorf("session %d: info verdict %s shown with --severity warning", s.ID, v.Code)
			}
		}
	}
	if !slices.Equal(ids, wantIDs) || len(ids) == 0 || len(ids) == len(all.Sessions) || code != 0 || r.Summary.Sessions != len(ids) {
		t.Errorf("--severity warning: sessions %v (summary %d, exit %d), want %v", ids, r.Summary.Sessions, code, wantIDs)
	}
	// --peer: the sessions of one client address.
	peer := hostOf(all.Sessions[0].Client)
	var want []int
	for _, s := range all.Sessions {
		if hostOf(s.Client) == peer || hostOf(s.Server) == peer {
			want = append(want, s.ID)
		}
	}
	r, _ = analyzeJSON(t, "--peer", peer.String(), f)
	ids = nil
	for _, s := range r.Sessions {
		ids = append(ids, s.ID)
	}
	if !slices.Equal(ids, want) || len(want) == 0 {
		t.Errorf("--peer %s: %v, want %v", peer, ids, want)
	}
	// --session, twice and comma separated.
	a, b := all.Sessions[1].ID, all.Sessions[len(all.Sessions)-1].ID
	r, _ = analyzeJSON(t, "--session", strconv.Itoa(a), "--session", strconv.Itoa(b), f)
	if len(r.Sessions) != 2 || r.Sessions[0].ID != a || r.Sessions[1].ID != b {
		t.Errorf("--session %d --session %d: %d sessions", a, b, len(r.Sessions))
	}
	// --since, relative to the capture's last packet: the sessions active
	// in the last part.
	end := captureEnd(&all)
	mid := all.Sessions[len(all.Sessions)/2].End
	d := end.Sub(mid)
	want = nil
	for _, s := range all.Sessions {
		if !s.End.Before(end.Add(-d)) {
			want = append(want, s.ID)
		}
	}
	r, _ = analyzeJSON(t, "--since", d.String(), f)
	ids = nil
	for _, s := range r.Sessions {
		ids = append(ids, s.ID)
	}
	if !slices.Equal(ids, want) || len(ids) == len(all.Sessions) {
		t.Errorf("--since %v: %v, want %v", d, ids, want)
	}
	// An absolute --since after the capture: nothing.
	r, _ = analyzeJSON(t, "--since", end.Add(time.Hour).Format(time.RFC3339), f)
	if len(r.Sessions) != 0 || r.Summary.Sessions != 0 {
		t.Errorf("--since after the end: %d sessions", len(r.Sessions))
	}
	// The exit status follows what is shown: an error verdict filtered
	// away is exit 0.
	fd := repoLab("b.pcap")
	if _, code := runCtl(t, "analyze", fd); code != 1 {
		t.Errorf("b.pcap: exit %d, want 1", code)
	}
	if _, code := runCtl(t, "analyze", "--peer", "192.0.2.99", fd); code != 0 {
		t.Errorf("b.pcap filtered to nothing: exit %d, want 0", code)
	}
	for _, bad := range [][]string{{"--peer", "nohost"}, {"--severity", "fatal"}, {"--since", "yesterday"}, {"--session", "x"}} {
		if out, code := runCtl(t, append(append([]string{"analyze"}, bad...), fd)...); code != 2 || !strings.Contains(out, bad[0]) {
			t.Errorf("%v: exit %d, want 2 naming the flag: %s", bad, code, out)
		}
	}
}

// The event filter: peer, session and severity keep matching verdict
// events only; since applies to every event.
func TestEventFilter(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	v := func(sess int, sev diag.Severity, client string) control.Event {
		return control.Event{Time: now.Add(-time.Minute), Kind: control.EventVerdict,
			Verdict: &diag.Verdict{Session: sess, Severity: sev, Client: client, Server: "192.0.2.1:500"}}
	}
	iface := control.Event{Time: now.Add(-time.Hour), Kind: control.EventInterface, Interface: "eth0"}
	cases := []struct {
		args []string
		ev   control.Event
		want bool
	}{
		{nil, iface, true},
		{[]string{"--since", "10m"}, iface, false},
		{[]string{"--since", "10m"}, v(1, diag.Error, "10.0.0.1:500"), true},
		{[]string{"--peer", "10.0.0.0/8"}, v(1, diag.Error, "10.0.0.1:500"), true},
		{[]string{"--peer", "10.0.0.0/8"}, v(1, diag.Error, "172.16.0.1:500"), false},
		{[]string{"--peer", "192.0.2.1"}, v(1, diag.Error, "172.16.0.1:500"), true}, // the server
		{[]string{"--peer", "10.0.0.0/8"}, iface, false},
		{[]string{"--session", "2,3"}, v(3, diag.Info, "10.0.0.1:500"), true},
		{[]string{"--session", "2,3"}, v(1, diag.Info, "10.0.0.1:500"), false},
		{[]string{"--severity", "warning"}, v(1, diag.Info, "10.0.0.1:500"), false},
		{[]string{"--severity", "warning"}, v(1, diag.Error, "10.0.0.1:500"), true},
	}
	for _, c := range cases {
		var f filter
		cmd := newEventsCmd()
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		// The flags are bound to the command's own filter: read them back.
		f.peerArgs, _ = cmd.Flags().GetStringSlice("peer")
		f.sessions, _ = cmd.Flags().GetIntSlice("session")
		f.severity, _ = cmd.Flags().GetString("severity")
		f.sinceArg, _ = cmd.Flags().GetString("since")
		if err := f.parse(); err != nil {
			t.Fatal(err)
		}
		if got := f.event(&c.ev, now); got != c.want {
			t.Errorf("%v on %+v: %v, want %v", c.args, c.ev, got, c.want)
		}
	}
}

// --keys on a file that is not a key table says so and never advises
// changing its mode; a real table readable by others still gets the
// chmod advice.
func TestKeysNotATable(t *testing.T) {
	pc := repoLab("c.pcap")
	out, code := runCtl(t, "analyze", "--keys", "/etc/passwd", pc)
	if code != 2 || !strings.Contains(out, "not a strongSwan save-keys table: /etc/passwd") || strings.Contains(out, "chmod") {
		t.Errorf("--keys /etc/passwd: exit %d: %s", code, out)
	}
	table := t.TempDir() + "/ikev2_decryption_table"
	line := `0d9231365d81f170,5465b4ff8a07696d,991926fdf2ddc7d4d26ae14ea10d643b7534b920b1dbc518fe86d4ca085cf9a6,c76219c23bf4a041ce3116f30fbb7eb63d9a78ff2438a8a6ab21b9d9998d5102,"AES-CBC-256 [RFC3602]",0ec654e763b621f3b6c7cf4527d02c2b4b42113cd2038c9f418c78ceac27418e,dd7ec1f0934bfe1be79a1d41dec02ffc6e2b69a566fd374dd32333d9cbc7ffc3,"HMAC_SHA2_256_128 [RFC4868]"` + "\n"
	if err := os.WriteFile(table, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(table, 0o644)
	out, code = runCtl(t, "analyze", "--keys", table, pc)
	if code != 2 || !strings.Contains(out, "chmod 600 "+table) {
		t.Errorf("--keys on a 0644 table: exit %d: %s", code, out)
	}
}
