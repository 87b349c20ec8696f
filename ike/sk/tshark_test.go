package sk_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// wiresharkNames spells a suite as Wireshark's IKEv2 decryption table does.
func wiresharkNames(s sk.Suite) (string, string) {
	var enc string
	switch s.Encr {
	case sk.Encr3DES:
		enc = "3DES [RFC2451]"
	case sk.EncrAESCBC:
		enc = fmt.Sprintf("AES-CBC-%d [RFC3602]", s.KeyBits)
	case sk.EncrAESGCM8, sk.EncrAESGCM12, sk.EncrAESGCM16:
		enc = fmt.Sprintf("AES-GCM-%d with %d octet ICV [RFC5282]", s.KeyBits, s.ICVLen())
	default:
		return "", ""
	}
	integ := map[sk.AuthID]string{
		sk.AuthNone:             "NONE [RFC4306]",
		sk.AuthHMACSHA1_96:      "HMAC_SHA1_96 [RFC2404]",
		sk.AuthHMACSHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
		sk.AuthHMACSHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
		sk.AuthHMACSHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
	}[s.Integ]
	return enc, integ
}

// Wireshark, an independent implementation, verifies the ICV (or tag),
// decrypts and reassembles what the package emits: for every suite
// Wireshark knows (all but ChaCha20-Poly1305), the lab's IKE_AUTH response
// re-cut at 576 bytes (IPv4, NAT-T) and at 1280 (IPv6), and sent whole.
func TestTsharkDecryptsOutput(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed (make deps installs it)")
	}
	got, _ := reassembleLab(t, "c")
	var resp *sk.Decrypted
	for _, a := range got {
		if a.response {
			resp = a.msg
		}
	}
	if resp == nil {
		t.Fatal("no lab response")
	}
	dir := t.TempDir()
	var table bytes.Buffer
	var frames [][]byte // IP packets
	type expect struct{ skf, sk int }
	var want expect
	n := 0
	for i, s := range sk.Suites() {
		enc, integ := wiresharkNames(s)
		if enc == "" {
			continue
		}
		n++
		k := testKeys(s, byte(100+i))
		sa := mustSA(t, k)
		d := *resp
		d.Header.SPIi = ike.SPI{0x5e, byte(i), 1, 2, 3, 4, 5, 6}
		d.Header.SPIr = ike.SPI{0x5f, byte(i), 1, 2, 3, 4, 5, 6}
		fmt.Fprintf(&table, "%s,%s,%x,%x,\"%s\",%x,%x,\"%s\"\n", hex.EncodeToString(d.Header.SPIi[:]),
			hex.EncodeToString(d.Header.SPIr[:]), []byte(k.SK_ei), []byte(k.SK_er), enc, []byte(k.SK_ai), []byte(k.SK_ar), integ)
		for j, tg := range []sk.Target{{MTU: 576, Marker: true}, {MTU: 1280, IPv6: true, Marker: true}, {MTU: 9000, Marker: true}} {
			d.Header.MessageID = uint32(j + 1)
			out, err := sa.Split(&d, tg, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if out.Total == 0 {
				want.sk++
			} else {
				want.skf++
			}
			for _, dg := range out.Datagrams {
				frames = append(frames, ipPacket(t, tg.IPv6, dg))
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ikev2_decryption_table"), table.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	pcap := filepath.Join(dir, "out.pcap")
	writePcap(t, pcap, frames)

	run := func(args ...string) string {
		cmd := exec.Command(tshark, append([]string{"-r", pcap}, args...)...)
		cmd.Env = append(os.Environ(), "WIRESHARK_CONFIG_DIR="+dir, "HOME="+dir)
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("tshark: %v", err)
		}
		return out.String()
	}
	inner := "36,37,37,37,39,33,2,3,3,3,44,45" // IDr CERT×3 AUTH SA(proposal, transforms) TSi TSr
	var skf, whole int
	for _, line := range strings.Split(strings.TrimSpace(run("-T", "fields", "-e", "isakmp.typepayload")), "\n") {
		switch line {
		case "53," + inner:
			skf++
		case "46," + inner:
			whole++
		}
	}
	if skf != want.skf || whole != want.sk {
		t.Fatalf("tshark decoded %d fragmented and %d whole messages, want %d and %d", skf, whole, want.skf, want.sk)
	}
	verbose := run("-V")
	correct := strings.Count(verbose, "[correct]")
	if strings.Contains(verbose, "incorrect") || correct != len(frames) {
		t.Fatalf("tshark: %d ICVs marked correct of %d datagrams; incorrect: %v", correct, len(frames),
			strings.Contains(verbose, "incorrect"))
	}
	t.Logf("%d suites, %d datagrams: all verified and decoded by %s", n, len(frames), tshark)
}

func ipPacket(t *testing.T, v6 bool, payload []byte) []byte {
	udp := &layers.UDP{SrcPort: 4500, DstPort: 4500}
	var ip gopacket.NetworkLayer
	var l []gopacket.SerializableLayer
	if v6 {
		ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64,
			SrcIP: net.ParseIP("2001:db8::2"), DstIP: net.ParseIP("2001:db8::1")}
		ip, l = ip6, []gopacket.SerializableLayer{ip6}
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, Flags: layers.IPv4DontFragment,
			SrcIP: net.IPv4(192, 0, 2, 2), DstIP: net.IPv4(192, 0, 2, 1)}
		ip, l = ip4, []gopacket.SerializableLayer{ip4}
	}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	l = append(l, udp, gopacket.Payload(payload))
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, l...); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(buf.Bytes())
}

func writePcap(t *testing.T, path string, frames [][]byte) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeRaw); err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1.7e9, 0)
	for i, p := range frames {
		ci := gopacket.CaptureInfo{Timestamp: ts.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(p), Length: len(p)}
		if err := w.WritePacket(ci, p); err != nil {
			t.Fatal(err)
		}
	}
}
