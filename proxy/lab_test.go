package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
	"github.com/ikefrag/ikefrag/proxy"
	"github.com/ikefrag/ikefrag/test/lab"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// prebuiltEnv names a directory of binaries built from the same tree as
// the test binary (the kernel matrix builds them on the host): a guest
// under emulation then does not compile them again.
const prebuiltEnv = "IKEFRAG_TEST_BIN"

// prebuilt returns the binary name from $IKEFRAG_TEST_BIN, or "".
func prebuilt(name string) string {
	dir := os.Getenv(prebuiltEnv)
	if dir == "" {
		return ""
	}
	p := filepath.Join(dir, name)
	if fi, err := os.Stat(p); err != nil || fi.IsDir() {
		return ""
	}
	return p
}

// TestMain removes the binaries the lab tests built for this run.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, p := range []string{buildPath, ctlPath} {
		if p != "" && prebuilt(filepath.Base(p)) != p {
			_ = os.RemoveAll(filepath.Dir(p))
		}
	}
	os.Exit(code)
}

// runnerBin builds proxy/internal/proxyrun once per test binary.
func runnerBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildPath = prebuilt("proxyrun"); buildPath != "" {
			return
		}
		dir, err := os.MkdirTemp("", "ikefrag-proxyrun-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "proxyrun")
		gobin, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		out, err := exec.Command(gobin, "build", "-o", buildPath, "github.com/ikefrag/ikefrag/proxy/internal/proxyrun").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build proxyrun: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// gwProxy is the proxy running as its own process inside a lab node.
type gwProxy struct {
	proc *lab.Process
	ctl  string
}

// startProxy runs the proxy in node n with the YAML configuration cfg
// (proxy and keys sections, as the daemon reads them). wrap, when given,
// is a command line the proxy runs under (e.g. setpriv).
func startProxy(t *testing.T, l *lab.Lab, n *lab.Node, cfg string, wrap ...string) *gwProxy {
	t.Helper()
	path := filepath.Join(l.Dir, fmt.Sprintf("proxy-%s.yaml", n.Role))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(l.Dir, fmt.Sprintf("proxy-%s.ctl", n.Role))
	args := append(slices.Clone(wrap), runnerBin(t), "-config", path, "-ctl", ctl, "-log", "debug")
	p := n.Start(t, "ready", args[0], args[1:]...)
	return &gwProxy{proc: p, ctl: ctl}
}

func (g *gwProxy) get(t *testing.T, what string, v any) {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", g.ctl)
	}}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://proxy/" + what)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func (g *gwProxy) stats(t *testing.T) proxy.Stats {
	var st proxy.Stats
	g.get(t, "stats", &st)
	return st
}

func (g *gwProxy) peers(t *testing.T) []proxy.PeerInfo {
	var ps []proxy.PeerInfo
	g.get(t, "peers", &ps)
	return ps
}

// established returns the client's IKE SA, which must be up with an
// installed CHILD_SA.
func established(t *testing.T, d *lab.Daemon) lab.SA {
	t.Helper()
	sas, err := d.SAs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != 1 || sas[0].State != "ESTABLISHED" || len(sas[0].Children) != 1 ||
		sas[0].Children[0].State != "INSTALLED" {
		t.Fatalf("want one established SA with an installed CHILD_SA, got %+v", sas)
	}
	return sas[0]
}

// proxyCase is the acceptance topology: cli — mid (cli link MTU 1280,
// every IP fragment dropped) — gw (the proxy) — srv (strongSwan with
// fragment_size 1500, save-keys). RSA-4096 chains make IKE_AUTH about
// 5 KB each way.
type proxyCase struct {
	name       string
	ipv6       bool
	proposals  string
	esp        string
	refragment string
	keys       bool
	stepDown   bool
	cliMTU     int // cli—mid link; default 1280
	cliFrag    int // client's fragment_size; default strongSwan's 1280
	overrides  string
	wantOK     bool
	setup      func(l *lab.Lab) // after the lab is built, before the charons start
	capture    bool             // tcpdump on mid; the check finds the file in pcap
	pcap       *lab.Pcap
	check      func(t *testing.T, l *lab.Lab, g *gwProxy, cli, srv *lab.Daemon)
	// fastPath is proxy.fast_path ("": the default, auto). With traffic
	// the tunnel also carries large pings and a bulk TCP transfer, and
	// the ESP accounting of both peers and the proxy is compared.
	fastPath string
	traffic  bool
}

