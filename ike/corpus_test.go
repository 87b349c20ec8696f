package ike_test

// Golden tests over the public capture corpus (../shared/corpus/ike-pcaps):
// the facts its MANIFEST.md lists, and the byte-exact round trip of every
// IKEv2 message in it. The captures are read with diag/capture, which is why
// these tests live outside package ike.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/test/shared"
)

// corpusMsg is one IKE message found in a capture.
type corpusMsg struct {
	frame int
	d     *obs.Datagram
	f     ike.Framing
	raw   []byte
	m     *ike.Message // nil when Decode failed
	err   error
}

// corpusFile is what a capture holds, sorted by what Classify says.
type corpusFile struct {
	msgs      []*corpusMsg
	esp       []*obs.Datagram // ESP-in-UDP on the NAT-T port
	keepalive []*obs.Datagram
	invalid   []*obs.Datagram
	nonUDP    []*obs.Datagram // plain ESP and everything else that is not UDP
	otherUDP  []*obs.Datagram // UDP off the IKE ports
}

func (c *corpusFile) frame(t *testing.T, n int) *corpusMsg {
	t.Helper()
	for _, m := range c.msgs {
		if m.frame == n {
			if m.m == nil {
				t.Fatalf("frame %d does not decode: %v", n, m.err)
			}
			return m
		}
	}
	t.Fatalf("no IKE message in frame %d", n)
	return nil
}

// ikev2 returns the decoded IKEv2 messages.
func (c *corpusFile) ikev2() []*corpusMsg {
	var out []*corpusMsg
	for _, m := range c.msgs {
		if m.m != nil && m.m.IsIKEv2() {
			out = append(out, m)
		}
	}
	return out
}

var (
	corpusMu    sync.Mutex
	corpusCache = map[string]*corpusFile{}
)

// readCorpus reads one capture of the corpus, or skips the test when the
// shared directory is absent.
func readCorpus(t *testing.T, name string) *corpusFile {
	t.Helper()
	path := shared.Corpus(t, name)
	corpusMu.Lock()
	defer corpusMu.Unlock()
	if c, ok := corpusCache[name]; ok {
		return c
	}
	recs, _, err := capture.ReadFile(path, capture.Options{})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	c := &corpusFile{}
	for _, r := range recs {
		d := r.Datagram
		if d == nil {
			continue
		}
		if d.Proto != 17 {
			c.nonUDP = append(c.nonUDP, d)
			continue
		}
		if !d.Complete || d.Truncated {
			t.Fatalf("%s frame %d: incomplete datagram", name, d.Frame)
		}
		f := ike.DefaultPorts.Classify(d.Src.Port(), d.Dst.Port(), d.Payload)
		switch f.Kind {
		case ike.KindIKE:
			m, err := ike.Decode(f.IKE)
			c.msgs = append(c.msgs, &corpusMsg{frame: d.Frame, d: d, f: f, raw: f.IKE, m: m, err: err})
		case ike.KindESP:
			c.esp = append(c.esp, d)
		case ike.KindKeepalive:
			c.keepalive = append(c.keepalive, d)
		case ike.KindInvalid:
			c.invalid = append(c.invalid, d)
		default:
			c.otherUDP = append(c.otherUDP, d)
		}
	}
	corpusCache[name] = c
	return c
}

// decodeFailures are the corpus messages known not to decode, by file and
// frame, with the reason.
var decodeFailures = map[string]map[int]string{
	// The header's Next Payload is 127 (private use, not critical), whose
	// generic header names IDi next although the 784-byte payload ends the
	// message: a truncated chain, reported as such.
	"nDPI-ipsec_isakmp_esp.pcap": {192: "payload 2 (IDi) at offset 784: truncated"},
}

