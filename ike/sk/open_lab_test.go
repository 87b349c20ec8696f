package sk_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
)

// The lab's IKE_AUTH payloads (results/c.txt and a.txt, decoded by tshark
// with the same keys) and their certificate sizes.
var (
	wantAuthRequest  = []string{"IDi", "CERT", "CERT", "CERT", "N", "CERTREQ", "IDr", "AUTH", "SA", "TSi", "TSr", "N", "N", "N"}
	wantAuthResponse = []string{"IDr", "CERT", "CERT", "CERT", "AUTH", "SA", "TSi", "TSr"}
	wantCertsReq     = []int{1411, 1426, 1401}
	wantCertsResp    = []int{1416, 1426, 1401}
)

// labAuth is a decrypted IKE_AUTH message of a lab capture with the
// datagram sizes it arrived in.
type labAuth struct {
	msg      *sk.Decrypted
	origIKE  []int // IKE message lengths of the received fragments (or the SK message)
	response bool
}

// reassembleLab feeds every IKE_AUTH message of a capture, both copies of
// each forwarded packet, to a Reassembler and returns the complete ones.
func reassembleLab(t *testing.T, name string) ([]labAuth, sk.ReassemblerStats) {
	lab := labDir(t)
	spiI, spiR, sa := labKeys(t, lab, name)
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	var out []labAuth
	sizes := map[bool][]int{}
	for _, m := range readLabIKE(t, filepath.Join(lab, "pcaps", name+".pcap")) {
		h, err := ike.ParseHeader(m.msg)
		if err != nil {
			t.Fatal(err)
		}
		if h.Exchange != exIKEAuth {
			continue
		}
		if h.SPIi != spiI || h.SPIr != spiR {
			t.Fatalf("frame %d: SPIs %s/%s, keys are for %s/%s", m.frame, h.SPIi, h.SPIr, spiI, spiR)
		}
		if !m.marker || m.src != 4500 {
			t.Fatalf("frame %d: IKE_AUTH not on 4500 with a marker", m.frame)
		}
		if !m.outgoing {
			sizes[h.Flags.Response()] = append(sizes[h.Flags.Response()], len(m.msg))
		}
		res := r.Add(sa, m.msg)
		switch res.Status {
		case sk.StatusDropped:
			if res.Drop != sk.DropDuplicate {
				t.Fatalf("frame %d: dropped: %v: %v", m.frame, res.Drop, res.Err)
			}
		case sk.StatusComplete:
			out = append(out, labAuth{msg: res.Message, origIKE: sizes[h.Flags.Response()], response: h.Flags.Response()})
		}
	}
	return out, r.Stats()
}

func certSizes(t *testing.T, ps []ike.Payload) []int {
	var n []int
	for _, p := range ps {
		if p.Type == 37 {
			var buf []byte
			buf = p.Body.AppendBody(buf)
			n = append(n, len(buf)-1) // 1-byte Cert Encoding, then DER
		}
	}
	return n
}

func checkAuth(t *testing.T, name string, got []labAuth) {
	t.Helper()
	if len(got) != 2 {
		t.Fatalf("%s: %d complete IKE_AUTH messages, want request and response", name, len(got))
	}
	for _, a := range got {
		ps, err := a.msg.Decode()
		if err != nil {
			t.Fatalf("%s: decoding inner payloads: %v", name, err)
		}
		want, certs := wantAuthRequest, wantCertsReq
		if a.response {
			want, certs = wantAuthResponse, wantCertsResp
		}
		if seq := payloadSeq(ps); !slices.Equal(seq, want) {
			t.Errorf("%s response=%v: payloads %v, want %v", name, a.response, seq, want)
		}
		if c := certSizes(t, ps); !slices.Equal(c, certs) {
			t.Errorf("%s response=%v: CERT DER sizes %v, want %v", name, a.response, c, certs)
		}
		if a.msg.Header.MessageID != 1 || a.msg.Header.Flags.Response() != a.response {
			t.Errorf("%s: header %+v", name, a.msg.Header)
		}
	}
}

