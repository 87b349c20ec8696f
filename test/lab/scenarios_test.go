package lab_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/test/lab"
)

// scenario is one run of the fragmentation lab: a path, two charons, one
// initiation, and what must come out of it.
type scenario struct {
	name   string
	topo   lab.Topology
	cli    lab.Charon
	srv    lab.Charon
	wantOK bool
	// check looks at the capture on mid and the drop counters.
	check func(t *testing.T, s lab.PcapSummary, c lab.DropCounts)
}

// The four base scenarios of the field problem. RSA-4096 certificates with
// two intermediates make IKE_AUTH about 5 KB in both directions.
func TestScenarios(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	scenarios := []scenario{
		// b: the Windows "error 809" case: mid drops the IP fragments of
		// IKE_AUTH and neither peer uses IKE fragmentation.
		{
			name: "b_drop_nofrag",
			topo: lab.Topology{Drop: lab.DropAll},
			cli:  lab.Charon{Fragmentation: "no"},
			srv:  lab.Charon{Fragmentation: "no"},
			check: func(t *testing.T, s lab.PcapSummary, c lab.DropCounts) {
				if s.IPv4Fragments == 0 || c.V4First == 0 || c.V4NonFirst == 0 {
					t.Errorf("want IKE_AUTH fragments dropped on mid: %+v %+v", s, c)
				}
			},
		},
		// d: RFC 7383 on both sides, but srv's fragments (1500) exceed the
		// client link's MTU (1280); srv then IP-fragments them and mid drops
		// the pieces.
		{
			name: "d_srv_fragsize_1500",
			topo: lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
			cli:  lab.Charon{Fragmentation: "yes", FragmentSize: 1280},
			srv:  lab.Charon{Fragmentation: "yes", FragmentSize: 1500},
			check: func(t *testing.T, s lab.PcapSummary, c lab.DropCounts) {
				if s.FragNeeded == 0 || c.Total() == 0 {
					t.Errorf("want ICMP frag-needed from mid and dropped fragments: %+v %+v", s, c)
				}
			},
		},
		// a: nothing drops fragments: IKE_AUTH crosses mid in IP fragments.
		{
			name:   "a_plain_nofrag",
			cli:    lab.Charon{Fragmentation: "no"},
			srv:    lab.Charon{Fragmentation: "no"},
			wantOK: true,
			check: func(t *testing.T, s lab.PcapSummary, c lab.DropCounts) {
				if s.IPv4Fragments == 0 || c.Total() != 0 {
					t.Errorf("want IP-fragmented IKE_AUTH and no drops: %+v %+v", s, c)
				}
			},
		},
		// c: RFC 7383 fragments of 1280 bytes fit the small link, so no IP
		// fragment exists for mid to drop.
		{
			name:   "c_ikefrag_1280",
			topo:   lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
			cli:    lab.Charon{Fragmentation: "yes", FragmentSize: 1280},
			srv:    lab.Charon{Fragmentation: "yes", FragmentSize: 1280},
			wantOK: true,
			check: func(t *testing.T, s lab.PcapSummary, c lab.DropCounts) {
				if s.IPv4Fragments != 0 || c.Total() != 0 || s.MaxIPLen > 1280 {
					t.Errorf("want IKE fragments only, no IP fragments: %+v %+v", s, c)
				}
			},
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t)
		})
	}
}

