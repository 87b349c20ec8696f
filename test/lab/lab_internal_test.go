package lab

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// These tests need neither root nor strongSwan, except TestSweepStale.

func TestLabPrefix(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"TestScenarios/a_plain_nofrag", "ikl-scena-nofrag-0a1b2c"},
		{"TestFoo", "ikl-foo-0a1b2c"},
		{"TestX/1", "ikl-x-1-0a1b2c"},
		{"Test", "ikl-t-0a1b2c"},
	} {
		p := labPrefix(tc.name, "0a1b2c")
		if p != tc.want {
			t.Errorf("labPrefix(%q) = %q, want %q", tc.name, p, tc.want)
		}
		for _, role := range []string{"cli", "mid", "gw", "srv"} {
			if !staleNS.MatchString(p + "-" + role) {
				t.Errorf("%s-%s does not match the sweep pattern", p, role)
			}
		}
	}
}

func testLab(topo Topology) *Lab {
	l := &Lab{topo: topo, Prefix: "ikl-x-0a1b2c", Dir: "/tmp/ikl-x-0a1b2c"}
	l.layout()
	return l
}

func TestLayout(t *testing.T) {
	l := testLab(Topology{})
	want := map[*Node]string{l.Cli: "10.99.1.2", l.Mid: "10.99.1.1", l.Srv: "10.99.2.2"}
	for n, a := range want {
		if n.Addr4.String() != a || n.Addr6.IsValid() {
			t.Errorf("%s: %v %v, want %s and no IPv6", n.Role, n.Addr4, n.Addr6, a)
		}
	}
	if l.Gw != nil || len(l.links) != 2 {
		t.Fatalf("want cli—mid—srv, got %d links", len(l.links))
	}

	l = testLab(Topology{Gateway: true, IPv6: true, MTU: MTUs{CliMid: 1280, GwSrv: 1400}})
	if l.Gw == nil || l.Gw.Addr4.String() != "10.99.3.2" || l.Gw.Addr6.String() != "fd00:99:3::2" ||
		l.Srv.Addr4.String() != "10.99.2.2" || l.Srv.Inner6.String() != "fd00:99:20::1" {
		t.Errorf("gateway layout: gw %v %v srv %v %v", l.Gw.Addr4, l.Gw.Addr6, l.Srv.Addr4, l.Srv.Inner6)
	}
	if l.Link(l.Cli, l.Mid).MTU() != 1280 || l.Link(l.Gw, l.Srv).MTU() != 1400 || l.Link(l.Mid, l.Gw).MTU() != 1500 {
		t.Error("per-link MTUs not applied")
	}
	for _, k := range l.links {
		if len(k.IfA) > 15 || len(k.IfB) > 15 {
			t.Errorf("interface names %q %q too long", k.IfA, k.IfB)
		}
	}
	if sc := l.setupScript(l.Mid); !strings.Contains(sc, "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding\n") ||
		!strings.Contains(sc, "echo 0 > /proc/sys/net/ipv6/conf/mid-gw/accept_dad\n") ||
		!strings.Contains(sc, "ethtool -K mid-gw gro off gso off tso off") {
		t.Errorf("mid setup script:\n%s", sc)
	}
	mid := l.batch(l.Mid)
	for _, s := range []string{"route add 10.99.2.0/24 via 10.99.3.2", "route add fd00:99:2::/64 via fd00:99:3::2",
		"link set dev mid-cli mtu 1280 up", "addr add fd00:99:1::1/64 dev mid-cli nodad"} {
		if !strings.Contains(mid, s) {
			t.Errorf("mid batch lacks %q:\n%s", s, mid)
		}
	}
	if gw := l.batch(l.Gw); !strings.Contains(gw, "route add default via 10.99.3.1") ||
		!strings.Contains(gw, "route add ::/0 via fd00:99:3::1") {
		t.Errorf("gw batch:\n%s", gw)
	}
	if srv := l.batch(l.Srv); !strings.Contains(srv, "route add default via 10.99.2.1") ||
		!strings.Contains(srv, "addr add 10.99.20.1/32 dev lo") {
		t.Errorf("srv batch:\n%s", srv)
	}
}

