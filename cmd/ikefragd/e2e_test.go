package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/test/lab"
)

// TestLiveDiagnosis runs ikefragd on the mid router of a lab with real
// strongSwan peers and asks it, through ikefragctl, what it saw:
//
//	b: MTU 1500, mid drops every IP fragment, no IKE fragmentation:
//	   IKE_AUTH's fragments never reach the server → FRAGMENTS_DROPPED
//	   toward the server.
//	c: MTU 1280, mid drops fragments, IKE fragmentation at 1280 on both
//	   sides: no IP fragment exists → OK.
func TestLiveDiagnosis(t *testing.T) {
	lab.Require(t)
	bins := buildBinaries(t)
	t.Parallel()
	cases := []struct {
		name     string
		topo     lab.Topology
		cli, srv lab.Charon
		wantOK   bool
		check    func(t *testing.T, l *lab.Lab, d *daemonProc, rep diag.Report)
	}{
		{
			name: "b_drop_nofrag",
			topo: lab.Topology{Drop: lab.DropAll},
			cli:  lab.Charon{Fragmentation: "no"},
			srv:  lab.Charon{Fragmentation: "no"},
			check: func(t *testing.T, l *lab.Lab, d *daemonProc, rep diag.Report) {
				v := findVerdict(rep, diag.FragmentsDropped)
				if v == nil || v.Direction != diag.TowardServer || v.Exchange != "IKE_AUTH" {
					t.Errorf("want FRAGMENTS_DROPPED toward the server in IKE_AUTH, got %+v", rep.Sessions)
				}
				if rep.Summary.Errors == 0 {
					t.Errorf("summary counts no error: %+v", rep.Summary)
				}
				m := scrape(t, nsHTTP(t, l.Mid.Name), "127.0.0.1:9717")
				in := ifaceIn(l, l.Mid, l.Cli)
				for _, name := range []string{
					`ikefrag_packets_total{class="ikev2",direction="ingress",interface="` + in + `"}`,
					`ikefrag_packets_total{class="frag_first",direction="ingress",interface="` + in + `"}`,
					`ikefrag_packets_total{class="frag_last",direction="ingress",interface="` + in + `"}`,
					`ikefrag_fragment_trains_total{direction="ingress",interface="` + in + `",state="started"}`,
					`ikefrag_verdicts_total{code="FRAGMENTS_DROPPED",severity="error"}`,
					`ikefrag_kernel_drops_total{kind="fragment",reason="NETFILTER_DROP"}`,
				} {
					if m[name] <= 0 {
						t.Errorf("%s = %v, want > 0", name, m[name])
					}
				}
				// The fragments entered mid and never left it.
				if n := m[`ikefrag_packets_total{class="frag_first",direction="egress",interface="`+ifaceIn(l, l.Mid, l.Srv)+`"}`]; n != 0 {
					t.Errorf("%v first fragments left toward the server", n)
				}
				logIncomplete(t, m, in)
			},
		},
		{
			name:   "c_ikefrag_1280",
			topo:   lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
			cli:    lab.Charon{Fragmentation: "yes", FragmentSize: 1280},
			srv:    lab.Charon{Fragmentation: "yes", FragmentSize: 1280},
			wantOK: true,
			check: func(t *testing.T, l *lab.Lab, d *daemonProc, rep diag.Report) {
				if v := findVerdict(rep, diag.OK); v == nil {
					t.Errorf("want OK, got %+v", rep.Sessions)
				}
				if rep.Summary.Errors != 0 || rep.Summary.Established != 1 {
					t.Errorf("summary %+v, want one established session and no error", rep.Summary)
				}
				m := scrape(t, nsHTTP(t, l.Mid.Name), "127.0.0.1:9717")
				in := ifaceIn(l, l.Mid, l.Cli)
				if m[`ikefrag_packets_total{class="frag_first",direction="ingress",interface="`+in+`"}`] != 0 {
					t.Errorf("IP fragments seen on a path that should carry none")
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, c.topo)
			in, out := ifaceIn(l, l.Mid, l.Cli), ifaceIn(l, l.Mid, l.Srv)
			// The client's save-keys table is on this host too: the daemon
			// reads it (and must never print a key).
			c.cli.SaveKeys = true
			cli := l.StartCharon(withRole(c.cli, lab.Client))
			d := newDaemon(t, bins, l.Mid.Name, fmt.Sprintf("interfaces: [%s, %s]\ndiag:\n  settle: 3s\nkeys:\n  strongswan_table: %s\n",
				in, out, cli.KeysFile()))
			// The server loads its key while the BPF programs load.
			ready := make(chan struct{})
			go func() { defer close(ready); d.start() }()
			l.StartCharon(withRole(c.srv, lab.Server))
			<-ready
			if t.Failed() {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			ok, swanctl, err := cli.Initiate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ok != c.wantOK {
				t.Fatalf("initiate: ok=%v, want %v\n%s", ok, c.wantOK, swanctl)
			}
			want := diag.OK
			if !c.wantOK {
				want = diag.FragmentsDropped
			}
			var rep diag.Report
			if !waitFor(20*time.Second, func() bool {
				rep = diag.Report{}
				code := d.ctlJSON(&rep, "verdicts")
				return (code == 0 || code == 1) && findVerdict(rep, want) != nil
			}) {
				t.Fatalf("no %s verdict; last report: %+v\n%s", want, rep, d.stderr)
			}
			if rep.Schema != "ikefrag.report" || rep.Version != diag.SchemaVersion {
				t.Errorf("report schema %q version %d", rep.Schema, rep.Version)
			}
			c.check(t, l, d, rep)
			views := checkOperatorViews(t, d, want, in, out)
			checkNoKeys(t, cli, d, views+scrapeText(t, nsHTTP(t, l.Mid.Name), "127.0.0.1:9717"))
		})
	}
}

func findVerdict(r diag.Report, code diag.Code) *diag.Verdict {
	for _, s := range r.Sessions {
		for i := range s.Verdicts {
			if s.Verdicts[i].Code == code {
				return &s.Verdicts[i]
			}
		}
	}
	return nil
}

// logIncomplete reports the incomplete-train counters: on a router that
// drops fragments itself, trains are complete where tc sees them (ingress
// runs before netfilter), so these count only losses upstream.
func logIncomplete(t *testing.T, m map[string]float64, iface string) {
	t.Helper()
	for _, dir := range []string{"ingress", "egress"} {
		t.Logf("%s %s: trains started %v, completed %v, incomplete %v", iface, dir,
			m[`ikefrag_fragment_trains_total{direction="`+dir+`",interface="`+iface+`",state="started"}`],
			m[`ikefrag_fragment_trains_total{direction="`+dir+`",interface="`+iface+`",state="completed"}`],
			m[`ikefrag_fragment_trains_total{direction="`+dir+`",interface="`+iface+`",state="incomplete"}`])
	}
}

func withRole(c lab.Charon, r lab.Role) lab.Charon {
	c.Role = r
	return c
}

// checkNoKeys looks for every key of the client's save-keys table in the
// daemon's log and in everything it answered.
func checkNoKeys(t *testing.T, cli *lab.Daemon, d *daemonProc, answers string) {
	t.Helper()
	keys, err := cli.IKEKeys()
	if err != nil || len(keys) == 0 {
		t.Fatalf("no keys in %s: %v", cli.KeysFile(), err)
	}
	all := strings.ToLower(d.stderr.String() + answers)
	for _, k := range keys {
		for _, key := range [][]byte{k.SKei, k.SKer, k.SKai, k.SKar} {
			if len(key) == 0 {
				continue
			}
			h := hex.EncodeToString(key)
			if strings.Contains(all, h) || strings.Contains(all, h[:16]) {
				t.Errorf("key material of SA %s/%s appears in the daemon's output", k.SPIi, k.SPIr)
			}
		}
	}
	if st := d.status(); st.Keys.SAs == 0 || st.Keys.SaveKeys != cli.KeysFile() {
		t.Errorf("status keys: %+v", st.Keys)
	}
}

// checkOperatorViews looks at what an operator sees: status, events (the
// verdict once), sessions, peers, stats, and the verdict logged once. It
// returns everything ikefragctl printed.
func checkOperatorViews(t *testing.T, d *daemonProc, want diag.Code, ifaces ...string) string {
	t.Helper()
	// status reads the snapshot the engine publishes every second.
	var st control.Status
	waitFor(5*time.Second, func() bool {
		st = control.Status{}
		d.ctlJSON(&st, "status")
		return st.Verdicts[want] == 1
	})
	if st.Verdicts[want] != 1 || st.Sessions != 1 || len(st.Interfaces) != len(ifaces) || !st.Healthy {
		t.Errorf("status: %+v", st)
	}
	out, code := d.ctl("status")
	if code != 0 {
		t.Errorf("status: exit %d", code)
	}
	t.Logf("ikefragctl status:\n%s", out)
	for _, s := range append([]string{"healthy", "sessions", "http://127.0.0.1:9717/metrics", string(want) + "=1"}, ifaces...) {
		if !strings.Contains(out, s) {
			t.Errorf("status lacks %q:\n%s", s, out)
		}
	}
	evs := d.events()
	n := 0
	for _, e := range evs {
		if e.Kind == control.EventVerdict && e.Verdict.Code == want {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d %s verdict events, want 1: %+v", n, want, evs)
	}
	if got := strings.Count(d.stderr.String(), "code="+string(want)+" "); got != 1 {
		t.Errorf("%s logged %d times, want once:\n%s", want, got, d.stderr)
	}
	var peers struct {
		Observed []diag.PMTUEstimate `json:"observed"`
	}
	if d.ctlJSON(&peers, "peers"); len(peers.Observed) < 2 {
		t.Errorf("peers: %+v", peers)
	}
	var ss []diag.SessionReport
	if d.ctlJSON(&ss, "sessions"); len(ss) != 1 || len(ss[0].Ladder) == 0 {
		t.Errorf("sessions: %+v", ss)
	}
	var stats control.Stats
	d.ctlJSON(&stats, "stats")
	if len(stats.Interfaces) != len(ifaces) || stats.Records.Datagrams == 0 || stats.Kernel["ipv4"] == nil {
		t.Errorf("stats: %+v", stats)
	}
	all := out
	for _, sub := range []string{"peers", "sessions", "verdicts", "stats", "events"} {
		for _, args := range [][]string{{sub}, {sub, "--json"}} {
			out, code := d.ctl(args...)
			if out == "" || code > 1 {
				t.Errorf("ikefragctl %v: exit %d, output %q", args, code, out)
			}
			if len(args) == 1 {
				t.Logf("ikefragctl %s:\n%s", sub, out)
			}
			all += out
		}
	}
	return all
}
