// Package demo is `make demo`: the field failure and its repair, end to end,
// in a throwaway namespace lab with real strongSwan peers; then a path that
// forwards no UDP 500/4500 and the way around it, IKE and ESP over TCP
// (RFC 9329) to the proxy's TCP listener; then a TCP client's large
// IKE_AUTH that the proxy splits into RFC 7383 fragments for a backend
// behind a link that drops IP fragments. It runs only with
// IKEFRAG_DEMO=1 (it prints for a person to read, and takes about two
// minutes):
//
//	IKEFRAG_DEMO=1 go test -count=1 -v -run '^TestDemo$' ./test/lab/demo/
package demo

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
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/test/lab"
)

const topology = `
   cli (strongSwan initiator)   mid (router)                 gw              srv (strongSwan responder)
   10.99.1.2 ===== MTU 1280 ===== 10.99.1.1 | 10.99.3.1 ===== 10.99.3.2 | 10.99.2.1 ===== 10.99.2.2
                                 nftables: drop every IP fragment                fragment_size = 1500
   RSA-4096 certificates with two intermediates: IKE_AUTH is about 5 KB each way.
   Both peers announce IKEV2_FRAGMENTATION_SUPPORTED, but srv cuts its fragments
   for a 1500-byte path: each one is IP-fragmented again, and mid drops the pieces.
`

