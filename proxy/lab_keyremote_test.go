package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/test/lab"
)

var (
	ctlOnce sync.Once
	ctlPath string
	ctlErr  error
)

// buildCtl builds cmd/ikefragctl once per test binary: its `keys
// forward` is the key forwarder of a VPN server host. Tests start it
// early, beside the lab's setup.
func buildCtl() {
	ctlOnce.Do(func() {
		if ctlPath = prebuilt("ikefragctl"); ctlPath != "" {
			return
		}
		dir, err := os.MkdirTemp("", "ikefrag-ctl-")
		if err != nil {
			ctlErr = err
			return
		}
		ctlPath = filepath.Join(dir, "ikefragctl")
		gobin, err := exec.LookPath("go")
		if err != nil {
			ctlErr = err
			return
		}
		out, err := exec.Command(gobin, "build", "-o", ctlPath, "github.com/ikefrag/ikefrag/cmd/ikefragctl").CombinedOutput()
		if err != nil {
			ctlErr = fmt.Errorf("go build ikefragctl: %v: %s", err, out)
		}
	})
}

// ctlBin is the path of the ikefragctl buildCtl built.
func ctlBin(t testing.TB) string {
	t.Helper()
	buildCtl()
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	return ctlPath
}

// keysView is the runner's /keys: the key store's SAs (no keys) and the
// key listener's counters.
type keysView struct {
	Store struct {
		Entries int `json:"Entries"`
	} `json:"store"`
	SAs []struct {
		SPIi   string `json:"spi_i"`
		SPIr   string `json:"spi_r"`
		Origin string `json:"origin"`
	} `json:"sas"`
	Listener keys.RemoteStats `json:"listener"`
}

func (g *gwProxy) keys(t *testing.T) keysView {
	var v keysView
	g.get(t, "keys", &v)
	return v
}

// origin is the origin of the store's SA spis ("spi_i/spi_r"), "" when
// the store does not hold it.
func (v keysView) origin(spis string) string {
	for _, sa := range v.SAs {
		if sa.SPIi+"/"+sa.SPIr == spis {
			return sa.Origin
		}
	}
	return ""
}

// logCount counts s in the file at path (0 when it cannot be read).
func logCount(path, s string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte(s))
}