// knownCorpus lists every capture in the corpus; the test below fails when
// a file appears that no test here knows about.
var knownCorpus = []string{
	"arkime-IKEv1.pcap",
	"arkime-IKEv2.pcap",
	"libreswan-espfrags1.pcap",
	"nDPI-esp.pcapng",
	"nDPI-ipsec_isakmp_esp.pcap",
	"scapy-ikev2_nat_t.pcapng",
	"scapy-ikev2_notify_redirect.pcap",
	"suricata-verify-IKEv2_SA_INIT_2-8-weak.pcap",
	"suricata-verify-detect-bypass-udp-input.pcap",
	"tcpdump-02-sunrise-sunset-esp.pcap",
	"tcpdump-ISAKMP_sa_setup.pcap",
	"tcpdump-espudp1.pcap",
	"tcpdump-ikev2four.pcap",
	"tcpdump-isakmp4500.pcap",
	"zeek-ip6_esp.pcap",
	"zeek-spicy-ipsec-ikev1-certs.pcap",
	"zeek-spicy-ipsec-ipsec-ikev1-isakmp-aggressive-mode.pcap",
	"zeek-spicy-ipsec-ipsec.cap",
	"zeek-spicy-ipsec-ipsec_client.pcap",
}

// TestCorpusRoundTrip decodes every IKE message of every capture: IKEv2
// messages must encode back to the exact input bytes, and decoding that
// encoding must give the same message; IKEv1 messages decode to their
// header only.
func TestCorpusRoundTrip(t *testing.T) {
	var names []string
	for _, p := range shared.CorpusFiles(t) {
		names = append(names, filepath.Base(p))
	}
	if !slices.Equal(names, knownCorpus) {
		t.Errorf("corpus files changed:\n on disk %v\n known   %v", names, knownCorpus)
	}
	total := 0
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			c := readCorpus(t, name)
			for _, cm := range c.msgs {
				if want, ok := decodeFailures[name][cm.frame]; ok {
					if cm.err == nil || !strings.Contains(cm.err.Error(), want) {
						t.Errorf("frame %d: error %v, want one containing %q", cm.frame, cm.err, want)
					}
					continue
				}
				if cm.err != nil {
					t.Errorf("frame %d: %v", cm.frame, cm.err)
					continue
				}
				if cm.m.IsIKEv1() {
					if cm.m.Payloads != nil {
						t.Errorf("frame %d: IKEv1 message has decoded payloads", cm.frame)
					}
					continue
				}
				enc := cm.m.Encode()
				if !bytes.Equal(enc, cm.raw) {
					t.Errorf("frame %d: re-encoding differs from the capture", cm.frame)
					continue
				}
				m2, err := ike.Decode(enc)
				if err != nil || !reflect.DeepEqual(m2, cm.m) {
					t.Errorf("frame %d: decoding the re-encoding: %v", cm.frame, err)
				}
				total++
			}
		})
	}
	t.Logf("%d IKEv2 messages round-tripped byte for byte", total)
}

// exchanges returns the exchange types of the messages in order.
func exchanges(ms []*corpusMsg) []ike.ExchangeType {
	var out []ike.ExchangeType
	for _, m := range ms {
		out = append(out, m.m.Exchange)
	}
	return out
}

func notifyTypes(m *ike.Message) []ike.NotifyType {
	var out []ike.NotifyType
	for _, n := range m.Notifies() {
		out = append(out, n.Type)
	}
	return out
}

// chosen returns the chosen proposal of a response's SA.
func chosen(t *testing.T, cm *corpusMsg) *ike.Proposal {
	t.Helper()
	sa := cm.m.SA()
	if sa == nil {
		t.Fatalf("frame %d: no SA payload", cm.frame)
	}
	p, err := sa.Chosen()
	if err != nil {
		t.Fatalf("frame %d: %v", cm.frame, err)
	}
	return p
}

func wantSuite(t *testing.T, frame int, got ike.Suite, encr ike.EncrID, keylen int, prf ike.PRFID, integ ike.IntegID, dh ike.DHGroup) {
	t.Helper()
	hasInteg := integ != ike.IntegNone
	if got.Encr != encr || got.KeyLength != keylen || got.PRF != prf || got.HasInteg != hasInteg ||
		(hasInteg && got.Integ != integ) || got.DH != dh {
		t.Errorf("frame %d: suite %s, want %s-%d/%s/%s/%s", frame, got, encr, keylen, prf, integ, dh)
	}
}

