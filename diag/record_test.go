package diag_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/test/lab"
)

var record = flag.Bool("record", false, "re-record the lab captures in testdata/lab with real strongSwan (root; see testdata/README.md)")

// labRecording is one capture the repository carries, recorded on the lab's
// router (tcpdump -i any) while real strongSwan peers run the scenario.
type labRecording struct {
	name     string
	topo     lab.Topology
	cli, srv lab.Charon
	wantOK   bool
	// keys: the initiator's save-keys table is kept next to the capture
	// (name.keys), for the verdicts only the keys reveal.
	keys bool
	// alone: only the client runs; nothing answers it.
	alone bool
}

// labRecordings are the scenarios of testdata/lab. The letters follow the
// shared lab's scenarios (../shared/lab/README.md).
var labRecordings = []labRecording{
	// b: no IKE fragmentation, the router drops every IP fragment.
	{name: "b", topo: lab.Topology{Drop: lab.DropAll},
		cli: lab.Charon{Fragmentation: "no"}, srv: lab.Charon{Fragmentation: "no"}},
	// c: RFC 7383 fragments of 1280 bytes cross a 1280-byte link.
	{name: "c", topo: lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
		cli: lab.Charon{FragmentSize: 1280}, srv: lab.Charon{FragmentSize: 1280}, wantOK: true},
	// d: the responder's fragments of 1500 bytes exceed the 1280-byte link.
	{name: "d", topo: lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
		cli: lab.Charon{FragmentSize: 1280}, srv: lab.Charon{FragmentSize: 1500}},
	// e: the responder announces fragmentation but never fragments.
	{name: "e", topo: lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
		cli: lab.Charon{FragmentSize: 1280}, srv: lab.Charon{Fragmentation: "accept"}},
	// f: the initiator does not fragment; the responder would.
	{name: "f", topo: lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
		cli: lab.Charon{Fragmentation: "no"}, srv: lab.Charon{FragmentSize: 1280}},
	// g: the initiator offers fragmentation, the responder does not, and
	// the IP fragments of IKE_AUTH are dropped.
	{name: "g", topo: lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll},
		cli: lab.Charon{FragmentSize: 1280}, srv: lab.Charon{Fragmentation: "no"}},
	// no-responder: no charon on the server; the client retransmits
	// IKE_SA_INIT and gives up.
	{name: "no-responder", alone: true},
	// auth-failed: the responder expects another identity and answers
	// AUTHENTICATION_FAILED inside SK.
	{name: "auth-failed", cli: lab.Charon{SaveKeys: true}, srv: lab.Charon{RemoteID: "nobody.lab.example"}, keys: true},
	// invalid-ke: the responder asks for ECP-256; the initiator retries
	// under the same SPI.
	{name: "invalid-ke", cli: lab.Charon{Proposals: "aes256-sha256-modp3072-ecp256"}, srv: lab.Charon{Proposals: "aes256-sha256-ecp256"}, wantOK: true},
	// no-proposal: the initiator offers only 3DES / SHA-1.
	{name: "no-proposal", cli: lab.Charon{Proposals: "3des-sha1-modp2048"}},
	// weak: both peers accept 3DES / SHA-1 / MODP-1024.
	{name: "weak", cli: lab.Charon{Proposals: "3des-sha1-modp1024"}, srv: lab.Charon{Proposals: "3des-sha1-modp1024"}, wantOK: true},
}

// TestRecordLab re-records testdata/lab/*.pcap. It runs only when asked:
//
//	go test ./diag -run TestRecordLab -record -v
//
// (IKEFRAG_RECORD=b,c re-records only those); then
// go test ./diag ./cmd/ikefragctl -run 'TestGolden|TestAnalyzeGolden' -update
// rewrites the golden reports. scripts/record-testdata.sh does all of it.
// Review the diffs before committing: TestRepoVerdicts checks that the
// verdicts stayed.
func TestRecordLab(t *testing.T) {
	if !*record {
		t.Skip("re-recording the lab captures needs -record (root, strongSwan)")
	}
	lab.Require(t)
	only := os.Getenv("IKEFRAG_RECORD")
	for _, c := range labRecordings {
		if only != "" && !strings.Contains(","+only+",", ","+c.name+",") {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, c.topo)
			pcap := lab.Capture(t, l.Mid, "any", "")
			var cli *lab.Daemon
			if c.alone {
				c.cli.Role = lab.Client
				cli = l.StartCharon(c.cli)
			} else {
				cli, _ = l.StartPair(c.cli, c.srv)
			}
			ok, out, err := cli.Initiate(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ok != c.wantOK {
				t.Fatalf("initiate ok=%v, want %v:\n%s", ok, c.wantOK, out)
			}
			if err := pcap.Stop(); err != nil {
				t.Fatal(err)
			}
			if pcap.Dropped > 0 {
				t.Fatalf("tcpdump dropped %d packets", pcap.Dropped)
			}
			copyFile(t, pcap.Path, filepath.Join("testdata", "lab", c.name+".pcap"), 0o644)
			if c.keys {
				// A throwaway lab SA's keys, still kept from others on
				// disk (the key sources refuse readable files).
				copyFile(t, cli.KeysFile(), filepath.Join("testdata", "lab", c.name+".keys"), 0o600)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
