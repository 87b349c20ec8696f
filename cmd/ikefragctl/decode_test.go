package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/test/lab"
	"github.com/ikefrag/ikefrag/test/shared"
)

func runCtl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	code := 0
	if err := root.Execute(); err != nil {
		code = 2
		if ee, ok := err.(*exitError); ok {
			code = ee.code
		}
		out.WriteString(err.Error())
	}
	return out.String(), code
}

func decodeJSON(t *testing.T, file string) []decodeLine {
	t.Helper()
	out, code := runCtl(t, "decode", "--json", file)
	if code != 0 {
		t.Fatalf("decode %s: exit %d: %s", file, code, out)
	}
	var lines []decodeLine
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var l decodeLine
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("decode output of %s is not JSON lines: %v", file, err)
		}
		lines = append(lines, l)
	}
	return lines
}

func countIKE(lines []decodeLine) int {
	n := 0
	for _, l := range lines {
		if l.Kind == "IKEv2" || l.Kind == "IKEv1" {
			n++
		}
	}
	return n
}

// TestDecodeMatchesTshark checks that decode lists as many IKE messages as
// tshark's ISAKMP dissector finds in every corpus capture. ICMP errors that
// quote an IKE datagram are not messages, hence "!icmp".
func TestDecodeMatchesTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed (make test installs it)")
	}
	for _, f := range shared.CorpusFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := exec.Command(tshark, "-r", f, "-Y", "isakmp && !icmp && !icmpv6", "-T", "fields", "-e", "frame.number").Output()
			if err != nil {
				t.Fatalf("tshark: %v", err)
			}
			want := len(strings.Fields(string(out)))
			if got := countIKE(decodeJSON(t, f)); got != want {
				t.Errorf("decode lists %d IKE messages, tshark %d", got, want)
			}
		})
	}
}

// TestDecodeCorpusFacts checks lines against facts the corpus manifest lists.
func TestDecodeCorpusFacts(t *testing.T) {
	t.Run("ipsec_client: IP-fragmented IKE_AUTH sent three times", func(t *testing.T) {
		lines := decodeJSON(t, shared.Corpus(t, "zeek-spicy-ipsec-ipsec_client.pcap"))
		if len(lines) != 5 {
			t.Fatalf("got %d lines, want 5", len(lines))
		}
		for i, frame := range []int{3, 6, 9} {
			l := lines[2+i]
			if l.Frame != frame || l.Exchange != "IKE_AUTH" || l.IPFragments != 3 || l.Incomplete || l.Length != 3468 || !l.Marker {
				t.Errorf("line %d: %+v, want IKE_AUTH at frame %d in 3 IP fragments, len 3468, marker", 2+i, l, frame)
			}
		}
	})
	t.Run("notify_redirect: NO_PROPOSAL_CHOSEN", func(t *testing.T) {
		lines := decodeJSON(t, shared.Corpus(t, "scapy-ikev2_notify_redirect.pcap"))
		if len(lines) != 4 || strings.Join(lines[3].Notifies, ",") != "NO_PROPOSAL_CHOSEN" || lines[3].Length != 36 {
			t.Fatalf("got %+v", lines)
		}
		if !strings.Contains(strings.Join(lines[0].Notifies, ","), "IKEV2_FRAGMENTATION_SUPPORTED") {
			t.Errorf("frame 1 notifies %v lack IKEV2_FRAGMENTATION_SUPPORTED", lines[0].Notifies)
		}
	})
	t.Run("suricata bypass: SKF layout", func(t *testing.T) {
		lines := decodeJSON(t, shared.Corpus(t, "suricata-verify-detect-bypass-udp-input.pcap"))
		skf := 0
		for _, l := range lines {
			if l.SKF != nil {
				skf++
			}
		}
		if skf != 62 {
			t.Errorf("%d SKF lines, want 62", skf)
		}
		// Frames 53-66: the IKE_AUTH response in 7 fragments, each twice.
		var last *decodeLine
		for i := range lines {
			if lines[i].Frame == 66 {
				last = &lines[i]
			}
		}
		if last == nil || last.SKF == nil || last.SKF.Number != 7 || last.SKF.Total != 7 || last.Length != 756 || last.Exchange != "IKE_AUTH" {
			t.Errorf("frame 66: %+v, want IKE_AUTH SKF 7/7 len 756", last)
		}
	})
	t.Run("IKEv1 is labelled and not parsed as IKEv2", func(t *testing.T) {
		for _, f := range []string{"zeek-spicy-ipsec-ipsec.cap", "tcpdump-isakmp4500.pcap", "arkime-IKEv1.pcap"} {
			for _, l := range decodeJSON(t, shared.Corpus(t, f)) {
				if l.Kind == "IKEv2" {
					t.Errorf("%s frame %d decoded as IKEv2", f, l.Frame)
				}
			}
		}
	})
	t.Run("ESP only: no IKE lines", func(t *testing.T) {
		for _, f := range []string{"tcpdump-espudp1.pcap", "tcpdump-02-sunrise-sunset-esp.pcap", "libreswan-espfrags1.pcap", "zeek-ip6_esp.pcap"} {
			lines := decodeJSON(t, shared.Corpus(t, f))
			if countIKE(lines) != 0 {
				t.Errorf("%s: %d IKE lines", f, countIKE(lines))
			}
			esp := 0
			for _, l := range lines {
				if l.Kind == "ESP" {
					esp++
				}
			}
			if esp == 0 {
				t.Errorf("%s: no ESP lines", f)
			}
		}
	})
	t.Run("IP-fragmented ESP is not IKE", func(t *testing.T) {
		for _, l := range decodeJSON(t, shared.Corpus(t, "libreswan-espfrags1.pcap")) {
			if l.Kind != "ESP" || l.IPFragments != 2 {
				t.Errorf("frame %d: %s in %d fragments, want ESP in 2", l.Frame, l.Kind, l.IPFragments)
			}
		}
	})
	t.Run("lab b: IKE_AUTH fragments seen entering mid only", func(t *testing.T) {
		n := 0
		for _, l := range decodeJSON(t, repoLab("b.pcap")) {
			if l.Exchange == "IKE_AUTH" {
				n++
				if l.IPFragments != 4 || l.Direction != "ingress" {
					t.Errorf("frame %d: %d IP fragments, %s; want 4, ingress", l.Frame, l.IPFragments, l.Direction)
				}
			}
		}
		if n != 4 {
			t.Errorf("%d IKE_AUTH lines, want 4 (one send and three retransmissions)", n)
		}
	})
}

func TestDecodeBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pcap")
	if err := writeFile(bad, []byte("this is not a capture file at all")); err != nil {
		t.Fatal(err)
	}
	out, code := runCtl(t, "decode", bad)
	if code != 2 || !strings.Contains(out, bad) {
		t.Errorf("exit %d, output %q; want exit 2 naming the file", code, out)
	}
	out, code = runCtl(t, "decode", filepath.Join(dir, "missing.pcap"))
	if code != 2 || !strings.Contains(out, "missing.pcap") {
		t.Errorf("exit %d, output %q; want exit 2 naming the file", code, out)
	}
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }

func TestDecodeWithKeys(t *testing.T) {
	for _, c := range []struct {
		pcap, keys string
		status     string
	}{
		{"c.pcap", "c-keys.txt", "reassembled"}, // RFC 7383 fragments both ways
		{"a.pcap", "a-keys.txt", "decrypted"},   // whole SK, IP-fragmented
	} {
		t.Run(c.pcap, func(t *testing.T) {
			keys := lab.PrivateCopy(t, shared.LabResult(t, c.keys))
			out, code := runCtl(t, "decode", "--json", "--keys", keys, shared.LabPcap(t, c.pcap))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, out)
			}
			var req, resp bool
			dec := json.NewDecoder(strings.NewReader(out))
			for dec.More() {
				var l decodeLine
				if err := dec.Decode(&l); err != nil {
					t.Fatal(err)
				}
				if l.Exchange != "IKE_AUTH" || l.Inner == nil || l.Inner.Status != c.status {
					continue
				}
				ids := strings.Join(l.Inner.IDs, " ")
				if !l.Response {
					req = true
					if !strings.Contains(ids, "IDi=cli.lab.example") || len(l.Inner.Certs) != 3 || l.Inner.AuthMethod == "" {
						t.Errorf("request inner %+v", l.Inner)
					}
				} else {
					resp = true
					if !strings.Contains(ids, "IDr=srv.lab.example") || !strings.Contains(l.Inner.Proposal, "ESP:") {
						t.Errorf("response inner %+v", l.Inner)
					}
				}
			}
			if !req || !resp {
				t.Errorf("decrypted request %v, response %v; want both", req, resp)
			}
		})
	}
	t.Run("other SA's keys", func(t *testing.T) {
		keys := lab.PrivateCopy(t, shared.LabResult(t, "a-keys.txt"))
		out, _ := runCtl(t, "decode", "--keys", keys, shared.LabPcap(t, "c.pcap"))
		if !strings.Contains(out, "[no keys for this SA]") {
			t.Errorf("no 'no keys for this SA' in:\n%s", out)
		}
	})
	t.Run("world-readable key file refused", func(t *testing.T) {
		keys := lab.PrivateCopy(t, shared.LabResult(t, "c-keys.txt"))
		if err := os.Chmod(keys, 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := runCtl(t, "decode", "--keys", keys, shared.LabPcap(t, "c.pcap"))
		if code != 2 || !strings.Contains(out, keys) {
			t.Errorf("exit %d, %q; want exit 2 naming the file", code, out)
		}
	})
}