// #1: RFC 7383 fragments, IKE_INTERMEDIATE, the duplicated capture.
func TestCorpusSKFLayout(t *testing.T) {
	c := readCorpus(t, "suricata-verify-detect-bypass-udp-input.pcap")
	if len(c.msgs) != 66 || len(c.esp)+len(c.nonUDP) != 0 {
		t.Fatalf("%d IKE messages, %d ESP; want 66, 0", len(c.msgs), len(c.esp)+len(c.nonUDP))
	}
	// Frames 2k-1 and 2k are the same datagram captured twice.
	var uniq []*corpusMsg
	for i := 0; i+1 < len(c.msgs); i += 2 {
		a, b := c.msgs[i], c.msgs[i+1]
		if a.frame != i+1 || b.frame != i+2 || !bytes.Equal(a.raw, b.raw) || a.d.IPID != b.d.IPID {
			t.Fatalf("frames %d and %d are not duplicates", a.frame, b.frame)
		}
		uniq = append(uniq, a)
	}
	type frag struct {
		mid   uint32
		exch  ike.ExchangeType
		flags uint8
		total uint16 // 0 for SK
		lens  []uint32
		np    ike.PayloadType
	}
	want := []frag{
		{1, 43, 0x08, 0, []uint32{1264}, 34},
		{1, 43, 0x20, 0, []uint32{1168}, 34},
		{2, 43, 0x08, 3, []uint32{1444, 1444, 420}, 34},
		{2, 43, 0x20, 3, []uint32{1444, 1444, 452}, 34},
		{3, 43, 0x08, 4, []uint32{1444, 1444, 1444, 484}, 34},
		{3, 43, 0x20, 7, []uint32{1444, 1444, 1444, 1444, 1444, 1444, 868}, 34},
		{4, 35, 0x08, 7, []uint32{1444, 1444, 1444, 1444, 1444, 1444, 836}, 35},
		{4, 35, 0x20, 7, []uint32{1444, 1444, 1444, 1444, 1444, 1444, 756}, 36},
	}
	i := 0
	skf := 0
	for _, w := range want {
		for n := range w.lens {
			cm := uniq[i]
			i++
			m := cm.m
			if m == nil {
				t.Fatalf("frame %d: %v", cm.frame, cm.err)
			}
			if !cm.f.Marker || cm.d.Src.Port() != 4500 || cm.d.Dst.Port() != 4500 {
				t.Errorf("frame %d: not on 4500 with the non-ESP marker", cm.frame)
			}
			if m.SPIi.String() != "9954b95199427f30" || m.SPIr.String() != "9576f4864b567473" {
				t.Errorf("frame %d: SPIs %s %s", cm.frame, m.SPIi, m.SPIr)
			}
			if m.MessageID != w.mid || m.Exchange != w.exch || uint8(m.Flags) != w.flags || m.Length != w.lens[n] {
				t.Errorf("frame %d: %s flags %#x len %d; want msgid %d exch %d flags %#x len %d",
					cm.frame, m.Summary(), uint8(m.Flags), m.Length, w.mid, w.exch, w.flags, w.lens[n])
			}
			if len(m.Notifies()) != 0 || m.Exchange == ike.ExchangeIKESAInit {
				t.Errorf("frame %d: cleartext notifies or IKE_SA_INIT", cm.frame)
			}
			if w.total == 0 {
				sk, ok := m.Payloads[0].Body.(*ike.Encrypted)
				if len(m.Payloads) != 1 || !ok || sk.NextPayload != w.np || m.NextPayload != ike.PayloadEncrypted {
					t.Errorf("frame %d: want SK with inner %s, got %s", cm.frame, w.np, m.Summary())
				}
				continue
			}
			f := m.Fragment()
			if f == nil || m.NextPayload != ike.PayloadEncryptedFragment {
				t.Errorf("frame %d: not an SKF message: %s", cm.frame, m.Summary())
				continue
			}
			skf++
			wantNP := ike.PayloadNone
			if n == 0 {
				wantNP = w.np
			}
			if int(f.Number) != n+1 || f.Total != w.total || f.NextPayload != wantNP {
				t.Errorf("frame %d: SKF %d/%d np %s, want %d/%d np %s", cm.frame, f.Number, f.Total, f.NextPayload, n+1, w.total, wantNP)
			}
		}
	}
	if i != len(uniq) || skf != 31 {
		t.Errorf("%d unique datagrams checked of %d, %d SKF; want 31 SKF", i, len(uniq), skf)
	}
}

