package diag_test

import (
	"errors"
	"io"
	"net/netip"
	"testing"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/test/shared"
)

func analyze(t *testing.T, path string) diag.Report {
	t.Helper()
	return analyzeWith(t, path, diag.Options{})
}

func analyzeWith(t *testing.T, path string, opt diag.Options) diag.Report {
	t.Helper()
	e := diag.New(opt)
	r, err := capture.Open(path, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e.Add(rec)
	}
	return e.Report(true)
}

// verdict is what a test expects: a code with its direction ("" for none).
type verdict struct {
	code diag.Code
	dir  string
}

func verdictsOf(r diag.Report) map[verdict]int {
	m := map[verdict]int{}
	for _, s := range r.Sessions {
		for _, v := range s.Verdicts {
			m[verdict{v.Code, v.Direction}]++
		}
	}
	return m
}

func TestCorpusVerdicts(t *testing.T) {
	cases := []struct {
		file     string
		sessions int
		want     map[verdict]int
	}{
		// Windows client: IKE_AUTH in 3 IP fragments, retransmitted, never
		// answered; 3DES/SHA-1/MODP-1024 chosen.
		{"zeek-spicy-ipsec-ipsec_client.pcap", 1, map[verdict]int{
			{diag.FragmentsDropped, diag.TowardServer}: 1, {diag.WeakCrypto, ""}: 1}},
		{"scapy-ikev2_notify_redirect.pcap", 2, map[verdict]int{{diag.NoProposalChosen, ""}: 1}},
		// 3 INVALID_KE_PAYLOAD answered by a retry; 37 SAs reach IKE_AUTH;
		// 66 SA choices, all with SHA-1, 63 of them MODP-1024. 29 SAs
		// complete IKE_SA_INIT and no IKE_AUTH follows in the file (the
		// capture was trimmed): IKE_AUTH_NOT_SEEN, a warning.
		{"nDPI-ipsec_isakmp_esp.pcap", 70, map[verdict]int{
			{diag.InvalidKEPayload, ""}: 3, {diag.OK, ""}: 37, {diag.WeakCrypto, ""}: 66, {diag.IKEAuthNotSeen, diag.TowardServer}: 29}},
		{"suricata-verify-IKEv2_SA_INIT_2-8-weak.pcap", 1, map[verdict]int{{diag.UnansweredSAInit, diag.TowardServer}: 1}},
		// The INIT retransmitted after 40 s is answered: no UNANSWERED verdict.
		{"arkime-IKEv2.pcap", 2, map[verdict]int{{diag.OK, ""}: 2}},
		{"scapy-ikev2_nat_t.pcapng", 3, map[verdict]int{{diag.OK, ""}: 3}},
		{"nDPI-esp.pcapng", 1, map[verdict]int{{diag.OK, ""}: 1}},
		// Captured datagrams twice: copies, not retransmissions.
		{"suricata-verify-detect-bypass-udp-input.pcap", 1, map[verdict]int{{diag.OK, ""}: 1}},
		{"tcpdump-ikev2four.pcap", 2, map[verdict]int{{diag.OK, ""}: 1, {diag.WeakCrypto, ""}: 1}},
		{"arkime-IKEv1.pcap", 2, map[verdict]int{{diag.IKEv1, ""}: 2}},
		{"zeek-spicy-ipsec-ipsec.cap", 1, map[verdict]int{{diag.IKEv1, ""}: 1}},
		{"tcpdump-isakmp4500.pcap", 1, map[verdict]int{{diag.IKEv1, ""}: 1}},
		{"zeek-spicy-ipsec-ipsec-ikev1-isakmp-aggressive-mode.pcap", 1, map[verdict]int{{diag.IKEv1, ""}: 1}},
		{"zeek-spicy-ipsec-ikev1-certs.pcap", 1, map[verdict]int{{diag.IKEv1, ""}: 1}},
		{"tcpdump-ISAKMP_sa_setup.pcap", 1, map[verdict]int{{diag.IKEv1, ""}: 1}},
		{"tcpdump-espudp1.pcap", 0, map[verdict]int{}},
		{"tcpdump-02-sunrise-sunset-esp.pcap", 0, map[verdict]int{}},
		{"libreswan-espfrags1.pcap", 0, map[verdict]int{}},
		{"zeek-ip6_esp.pcap", 0, map[verdict]int{}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			r := analyze(t, shared.Corpus(t, c.file))
			if len(r.Sessions) != c.sessions {
				t.Errorf("%d sessions, want %d", len(r.Sessions), c.sessions)
			}
			got := verdictsOf(r)
			for v, n := range c.want {
				if got[v] != n {
					t.Errorf("%s %s: %d, want %d (all: %v)", v.code, v.dir, got[v], n, got)
				}
			}
			for v, n := range got {
				if _, ok := c.want[v]; !ok {
					t.Errorf("unexpected verdict %s %s ×%d", v.code, v.dir, n)
				}
			}
		})
	}
}