// Topology.Pair: two gateways on a bridge in mid and a bridge in srv; the
// bridge holds mid's and srv's address, the virtual addresses are routes'
// next hops only.
func TestLayoutPair(t *testing.T) {
	l := testLab(Topology{Pair: true, MTU: MTUs{CliMid: 1280}})
	if l.Gw == nil || l.Gw2 == nil || len(l.links) != 5 {
		t.Fatalf("want cli—mid—{gw,gw2}—srv, got %d links", len(l.links))
	}
	for n, a := range map[*Node]string{l.Cli: "10.99.1.2", l.Mid: "10.99.1.1", l.Gw: "10.99.3.2", l.Gw2: "10.99.3.3", l.Srv: "10.99.2.2"} {
		if n.Addr4.String() != a {
			t.Errorf("%s: %v, want %s", n.Role, n.Addr4, a)
		}
	}
	mid := l.batch(l.Mid)
	for _, s := range []string{"link add name br-gws type bridge", "addr add 10.99.3.1/24 dev br-gws",
		"link set dev mid-gw master br-gws", "link set dev mid-gw2 master br-gws", "route add 10.99.2.0/24 via 10.99.3.10"} {
		if !strings.Contains(mid, s) {
			t.Errorf("mid batch lacks %q:\n%s", s, mid)
		}
	}
	if strings.Count(mid, "type bridge") != 1 || strings.Contains(mid, "dev mid-gw\n") {
		t.Errorf("mid batch: one bridge, no address on its ports:\n%s", mid)
	}
	srv := l.batch(l.Srv)
	for _, s := range []string{"addr add 10.99.2.2/24 dev br-gws", "link set dev srv-gw2 master br-gws", "route add default via 10.99.2.1"} {
		if !strings.Contains(srv, s) {
			t.Errorf("srv batch lacks %q:\n%s", s, srv)
		}
	}
	gw2 := l.batch(l.Gw2)
	for _, s := range []string{"addr add 10.99.3.3/24 dev gw2-mid", "addr add 10.99.2.4/24 dev gw2-srv", "route add default via 10.99.3.1"} {
		if !strings.Contains(gw2, s) {
			t.Errorf("gw2 batch lacks %q:\n%s", s, gw2)
		}
	}
	if !strings.Contains(l.setupScript(l.Gw2), "echo 1 > /proc/sys/net/ipv4/ip_forward") {
		t.Error("gw2 does not forward")
	}
	if !staleNS.MatchString(l.Gw2.Name) {
		t.Errorf("%s escapes the stale-lab sweep", l.Gw2.Name)
	}
}

