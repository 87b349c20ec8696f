package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/test/lab"
)

// keyTap sits between charon's ikefrag-keys plugin and the proxy's key
// socket and remembers, in this process's memory only, every key the plugin
// sent, so that the test can look for them on disk afterwards. It passes
// the bytes through unchanged both ways; when either side closes, it
// closes the other, so an ikefragd restart looks to the plugin exactly as
// without it.
type keyTap struct {
	path, upstream string
	ln             *net.UnixListener

	mu      sync.Mutex
	keys    map[string][]byte // hex → raw, every SK_e*/SK_a* seen
	deletes map[string]bool   // "spi_i/spi_r" of delete messages
	links   map[string]string // new "spi_i/spi_r" → old, from rekey links
	frag    map[string]bool   // "spi_i/spi_r" → the frag member
	conns   int
}

func startKeyTap(t *testing.T, path, upstream string) *keyTap {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	k := &keyTap{path: path, upstream: upstream, ln: ln, keys: map[string][]byte{},
		deletes: map[string]bool{}, links: map[string]string{}, frag: map[string]bool{}}
	t.Cleanup(func() { ln.Close() })
	go k.serve()
	return k
}

func (k *keyTap) serve() {
	for {
		down, err := k.ln.AcceptUnix()
		if err != nil {
			return
		}
		up, err := net.Dial("unix", k.upstream)
		if err != nil {
			down.Close()
			continue
		}
		k.mu.Lock()
		k.conns++
		k.mu.Unlock()
		go func() {
			_, _ = io.Copy(down, up)
			down.Close()
			up.Close()
		}()
		go func() {
			defer down.Close()
			defer up.Close()
			sc := bufio.NewScanner(down)
			for sc.Scan() {
				line := sc.Bytes()
				k.record(line)
				if _, err := up.Write(append(append([]byte(nil), line...), '\n')); err != nil {
					return
				}
			}
		}()
	}
}

func (k *keyTap) record(line []byte) {
	var m map[string]any
	if json.Unmarshal(line, &m) != nil {
		return
	}
	id := fmt.Sprintf("%v/%v", m["spi_i"], m["spi_r"])
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range []string{"sk_ei", "sk_er", "sk_ai", "sk_ar"} {
		if h, _ := m[f].(string); h != "" {
			if raw, err := hex.DecodeString(h); err == nil {
				k.keys[h] = raw
			}
		}
	}
	if m["delete"] == true {
		k.deletes[id] = true
	}
	if m["old_spi_i"] != nil {
		k.links[id] = fmt.Sprintf("%v/%v", m["old_spi_i"], m["old_spi_r"])
	}
	if f, ok := m["frag"].(bool); ok {
		k.frag[id] = f
	}
}

func (k *keyTap) snapshot() (keys map[string][]byte, deletes map[string]bool, links map[string]string, frag map[string]bool, conns int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys = map[string][]byte{}
	for h, r := range k.keys {
		keys[h] = r
	}
	deletes, links, frag = map[string]bool{}, map[string]string{}, map[string]bool{}
	for a, b := range k.deletes {
		deletes[a] = b
	}
	for a, b := range k.links {
		links[a] = b
	}
	for a, b := range k.frag {
		frag[a] = b
	}
	return keys, deletes, links, frag, k.conns
}

var (
	reChildNum = regexp.MustCompile(`(?m)^  lab: #(\d+), reqid \d+, INSTALLED`)
	reIKENum   = regexp.MustCompile(`(?m)^lab: #(\d+), ESTABLISHED, IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r`)
)

// saNumbers reads the unique numbers of d's established IKE SA and
// installed CHILD_SA (0 when there is none) and the IKE SA's SPIs.
func saNumbers(t *testing.T, d *lab.Daemon) (ikeNum, childNum int, spis string) {
	t.Helper()
	out, err := d.Swanctl(context.Background(), "--list-sas")
	if err != nil {
		t.Fatalf("list-sas: %v\n%s", err, out)
	}
	if m := reIKENum.FindStringSubmatch(out); m != nil {
		ikeNum, _ = strconv.Atoi(m[1])
		spis = m[2] + "/" + m[3]
	}
	if m := reChildNum.FindStringSubmatch(out); m != nil {
		childNum, _ = strconv.Atoi(m[1])
	}
	return
}