// c.pcap: RFC 7383 fragments both ways (5 each), every packet seen twice.
func TestLabReassembleFragmentsC(t *testing.T) {
	got, st := reassembleLab(t, "c")
	checkAuth(t, "c", got)
	for _, a := range got {
		if a.msg.Fragments != 5 {
			t.Errorf("reassembled from %d fragments, want 5", a.msg.Fragments)
		}
	}
	// Each fragment arrives twice (in and out of mid): 4 duplicates per
	// message while the set is open, and the copy of the last fragment
	// after completion is a remembered retransmission.
	if st.Completed != 2 || st.Stored != 10 || st.Drops[sk.DropDuplicate] != 8 || st.Retransmits != 2 {
		t.Errorf("stats %+v", st)
	}
	if st.Sets != 0 || st.Fragments != 0 || st.Bytes != 0 {
		t.Errorf("left over: %+v", st)
	}
}

// a.pcap: whole SK messages of ~5 KB, IP-fragmented.
func TestLabOpenWholeA(t *testing.T) {
	got, st := reassembleLab(t, "a")
	// Both IP-reassembled copies of each message decrypt.
	if len(got) != 4 || st.Completed != 4 {
		t.Fatalf("%d complete (stats %+v), want 4 (2 messages x 2 copies)", len(got), st)
	}
	checkAuth(t, "a", []labAuth{got[0], got[2]})
	for _, a := range got {
		if a.msg.Fragments != 0 {
			t.Errorf("SK message reports %d fragments", a.msg.Fragments)
		}
	}
	if n := len(got[0].msg.Payloads); n < 4900 {
		t.Errorf("request plaintext %d bytes", n)
	}
}

// The save-keys line of another run opens nothing: every fragment fails
// its ICV and is counted, nothing is stored.
func TestLabWrongKeys(t *testing.T) {
	lab := labDir(t)
	_, _, wrong := labKeys(t, lab, "b")
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	n := 0
	for _, m := range readLabIKE(t, filepath.Join(lab, "pcaps", "c.pcap")) {
		if m.msg[18] != exIKEAuth || m.outgoing {
			continue
		}
		n++
		res := r.Add(wrong, m.msg)
		if res.Status != sk.StatusDropped || res.Drop != sk.DropIntegrity || !errors.Is(res.Err, sk.ErrIntegrity) {
			t.Fatalf("frame %d: %v %v %v", m.frame, res.Status, res.Drop, res.Err)
		}
	}
	st := r.Stats()
	if n != 10 || st.Drops[sk.DropIntegrity] != 10 || st.Stored != 0 || st.Fragments != 0 {
		t.Fatalf("n=%d stats %+v", n, st)
	}
	// A whole SK message too.
	for _, m := range readLabIKE(t, filepath.Join(lab, "pcaps", "a.pcap")) {
		if m.msg[18] == exIKEAuth {
			if _, err := wrong.Open(m.msg); !errors.Is(err, sk.ErrIntegrity) {
				t.Fatalf("a.pcap frame %d with b's keys: %v", m.frame, err)
			}
		}
	}
}