func (sc scenario) run(t *testing.T) {
	ctx := context.Background()
	l := lab.New(t, sc.topo)
	pcap := lab.Capture(t, l.Mid, "any", "")
	sc.cli.SaveKeys, sc.srv.SaveKeys = true, true
	cli, srv := l.StartPair(sc.cli, sc.srv)

	start := time.Now()
	ok, out, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initiate: ok=%v after %.2f s", ok, time.Since(start).Seconds())
	if ok != sc.wantOK {
		t.Fatalf("initiate: ok=%v, want %v; swanctl:\n%s", ok, sc.wantOK, out)
	}

	keys, err := cli.IKEKeys()
	if err != nil {
		t.Fatal(err)
	}
	checkKeyFileMode(t, cli.KeysFile())
	if ok {
		if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
			t.Errorf("ping through the tunnel: %v", err)
		}
		sa := established(t, cli)
		if _, found := lab.FindKeys(keys, sa.SPIi, sa.SPIr); !found {
			t.Errorf("no key line for SA %s/%s in %s", sa.SPIi, sa.SPIr, cli.KeysFile())
		}
		srvKeys, err := srv.IKEKeys()
		if err != nil {
			t.Fatal(err)
		}
		if _, found := lab.FindKeys(srvKeys, sa.SPIi, sa.SPIr); !found {
			t.Errorf("no key line for SA %s/%s on the responder", sa.SPIi, sa.SPIr)
		}
	} else {
		// keys exist from IKE_SA_INIT on, also when IKE_AUTH is lost
		if len(keys) == 0 {
			t.Errorf("no key line in %s after IKE_SA_INIT", cli.KeysFile())
		}
		log, _ := os.ReadFile(cli.Log())
		if !strings.Contains(string(log), "giving up after 3 retransmits") {
			t.Errorf("client log lacks the retransmit give-up")
		}
	}
	for _, k := range keys {
		if k.Encryption != "AES-CBC-256 [RFC3602]" || k.Integrity != "HMAC_SHA2_256_128 [RFC4868]" {
			t.Errorf("key line algorithms %q %q", k.Encryption, k.Integrity)
		}
	}

	counters, err := l.DropCounters()
	if err != nil {
		t.Fatal(err)
	}
	if err := pcap.Stop(); err != nil {
		t.Fatal(err)
	}
	sum, err := lab.Summarize(pcap.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("capture on mid: %+v; drops: %+v", sum, counters)
	if sum.Frames == 0 || pcap.Captured != sum.Frames || pcap.Dropped != 0 || sum.UDP500 == 0 {
		t.Errorf("capture incomplete or without IKE: %+v (tcpdump: %d captured, %d dropped)", sum, pcap.Captured, pcap.Dropped)
	}
	sc.check(t, sum, counters)
}

// established returns the client's only IKE SA, which must be up with an
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

func checkKeyFileMode(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Errorf("%s has mode %v, want no group/other access", path, st.Mode().Perm())
	}
}

// Suites other than the default must establish through libipsec too and
// show up in save-keys' output under Wireshark's names.
func TestProposals(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	cases := []struct {
		name, ike, esp         string
		saProposal, childProp  string
		encryption, integrity  string
		espEncName, espIntName string
	}{
		{
			name: "aes256gcm16", ike: "aes256gcm16-prfsha256-ecp256", esp: "aes256gcm16",
			saProposal: "AES_GCM_16-256/PRF_HMAC_SHA2_256/ECP_256", childProp: "AES_GCM_16-256",
			encryption: "AES-GCM-256 with 16 octet ICV [RFC5282]", integrity: "NONE [RFC4306]",
		},
		{
			// the Windows default suite; 3DES comes from the openssl plugin
			name: "3des_sha1", ike: "3des-sha1-modp2048", esp: "3des-sha1",
			saProposal: "3DES_CBC/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048", childProp: "3DES_CBC/HMAC_SHA1_96",
			encryption: "3DES [RFC2451]", integrity: "HMAC_SHA1_96 [RFC2404]",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			l := lab.New(t, lab.Topology{})
			c := lab.Charon{Proposals: tc.ike, ESPProposals: tc.esp, SaveKeys: true}
			cli, _ := l.StartPair(c, c)
			ok, out, err := cli.Initiate(ctx)
			if err != nil || !ok {
				t.Fatalf("initiate: ok=%v err=%v\n%s", ok, err, out)
			}
			sa := established(t, cli)
			if sa.Proposal != tc.saProposal || sa.Children[0].Proposal != tc.childProp {
				t.Errorf("negotiated %q / %q, want %q / %q", sa.Proposal, sa.Children[0].Proposal, tc.saProposal, tc.childProp)
			}
			keys, err := cli.IKEKeys()
			if err != nil {
				t.Fatal(err)
			}
			k, found := lab.FindKeys(keys, sa.SPIi, sa.SPIr)
			if !found {
				t.Fatalf("no key line for %s/%s", sa.SPIi, sa.SPIr)
			}
			if k.Encryption != tc.encryption || k.Integrity != tc.integrity {
				t.Errorf("key line names %q %q, want %q %q", k.Encryption, k.Integrity, tc.encryption, tc.integrity)
			}
			checkKeyFileMode(t, cli.KeysFile())
			checkKeyFileMode(t, cli.ESPKeysFile())
			if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
				t.Errorf("ping through the tunnel: %v", err)
			}
		})
	}
}