// childRekeyPFS is the CHILD_SA proposal of the key feed lab: PFS with
// MODP-8192 and a long list of transforms, so that the responder's
// CREATE_CHILD_SA request (a 1024-byte KE payload and the SA offer) is an
// IP datagram of about 1.4 KB, larger than the client's 1280-byte path
// and smaller than the responder's fragment_size of 1500: only the proxy
// can make it cross. (IKE_AUTH ignores the DH groups.)
const childRekeyPFS = "aes256-aes192-aes128-sha256-sha384-sha512-sha1-modp8192-modp6144-modp4096-modp3072-modp2048"

// TestLabKeyFeed is the acceptance run of the ikefrag-keys plugin, with no
// save-keys anywhere: srv's charon loads the plugin from its plugin
// directory and sends every IKE SA's keys to the proxy's key socket; the
// client sits behind a 1280-byte path that drops IP fragments.
//
//   - IKE_AUTH (about 5 KB) establishes through the proxy's re-fragmentation;
//   - srv rekeys the IKE SA (swanctl --rekey --ike), then rekeys the
//     CHILD_SA with PFS: that CREATE_CHILD_SA request of the new IKE SA is
//     larger than the path and crosses only re-fragmented;
//   - the proxy is killed and restarted (state_file keeps the flow); the
//     plugin reconnects, re-sends the live SA's keys, and the next large
//     request is re-fragmented again;
//   - restarted without a key source, the proxy relays the next large
//     request unchanged and the exchange fails: the keys are what make it
//     work;
//   - no file under the lab, /tmp, /run or /var holds any key the plugin
//     sent (hex or raw).
func TestLabKeyFeed(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll})
	dir := filepath.Join(l.Dir, "keyfeed")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	proxySock, tapSock := filepath.Join(dir, "keys.sock"), filepath.Join(dir, "tap.sock")
	tap := startKeyTap(t, tapSock, proxySock)

	srv := l.StartCharon(lab.Charon{Role: lab.Server, FragmentSize: 1500, ESPProposals: childRekeyPFS,
		KeyFeed: tapSock, KeyFeedPluginDir: true})
	cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4, ESPProposals: childRekeyPFS})
	state := filepath.Join(l.Dir, "proxy-state.json")
	base := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  refragment: auto\n  state_file: %s\n",
		l.Gw.Addr4, l.Srv.Addr4, state)
	keyed := base + fmt.Sprintf("keys:\n  socket: %s\n", proxySock)
	g := startProxy(t, l, l.Gw, keyed)

	ok, out, err := cli.Initiate(ctx)
	if err != nil || !ok {
		t.Fatalf("initiate through the proxy with the plugin's keys: %v\n%s", err, out)
	}
	st := g.stats(t)
	if st.Total.Refragmented == 0 || st.Total.KeyMisses != 0 {
		t.Fatalf("IKE_AUTH: refragmented %d, key misses %d", st.Total.Refragmented, st.Total.KeyMisses)
	}
	ike0, child0, spis0 := saNumbers(t, cli)
	t.Logf("established: IKE SA #%d %s, CHILD_SA #%d; proxy refragmented %d", ike0, spis0, child0, st.Total.Refragmented)

	// rekey the IKE SA from srv: new SPIs, srv the new SA's initiator
	if out, err := srv.Swanctl(ctx, "--rekey", "--ike", "lab"); err != nil {
		t.Fatalf("rekey --ike: %v\n%s", err, out)
	}
	var spis1 string
	if !waitFor(20*time.Second, func() bool {
		_, _, spis1 = saNumbers(t, cli)
		return spis1 != "" && spis1 != spis0
	}) {
		t.Fatalf("the IKE SA was not rekeyed: SPIs still %q", spis1)
	}
	_, deletes, links, frag, _ := tap.snapshot()
	if !waitFor(5*time.Second, func() bool {
		_, deletes, links, frag, _ = tap.snapshot()
		return deletes[spis0] && links[spis1] == spis0
	}) {
		t.Fatalf("key feed after the rekey: delete of %s %v, link %s → %q", spis0, deletes[spis0], spis1, links[spis1])
	}
	if !frag[spis1] {
		t.Errorf("the rekeyed SA %s was not announced with frag true: %v", spis1, frag)
	}
	t.Logf("IKE SA rekeyed: %s → %s; the plugin sent the link and the old SA's delete", spis0, spis1)

	// a CHILD_SA rekey with PFS under the new IKE SA: larger than the path
	childRekey := func(what string) (bool, int) {
		t.Helper()
		_, before, _ := saNumbers(t, cli)
		r0 := g.stats(t).Total.Refragmented
		if out, err := srv.Swanctl(ctx, "--rekey", "--child", "lab"); err != nil {
			t.Fatalf("%s: rekey --child: %v\n%s", what, err, out)
		}
		var after int
		done := waitFor(25*time.Second, func() bool {
			_, after, _ = saNumbers(t, cli)
			return after > before
		})
		return done, int(g.stats(t).Total.Refragmented - r0)
	}
	done, cut := childRekey("after the IKE rekey")
	if !done || cut == 0 {
		t.Fatalf("CHILD_SA rekey under the rekeyed IKE SA: completed %v, messages re-fragmented %d", done, cut)
	}
	t.Logf("CHILD_SA rekey (PFS, MODP-8192) under the new IKE SA crossed: %d message(s) re-fragmented", cut)
	// the proxy learnt the rekey itself, from the CREATE_CHILD_SA exchange
	// it opened with the old SA's keys (it looks there before the key
	// feed's link)
	if plog, err := os.ReadFile(g.proc.Log); err != nil || !bytes.Contains(plog, []byte(`following IKE SA rekey`)) ||
		!bytes.Contains(plog, []byte(`learnt_from=exchange`)) {
		t.Errorf("the proxy did not log following the rekey from the exchange (%v)", err)
	}

	// ikefragd restarts mid-session, once its state file holds the flow
	stateSaved(t, state, l.Cli.Addr4.String(), time.Time{})
	if err := syscall.Kill(g.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for !g.proc.Exited() {
		time.Sleep(10 * time.Millisecond)
	}
	_, _, _, _, conns0 := tap.snapshot()
	restarted := time.Now()
	g = startProxy(t, l, l.Gw, keyed)
	if !waitFor(15*time.Second, func() bool { _, _, _, _, c := tap.snapshot(); return c > conns0 }) {
		t.Fatal("the plugin did not reconnect after the restart")
	}
	time.Sleep(500 * time.Millisecond) // the re-sent keys are one line each
	if !waitFor(5*time.Second, func() bool { return g.stats(t).Adopted > 0 }) {
		t.Fatal("the restarted proxy adopted no flow from its state file")
	}
	done, cut = childRekey("after the restart")
	if !done || cut == 0 {
		t.Fatalf("CHILD_SA rekey after the proxy restarted: completed %v, messages re-fragmented %d", done, cut)
	}
	// it never saw this SA's IKE_SA_INIT: the key feed's frag said the
	// peers negotiated fragmentation
	if plog, err := os.ReadFile(g.proc.Log); err != nil || !bytes.Contains(plog, []byte("IKE SA taken on from the key feed")) {
		t.Errorf("the restarted proxy did not take the SA on from the key feed (%v)", err)
	}
	t.Logf("after the proxy restart the plugin reconnected and re-sent the keys; the next large request was re-fragmented (%d)", cut)

	// the same without a key source: relayed unchanged, lost on the path
	stateSaved(t, state, l.Cli.Addr4.String(), restarted)
	if err := syscall.Kill(g.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for !g.proc.Exited() {
		time.Sleep(10 * time.Millisecond)
	}
	g = startProxy(t, l, l.Gw, base)
	if !waitFor(5*time.Second, func() bool { return g.stats(t).Adopted > 0 }) {
		t.Fatal("the keyless proxy adopted no flow from its state file")
	}
	done, cut = childRekey("without keys")
	if done || cut != 0 {
		t.Fatalf("without keys the large request must be lost: completed %v, re-fragmented %d", done, cut)
	}
	if st := g.stats(t); st.Total.Oversize == 0 {
		t.Errorf("without keys: no oversize relay counted: %+v", st.Total)
	}
	t.Log("without keys at the proxy the same request was relayed unchanged and lost")

	// no key on disk
	keys, _, _, _, _ := tap.snapshot()
	if len(keys) < 8 {
		t.Fatalf("the tap saw only %d keys", len(keys))
	}
	var needles [][]byte
	for h, raw := range keys {
		needles = append(needles, []byte(h), []byte(strings.ToUpper(h)), raw)
	}
	roots := []string{l.Dir, "/tmp", "/run", "/var"}
	if cmdline, _ := os.ReadFile("/proc/cmdline"); bytes.Contains(cmdline, []byte("ikm.script=")) {
		// In a kernel-matrix guest /var is the host's, shared read-only
		// over 9p (nothing here can write it, and reading gigabytes under
		// emulation outlasts the run): the writable places are searched.
		roots = roots[:3]
	}
	files, scanned, skipped, hits := searchFiles(roots, needles, 64<<20)
	t.Logf("no key on disk: %d keys (hex, HEX, raw) searched in %d files, %d MiB; %d files over 64 MiB skipped", len(keys), files, scanned>>20, skipped)
	for _, h := range hits {
		t.Errorf("key material found in %s", h)
	}
}

// stateSaved waits until the proxy's state file, written after since,
// holds the client's flow.
func stateSaved(t *testing.T, path, client string, since time.Time) {
	t.Helper()
	if !waitFor(5*time.Second, func() bool {
		fi, err := os.Stat(path)
		if err != nil || !fi.ModTime().After(since) {
			return false
		}
		b, err := os.ReadFile(path)
		return err == nil && bytes.Contains(b, []byte(client))
	}) {
		t.Fatal("the proxy did not write the flow to its state file")
	}
}

// Filesystem types (statfs f_type, linux/magic.h) searchFiles skips.
const (
	procSuperMagic = 0x9fa0
	sysfsMagic     = 0x62656572
)

// searchFiles looks for any of needles in the regular files under roots
// (files larger than limit are skipped and counted).
func searchFiles(roots []string, needles [][]byte, limit int64) (files int, scanned int64, skipped int, hits []string) {
	seen := map[string]bool{}
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				// a proc or sysfs mount under a root (someone's chroot
				// or container under /var/tmp) is not disk, and its
				// files (a process's pagemap) report size 0 but read
				// without end
				var st syscall.Statfs_t
				if syscall.Statfs(path, &st) == nil && (st.Type == procSuperMagic || st.Type == sysfsMagic) {
					return fs.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() || seen[path] {
				return nil
			}
			seen[path] = true
			info, err := d.Info()
			if err != nil {
				return nil
			}
			if info.Size() > limit {
				skipped++
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					skipped++
				}
				return nil
			}
			files++
			scanned += int64(len(b))
			for _, n := range needles {
				if bytes.Contains(b, n) {
					hits = append(hits, path)
					break
				}
			}
			return nil
		})
	}
	return files, scanned, skipped, hits
}