// #2: IP-fragmented IKE_AUTH sent three times; 3DES/SHA1/MODP-1024 chosen.
func TestCorpusIPFragmentedIKEAuth(t *testing.T) {
	c := readCorpus(t, "zeek-spicy-ipsec-ipsec_client.pcap")
	if len(c.msgs) != 5 {
		t.Fatalf("%d IKE messages, want 5", len(c.msgs))
	}
	req := c.frame(t, 1).m
	if req.Exchange != ike.ExchangeIKESAInit || uint8(req.Flags) != 0x08 || req.MessageID != 0 || req.Length != 880 ||
		req.SPIi.String() != "238671c80375a0fb" || !req.SPIr.IsZero() {
		t.Errorf("frame 1: %s len %d", req.Summary(), req.Length)
	}
	want := []ike.PayloadType{ike.PayloadSA, ike.PayloadKE, ike.PayloadNonce, ike.PayloadNotify, ike.PayloadNotify,
		ike.PayloadVendorID, ike.PayloadVendorID, ike.PayloadVendorID, ike.PayloadVendorID}
	if got := req.PayloadTypes(); !slices.Equal(got, want) {
		t.Errorf("frame 1 payloads %v", got)
	}
	sa := req.SA()
	if len(sa.Proposals) != 12 {
		t.Fatalf("frame 1: %d proposals, want 12", len(sa.Proposals))
	}
	encrs := []ike.EncrID{3, 12, 12, 12}
	keylens := []int{0, 128, 192, 256}
	pairs := [][2]uint16{{2, 2}, {12, 5}, {13, 6}} // INTEG / PRF
	for i, p := range sa.Proposals {
		s := p.Suite()
		wantSuite(t, 1, s, encrs[i/3], keylens[i/3], ike.PRFID(pairs[i%3][1]), ike.IntegID(pairs[i%3][0]), ike.GroupMODP1024)
		if int(p.Number) != i+1 {
			t.Errorf("proposal %d has number %d", i+1, p.Number)
		}
	}
	if ke := req.KE(); ke.Group != ike.GroupMODP1024 {
		t.Errorf("frame 1 KE group %s", ke.Group)
	}
	if got := notifyTypes(req); !slices.Equal(got, []ike.NotifyType{16388, 16389}) || req.HasNotify(ike.NotifyIKEv2FragmentationSupported) {
		t.Errorf("frame 1 notifies %v", got)
	}
	var vids []string
	for _, v := range req.VendorIDs() {
		vids = append(vids, v.Name())
	}
	if !slices.Equal(vids, []string{"MS NT5 ISAKMPOAKLEY", "MS-Negotiation Discovery Capable", "Microsoft Vid-Initial-Contact", ""}) {
		t.Errorf("frame 1 VIDs %q", vids)
	}

	resp := c.frame(t, 2)
	if uint8(resp.m.Flags) != 0x20 || resp.m.Length != 308 || resp.m.SPIr.String() != "73d16a42f60ef7f0" {
		t.Errorf("frame 2: %s", resp.m.Summary())
	}
	p := chosen(t, resp)
	wantSuite(t, 2, p.Suite(), ike.Encr3DES, 0, ike.PRFHMACSHA1, ike.IntegHMACSHA1_96, ike.GroupMODP1024)
	if p.Number != 1 {
		t.Errorf("chosen proposal number %d, want 1", p.Number)
	}
	if v := p.Strength(); v.Strength != ike.Weak || len(v.Reasons) != 4 {
		t.Errorf("chosen suite verdict %+v", v)
	}
	if got := notifyTypes(resp.m); !slices.Equal(got, []ike.NotifyType{16388, 16389, 16404}) {
		t.Errorf("frame 2 notifies %v", got)
	}

	// The IKE_AUTH request: three byte-identical copies, each in three IP
	// fragments, on 4500 after the non-ESP marker.
	var first []byte
	for _, n := range []int{3, 6, 9} {
		cm := c.frame(t, n)
		m := cm.m
		if m.Exchange != ike.ExchangeIKEAuth || uint8(m.Flags) != 0x08 || m.MessageID != 1 || m.Length != 3468 {
			t.Errorf("frame %d: %s len %d", n, m.Summary(), m.Length)
		}
		if !cm.f.Marker || cm.d.Length != 3468+ike.NonESPMarkerLen || len(cm.d.Frags) != 3 || !cm.d.Fragmented() {
			t.Errorf("frame %d: marker %v UDP length %d in %d fragments", n, cm.f.Marker, cm.d.Length, len(cm.d.Frags))
		}
		if sk, ok := m.Payloads[0].Body.(*ike.Encrypted); !ok || sk.NextPayload != ike.PayloadIDi {
			t.Errorf("frame %d: %s", n, m.Summary())
		}
		if first == nil {
			first = cm.raw
		} else if !bytes.Equal(first, cm.raw) {
			t.Errorf("frame %d: retransmission differs", n)
		}
	}
}