func (c *proxyCase) run(t *testing.T) {
	ctx := context.Background()
	mtu := c.cliMTU
	if mtu == 0 {
		mtu = 1280
	}
	l := lab.New(t, lab.Topology{Gateway: true, IPv6: c.ipv6, MTU: lab.MTUs{CliMid: mtu}, Drop: lab.DropAll})
	gwAddr, srvAddr := l.Gw.Addr4, l.Srv.Addr4.String()
	if c.ipv6 {
		gwAddr, srvAddr = l.Gw.Addr6, "["+l.Srv.Addr6.String()+"]"
	}
	if c.setup != nil {
		c.setup(l)
	}
	cliCfg := lab.Charon{RemoteAddr: gwAddr, IPv6: c.ipv6, Proposals: c.proposals, ESPProposals: c.esp, FragmentSize: c.cliFrag, SaveKeys: true}
	srvCfg := lab.Charon{FragmentSize: 1500, Proposals: c.proposals, ESPProposals: c.esp, SaveKeys: true}
	cli, srv := l.StartPair(cliCfg, srvCfg)
	cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  refragment: %s\n  pmtu_step_down: %v\n",
		gwAddr, srvAddr, c.refragment, c.stepDown)
	if c.fastPath != "" {
		cfg += "  fast_path: " + c.fastPath + "\n"
	}
	if c.overrides != "" {
		cfg += "  pmtu_overrides:\n" + c.overrides
	}
	if c.keys {
		cfg += fmt.Sprintf("keys:\n  strongswan_table: %s\n", srv.KeysFile())
	}
	g := startProxy(t, l, l.Gw, cfg)
	if c.capture {
		c.pcap = lab.Capture(t, l.Mid, "any", "")
	}
	start := time.Now()
	ok, out, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initiate: ok=%v after %.2f s", ok, time.Since(start).Seconds())
	st := g.stats(t)
	b, _ := json.Marshal(st.Total)
	t.Logf("proxy: %s; fragmenter %+v", b, st.Fragmenter)
	if ok != c.wantOK {
		t.Fatalf("initiate: ok=%v, want %v; swanctl:\n%s", ok, c.wantOK, out)
	}
	if ok {
		sa := established(t, cli)
		if sa.Remote.Addr() != gwAddr {
			t.Errorf("client's peer %v, want the proxy %v", sa.Remote, gwAddr)
		}
		if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
			t.Errorf("ping through the tunnel: %v", err)
		}
		if c.traffic {
			tunnelTraffic(t, l)
			checkESPAccounting(t, g, cli, srv, c.fastPath != proxy.FastPathOff)
		}
	}
	if c.pcap != nil {
		if err := c.pcap.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if c.check != nil {
		c.check(t, l, g, cli, srv)
	}
}

// TestLabRefragment is the acceptance matrix: without re-fragmentation the
// client fails exactly as in the field; with the responder's keys the
// proxy re-cuts the IKE_AUTH response for the 1280-byte path and the IKE
// SA, the CHILD SA and a ping through the tunnel come up.
func TestLabRefragment(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	cases := []proxyCase{
		{name: "off_fails", refragment: "off", keys: true, check: func(t *testing.T, l *lab.Lab, g *gwProxy, cli, srv *lab.Daemon) {
			st := g.stats(t)
			if st.Total.Refragmented != 0 || st.Total.Oversize == 0 {
				t.Errorf("refragment off: want oversize datagrams relayed unchanged, got %+v", st.Total)
			}
			if c, _ := l.DropCounters(); c.Total() == 0 {
				t.Errorf("want IP fragments dropped on mid")
			}
		}},
		{name: "auto_aes_cbc", refragment: "auto", keys: true, wantOK: true, check: checkRecut, traffic: true},
		{name: "auto_fast_path_off", refragment: "auto", keys: true, wantOK: true, check: checkRecut, traffic: true,
			fastPath: proxy.FastPathOff},
		{name: "auto_aes_gcm16", refragment: "auto", keys: true, wantOK: true,
			proposals: "aes256gcm16-prfsha256-ecp256", esp: "aes256gcm16", check: checkRecut},
		{name: "auto_ipv6", ipv6: true, refragment: "auto", keys: true, wantOK: true, check: checkRecut, traffic: true},
		{name: "auto_without_keys_fails", refragment: "auto", keys: false, capture: true},
	}
	for i := range cases {
		c := &cases[i]
		if c.name == "auto_without_keys_fails" {
			c.check = func(t *testing.T, l *lab.Lab, g *gwProxy, cli, srv *lab.Daemon) {
				st := g.stats(t)
				if st.Total.KeyMisses == 0 || st.Total.Refragmented != 0 {
					t.Errorf("keyless: want key misses and no re-fragmentation, got %+v", st.Total)
				}
				checkKeylessVerdict(t, c.pcap.Path, l.Cli.Addr4)
			}
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t)
		})
	}
}