// TestLabKeyFeedPreload: the plugin preloaded into charon (LD_PRELOAD) and
// named in a static charon.load list, talking to the proxy's key socket
// directly, gets a client behind the fragment-dropping path established.
// Configured for another owner (user = nobody) the plugin refuses the
// root-owned socket, sends nothing, and the same client fails.
func TestLabKeyFeedPreload(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	for _, c := range []struct {
		name, user string
		wantOK     bool
	}{{"static_load_list", "", true}, {"socket_of_another_user_refused", "nobody", false}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			l := lab.New(t, lab.Topology{Gateway: true, MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll})
			dir := filepath.Join(l.Dir, "keyfeed")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "keys.sock")
			g := startProxy(t, l, l.Gw, fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  refragment: auto\nkeys:\n  socket: %s\n",
				l.Gw.Addr4, l.Srv.Addr4, sock))
			srv := l.StartCharon(lab.Charon{Role: lab.Server, FragmentSize: 1500, KeyFeed: "unix://" + sock, KeyFeedUser: c.user})
			cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4})
			ok, out, err := cli.Initiate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st := g.stats(t)
			t.Logf("initiate ok=%v; proxy refragmented %d, key misses %d", ok, st.Total.Refragmented, st.Total.KeyMisses)
			if ok != c.wantOK {
				t.Fatalf("initiate: ok=%v, want %v\n%s", ok, c.wantOK, out)
			}
			log, _ := os.ReadFile(srv.Log())
			if c.wantOK {
				if st.Total.Refragmented == 0 {
					t.Error("established without re-fragmentation")
				}
				if !bytes.Contains(log, []byte("ikefrag-keys: connected to")) {
					t.Error("charon's log does not say the plugin connected")
				}
			} else {
				if st.Total.KeyMisses == 0 || st.Total.Refragmented != 0 {
					t.Errorf("refused socket: key misses %d, refragmented %d", st.Total.KeyMisses, st.Total.Refragmented)
				}
				if !bytes.Contains(log, []byte("ikefrag-keys: refusing")) {
					t.Error("charon's log does not say why the plugin refused the socket")
				}
			}
		})
	}
}