// TestLabKeyRemote is the "keys over the network" acceptance run. The
// proxy on gw and the VPN server on srv share no key socket: srv's
// charon loads the ikefrag-keys plugin, which writes to the Unix socket
// of `ikefragctl keys forward` in srv's namespace; the forwarder reaches
// the proxy's key listener (keys.listen) on gw's address toward srv over
// TCP, TLS 1.3 with a client certificate; the proxy has no key socket.
// The client sits behind a 1280-byte path that drops IP fragments, so
// its IKE_AUTH (about 5 KB each way with RSA-4096 chains) crosses only
// re-fragmented by the proxy, and only with the SA's keys.
//
//   - forwarder vpn1 (on the list, for srv): the client establishes, the
//     proxy re-fragments, and its store holds the SA from the listener;
//     the IKE SA's delete crosses too and empties the store;
//   - a forwarder whose certificate the same CA signed but which is not
//     on the list: refused at the connection and counted; srv's
//     IKE_AUTH response meets the proxy without keys, is relayed
//     unchanged (a key miss, nothing re-fragmented) and is lost;
//   - forwarder vpn2 (on the list, for another backend): its connection
//     is accepted, its messages for srv are refused and counted as
//     forbidden; again the proxy does not re-fragment for that SA.
func TestLabKeyRemote(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	go buildCtl()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll})
	gwToSrv, _ := l.Link(l.Gw, l.Srv).Addrs(l.Gw)
	listen := netip.AddrPortFrom(gwToSrv, 4501)
	other := netip.MustParseAddr("10.99.2.99") // a VPN server that is not srv

	// certificates of the test's own CA; the proxy's in its own directory
	pki := lab.NewTLSPKI(t, filepath.Join(l.Dir, "tls"))
	gwCert, gwKey := pki.Issue("gw.lab.example", gwToSrv)
	cfg := fmt.Sprintf(`proxy:
  enabled: true
  listen: [%q]
  backends: [%q]
  refragment: auto
keys:
  listen:
    address: %q
    cert: %s
    key: %s
    client_ca: %s
    clients: ["vpn1.lab.example=%s", "vpn2.lab.example=%s"]
`, l.Gw.Addr4, l.Srv.Addr4, listen, gwCert, gwKey, pki.CA, l.Srv.Addr4, other)
	g := startProxy(t, l, l.Gw, cfg)

	// srv's side: the plugin's socket is the forwarder's, in a directory
	// the proxy is not told of
	srvDir := filepath.Join(l.Dir, "srv-keys")
	if err := os.Mkdir(srvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(srvDir, "keys.sock")
	var fwd *lab.Process
	forward := func(name string) {
		t.Helper()
		if fwd != nil {
			if err := fwd.Stop(); err != nil {
				t.Fatalf("stopping the forwarder: %v", err)
			}
		}
		cert, key := pki.Issue(name)
		fwd = l.Srv.Start(t, "", ctlBin(t), "keys", "forward", "--socket", sock, "--to", listen.String(),
			"--cert", cert, "--key", key, "--ca", pki.CA)
		if !waitFor(10*time.Second, func() bool {
			fi, err := os.Stat(sock)
			return err == nil && fi.Mode()&os.ModeSocket != 0 && !fwd.Exited()
		}) {
			t.Fatalf("forwarder %s: no socket %s", name, sock)
		}
	}
	forward("vpn1.lab.example")
	srv := l.StartCharon(lab.Charon{Role: lab.Server, FragmentSize: 1500, KeyFeed: sock, KeyFeedPluginDir: true})
	cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4})

	// pluginConnects counts the plugin's connections to the forwarder.
	pluginConnects := func() int { return logCount(srv.Log(), "ikefrag-keys: connected to") }
	if !waitFor(10*time.Second, func() bool { return g.keys(t).Listener.Conns >= 1 && pluginConnects() >= 1 }) {
		t.Fatalf("forwarder vpn1 not connected: listener %+v, plugin connections %d", g.keys(t).Listener, pluginConnects())
	}
	// the key feed's only way to gw is TCP to the listener
	if out, err := l.Gw.Run(ctx, "ss", "-Htn", "state", "established", "sport", "= :4501"); err != nil ||
		!strings.Contains(out, l.Srv.Addr4.String()+":") {
		t.Fatalf("no TCP connection from srv to the key listener on gw: %v\n%s", err, out)
	}

	// 1. forwarder on the list, for srv: established, re-fragmented
	ok, out, err := cli.Initiate(ctx)
	if err != nil || !ok {
		t.Fatalf("initiate with keys from the forwarder: %v\n%s", err, out)
	}
	st := g.stats(t)
	sa := established(t, cli)
	spis := sa.SPIi + "/" + sa.SPIr
	kv := g.keys(t)
	t.Logf("vpn1: established %s; proxy refragmented %d, key misses %d; listener %+v", spis, st.Total.Refragmented, st.Total.KeyMisses, kv.Listener)
	if st.Total.Refragmented == 0 || st.Total.KeyMisses != 0 {
		t.Fatalf("IKE_AUTH with the forwarder's keys: refragmented %d, key misses %d", st.Total.Refragmented, st.Total.KeyMisses)
	}
	if o := kv.origin(spis); !strings.Contains(o, "vpn1.lab.example") {
		t.Errorf("the store's SA %s came from %q, want the key listener's client vpn1.lab.example (store: %+v)", spis, o, kv.SAs)
	}
	if kv.Listener.Added == 0 || kv.Listener.Refused != 0 || kv.Listener.Forbidden != 0 {
		t.Errorf("listener after vpn1: %+v", kv.Listener)
	}
	if out, err := cli.Swanctl(ctx, "--terminate", "--ike", "lab"); err != nil {
		t.Fatalf("terminate: %v\n%s", err, out)
	}
	if !waitFor(10*time.Second, func() bool { kv = g.keys(t); return kv.Store.Entries == 0 && kv.Listener.Deleted > 0 }) {
		t.Fatalf("the IKE SA's delete did not reach the proxy: store %d SAs, listener %+v", kv.Store.Entries, kv.Listener)
	}

	// refusedSA starts an IKE SA with the forwarder of the moment and
	// checks that the proxy did not re-fragment for it: srv's IKE_AUTH
	// response (and its retransmission) met the proxy without keys.
	// counted then checks the listener's counters and metrics, before the
	// SA's end adds messages of its own.
	refusedSA := func(what string, counted func(kv keysView, m map[string]uint64)) {
		t.Helper()
		before := g.stats(t).Total
		ictx, cancel := context.WithCancel(ctx)
		done := make(chan bool, 1)
		go func() { ok, _, _ := cli.Initiate(ictx); done <- ok }()
		var now struct{ refrag, misses uint64 }
		poll := func() {
			s := g.stats(t).Total
			now.refrag, now.misses = s.Refragmented, s.KeyMisses
		}
		if !waitFor(20*time.Second, func() bool {
			poll()
			return now.misses > before.KeyMisses || now.refrag > before.Refragmented
		}) {
			t.Fatalf("%s: srv's IKE_AUTH response did not reach the proxy: key misses %d → %d", what, before.KeyMisses, now.misses)
		}
		first := now.misses
		// the client retransmits IKE_AUTH and srv answers again: by then
		// keys that were merely late would have arrived
		resent := logCount(srv.Log(), "retransmitting response")
		if !waitFor(15*time.Second, func() bool { return logCount(srv.Log(), "retransmitting response") > resent }) {
			t.Fatalf("%s: srv did not retransmit its IKE_AUTH response", what)
		}
		if !waitFor(3*time.Second, func() bool { poll(); return now.misses > first || now.refrag > before.Refragmented }) {
			t.Errorf("%s: srv's retransmitted response was not counted as a key miss", what)
		}
		t.Logf("%s: key misses %d at the response, %d after its retransmission", what, first-before.KeyMisses, now.misses-before.KeyMisses)
		if now.refrag != before.Refragmented {
			t.Errorf("%s: the proxy re-fragmented %d message(s) without the forwarder's keys", what, now.refrag-before.Refragmented)
		}
		// srv holds its IKE SA as established once it sent IKE_AUTH's
		// response, whether or not the client got it
		sas, err := srv.SAs(ctx)
		if err != nil || len(sas) != 1 {
			t.Fatalf("%s: srv's SAs: %v %+v", what, err, sas)
		}
		spis := sas[0].SPIi + "/" + sas[0].SPIr
		kv := g.keys(t)
		if kv.origin(spis) != "" || kv.Store.Entries != 0 {
			t.Errorf("%s: the proxy's store holds srv's SA %s: %+v", what, spis, kv.SAs)
		}
		counted(kv, g.metrics(t)) // read after kv: never below it
		select {
		case ok := <-done:
			t.Errorf("%s: initiate ended (ok=%v) while IKE_AUTH could not cross", what, ok)
		default:
		}
		t.Logf("%s: srv's SA %s; key misses %d → %d, refragmented %d → %d", what, spis, before.KeyMisses, now.misses, before.Refragmented, now.refrag)
		cancel()
		<-done
		for _, d := range []*lab.Daemon{cli, srv} {
			if out, err := d.Swanctl(ctx, "--terminate", "--ike", "lab", "--force"); err != nil {
				t.Fatalf("%s: terminate: %v\n%s", what, err, out)
			}
		}
	}

	// 2. a certificate of the trusted CA that is not on the list
	conns, added := kv.Listener.Conns, kv.Listener.Added
	connects := pluginConnects()
	forward("rogue.lab.example")
	if !waitFor(10*time.Second, func() bool { return pluginConnects() > connects && g.keys(t).Listener.Refused > 0 }) {
		t.Fatalf("rogue forwarder: plugin connections %d → %d, listener %+v", connects, pluginConnects(), g.keys(t).Listener)
	}
	refusedSA("certificate not on the list", func(kv keysView, m map[string]uint64) {
		const refused = "ikefrag_keys_listener_refused_total"
		if kv.Listener.Refused == 0 || m[refused] < kv.Listener.Refused || kv.Listener.Conns != conns || kv.Listener.Added != added {
			t.Errorf("rogue forwarder: listener %+v, %s %d", kv.Listener, refused, m[refused])
		}
		t.Logf("rogue: refused %d connection(s); %s %d", kv.Listener.Refused, refused, m[refused])
	})
	if plog, _ := os.ReadFile(g.proc.Log); !bytes.Contains(plog, []byte(`rogue.lab.example\" is not on the client list`)) {
		t.Errorf("the proxy's log does not name the refused certificate")
	}

	// 3. on the list, but for another backend
	kv = g.keys(t)
	conns, added = kv.Listener.Conns, kv.Listener.Added
	connects = pluginConnects()
	forward("vpn2.lab.example")
	if !waitFor(10*time.Second, func() bool { return pluginConnects() > connects && g.keys(t).Listener.Conns > conns }) {
		t.Fatalf("vpn2 forwarder: plugin connections %d → %d, listener %+v", connects, pluginConnects(), g.keys(t).Listener)
	}
	refusedSA("forwarder for another backend", func(kv keysView, m map[string]uint64) {
		const forbidden = `ikefrag_keys_listener_messages_total{result="forbidden"}`
		if kv.Listener.Forbidden == 0 || m[forbidden] < kv.Listener.Forbidden || kv.Listener.Added != added {
			t.Errorf("vpn2's keys for srv: listener %+v (added before %d), %s %d", kv.Listener, added, forbidden, m[forbidden])
		}
		t.Logf("vpn2: forbidden %d message(s); %s %d", kv.Listener.Forbidden, forbidden, m[forbidden])
	})
	if plog, _ := os.ReadFile(g.proc.Log); !bytes.Contains(plog, []byte(fmt.Sprintf(`client \"vpn2.lab.example\" may not supply keys for server %s`, l.Srv.Addr4))) {
		t.Errorf("the proxy's log does not say why vpn2's keys were refused")
	}
}
