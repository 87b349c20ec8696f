package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/proxy"
	"github.com/ikefrag/ikefrag/test/lab"
)

// TestDaemonProxy runs ikefragd on gw with proxy.enabled, in the proxy's
// acceptance topology: cli — mid (1280-byte link to cli, every IP fragment
// dropped) — gw (ikefragd: observer and proxy) — srv (strongSwan cutting
// IKE fragments at 1500 bytes). The client aims at gw.
//
//	keyed:   keys.strongswan_table is srv's save-keys table, so the proxy
//	         re-cuts the IKE_AUTH response for 1280 bytes and the tunnel
//	         comes up; ikefragctl and /metrics show the re-fragmentation.
//	keyless: no keys, the response is relayed unchanged and lost on mid;
//	         the operator must be told why.
func TestDaemonProxy(t *testing.T) {
	lab.Require(t)
	bins := buildBinaries(t)
	t.Parallel()
	t.Run("keyed", func(t *testing.T) {
		t.Parallel()
		r := runProxyLab(t, bins, true)
		if !r.ok {
			t.Fatalf("initiate failed with the proxy keyed; swanctl:\n%s\nikefragd:\n%s", r.swanctl, r.d.stderr)
		}
		checkKeyed(t, r)
	})
	t.Run("keyless", func(t *testing.T) {
		t.Parallel()
		r := runProxyLab(t, bins, false)
		if r.ok {
			t.Fatalf("initiate succeeded without keys: the 1500-byte fragments should not cross mid")
		}
		checkKeyless(t, r)
	})
}

// proxyLab is one subtest's lab after the client's initiation.
type proxyLab struct {
	l        *lab.Lab
	cli, srv *lab.Daemon
	d        *daemonProc
	pcap     *lab.Pcap // on mid, keyless only
	ok       bool
	swanctl  string
}

// runProxyLab builds the lab, starts both charons and ikefragd on gw, and
// lets the client initiate through the proxy.
func runProxyLab(t *testing.T, bins binaries, keyed bool) *proxyLab {
	t.Helper()
	l := lab.New(t, lab.Topology{Gateway: true, MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll})
	r := &proxyLab{l: l}
	r.cli, r.srv = l.StartPair(
		lab.Charon{RemoteAddr: l.Gw.Addr4, SaveKeys: true},
		lab.Charon{FragmentSize: 1500, SaveKeys: true})
	// The override states the client's 1280-byte path outright instead of
	// relying on pmtu_default happening to match it.
	clientNet := netip.PrefixFrom(l.Cli.Addr4, 24).Masked()
	cfg := fmt.Sprintf("interfaces: [%s, %s]\ndiag:\n  settle: 3s\n"+
		"proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  refragment: auto\n  pmtu_overrides:\n    %q: 1280\n",
		ifaceIn(l, l.Gw, l.Mid), ifaceIn(l, l.Gw, l.Srv), l.Gw.Addr4, l.Srv.Addr4, clientNet)
	if keyed {
		cfg += fmt.Sprintf("keys:\n  strongswan_table: %s\n", r.srv.KeysFile())
	}
	r.d = newDaemon(t, bins, l.Gw.Name, cfg)
	r.d.start()
	if !keyed {
		// mid is where the fragments die: its capture is the offline
		// cross-check of the daemon's verdict.
		r.pcap = lab.Capture(t, l.Mid, "any", "")
	}

	// Bounded: a lost IKE_AUTH gives up after about 16 s of retransmissions.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	ok, out, err := r.cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.ok, r.swanctl = ok, out
	t.Logf("initiate: ok=%v after %.1f s", ok, time.Since(start).Seconds())
	return r
}

// proxyPeers is `ikefragctl peers --json`.
type proxyPeers struct {
	Observed []diag.PMTUEstimate `json:"observed"`
	Proxy    []proxy.PeerInfo    `json:"proxy"`
}