func TestCorpusFacts(t *testing.T) {
	r := analyze(t, shared.Corpus(t, "zeek-spicy-ipsec-ipsec_client.pcap"))
	s := r.Sessions[0]
	if s.SPIi != "238671c80375a0fb" || s.SPIr != "73d16a42f60ef7f0" || s.Established {
		t.Errorf("session %+v", s)
	}
	if s.FragmentationSupported.Initiator || s.FragmentationSupported.Responder {
		t.Error("no peer offered fragmentation in this capture")
	}
	retrans := 0
	for _, row := range s.Ladder {
		if row.Exchange == "IKE_AUTH" {
			if row.IPFragments != 3 || !row.FromClient {
				t.Errorf("IKE_AUTH row %+v", row)
			}
			if row.Retransmission {
				retrans++
			}
		}
	}
	if retrans != 2 {
		t.Errorf("%d retransmissions, want 2", retrans)
	}
	// The client's first fragments were 1460 bytes: its MTU.
	if s.PMTUEstimate == nil || s.PMTUEstimate.MTU == 0 {
		t.Errorf("no PMTU estimate for the client: %+v", s.PMTUEstimate)
	}
	for _, p := range r.Peers {
		if p.Peer == "192.168.0.10" && p.MTU != 1460 {
			t.Errorf("client MTU estimate %d, want 1460 (first fragments): %v", p.MTU, p.Evidence)
		}
	}

	r = analyze(t, shared.Corpus(t, "scapy-ikev2_notify_redirect.pcap"))
	for _, s := range r.Sessions {
		for _, v := range s.Verdicts {
			if v.Code == diag.NoProposalChosen && len(v.Evidence) < 2 {
				t.Errorf("NO_PROPOSAL_CHOSEN without the offered proposals: %v", v.Evidence)
			}
		}
		if !s.FragmentationSupported.Initiator {
			t.Errorf("session %d: initiator offered IKEV2_FRAGMENTATION_SUPPORTED", s.ID)
		}
	}
}

// The lab captures were taken on the router between a strongSwan client and
// server (see ../shared/lab/README.md): each scenario has one known outcome.
func TestLabVerdicts(t *testing.T) {
	cases := []struct {
		file string
		want verdict
	}{
		{"a.pcap", verdict{diag.OK, ""}},
		{"b.pcap", verdict{diag.FragmentsDropped, diag.TowardServer}},
		{"c.pcap", verdict{diag.OK, ""}},
		{"d.pcap", verdict{diag.IKEFragmentsExceedPMTU, diag.TowardClient}},
		{"d2.pcap", verdict{diag.IKEFragmentsExceedPMTU, diag.TowardClient}},
		{"e.pcap", verdict{diag.FragmentsDropped, diag.TowardClient}},
		{"f.pcap", verdict{diag.FragmentsDropped, diag.TowardServer}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			r := analyze(t, shared.LabPcap(t, c.file))
			got := verdictsOf(r)
			if len(got) != 1 || got[c.want] != 1 {
				t.Errorf("verdicts %v, want exactly %v", got, c.want)
			}
			if c.want.code == diag.OK && r.Summary.Errors != 0 {
				t.Errorf("%d errors in a successful run", r.Summary.Errors)
			}
		})
	}
	// d: the router told the server the path MTU is 1280; the remedy sizes
	// strongSwan's fragments to it.
	r := analyze(t, shared.LabPcap(t, "d.pcap"))
	found := false
	for _, v := range r.Sessions[0].Verdicts {
		for _, m := range v.Remedy {
			if m == `strongSwan: set "charon { fragment_size = 1280 }" in strongswan.conf (size of the whole IP datagram of each IKE fragment; default 1280) and restart charon` {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("d: no fragment_size = 1280 remedy: %+v", r.Sessions[0].Verdicts)
	}
}

// A proxy on the observing host re-initiates each client's IKE toward the
// backend: that leg is shown but judged only on the client's session.
func TestRelayLegIsNotJudged(t *testing.T) {
	proxyAddr := netip.MustParseAddr("10.99.1.2") // the initiator in b.pcap
	r := analyzeWith(t, labFile("b.pcap"), diag.Options{RelayLeg: func(a netip.Addr) bool { return a == proxyAddr }})
	if len(r.Sessions) != 1 || !r.Sessions[0].RelayLeg || len(r.Sessions[0].Verdicts) != 0 {
		t.Errorf("sessions %+v, want one relay leg without verdicts", r.Sessions)
	}
	r = analyzeWith(t, labFile("b.pcap"), diag.Options{RelayLeg: func(netip.Addr) bool { return false }})
	if len(r.Sessions) != 1 || r.Sessions[0].RelayLeg || len(r.Sessions[0].Verdicts) == 0 {
		t.Errorf("sessions %+v, want the client's session judged", r.Sessions)
	}
}
