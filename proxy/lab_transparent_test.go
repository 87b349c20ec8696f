package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/test/lab"
)

// TestLabTransparent: with proxy.source client the backend (strongSwan,
// whose route to the clients goes through gw, the lab's default) sees
// the client's own address, not the proxy's; its replies come back
// through gw's policy rules to the proxy's sockets; the tunnel carries
// pings; and the rules are gone when the proxy stops.
func TestLabTransparent(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, PKI: lab.ECDSA256})
	srv := l.StartCharon(lab.Charon{Role: lab.Server})
	cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4})
	cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  source: client\n", l.Gw.Addr4, l.Srv.Addr4)
	g := startProxy(t, l, l.Gw, cfg)
	rules, err := l.Gw.Run(ctx, "ip", "rule", "show")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gw rules:\n%s", rules)
	if ok, out, err := cli.Initiate(ctx); err != nil || !ok {
		t.Fatalf("initiate: %v %v\n%s", ok, err, out)
	}
	sa := established(t, cli)
	if sa.Remote.Addr() != l.Gw.Addr4 {
		t.Errorf("client's peer %v, want the proxy %v", sa.Remote, l.Gw.Addr4)
	}
	sas, err := srv.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != 1 || sas[0].Remote.Addr() != l.Cli.Addr4 {
		t.Errorf("backend's IKE SAs %+v: want one with the client's own address %v as its peer", sas, l.Cli.Addr4)
	} else {
		t.Logf("backend sees the client as %v", sas[0].Remote)
	}
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Errorf("ping through the tunnel: %v", err)
	}
	st := g.stats(t)
	if st.FastPath.Active || st.Flows == 0 {
		t.Errorf("stats: flows %d, fast path %+v", st.Flows, st.FastPath)
	}
	for _, f := range st.Backends {
		t.Logf("backend %s: %+v", f.Name, f.Counters)
	}
	if err := g.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	if rules, _ := l.Gw.Run(ctx, "ip", "rule", "show"); strings.Contains(rules, "lookup 4501") {
		t.Errorf("rules left after the proxy stopped:\n%s", rules)
	}
}