func checkKeyed(t *testing.T, r *proxyLab) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sas, err := r.cli.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != 1 || sas[0].State != "ESTABLISHED" || len(sas[0].Children) != 1 || sas[0].Children[0].State != "INSTALLED" {
		t.Fatalf("want one established IKE SA with an installed CHILD SA, got %+v", sas)
	}
	if sas[0].Remote.Addr() != r.l.Gw.Addr4 {
		t.Errorf("client's IKE peer %v, want the proxy %v", sas[0].Remote, r.l.Gw.Addr4)
	}
	if err := r.l.Ping(ctx, r.l.Cli, r.l.Srv.Inner4); err != nil {
		t.Errorf("ping through the tunnel: %v", err)
	}

	var peers proxyPeers
	if code := r.d.ctlJSON(&peers, "peers"); code != 0 {
		t.Fatalf("ikefragctl peers: exit %d", code)
	}
	var pi *proxy.PeerInfo
	for i := range peers.Proxy {
		if peers.Proxy[i].Client == r.l.Cli.Addr4 {
			pi = &peers.Proxy[i]
		}
	}
	if pi == nil {
		t.Fatalf("client %v not among the proxy's peers: %+v", r.l.Cli.Addr4, peers.Proxy)
	}
	b, _ := json.Marshal(pi.Counters)
	t.Logf("proxy peer %v: pmtu %+v, counters %s", pi.Client, pi.PMTU, b)
	if pi.Counters.Refragmented == 0 || pi.Counters.FragmentsEmitted == 0 || pi.Counters.KeyMisses != 0 {
		t.Errorf("want re-fragmented messages and no key miss for the client, got %s", b)
	}
	if pi.PMTU.MTU == 0 || pi.PMTU.MTU > 1280 {
		t.Errorf("proxy's PMTU toward the client %+v, want at most the 1280-byte link", pi.PMTU)
	}

	// Verdicts come once a session has been quiet for diag.settle; wait
	// for the client's session to be judged, then look for any error.
	var rep diag.Report
	judged := waitFor(20*time.Second, func() bool {
		rep = diag.Report{}
		r.d.ctlJSON(&rep, "verdicts")
		for _, s := range rep.Sessions {
			if strings.HasPrefix(s.Client, r.l.Cli.Addr4.String()) && len(s.Verdicts) > 0 {
				return true
			}
		}
		return false
	})
	if !judged {
		t.Fatalf("no verdict for the client's session; report %+v", rep)
	}
	for _, s := range rep.Sessions {
		for _, v := range s.Verdicts {
			t.Logf("session %d %s → %s: %s %s %s", s.ID, s.Client, s.Server, v.Severity, v.Code, v.Direction)
			if v.Severity == diag.Error {
				t.Errorf("error verdict on a working tunnel: %+v", v)
			}
		}
	}

	c := nsHTTP(t, r.l.Gw.Name)
	m := scrape(t, c, "127.0.0.1:9717")
	if n := sumMetric(m, "ikefrag_proxy_refragmented_messages_total"); n <= 0 {
		t.Errorf("ikefrag_proxy_refragmented_messages_total = %v, want > 0", n)
	}
	if n := sumMetric(m, "ikefrag_proxy_fragments_emitted_total"); n <= 0 {
		t.Errorf("ikefrag_proxy_fragments_emitted_total = %v, want > 0", n)
	}

	// The proxy's cut must fit the 1280-byte link: nothing left for mid's
	// filter to drop.
	if dc, err := r.l.DropCounters(); err != nil || dc.Total() != 0 {
		t.Errorf("mid dropped IP fragments (%+v, %v); the proxy's fragments should fit", dc, err)
	}

	if st := r.d.status(); st.Proxy == "" || st.Proxy == "disabled" {
		t.Errorf("status proxy %q, want the running proxy's line", st.Proxy)
	}
	// The proxy decrypts with srv's keys: none may reach the log or any
	// answer an operator can read.
	var answers string
	for _, sub := range []string{"status", "peers", "sessions", "verdicts"} {
		out, _ := r.d.ctl(sub, "--json")
		answers += out
	}
	checkNoKeys(t, r.srv, r.d, answers+scrapeText(t, c, "127.0.0.1:9717"))
}