// The fragment filter must drop IPv4 and IPv6 fragments per mode, and only
// fragments.
func TestFragmentFilter(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{IPv6: true, Drop: lab.DropAll})
	ping := func(to netip.Addr, size int) bool {
		_, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", "1", "-W", "1", "-s", strconv.Itoa(size), to.String())
		return err == nil
	}
	targets := []netip.Addr{l.Srv.Addr4, l.Srv.Addr6}
	for _, a := range targets {
		if !ping(a, 100) {
			t.Errorf("small ping to %s dropped", a)
		}
		if ping(a, 3000) {
			t.Errorf("fragmented ping to %s passed with DropAll", a)
		}
	}
	c, err := l.DropCounters()
	if err != nil {
		t.Fatal(err)
	}
	if c.V4First == 0 || c.V4NonFirst == 0 || c.V6First == 0 || c.V6NonFirst == 0 {
		t.Errorf("DropAll counters %+v", c)
	}

	if err := l.SetDrop(lab.DropNonFirst); err != nil {
		t.Fatal(err)
	}
	for _, a := range targets {
		if ping(a, 3000) {
			t.Errorf("fragmented ping to %s passed with DropNonFirst", a)
		}
	}
	c, err = l.DropCounters()
	if err != nil {
		t.Fatal(err)
	}
	if c.V4First != 0 || c.V6First != 0 || c.V4NonFirst == 0 || c.V6NonFirst == 0 {
		t.Errorf("DropNonFirst counters %+v", c)
	}

	if err := l.SetDrop(lab.DropNone); err != nil {
		t.Fatal(err)
	}
	for _, a := range targets {
		if !ping(a, 3000) {
			t.Errorf("fragmented ping to %s dropped without a filter", a)
		}
	}

	// SetMTU reaches both ends of the link.
	link := l.Link(l.Cli, l.Mid)
	if err := link.SetMTU(1280); err != nil {
		t.Fatal(err)
	}
	for _, end := range []struct {
		n     *lab.Node
		iface string
	}{{l.Cli, link.IfA}, {l.Mid, link.IfB}} {
		out, err := end.n.Run(ctx, "cat", "/sys/class/net/"+end.iface+"/mtu")
		if err != nil || strings.TrimSpace(out) != "1280" {
			t.Errorf("%s %s mtu %q %v", end.n.Role, end.iface, out, err)
		}
	}
}