func TestDropRuleset(t *testing.T) {
	all, err := dropRuleset(DropAll)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"priority -500", "ip frag-off & 0x2000 != 0", "ip frag-off & 0x1fff != 0",
		"frag more-fragments 1", "frag frag-off != 0", "delete table inet ikefrag_lab"} {
		if !strings.Contains(all, s) {
			t.Errorf("DropAll ruleset lacks %q", s)
		}
	}
	nonfirst, _ := dropRuleset(DropNonFirst)
	if strings.Contains(nonfirst, "0x2000") || strings.Contains(nonfirst, "more-fragments") {
		t.Errorf("DropNonFirst drops first fragments:\n%s", nonfirst)
	}
	none, _ := dropRuleset(DropNone)
	if strings.Contains(none, "chain") {
		t.Errorf("DropNone installs a chain:\n%s", none)
	}
	if _, err := dropRuleset("some"); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestCharonConfig(t *testing.T) {
	l := testLab(Topology{Gateway: true, IPv6: true})
	cfg := Charon{Role: Client, Fragmentation: "no", FragmentSize: 1400, RemoteAddr: l.Gw.Addr4, SaveKeys: true}
	cfg.defaults()
	d := &Daemon{Config: cfg, Node: l.Cli, Dir: "/tmp/d", lab: l}
	conf := d.strongswanConf(true)
	for _, s := range []string{"fragment_size = 1400", "retransmit_tries = 3", "retransmit_timeout = 2\n",
		"retransmit_base = 1.5", "kernel-libipsec", " save-keys\n", "wireshark_keys = /tmp/d/keys",
		"socket = unix:///tmp/d/charon.vici"} {
		if !strings.Contains(conf, s) {
			t.Errorf("strongswan.conf lacks %q:\n%s", s, conf)
		}
	}
	sw := d.swanctlConf()
	for _, s := range []string{"remote_addrs = 10.99.3.2", "local_addrs = 10.99.1.2", "fragmentation = no",
		"proposals = aes256-sha256-modp3072", "local_ts = 10.99.10.0/24, fd00:99:10::/64",
		"remote_ts = 10.99.20.0/24, fd00:99:20::/64", "id = srv.lab.example", "certs = cli.crt"} {
		if !strings.Contains(sw, s) {
			t.Errorf("swanctl.conf lacks %q:\n%s", s, sw)
		}
	}

	srv := Charon{Role: Server, Port: 1500, PortNATT: 14500}
	srv.defaults()
	d = &Daemon{Config: srv, Node: l.Srv, Dir: "/tmp/d", lab: l}
	sw, conf = d.swanctlConf(), d.strongswanConf(false)
	for _, s := range []string{"remote_addrs = %any", "local_addrs = 10.99.2.2, fd00:99:2::2", "local_port = 1500"} {
		if !strings.Contains(sw, s) {
			t.Errorf("server swanctl.conf lacks %q:\n%s", s, sw)
		}
	}
	if !strings.Contains(conf, "port = 1500") || !strings.Contains(conf, "port_nat_t = 14500") ||
		strings.Contains(conf, "save-keys") {
		t.Errorf("server strongswan.conf:\n%s", conf)
	}
}

func TestReadIKEKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ikev2_decryption_table")
	data := "0011223344556677,8899aabbccddeeff,0a0b,0c0d,\"AES-CBC-256 [RFC3602]\",01,02,\"HMAC_SHA2_256_128 [RFC4868]\"\n" +
		"1111111111111111,2222222222222222,aa,bb,\"AES-GCM-256 with 16 octet ICV [RFC5282]\",,,\"NONE [RFC4306]\"\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := ReadIKEKeys(path)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ReadIKEKeys: %v %+v", err, keys)
	}
	k, ok := FindKeys(keys, "0011223344556677", "8899aabbccddeeff")
	if !ok || string(k.SKei) != "\x0a\x0b" || string(k.SKar) != "\x02" || k.Integrity != "HMAC_SHA2_256_128 [RFC4868]" {
		t.Errorf("first line: %+v", k)
	}
	if len(keys[1].SKai) != 0 || keys[1].Encryption != "AES-GCM-256 with 16 octet ICV [RFC5282]" {
		t.Errorf("AEAD line: %+v", keys[1])
	}
	if err := os.WriteFile(path, []byte("zz,yy,1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadIKEKeys(path); err == nil {
		t.Error("malformed line accepted")
	}
}