func checkKeyless(t *testing.T, r *proxyLab) {
	if c, err := r.l.DropCounters(); err != nil || c.Total() == 0 {
		t.Errorf("want IP fragments dropped on mid, got %+v (%v)", c, err)
	}
	var peers proxyPeers
	r.d.ctlJSON(&peers, "peers")
	for _, p := range peers.Proxy {
		if p.Client == r.l.Cli.Addr4 && (p.Counters.KeyMisses == 0 || p.Counters.Refragmented != 0) {
			t.Errorf("keyless: want key misses and no re-fragmentation, got %+v", p.Counters)
		}
	}

	// The daemon on gw sees the whole failure on the client's leg: the
	// backend's 1500-byte IKE fragments leaving toward a client whose path
	// it estimates at under 1280 bytes, then the client retransmitting
	// IKE_AUTH. So it names the cause (IKE_FRAGMENTS_EXCEED_PMTU) rather
	// than the symptom (FRAGMENTS_DROPPED), and the fix is on the server.
	var rep diag.Report
	var v *diag.Verdict
	waitFor(20*time.Second, func() bool {
		rep = diag.Report{}
		r.d.ctlJSON(&rep, "verdicts")
		v = clientError(rep, r.l.Cli.Addr4)
		return v != nil
	})
	logVerdicts(t, "ikefragd on gw", rep)
	checkExceedVerdict(t, "ikefragd on gw", v)
	m := scrape(t, nsHTTP(t, r.l.Gw.Name), "127.0.0.1:9717")
	if n := m[`ikefrag_verdicts_total{code="IKE_FRAGMENTS_EXCEED_PMTU",severity="error"}`]; n < 1 {
		t.Errorf("ikefrag_verdicts_total for IKE_FRAGMENTS_EXCEED_PMTU = %v, want ≥ 1", n)
	}

	// A capture on mid, where the loss happens, must tell the same story
	// offline: the daemon's live judgement and ikefragctl analyze agree.
	if err := r.pcap.Stop(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(r.d.bins.ctl, "analyze", "--json", r.pcap.Path).Output()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("ikefragctl analyze: %v", err)
	}
	var arep diag.Report
	if err := json.Unmarshal(out, &arep); err != nil {
		t.Fatalf("ikefragctl analyze --json: %v\n%s", err, out)
	}
	logVerdicts(t, "analyze on mid", arep)
	checkExceedVerdict(t, "analyze on mid", clientError(arep, r.l.Cli.Addr4))
}

// checkExceedVerdict wants IKE_FRAGMENTS_EXCEED_PMTU in IKE_AUTH with the
// strongSwan setting to change.
func checkExceedVerdict(t *testing.T, who string, v *diag.Verdict) {
	t.Helper()
	if v == nil {
		t.Errorf("%s: no error verdict toward the client", who)
		return
	}
	if v.Code != diag.IKEFragmentsExceedPMTU || v.Exchange != "IKE_AUTH" {
		t.Errorf("%s: got %s in %q, want %s in IKE_AUTH", who, v.Code, v.Exchange, diag.IKEFragmentsExceedPMTU)
	}
	if len(v.Remedy) == 0 || !strings.Contains(strings.Join(v.Remedy, "\n"), "fragment_size") {
		t.Errorf("%s: remedy %q, want the strongSwan fragment_size setting", who, v.Remedy)
	}
}

// clientError returns an error verdict toward the client for a session of
// client, or nil.
func clientError(rep diag.Report, client netip.Addr) *diag.Verdict {
	for _, s := range rep.Sessions {
		if !strings.HasPrefix(s.Client, client.String()) {
			continue
		}
		for i, v := range s.Verdicts {
			if v.Severity == diag.Error && v.Direction == diag.TowardClient {
				return &s.Verdicts[i]
			}
		}
	}
	return nil
}

func logVerdicts(t *testing.T, who string, rep diag.Report) {
	t.Helper()
	for _, s := range rep.Sessions {
		for _, v := range s.Verdicts {
			t.Logf("%s: session %d %s → %s: %s %s %s %s: %s; remedy %q", who, s.ID, s.Client, s.Server,
				v.Severity, v.Code, v.Direction, v.Exchange, v.Summary, v.Remedy)
		}
	}
}

// sumMetric adds the samples of one metric over all its label sets.
func sumMetric(m map[string]float64, name string) float64 {
	var n float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			n += v
		}
	}
	return n
}
