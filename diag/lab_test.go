package diag_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
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

// liveRun starts a lab, captures on the router, initiates, and returns the
// report of the capture, rewritten through tcpdump with filter when one is
// given (the lab's own capture always keeps every IP fragment).
func liveRun(t *testing.T, topo lab.Topology, filter string, cli, srv lab.Charon, wantOK bool) diag.Report {
	t.Helper()
	l := lab.New(t, topo)
	pcap := lab.Capture(t, l.Mid, "any", "")
	c, _ := l.StartPair(cli, srv)
	ok, out, err := c.Initiate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ok != wantOK {
		t.Fatalf("initiate ok=%v, want %v:\n%s", ok, wantOK, out)
	}
	pcap.Stop()
	path := pcap.Path
	if filter != "" {
		path = filepath.Join(t.TempDir(), "filtered.pcap")
		if out, err := exec.Command("tcpdump", "-r", pcap.Path, "-w", path, filter).CombinedOutput(); err != nil {
			t.Fatalf("tcpdump -r: %v\n%s", err, out)
		}
	}
	if dir := os.Getenv("IKEFRAG_KEEP_PCAP"); dir != "" {
		b, _ := os.ReadFile(path)
		os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".pcap"), b, 0o644)
	}
	return analyze(t, path)
}

// TestLivePartialFragments: the 809 case captured where only part of each
// IKE_AUTH train is visible. A filter over the router's capture plays the
// box in front of the capture point ("udp port" matches only unfragmented
// packets and first fragments, which carry the UDP header).
func TestLivePartialFragments(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	nofrag := lab.Charon{Fragmentation: "no"}
	cases := []struct{ name, filter string }{
		// Only the first fragment of each copy (a later box dropped the
		// rest; the capture point saw them go by).
		{"first_only", "(udp port 500 or udp port 4500) or icmp"},
		// Only the later fragments: the first fragments were lost before
		// the capture point.
		{"later_only", "((udp port 500 or udp port 4500) and not (ip[6:2] & 0x2000 != 0)) or (ip[6:2] & 0x1fff != 0)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := liveRun(t, lab.Topology{Drop: lab.DropAll}, c.filter, nofrag, nofrag, false)
			got := verdictsOf(r)
			if got[verdict{diag.FragmentsDropped, diag.TowardServer}] != 1 || got[verdict{diag.UnansweredIKEAuth, diag.TowardServer}] != 0 || r.Summary.Errors == 0 {
				t.Errorf("verdicts %v, want FRAGMENTS_DROPPED toward the server", got)
			}
		})
	}
}

// TestLiveInvalidKESameSPI: strongSwan retries after INVALID_KE_PAYLOAD
// under the same initiator SPI (RFC 7296 §1.2).
func TestLiveInvalidKESameSPI(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	r := liveRun(t, lab.Topology{}, "", lab.Charon{Proposals: "aes256-sha256-modp3072-ecp256"}, lab.Charon{Proposals: "aes256-sha256-ecp256"}, true)
	if len(r.Sessions) != 1 {
		t.Fatalf("%d sessions, want 1 (the retry keeps the SPI)", len(r.Sessions))
	}
	got := verdictsOf(r)
	if got[verdict{diag.InvalidKEPayload, ""}] != 1 || got[verdict{diag.OK, ""}] != 1 {
		t.Errorf("verdicts %v, want INVALID_KE_PAYLOAD and OK", got)
	}
	for _, v := range r.Sessions[0].Verdicts {
		if v.Code == diag.InvalidKEPayload && (v.Severity != diag.Info || !strings.Contains(strings.Join(v.Evidence, " "), "same SPI")) {
			t.Errorf("INVALID_KE_PAYLOAD %+v", v)
		}
	}
}

// TestLiveNoProposalWeakOffer: a client offering only 3DES / SHA-1 gets a
// remedy built from its offer, flagged weak.
func TestLiveNoProposalWeakOffer(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	r := liveRun(t, lab.Topology{}, "", lab.Charon{Proposals: "3des-sha1-modp2048"}, lab.Charon{}, false)
	var v *diag.Verdict
	for _, s := range r.Sessions {
		for i := range s.Verdicts {
			if s.Verdicts[i].Code == diag.NoProposalChosen {
				v = &s.Verdicts[i]
			}
		}
	}
	if v == nil {
		t.Fatalf("no NO_PROPOSAL_CHOSEN: %v", verdictsOf(r))
	}
	all := strings.Join(v.Remedy, "\n")
	for _, want := range []string{`"3des-sha1-prfsha1-modp2048"`, "-EncryptionMethod DES3 -IntegrityCheckMethod SHA1 -DHGroup Group14", "below the baseline", "strongSwan initiator"} {
		if !strings.Contains(all, want) {
			t.Errorf("remedy lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "matches what the peer offers") {
		t.Errorf("remedy claims a match:\n%s", all)
	}
}
