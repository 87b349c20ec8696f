// Package demo is `make demo`: the field failure and its repair, end to end,
// in a throwaway namespace lab with real strongSwan peers. It runs only with
// IKEFRAG_DEMO=1 (it prints for a person to read, and takes about half a
// minute):
//
//	IKEFRAG_DEMO=1 go test -count=1 -v -run '^TestDemo$' ./test/lab/demo/
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
