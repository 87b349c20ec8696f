package proxy_test

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/test/lab"
)

// TestLabRestartKeepsTunnel: a strongSwan tunnel through the proxy, pinged
// 10 times a second while the proxy is killed (SIGKILL) and started again.
// With proxy.state_file the new proxy reopens the flows' upstream ports,
// the backend sees the tunnel's ESP from where it knows it, and the pings
// come back; without it (the earlier behaviour) the tunnel stays dark.
func TestLabRestartKeepsTunnel(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	for _, c := range []struct {
		name  string
		state bool
	}{{"state_file", true}, {"no_state_file", false}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			l := lab.New(t, lab.Topology{Gateway: true, PKI: lab.ECDSA256})
			l.StartCharon(lab.Charon{Role: lab.Server})
			cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4})
			cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n", l.Gw.Addr4, l.Srv.Addr4)
			if c.state {
				cfg += fmt.Sprintf("  state_file: %s\n", filepath.Join(l.Dir, "proxy-state.json"))
			}
			g := startProxy(t, l, l.Gw, cfg)
			if ok, out, err := cli.Initiate(ctx); err != nil || !ok {
				t.Fatalf("initiate: %v %v\n%s", ok, err, out)
			}
			if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
				t.Fatalf("ping before the restart: %v", err)
			}
			time.Sleep(1500 * time.Millisecond) // the state file is written within a second

			// 150 pings, 10 a second, across the kill and the restart
			type result struct {
				out string
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", "150", "-i", "0.1", "-W", "1",
					"-I", l.Cli.Inner4.String(), l.Srv.Inner4.String())
				done <- result{out, err}
			}()
			time.Sleep(2 * time.Second)
			killed := time.Now()
			if err := syscall.Kill(g.proc.Pid(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			for !g.proc.Exited() {
				time.Sleep(10 * time.Millisecond)
			}
			g2 := startProxy(t, l, l.Gw, cfg)
			ready := time.Since(killed)
			r := <-done
			m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(r.out)
			if m == nil {
				t.Fatalf("ping: %v\n%s", r.err, r.out)
			}
			sent, _ := strconv.Atoi(m[1])
			got, _ := strconv.Atoi(m[2])
			after := l.Ping(ctx, l.Cli, l.Srv.Inner4)
			st := g2.stats(t)
			t.Logf("%s: proxy ready %.2f s after SIGKILL; %d of %d pings answered (%.0f%% loss over 15 s); ping after: %v; adopted %d, skipped %d",
				c.name, ready.Seconds(), got, sent, 100*float64(sent-got)/float64(sent), after, st.Adopted, st.AdoptSkipped)
			if c.state {
				if after != nil || st.Adopted == 0 {
					t.Errorf("with the state file the tunnel must carry pings after the restart")
				}
			}
		})
	}
}
