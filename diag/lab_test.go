package diag_test

import (
	"context"
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