// Re-fragmenting the decrypted c.pcap messages for strongSwan's own
// setting (1280-byte IPv4 datagrams, NAT-T) reproduces the fragment sizes
// strongSwan sent: the same arithmetic, minimal padding.
func TestLabRecutMatchesStrongSwan(t *testing.T) {
	lab := labDir(t)
	_, _, sa := labKeys(t, lab, "c")
	got, _ := reassembleLab(t, "c")
	for _, a := range got {
		out, err := sa.Split(a.msg, sk.Target{MTU: 1280, Marker: true}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		for _, d := range out.Datagrams {
			sizes = append(sizes, len(d)-ike.NonESPMarkerLen)
		}
		t.Logf("response=%v sizes %v strongSwan %v", a.response, sizes, a.origIKE)
		if !slices.Equal(sizes, a.origIKE) {
			t.Errorf("response=%v: our IKE fragment sizes %v, strongSwan's %v", a.response, sizes, a.origIKE)
		}
	}
}

// Every decrypted lab message, cut for every target, fits, and opening
// and reassembling the cut gives the message back.
func TestLabRoundTrip(t *testing.T) {
	lab := labDir(t)
	var msgs []*sk.Decrypted
	var sas []*sk.SA
	for _, name := range []string{"a", "c"} {
		_, _, sa := labKeys(t, lab, name)
		got, _ := reassembleLab(t, name)
		for _, a := range got {
			msgs = append(msgs, a.msg)
			sas = append(sas, sa)
		}
	}
	for i, d := range msgs {
		sa := sas[i]
		for _, mtu := range []int{576, 1000, 1280, 1500} {
			for _, v6 := range []bool{false, true} {
				for _, marker := range []bool{false, true} {
					tg := sk.Target{MTU: mtu, IPv6: v6, Marker: marker}
					t.Run(fmt.Sprintf("msg%d/%s", i, tg), func(t *testing.T) {
						roundTrip(t, sa, d, tg)
					})
				}
			}
		}
	}
}

func roundTrip(t *testing.T, sa *sk.SA, d *sk.Decrypted, tg sk.Target) {
	t.Helper()
	out, err := sa.Split(d, tg, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	content, err := sk.FragmentContent(sa.Suite(), tg, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantTotal := (len(d.Payloads) + content - 1) / content
	if out.Total != wantTotal || len(out.Datagrams) != wantTotal {
		t.Fatalf("Total %d, %d datagrams; want %d", out.Total, len(out.Datagrams), wantTotal)
	}
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	var whole *sk.Decrypted
	for i, dg := range out.Datagrams {
		if ip := len(dg) + tg.Overhead() - markerLen(tg); ip > tg.MTU {
			t.Fatalf("datagram %d: %d-byte IP datagram exceeds %d", i+1, ip, tg.MTU)
		}
		msg := dg
		if tg.Marker {
			if !bytes.Equal(dg[:4], []byte{0, 0, 0, 0}) {
				t.Fatalf("datagram %d: no non-ESP marker", i+1)
			}
			msg = dg[4:]
		}
		h, err := ike.ParseHeader(msg)
		if err != nil {
			t.Fatal(err)
		}
		if int(h.Length) != len(msg) || h.NextPayload != ike.PayloadEncryptedFragment ||
			h.MessageID != d.Header.MessageID || h.Flags != d.Header.Flags || h.SPIi != d.Header.SPIi {
			t.Fatalf("fragment %d header %+v", i+1, h)
		}
		m, err := ike.Decode(msg)
		if err != nil {
			t.Fatalf("fragment %d does not decode: %v", i+1, err)
		}
		f := m.Payloads[0].Body.(*ike.EncryptedFragment)
		if int(f.Number) != i+1 || int(f.Total) != wantTotal {
			t.Fatalf("fragment %d says %d/%d", i+1, f.Number, f.Total)
		}
		if (i == 0) != (f.NextPayload == d.Inner) || (i > 0 && f.NextPayload != 0) {
			t.Fatalf("fragment %d SKF Next Payload %d", i+1, f.NextPayload)
		}
		o, err := sa.Open(msg)
		if err != nil {
			t.Fatalf("fragment %d: %v", i+1, err)
		}
		if i < len(out.Datagrams)-1 && len(o.Content) != content {
			t.Fatalf("fragment %d carries %d bytes, want %d", i+1, len(o.Content), content)
		}
		res := r.Add(sa, msg)
		if res.Status == sk.StatusComplete {
			whole = res.Message
		}
	}
	if whole == nil || !bytes.Equal(whole.Payloads, d.Payloads) || whole.Inner != d.Inner {
		t.Fatal("reassembled message differs from the original")
	}
}

func markerLen(tg sk.Target) int {
	if tg.Marker {
		return ike.NonESPMarkerLen
	}
	return 0
}

// strongSwan's own fragments and whole messages verify and decrypt with
// the test's independent implementation of the RFC coverage too (HMAC over
// the fragment's own header, SKF header, IV and ciphertext; CBC), and give
// the same bytes as Open.
func TestLabIndependentKnownAnswer(t *testing.T) {
	lab := labDir(t)
	for _, name := range []string{"a", "c"} {
		b, err := os.ReadFile(filepath.Join(lab, "results", name+"-keys.txt"))
		if err != nil {
			t.Fatal(err)
		}
		l, err := keys.ParseSaveKeysLine(b)
		if err != nil {
			t.Fatal(err)
		}
		k := l.Keys
		sa := mustSA(t, &k)
		n := 0
		for _, m := range readLabIKE(t, filepath.Join(lab, "pcaps", name+".pcap")) {
			if m.msg[18] != exIKEAuth || m.outgoing {
				continue
			}
			o, err := sa.Open(m.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := independentOpen(t, &k, m.msg, o.Fragment); !bytes.Equal(got, o.Content) {
				t.Fatalf("%s frame %d: independent plaintext differs", name, m.frame)
			}
			n++
		}
		if n == 0 {
			t.Fatalf("%s: no IKE_AUTH", name)
		}
	}
}