func TestParseSAs(t *testing.T) {
	out := `lab: #1, ESTABLISHED, IKEv2, 9e21883264b2d864_i* c44b3dfba3fa7c47_r
  local  'cli.lab.example' @ 10.99.1.2[4500]
  remote 'srv.lab.example' @ fd00:99:2::2[4500]
  AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072
  established 0s ago, rekeying in 13000s
  lab: #1, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_CBC-256/HMAC_SHA2_256_128
    installed 0s ago, rekeying in 3542s, expires in 3960s
    in  4103b8a4,      0 bytes,     0 packets
    local  10.99.10.0/24 fd00:99:10::/64
    remote 10.99.20.0/24 fd00:99:20::/64
`
	sas := parseSAs(out)
	if len(sas) != 1 {
		t.Fatalf("got %+v", sas)
	}
	sa := sas[0]
	if sa.Name != "lab" || sa.State != "ESTABLISHED" || sa.SPIi != "9e21883264b2d864" || sa.SPIr != "c44b3dfba3fa7c47" ||
		sa.Proposal != "AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_3072" ||
		sa.Local.String() != "10.99.1.2:4500" || sa.Remote.String() != "[fd00:99:2::2]:4500" {
		t.Errorf("IKE SA %+v", sa)
	}
	if len(sa.Children) != 1 || sa.Children[0].State != "INSTALLED" || sa.Children[0].Proposal != "AES_CBC-256/HMAC_SHA2_256_128" {
		t.Errorf("CHILD_SAs %+v", sa.Children)
	}
}

// pcapFile builds a little-endian pcap with Linux cooked v2 framing.
func pcapFile(frames ...[]byte) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = binary.LittleEndian.AppendUint32(b, 262144)
	b = binary.LittleEndian.AppendUint32(b, 276)
	for _, ip := range frames {
		sll := make([]byte, 20)
		if ip[0]>>4 == 6 {
			binary.BigEndian.PutUint16(sll, 0x86dd)
		} else {
			binary.BigEndian.PutUint16(sll, 0x0800)
		}
		f := append(sll, ip...)
		b = append(b, make([]byte, 8)...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

func ipv4(proto byte, frag uint16, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[6:], frag)
	h[9] = proto
	return append(h, payload...)
}

func TestSummarize(t *testing.T) {
	udp500 := []byte{0x01, 0xf4, 0x01, 0xf4, 0, 8, 0, 0}
	udp4500 := []byte{0x11, 0x94, 0x11, 0x94, 0, 8, 0, 0}
	v6frag := make([]byte, 40)
	v6frag[0], v6frag[6] = 0x60, 44
	binary.BigEndian.PutUint16(v6frag[4:], 16)
	v6frag = append(v6frag, 17, 0, 0, 1, 0, 0, 0, 1) // first fragment, M set
	v6frag = append(v6frag, udp500...)
	data := pcapFile(
		ipv4(17, 0, udp500),
		ipv4(17, 0x2000, udp4500),            // first fragment
		ipv4(17, 185, make([]byte, 100)),     // last fragment
		ipv4(1, 0, []byte{3, 4, 0, 0, 0, 0}), // frag-needed
		v6frag,
	)
	path := filepath.Join(t.TempDir(), "x.pcap")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Summarize(path)
	if err != nil {
		t.Fatal(err)
	}
	want := PcapSummary{Frames: 5, IPv4Fragments: 2, IPv6Fragments: 1, UDP500: 2, UDP4500: 1, FragNeeded: 1, MaxIPLen: 120}
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
}

// A lab whose owner is gone is removed by the sweep; one whose owner lives
// is not.
func TestSweepStale(t *testing.T) {
	Require(t)
	ctx := context.Background()
	stale, live := "ikl-sweep-dead01", "ikl-sweep-beef01"
	dir := filepath.Join(t.TempDir(), stale)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// pid 1's start time is not 1, so this owner counts as dead
	if err := os.MkdirAll(ownersDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ownersDir, stale), []byte("1 1 "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeOwner(live, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{stale + "-mid", live + "-mid"} {
		if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		removeNS(ctx, live+"-mid")
		removeNS(ctx, stale+"-mid")
		_ = os.Remove(filepath.Join(ownersDir, live))
		_ = os.Remove(filepath.Join(ownersDir, stale))
	})
	sweepStale(t)
	if _, err := os.Stat("/run/netns/" + stale + "-mid"); err == nil {
		t.Error("stale namespace survived the sweep")
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("stale directory survived the sweep")
	}
	if _, err := os.Stat("/run/netns/" + live + "-mid"); err != nil {
		t.Error("live namespace removed by the sweep")
	}
}