// cli — mid — gw — srv, dual stack: IKE over IPv6 with RFC 7383 fragments
// through a 1280-byte link behind gw that drops fragments, then pings in
// both families through the tunnel.
func TestGatewayIPv6(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, IPv6: true, MTU: lab.MTUs{GwSrv: 1280}, Drop: lab.DropAll, DropAt: "gw"})
	for _, a := range []netip.Addr{l.Gw.Addr4, l.Gw.Addr6} {
		if err := l.Ping(ctx, l.Cli, a); err != nil {
			t.Errorf("cli cannot reach gw %s: %v", a, err)
		}
	}
	pcap := lab.Capture(t, l.Gw, "any", "")
	cli, _ := l.StartPair(lab.Charon{IPv6: true}, lab.Charon{})
	ok, out, err := cli.Initiate(ctx)
	if err != nil || !ok {
		t.Fatalf("initiate: ok=%v err=%v\n%s", ok, err, out)
	}
	established(t, cli)
	for _, a := range []netip.Addr{l.Srv.Inner4, l.Srv.Inner6} {
		if err := l.Ping(ctx, l.Cli, a); err != nil {
			t.Errorf("ping %s through the tunnel: %v", a, err)
		}
	}
	if err := pcap.Stop(); err != nil {
		t.Fatal(err)
	}
	sum, err := lab.Summarize(pcap.Path)
	if err != nil {
		t.Fatal(err)
	}
	if sum.UDP500 == 0 || sum.IPv6Fragments != 0 || sum.MaxIPLen > 1280 {
		t.Errorf("capture on gw: %+v", sum)
	}
}

// A client aimed at an address on gw (RemoteAddr) reaches srv, which accepts
// a peer address other than cli's. Until the product's proxy runs on gw, a
// stateful NAT there stands in for it. Uses the ECDSA PKI.
func TestRemoteAddrThroughGateway(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, PKI: lab.ECDSA256})
	nat := fmt.Sprintf(`table ip labnat {
	chain pre {
		type nat hook prerouting priority -100; policy accept;
		ip daddr %s udp dport { 500, 4500 } dnat to %s
	}
	chain post {
		type nat hook postrouting priority 100; policy accept;
		oifname "gw-srv" masquerade
	}
}
`, l.Gw.Addr4, l.Srv.Addr4)
	cmd := l.Gw.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nat)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	cli, srv := l.StartPair(lab.Charon{RemoteAddr: l.Gw.Addr4}, lab.Charon{})
	if pid, err := os.ReadFile(filepath.Join(cli.Dir, "varrun", "charon.pid")); err != nil ||
		strings.TrimSpace(string(pid)) != strconv.Itoa(cli.Pid()) {
		t.Errorf("charon pid file %q (%v), started pid %d", pid, err, cli.Pid())
	}
	ok, out, err := cli.Initiate(ctx)
	if err != nil || !ok {
		t.Fatalf("initiate: ok=%v err=%v\n%s", ok, err, out)
	}
	if sa := established(t, cli); sa.Remote.Addr() != l.Gw.Addr4 {
		t.Errorf("client's peer is %v, want gw %v", sa.Remote, l.Gw.Addr4)
	}
	sas, err := srv.SAs(ctx)
	if err != nil || len(sas) != 1 {
		t.Fatalf("server SAs %+v, %v", sas, err)
	}
	if gwSrv, _ := l.Link(l.Gw, l.Srv).Addrs(l.Gw); sas[0].Remote.Addr() != gwSrv {
		t.Errorf("server's peer is %v, want gw's address %v", sas[0].Remote, gwSrv)
	}
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Errorf("ping through the tunnel: %v", err)
	}
}

// Non-default IKE ports on both sides (a proxy may need 500/4500 for
// itself). Uses the RSA-2048 PKI.
func TestCustomPorts(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{PKI: lab.RSA2048})
	cli, _ := l.StartPair(lab.Charon{Port: 1501, PortNATT: 14501, RemotePort: 1500},
		lab.Charon{Port: 1500, PortNATT: 14500})
	ok, out, err := cli.Initiate(ctx)
	if err != nil || !ok {
		t.Fatalf("initiate: ok=%v err=%v\n%s", ok, err, out)
	}
	// kernel-libipsec forces UDP encapsulation: the client moves to its NAT-T
	// port, and keeps the server's custom port
	if sa := established(t, cli); sa.Remote.Port() != 1500 || sa.Local.Port() != 14501 {
		t.Errorf("IKE SA endpoints %v -> %v", sa.Local, sa.Remote)
	}
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Errorf("ping through the tunnel: %v", err)
	}
}