// TestMain lets the corpus tests say once why they are skipped.
func TestMain(m *testing.M) {
	if _, ok := shared.Find(); !ok {
		os.Stderr.WriteString("ike corpus tests: ../shared not found next to the module root; skipping them\n")
	}
	os.Exit(m.Run())
}

// TestWriteFuzzSeeds refreshes the fuzz seed corpus in testdata/fuzz from
// the capture corpus: one IKE message for each distinct shape (version,
// exchange, flags, payload chain) per capture, plus the messages known not
// to decode, and one datagram of each framing kind per capture. It runs
// only when IKE_WRITE_FUZZ_SEEDS is set.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("IKE_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set IKE_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz from the capture corpus")
	}
	decodeDir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	classifyDir := filepath.Join("testdata", "fuzz", "FuzzClassify")
	for _, d := range []string{decodeDir, classifyDir} {
		old, _ := filepath.Glob(filepath.Join(d, "corpus-*"))
		for _, p := range old {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(dir, name string, lines ...string) {
		body := "go test fuzz v1\n" + strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bytesLit := func(b []byte) string { return "[]byte(" + strconv.Quote(string(b)) + ")" }
	nDecode, nClassify := 0, 0
	for _, p := range shared.CorpusFiles(t) {
		name := filepath.Base(p)
		short := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, ".pcapng"), ".pcap"), ".cap")
		c := readCorpus(t, name)
		seen := map[string]bool{}
		for _, cm := range c.msgs {
			var key string
			switch {
			case cm.m == nil:
				key = "error " + strconv.Itoa(cm.frame)
			case cm.m.IsIKEv1():
				key = "v1 " + ike.ExchangeName(cm.m.Header) + " " + strconv.Itoa(int(cm.m.Flags))
			default:
				key = strconv.Itoa(int(cm.m.Flags)) + " " + ike.ExchangeName(cm.m.Header) + " " + payloadShape(cm.m)
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			write(decodeDir, "corpus-"+short+"-f"+strconv.Itoa(cm.frame), bytesLit(cm.raw))
			nDecode++
		}
		kinds := map[string]bool{}
		add := func(kind string, d *obs.Datagram) {
			if kinds[kind] {
				return
			}
			kinds[kind] = true
			write(classifyDir, "corpus-"+short+"-f"+strconv.Itoa(d.Frame),
				"uint16("+strconv.Itoa(int(d.Src.Port()))+")", "uint16("+strconv.Itoa(int(d.Dst.Port()))+")", bytesLit(d.Payload))
			nClassify++
		}
		for _, cm := range c.msgs {
			add(fmt.Sprint("ike ", cm.f.Marker), cm.d)
		}
		for _, d := range c.esp {
			add("esp", d)
		}
		for _, d := range c.keepalive {
			add("keepalive", d)
		}
	}
	t.Logf("wrote %d FuzzDecode and %d FuzzClassify seeds", nDecode, nClassify)
}

// payloadShape names a message's payload chain without the values that
// vary between otherwise alike messages.
func payloadShape(m *ike.Message) string {
	var sb strings.Builder
	for i := range m.Payloads {
		p := &m.Payloads[i]
		sb.WriteString(p.Type.String())
		switch b := p.Body.(type) {
		case *ike.Notify:
			sb.WriteString("(" + b.Type.String() + ")")
		case *ike.Encrypted:
			sb.WriteString("{" + b.NextPayload.String() + "}")
		case *ike.EncryptedFragment:
			if b.Number == 1 {
				sb.WriteString("{first " + b.NextPayload.String() + "}")
			}
		case *ike.SA:
			sb.WriteString("(" + strconv.Itoa(len(b.Proposals)) + ")")
		}
		sb.WriteByte(' ')
	}
	return sb.String()
}
