package diag_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/test/lab"
)

// TestLiveScenarios runs real strongSwan peers across a router that drops IP
// fragments, captures on the router, and checks that the engine names the
// failure and the direction in which messages are lost.
func TestLiveScenarios(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	cases := []struct {
		name     string
		topo     lab.Topology
		cli, srv lab.Charon
		wantOK   bool
		want     verdict
	}{
		{"b", lab.Topology{Drop: lab.DropAll},
			lab.Charon{Fragmentation: "no"}, lab.Charon{Fragmentation: "no"}, false,
			verdict{diag.FragmentsDropped, diag.TowardServer}},
		{"c", lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
			lab.Charon{FragmentSize: 1280}, lab.Charon{FragmentSize: 1280}, true,
			verdict{diag.OK, ""}},
		{"d", lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
			lab.Charon{FragmentSize: 1280}, lab.Charon{FragmentSize: 1500}, false,
			verdict{diag.IKEFragmentsExceedPMTU, diag.TowardClient}},
		{"e", lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
			lab.Charon{FragmentSize: 1280}, lab.Charon{Fragmentation: "accept"}, false,
			verdict{diag.FragmentsDropped, diag.TowardClient}},
		{"f", lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
			lab.Charon{Fragmentation: "no"}, lab.Charon{FragmentSize: 1280}, false,
			verdict{diag.FragmentsDropped, diag.TowardServer}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, c.topo)
			pcap := lab.Capture(t, l.Mid, "any", "")
			cli, _ := l.StartPair(c.cli, c.srv)
			ok, out, err := cli.Initiate(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ok != c.wantOK {
				t.Fatalf("initiate ok=%v, want %v:\n%s", ok, c.wantOK, out)
			}
			pcap.Stop()
			r := analyze(t, pcap.Path)
			got := verdictsOf(r)
			if got[c.want] != 1 {
				t.Errorf("verdicts %v, want %v", got, c.want)
			}
			if c.wantOK && r.Summary.Errors != 0 {
				t.Errorf("%d error verdicts in an established run: %v", r.Summary.Errors, got)
			}
		})
	}
}

// TestLiveAuthenticationFailed makes the responder expect another identity:
// it answers IKE_AUTH with AUTHENTICATION_FAILED inside the encrypted
// payload, which only the keys reveal.
func TestLiveAuthenticationFailed(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	l := lab.New(t, lab.Topology{})
	pcap := lab.Capture(t, l.Mid, "any", "")
	cli, _ := l.StartPair(lab.Charon{SaveKeys: true}, lab.Charon{RemoteID: "nobody.lab.example"})
	ok, _, err := cli.Initiate(context.Background())
	if err != nil || ok {
		t.Fatalf("initiate ok=%v err=%v, want a failure", ok, err)
	}
	pcap.Stop()

	without := verdictsOf(analyze(t, pcap.Path))
	if without[verdict{diag.AuthenticationFailed, diag.TowardClient}] != 0 {
		t.Errorf("AUTHENTICATION_FAILED without keys: %v", without)
	}

	store := lab.KeyStore(t, cli.KeysFile())
	with := verdictsOf(analyzeWith(t, pcap.Path, diag.Options{Keys: store}))
	if with[verdict{diag.AuthenticationFailed, diag.TowardClient}] != 1 || with[verdict{diag.OK, ""}] != 0 {
		t.Errorf("with keys: %v, want AUTHENTICATION_FAILED toward the client and no OK", with)
	}
}

// TestLiveESPBlackhole: the tunnel comes up through a 1280-byte link whose
// router drops IP fragments (IKE gets through with RFC 7383 fragments).
// Small pings cross the tunnel; large ones make ESP-in-UDP datagrams
// (kernel-libipsec) that the client IP-fragments and the router drops.
// The IKE verdict stays OK; ESP_FRAGMENTS_DROPPED names the direction and
// sizes the tunnel MTU and TCP MSS.
func TestLiveESPBlackhole(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	l := lab.New(t, lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll})
	pcap := lab.Capture(t, l.Mid, "any", "")
	cli, _ := l.StartPair(lab.Charon{FragmentSize: 1280}, lab.Charon{FragmentSize: 1280})
	ctx := context.Background()
	ok, out, err := cli.Initiate(ctx)
	if err != nil || !ok {
		t.Fatalf("initiate ok=%v err=%v:\n%s", ok, err, out)
	}
	ping := func(size int) error {
		_, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", "3", "-i", "0.3", "-W", "1", "-s", fmt.Sprint(size), "-I", l.Cli.Inner4.String(), l.Srv.Inner4.String())
		return err
	}
	if err := ping(100); err != nil {
		t.Fatalf("small pings do not cross the tunnel: %v", err)
	}
	if err := ping(1300); err == nil {
		t.Fatal("large pings crossed the tunnel: the black hole is not there")
	}
	if err := ping(100); err != nil {
		t.Fatalf("small pings after the large ones: %v", err)
	}
	pcap.Stop()
	if dir := os.Getenv("IKEFRAG_KEEP_PCAP"); dir != "" {
		b, _ := os.ReadFile(pcap.Path)
		os.WriteFile(filepath.Join(dir, "esp-blackhole.pcap"), b, 0o644)
	}
	r := analyze(t, pcap.Path)
	checkESPBlackhole(t, r)
}

// checkESPBlackhole checks the verdicts of the ESP black-hole scenario.
func checkESPBlackhole(t *testing.T, r diag.Report) {
	t.Helper()
	got := verdictsOf(r)
	if got[verdict{diag.OK, ""}] != 1 || got[verdict{diag.ESPFragmentsDropped, diag.TowardServer}] != 1 {
		t.Fatalf("verdicts %v, want OK and ESP_FRAGMENTS_DROPPED toward the server", got)
	}
	for _, s := range r.Sessions {
		for _, v := range s.Verdicts {
			if v.Code != diag.ESPFragmentsDropped {
				continue
			}
			all := strings.Join(v.Remedy, "\n")
			for _, want := range []string{"kernel-libipsec.mtu", "kernel-netlink.mtu", "tcp option maxseg size set rt mtu", "mtu=", "MSS"} {
				if !strings.Contains(all, want) {
					t.Errorf("remedy lacks %q:\n%s", want, all)
				}
			}
			t.Logf("%s\n%s\n%s", v.Summary, strings.Join(v.Evidence, "\n"), all)
		}
	}
}

// The capture TestLiveESPBlackhole took on the router (kept in testdata:
// IKEFRAG_KEEP_PCAP=dir writes a fresh one) gives the same verdicts
// without root.
func TestESPBlackholeCapture(t *testing.T) {
	checkESPBlackhole(t, analyze(t, filepath.Join("testdata", "lab", "esp-blackhole.pcap")))
}