func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(gobin, "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func say(format string, a ...any) { fmt.Printf(format+"\n", a...) }

func TestDemo(t *testing.T) {
	if os.Getenv("IKEFRAG_DEMO") == "" {
		t.Skip("the demo runs with IKEFRAG_DEMO=1 (make demo)")
	}
	lab.Require(t)
	bin := t.TempDir()
	ctl := build(t, bin, "github.com/ikefrag/ikefrag/cmd/ikefragctl")
	proxyrun := build(t, bin, "github.com/ikefrag/ikefrag/proxy/internal/proxyrun")
	say("\n=== ikefrag demo: IKEv2 across a path that drops IP fragments ===%s", topology)

	say("--- 1. Without ikefrag: the client talks to srv directly ---")
	pcap1, ok1 := scenario(t, false, proxyrun)
	analyze(ctl, pcap1)

	say("\n--- 2. With ikefrag on gw: the client talks to the proxy, which holds srv's IKE keys (save-keys) ---")
	pcap2, ok2 := scenario(t, true, proxyrun)
	analyze(ctl, pcap2)

	say("\n=== Result: without ikefrag %s; with ikefrag %s ===", verdict(ok1), verdict(ok2))
	if ok1 || !ok2 {
		t.Errorf("demo: want a failure without ikefrag and success with it")
	}

	say("\n=== ikefrag demo: a path that lets no UDP 500/4500 through: IKE and ESP over TCP (RFC 9329) ===%s", tcpTopology)
	okUDP, okTCP := tcpScenario(t, proxyrun)
	say("\n=== Result: over UDP %s; over TCP through ikefrag %s ===", verdict(okUDP), verdict(okTCP))
	if okUDP || !okTCP {
		t.Errorf("demo: want a failure over UDP and success over TCP")
	}

	say("\n=== ikefrag demo: a TCP client's large IKE_AUTH toward a backend whose path drops IP fragments ===%s", splitTopology)
	okSplit, okWhole := splitScenario(t, proxyrun)
	say("\n=== Result: split by ikefrag (keyed) %s; relayed whole (keyless) %s ===", verdict(okSplit), verdict(okWhole))
	if !okSplit || okWhole {
		t.Errorf("demo: want success with the split and a failure without it")
	}
}

const splitTopology = `
   cli (strongSwan initiator)   mid (router)                  gw (ikefrag)         srv (strongSwan responder)
   10.99.1.2 ================= 10.99.1.1 | 10.99.3.1 ===== 10.99.3.2 | 10.99.2.1 ===== MTU 1280 ===== 10.99.2.2
                                nftables: forward no UDP 500/4500    TCP listener        nftables: drop every IP fragment
   The client's datagrams cross mid in one RFC 9329 stream (lab.TCPShim). Over a stream a
   client sends every IKE message whole, so its IKE_AUTH (about 5 KB) reaches ikefrag in
   one piece; relayed as it is, it leaves gw as one IP-fragmented datagram, lost before srv.
   With srv's keys (its ikefrag-keys plugin feeds them to ikefrag's key socket), ikefrag
   cuts it into RFC 7383 fragments that fit the 1280-byte link.
`

// dropFragmentsAt makes node n drop every IP fragment it receives, before
// reassembly (priority -500 is ahead of nf_defrag's -400), and returns a
// reader of the fragments dropped so far.
func dropFragmentsAt(t *testing.T, n *lab.Node) func() int {
	t.Helper()
	ctx := context.Background()
	for _, args := range [][]string{
		{"add", "table", "inet", "demosplit"},
		{"add", "chain", "inet", "demosplit", "pre", "{ type filter hook prerouting priority -500; policy accept; }"},
		{"add", "rule", "inet", "demosplit", "pre", "ip", "frag-off", "&", "0x3fff", "!=", "0", "counter", "drop"},
		{"add", "rule", "inet", "demosplit", "pre", "exthdr", "frag", "exists", "counter", "drop"},
	} {
		if out, err := n.Run(ctx, "nft", args...); err != nil {
			t.Fatalf("nft %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	return func() int {
		out, err := n.Run(ctx, "nft", "list", "chain", "inet", "demosplit", "pre")
		if err != nil {
			return -1
		}
		total := 0
		for _, ln := range strings.Split(out, "\n") {
			if _, after, ok := strings.Cut(ln, "counter packets "); ok {
				var k int
				if _, err := fmt.Sscan(after, &k); err == nil {
					total += k
				}
			}
		}
		return total
	}
}

// splitScenario sends a TCP client's IKE_AUTH through ikefrag toward srv
// behind a 1280-byte link that drops IP fragments: first with srv's keys
// (split into RFC 7383 fragments), then without (relayed whole), as
// TestLabTCPSplitToBackend in proxy/ does.
func splitScenario(t *testing.T, proxyrun string) (okSplit, okWhole bool) {
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, MTU: lab.MTUs{GwSrv: 1280}})
	if err := l.BlockIKEUDP(); err != nil {
		t.Fatal(err)
	}
	drops := dropFragmentsAt(t, l.Srv)
	lab.StartTCPShim(t, l.Mid, l.Mid.Addr4, netip.AddrPortFrom(l.Gw.Addr4, 4500))
	dir := filepath.Join(l.Dir, "keyfeed")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "keys.sock")
	base := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  tcp:\n    listen: [\"%s:4500\"]\n",
		l.Gw.Addr4, l.Srv.Addr4, l.Gw.Addr4)
	start := func(name, cfg string) (*lab.Process, string) {
		path := filepath.Join(l.Dir, name+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		ctlSock := filepath.Join(l.Dir, name+".ctl")
		p := l.Gw.Start(t, "ready", proxyrun, "-config", path, "-ctl", ctlSock)
		say("    proxy on gw:\n%s", indent(cfg, "      "))
		return p, ctlSock
	}
	report := func(ctlSock string) {
		var st map[string]any
		get(ctlSock, "stats", &st)
		tc, ok := st["tcp"].(map[string]any)
		if !ok {
			return
		}
		say("    proxy: %v IKE message(s) split toward srv into %v RFC 7383 fragments; %v key prompt(s), %v answered with keys; relayed whole %v; %v fragment set(s) from srv joined for the stream",
			tc["ike_split"], tc["ike_split_fragments"], tc["ike_split_key_prompts"], tc["ike_split_keys_after_prompt"], orNone(tc["ike_unsplit"]), tc["skf_joined"])
		say("    srv's filter dropped %d IP fragment(s) so far", drops())
	}
	// two tries a second apart: a lost IKE_AUTH fails in about 2.5 s
	cliCfg := lab.Charon{Role: lab.Client, RemoteAddr: l.Mid.Addr4, Fragmentation: "accept", RetransmitTries: 2, RetransmitTimeout: 1.0}

	say("--- 5. Keyed: srv's keys reach ikefrag over its key socket; the IKE_AUTH request is split for the 1280 link ---")
	proc, ctlSock := start("ikefrag-split", base+fmt.Sprintf("keys:\n  socket: %s\n", sock))
	l.StartCharon(lab.Charon{Role: lab.Server, KeyFeed: "unix://" + sock})
	cli := l.StartCharon(cliCfg)
	say("    swanctl --initiate (client → the RFC 9329 initiator at %s → TCP %s:4500 → UDP %s:4500) ...", l.Mid.Addr4, l.Gw.Addr4, l.Srv.Addr4)
	t0 := time.Now()
	okSplit, out, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if okSplit {
		say("    ESTABLISHED after %.2f s", time.Since(t0).Seconds())
		if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err == nil {
			say("    ping %s → %s through the tunnel: ok", l.Cli.Inner4, l.Srv.Inner4)
		} else {
			say("    ping through the tunnel: %v", err)
		}
	} else {
		say("    FAILED after %.2f s; the client's last words:", time.Since(t0).Seconds())
		for _, line := range lastLines(out, 3) {
			say("      %s", line)
		}
	}
	report(ctlSock)
	if _, err := cli.Swanctl(ctx, "--terminate", "--ike", "lab"); err != nil {
		say("    terminate: %v", err)
	}
	if err := proc.Stop(); err != nil {
		t.Logf("stopping the keyed proxy: %v", err)
	}

	say("\n--- 6. Keyless: the same client and path, ikefrag without keys relays the IKE_AUTH whole ---")
	_, ctlSock = start("ikefrag-whole", base)
	say("    swanctl --initiate ...")
	t0 = time.Now()
	okWhole, out, err = cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if okWhole {
		say("    ESTABLISHED after %.2f s (the path let fragments through?)", time.Since(t0).Seconds())
	} else {
		say("    FAILED after %.2f s; the client's last words:", time.Since(t0).Seconds())
		for _, line := range lastLines(out, 2) {
			say("      %s", line)
		}
	}
	report(ctlSock)
	return okSplit, okWhole
}

// orNone prints a JSON object of counts by reason, or "none".
func orNone(v any) string {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return "none"
	}
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s=%v", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

const tcpTopology = `
   cli (strongSwan initiator)   mid (router)                  gw (ikefrag)         srv (strongSwan responder)
   10.99.1.2 ================= 10.99.1.1 | 10.99.3.1 ===== 10.99.3.2 | 10.99.2.1 ===== 10.99.2.2
                                nftables: forward no UDP 500/4500    TCP listener 4500 → UDP 4500
   strongSwan has no RFC 9329 client: an RFC 9329 initiator in mid (lab.TCPShim) carries
   the client's datagrams in one TCP stream, as libreswan (enable-tcp) or FortiClient would.
`

// tcpScenario tries the client over UDP straight to srv, then over an
// RFC 9329 stream through ikefrag's TCP listener.
func tcpScenario(t *testing.T, proxyrun string) (okUDP, okTCP bool) {
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true})
	if err := l.BlockIKEUDP(); err != nil {
		t.Fatal(err)
	}
	lab.StartTCPShim(t, l.Mid, l.Mid.Addr4, netip.AddrPortFrom(l.Gw.Addr4, 4500))
	cli, srv := l.StartPair(lab.Charon{}, lab.Charon{SaveKeys: true})
	say("--- 3. Over UDP, straight to srv ---")
	say("    swanctl --initiate (client → %s) ...", l.Srv.Addr4)
	start := time.Now()
	okUDP, out, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if okUDP {
		say("    ESTABLISHED after %.2f s (the path let UDP through?)", time.Since(start).Seconds())
	} else {
		say("    FAILED after %.2f s; the client's last words:", time.Since(start).Seconds())
		for _, line := range lastLines(out, 2) {
			say("      %s", line)
		}
	}
	if err := cli.Stop(); err != nil {
		t.Fatal(err)
	}

	say("\n--- 4. Over TCP: the client's datagrams in an RFC 9329 stream to ikefrag's TCP listener on gw ---")
	cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  tcp:\n    listen: [\"%s:4500\"]\nkeys:\n  strongswan_table: %s\n",
		l.Gw.Addr4, l.Srv.Addr4, l.Gw.Addr4, srv.KeysFile())
	path := filepath.Join(l.Dir, "ikefrag-tcp.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctlSock := filepath.Join(l.Dir, "ikefrag-tcp.ctl")
	l.Gw.Start(t, "ready", proxyrun, "-config", path, "-ctl", ctlSock)
	say("    proxy on gw:\n%s", indent(cfg, "      "))
	cli = l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Mid.Addr4})
	say("    swanctl --initiate (client → the RFC 9329 initiator at %s → TCP %s:4500) ...", l.Mid.Addr4, l.Gw.Addr4)
	start = time.Now()
	okTCP, out, err = cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !okTCP {
		say("    FAILED after %.2f s; the client's last words:", time.Since(start).Seconds())
		for _, line := range lastLines(out, 3) {
			say("      %s", line)
		}
		return okUDP, okTCP
	}
	say("    ESTABLISHED after %.2f s", time.Since(start).Seconds())
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err == nil {
		say("    ping %s → %s through the tunnel (ESP in the TCP stream): ok", l.Cli.Inner4, l.Srv.Inner4)
	} else {
		say("    ping through the tunnel: %v", err)
	}
	var st map[string]any
	get(ctlSock, "stats", &st)
	if tc, ok := st["tcp"].(map[string]any); ok {
		say("    proxy: %v TCP connection(s), %v frames in, %v frames out, %v RFC 7383 fragment set(s) joined into one SK message",
			tc["connections"], tc["frames_in"], tc["frames_out"], tc["skf_joined"])
	}
	var peers []map[string]any
	get(ctlSock, "peers", &peers)
	for _, p := range peers {
		if fs, ok := p["flows"].([]any); ok {
			for _, f := range fs {
				if fm, ok := f.(map[string]any); ok && fm["transport"] == "tcp" {
					say("    ikefragctl peers: %v flow %v → %v over TCP", p["client"], fm["client"], fm["backend"])
				}
			}
		}
	}
	return okUDP, okTCP
}