// checkKeylessVerdict runs the diagnosis engine over the capture taken on
// mid during a keyless failure, as `ikefragctl analyze` does: it must say
// IKE_FRAGMENTS_EXCEED_PMTU toward the client and tell the operator which
// server setting to change.
func checkKeylessVerdict(t *testing.T, path string, client netip.Addr) {
	t.Helper()
	e := diag.New(diag.Options{})
	recs, _, err := capture.ReadFile(path, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		e.Add(r)
	}
	var found *diag.Verdict
	vs := e.Verdicts(true)
	for i, v := range vs {
		if v.Code == diag.IKEFragmentsExceedPMTU && v.Direction == diag.TowardClient {
			found = &vs[i]
		}
	}
	if found == nil {
		t.Fatalf("no IKE_FRAGMENTS_EXCEED_PMTU toward the client in %+v", vs)
	}
	t.Logf("verdict: %s: %s; remedy: %q", found.Code, found.Summary, found.Remedy)
	if !strings.HasPrefix(found.Client, client.String()) || len(found.Remedy) == 0 || !strings.Contains(strings.Join(found.Remedy, "\n"), "fragment_size") {
		t.Errorf("verdict %+v: want the client %s and the strongSwan fragment_size remedy", found, client)
	}
}

// checkRecut verifies that the proxy cut the IKE_AUTH response into
// fragments that fit 1280 bytes, and that nothing crossed mid as an IP
// fragment.
func checkRecut(t *testing.T, l *lab.Lab, g *gwProxy, cli, srv *lab.Daemon) {
	t.Helper()
	st := g.stats(t)
	if st.Total.Refragmented == 0 || st.Total.FragmentsEmitted == 0 || st.Total.KeyMisses != 0 {
		t.Errorf("want re-fragmented messages, got %+v", st.Total)
	}
	if c, _ := l.DropCounters(); c.Total() != 0 {
		t.Errorf("mid dropped %d IP fragments; the proxy's output should need none", c.Total())
	}
	peers := g.peers(t)
	if len(peers) != 1 || peers[0].PMTU.MTU > 1280 {
		t.Errorf("peers %+v", peers)
	}
	if log, _ := os.ReadFile(cli.Log()); !strings.Contains(string(log), "received fragment #1 of") {
		t.Errorf("client log shows no RFC 7383 fragments received")
	}
}

// TestLabStepDown is responder-side IKE PMTU discovery: the client's link
// is 1000 bytes, the proxy starts from an override of 1280 (as if the
// operator had guessed wrong), and only the client's retransmission tells
// it that its cut was lost. With pmtu_step_down the backend's resend is
// cut again in more, smaller fragments (strongSwan restarts reassembly on
// the higher Total Fragments, RFC 7383 §2.6); without it every resend is
// the same lost cut.
func TestLabStepDown(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	override := "    \"10.99.1.0/24\": 1280\n"
	cases := []proxyCase{
		{name: "icmp_on", stepDown: true, wantOK: true},
		{name: "icmp_blocked", stepDown: true, wantOK: true},
		{name: "off_fails", stepDown: false},
	}
	for _, c := range cases {
		c.refragment, c.keys, c.cliMTU, c.cliFrag, c.overrides = "auto", true, 1000, 1000, override
		blockICMP := c.name == "icmp_blocked"
		c.check = func(t *testing.T, l *lab.Lab, g *gwProxy, cli, srv *lab.Daemon) {
			st := g.stats(t)
			log, _ := os.ReadFile(cli.Log())
			retrans := strings.Count(string(log), "retransmit ")
			t.Logf("%s: client retransmissions of IKE_AUTH: %d (proxy saw %d), step-downs %d, replays %d",
				c.name, retrans, st.Total.ClientRetransmits, st.Total.StepDowns, st.Total.Replays)
			if c.wantOK && (st.Total.StepDowns == 0 || st.Total.ClientRetransmits == 0) {
				t.Errorf("want a step-down after a client retransmission: %+v", st.Total)
			}
			if !c.wantOK && (st.Total.StepDowns != 0 || st.Total.Replays == 0) {
				t.Errorf("without step-down want byte-identical replays only: %+v", st.Total)
			}
			if blockICMP && st.ICMPErrors != 0 {
				t.Errorf("ICMP blocked on mid, yet %d ICMP errors reached the proxy", st.ICMPErrors)
			}
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if blockICMP {
				c.setup = func(l *lab.Lab) {
					cmd := l.Mid.Command(context.Background(), "nft", "-f", "-")
					cmd.Stdin = strings.NewReader("table inet noptb {\n chain out {\n  type filter hook output priority 0; policy accept;\n" +
						"  icmp type destination-unreachable icmp code frag-needed drop\n  icmpv6 type packet-too-big drop\n }\n}\n")
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("nft: %v %s", err, out)
					}
				}
			}
			c.run(t)
		})
	}
}

