package main

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The version stamped at build time (-ldflags -X, as the Makefile does from
// git describe) shows in ikefragd --version, the start-up log line, status,
// /metrics (ikefrag_build_info) and ikefragctl version, which shows the
// client's alone when no daemon answers.
func TestVersionEverywhere(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	out, err := exec.Command(bins.daemon, "--version").CombinedOutput()
	if want := "ikefragd " + testVersion + " (" + runtime.Version() + ")\n"; err != nil || string(out) != want {
		t.Errorf("ikefragd --version: %v %q, want %q", err, out, want)
	}
	out, err = exec.Command(bins.ctl, "--version").CombinedOutput()
	if want := "ikefragctl " + testVersion + " (" + runtime.Version() + ")\n"; err != nil || string(out) != want {
		t.Errorf("ikefragctl --version: %v %q, want %q", err, out, want)
	}

	n := newNetns(t)
	n.veth("v0", "v1")
	d := newDaemon(t, bins, n.name, "interfaces: [v0]\n")

	// No daemon yet: the client's version, exit 0, the reason on stderr.
	cmd := exec.Command(bins.ctl, "version", "--socket", d.socket)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil || string(out) != "client  ikefragctl "+testVersion+" ("+runtime.Version()+")\n" ||
		!strings.Contains(stderr.String(), "daemon  not reachable") {
		t.Errorf("version without a daemon: %v\nstdout %q\nstderr %q", err, out, stderr.String())
	}

	d.start()
	// READY=1 can overtake the log line on its way through stderr's pipe.
	started := `msg="ikefragd started" version=` + testVersion + " goversion=" + runtime.Version()
	if !waitFor(5*time.Second, func() bool { return strings.Contains(d.stderr.String(), started) }) {
		t.Errorf("the start-up line does not carry the version:\n%s", d.stderr)
	}
	st := d.status()
	if st.Version != testVersion || st.GoVersion != runtime.Version() {
		t.Errorf("status version %q go %q", st.Version, st.GoVersion)
	}
	text, code := d.ctl("version")
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[1], "daemon  ikefragd "+testVersion+" ("+runtime.Version()+"), pid ") {
		t.Errorf("ikefragctl version: exit %d\n%s", code, text)
	}
	m := scrape(t, nsHTTP(t, n.name), "127.0.0.1:9717")
	if v := m[`ikefrag_build_info{goversion="`+runtime.Version()+`",version="`+testVersion+`"}`]; v != 1 {
		t.Errorf("ikefrag_build_info not 1 with the version labels; build_info samples: %v", grepKeys(m, "build_info"))
	}
	// The live registry: verdict series at zero before any verdict, the
	// split counters next to the deprecated lumped ones.
	for _, k := range []string{`ikefrag_verdicts_total{code="FRAGMENTS_DROPPED",severity="error"}`, `ikefrag_verdicts_total{code="OK",severity="info"}`,
		"ikefrag_engine_datagrams_total", `ikefrag_engine_events_total{kind="datagrams"}`,
		`ikefrag_kernel_ip_reassembly_fragments_total{family="ipv4"}`, `ikefrag_kernel_ip_frag_total{counter="ReasmReqds",family="ipv4"}`} {
		if v, ok := m[k]; !ok || (strings.HasPrefix(k, "ikefrag_verdicts") && v != 0) {
			t.Errorf("%s: %v %v", k, v, ok)
		}
	}
}

func grepKeys(m map[string]float64, sub string) []string {
	var out []string
	for k := range m {
		if strings.Contains(k, sub) {
			out = append(out, k)
		}
	}
	return out
}

// ikefragctl status exits 1 while the daemon is unhealthy (here: no
// interface attached, a pattern waiting for its link), 0 once healthy, 2
// when no daemon answers.
func TestStatusExitCodes(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	n := newNetns(t)
	d := newDaemon(t, bins, n.name, "interfaces: [\"wait*\"]\nmetrics:\n  listen: \"\"\n")
	if _, code := d.ctl("status"); code != 2 {
		t.Errorf("status without a daemon: exit %d, want 2", code)
	}
	d.start()
	out, code := d.ctl("status")
	if code != 1 || !strings.Contains(out, "UNHEALTHY: no interface is attached") {
		t.Errorf("unhealthy status: exit %d, want 1\n%s", code, out)
	}
	n.veth("wait0", "wait1")
	if !waitFor(20*time.Second, func() bool { _, code = d.ctl("status"); return code == 0 }) {
		t.Errorf("status once wait0 is attached: exit %d, want 0", code)
	}
}