func verdict(ok bool) string {
	if ok {
		return "ESTABLISHED"
	}
	return "FAILED"
}

// scenario builds a fresh lab (fresh path-MTU caches), runs one client
// initiation and returns the capture taken on mid.
func scenario(t *testing.T, withProxy bool, proxyrun string) (string, bool) {
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll})
	cliCfg := lab.Charon{SaveKeys: true}
	if withProxy {
		cliCfg.RemoteAddr = l.Gw.Addr4
	}
	cli, srv := l.StartPair(cliCfg, lab.Charon{FragmentSize: 1500, SaveKeys: true})
	var ctlSock string
	if withProxy {
		cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  refragment: auto\nkeys:\n  strongswan_table: %s\n",
			l.Gw.Addr4, l.Srv.Addr4, srv.KeysFile())
		path := filepath.Join(l.Dir, "ikefrag.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		ctlSock = filepath.Join(l.Dir, "ikefrag.ctl")
		l.Gw.Start(t, "ready", proxyrun, "-config", path, "-ctl", ctlSock)
		say("    proxy on gw:\n%s", indent(cfg, "      "))
	}
	pcap := lab.Capture(t, l.Mid, "any", "")
	target := l.Srv.Addr4
	if withProxy {
		target = l.Gw.Addr4
	}
	say("    swanctl --initiate (client → %s) ...", target)
	start := time.Now()
	ok, out, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start).Seconds()
	if ok {
		say("    ESTABLISHED after %.2f s", el)
		if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err == nil {
			say("    ping %s → %s through the tunnel: ok", l.Cli.Inner4, l.Srv.Inner4)
		} else {
			say("    ping through the tunnel: %v", err)
		}
	} else {
		say("    FAILED after %.2f s; the client's last words:", el)
		for _, line := range lastLines(out, 3) {
			say("      %s", line)
		}
	}
	if c, err := l.DropCounters(); err == nil {
		say("    mid dropped %d IP fragments", c.Total())
	}
	if ctlSock != "" {
		var peers []map[string]any
		get(ctlSock, "peers", &peers)
		var st map[string]any
		get(ctlSock, "stats", &st)
		if tot, ok := st["total"].(map[string]any); ok {
			say("    proxy: %v IKE message(s) re-fragmented into %v fragments, %v replays, %v key misses",
				tot["refragmented"], tot["fragments_emitted"], tot["replays"], tot["key_misses"])
		}
		for _, p := range peers {
			if pm, ok := p["pmtu"].(map[string]any); ok {
				say("    ikefragctl peers: %v path MTU %v (%v)", p["client"], pm["mtu"], pm["source"])
			}
		}
	}
	if err := pcap.Stop(); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(os.TempDir(), fmt.Sprintf("ikefrag-demo-%d.pcap", map[bool]int{false: 1, true: 2}[withProxy]))
	if b, err := os.ReadFile(pcap.Path); err == nil {
		_ = os.WriteFile(keep, b, 0o644)
	}
	return keep, ok
}

func analyze(ctl, pcap string) {
	say("\n    $ ikefragctl analyze %s   (captured on mid)", pcap)
	out, _ := exec.Command(ctl, "analyze", pcap).CombinedOutput()
	say("%s", indent(string(out), "    "))
}

func get(sock, what string, v any) {
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://proxy/" + what)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(v)
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n")
}

func lastLines(s string, n int) []string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
