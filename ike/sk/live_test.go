package sk_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/test/lab"
)

// TestLiveStrongSwan runs two strongSwan charons with save-keys across the
// lab router, captures there, and opens every IKE_AUTH message of both
// directions with the keys charon wrote: whole SK messages (IP-fragmented)
// and RFC 7383 fragments alike. The inner payloads must decode and carry
// the identities of the certificates the lab generated.
func TestLiveStrongSwan(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	cases := []struct {
		name      string
		proposals string
		frag      string
		skf       bool
	}{
		{"aes256-sha256 IKE fragments at 1280", "aes256-sha256-modp3072", "yes", true},
		{"aes256gcm16 IKE fragments at 1280", "aes256gcm16-prfsha256-ecp256", "yes", true},
		{"3des-sha1 IP-fragmented", "3des-sha1-modp2048", "no", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, lab.Topology{})
			pcap := lab.Capture(t, l.Mid, "any", "")
			ch := lab.Charon{Proposals: c.proposals, Fragmentation: c.frag, FragmentSize: 1280, SaveKeys: true}
			cli, _ := l.StartPair(ch, ch)
			ok, out, err := cli.Initiate(context.Background())
			if err != nil || !ok {
				t.Fatalf("initiate: ok=%v err=%v\n%s", ok, err, out)
			}
			pcap.Stop()

			store := lab.KeyStore(t, cli.KeysFile())

			r, err := capture.Open(pcap.Path, capture.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			re := sk.NewReassembler(sk.ReassemblerConfig{})
			got := map[bool][]ike.Payload{} // by R flag
			skfSeen := 0
			for {
				rec, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				d := rec.Datagram
				if d == nil || d.Proto != 17 {
					continue
				}
				fr := ike.DefaultPorts.Classify(d.Src.Port(), d.Dst.Port(), d.Payload)
				if fr.Kind != ike.KindIKE {
					continue
				}
				h, err := ike.ParseHeader(fr.IKE)
				if err != nil || h.Exchange != ike.ExchangeIKEAuth {
					continue
				}
				if h.NextPayload == ike.PayloadEncryptedFragment {
					skfSeen++
				}
				sa, err := store.Lookup(h.SPIi, h.SPIr)
				if err != nil {
					t.Fatalf("no keys for %s/%s: %v", h.SPIi, h.SPIr, err)
				}
				res := re.Add(sa, fr.IKE)
				switch res.Status {
				case sk.StatusComplete:
					inner, err := res.Message.Decode()
					if err != nil {
						t.Fatalf("inner payloads of the IKE_AUTH %s: %v", map[bool]string{false: "request", true: "response"}[h.Flags.Response()], err)
					}
					got[h.Flags.Response()] = inner
				case sk.StatusStored, sk.StatusRetransmit:
				default:
					// Copies of a fragment seen on mid's other interface.
					if res.Drop != sk.DropDuplicate {
						t.Fatalf("fragment dropped: %s %v", res.Drop, res.Err)
					}
				}
			}
			if c.skf != (skfSeen > 0) {
				t.Errorf("%d SKF datagrams; want RFC 7383 fragments: %v", skfSeen, c.skf)
			}
			for resp, id := range map[bool]string{false: "IDi=" + lab.ID(lab.Client), true: "IDr=" + lab.ID(lab.Server)} {
				inner := got[resp]
				if inner == nil {
					t.Fatalf("IKE_AUTH %v not decrypted", map[bool]string{false: "request", true: "response"}[resp])
				}
				var ids, types []string
				certs := 0
				for i := range inner {
					types = append(types, inner[i].Type.String())
					if x, ok := inner[i].Body.(*ike.ID); ok {
						ids = append(ids, inner[i].Type.String()+"="+x.String())
					}
					if _, ok := inner[i].Body.(*ike.Cert); ok {
						certs++
					}
				}
				if !strings.Contains(strings.Join(ids, " "), id) || certs != 3 {
					t.Errorf("inner payloads %v, IDs %v, %d certs; want %s and 3 certificates", types, ids, certs, id)
				}
			}
		})
	}
}