// TestLabRouteMTU is the keyless help: the client's link is 1000 bytes,
// mid lets IP fragments through but sends no ICMP (a black hole for
// datagrams with DF set), and the proxy has no keys. With route_mtu it
// installs a host route with a locked MTU toward the client, so gw's
// kernel fragments the server's 1500-byte IKE fragments once, at 1000,
// without DF; without it they vanish on mid.
func TestLabRouteMTU(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	for _, on := range []bool{true, false} {
		name := "route_mtu_on"
		if !on {
			name = "route_mtu_off_fails"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			l := lab.New(t, lab.Topology{Gateway: true, MTU: lab.MTUs{CliMid: 1000}})
			cmd := l.Mid.Command(ctx, "nft", "-f", "-")
			cmd.Stdin = strings.NewReader("table inet noptb {\n chain out {\n  type filter hook output priority 0; policy accept;\n" +
				"  icmp type destination-unreachable icmp code frag-needed drop\n }\n}\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("nft: %v %s", err, out)
			}
			cli, _ := l.StartPair(lab.Charon{RemoteAddr: l.Gw.Addr4, FragmentSize: 1000}, lab.Charon{FragmentSize: 1500})
			cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  route_mtu: %v\n  pmtu_overrides:\n    \"10.99.1.0/24\": 1000\n",
				l.Gw.Addr4, l.Srv.Addr4, on)
			g := startProxy(t, l, l.Gw, cfg)
			ok, out, err := cli.Initiate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st := g.stats(t)
			t.Logf("initiate ok=%v; proxy %+v; routes %d", ok, st.Total, st.Routes)
			if ok != on {
				t.Fatalf("initiate ok=%v, want %v:\n%s", ok, on, out)
			}
			if !on {
				return
			}
			established(t, cli)
			if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
				t.Errorf("ping through the tunnel: %v", err)
			}
			if ps := g.peers(t); len(ps) != 1 || ps[0].RouteMTU != 1000 || st.Routes != 1 {
				t.Errorf("want a 1000-byte route toward the client: %+v", ps)
			}
			rt, _ := l.Gw.Run(ctx, "ip", "route", "show", "table", "4500")
			if !strings.Contains(rt, l.Cli.Addr4.String()) || !strings.Contains(rt, "mtu lock 1000") {
				t.Errorf("gw table 4500: %s", rt)
			}
			// The kernel relay honours the route's MTU too.
			t.Run("fast_path", func(t *testing.T) {
				kfeattest.Require(t, kfeat.CheckMTU)
				checkRouteMTUFastPath(t, l, g)
			})
			if err := g.proc.Stop(); err != nil {
				t.Errorf("proxy exit: %v", err)
			}
			if rt, _ := l.Gw.Run(ctx, "ip", "route", "show", "table", "4500"); strings.TrimSpace(rt) != "" {
				t.Errorf("routes left after the proxy stopped: %s", rt)
			}
			if ru, _ := l.Gw.Run(ctx, "ip", "rule", "show"); strings.Contains(ru, "4500") {
				t.Errorf("rules left after the proxy stopped: %s", ru)
			}
		})
	}
}
