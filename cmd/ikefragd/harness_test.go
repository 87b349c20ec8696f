package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/ikefrag/ikefrag/cmd/internal/buildinfo"
	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/netcfg"
	"github.com/ikefrag/ikefrag/test/lab"
)

// The integration tests run the built binaries, as an operator would:
// ikefragd inside a lab namespace, ikefragctl against its socket.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

type binaries struct{ daemon, ctl string }

// testVersion is stamped into the binaries the tests build.
const testVersion = "v0.0.0-test.1-gabcdef0"

// buildBinaries builds ikefragd and ikefragctl once per test process.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "ikefragd-bin-")
		if buildErr != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		// Stamped as the Makefile does, with a version the tests look for.
		cmd := exec.Command(goBin, "build", "-ldflags", buildinfo.LDFlag(testVersion), "-o", binDir+"/", "github.com/ikefrag/ikefrag/cmd/ikefragd", "github.com/ikefrag/ikefrag/cmd/ikefragctl")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as the Makefile builds it
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
		// Tests run the binaries as other users too.
		_ = os.Chmod(binDir, 0o755)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binaries{daemon: filepath.Join(binDir, "ikefragd"), ctl: filepath.Join(binDir, "ikefragctl")}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates network namespaces")
	}
	for _, tool := range []string{"ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (iproute2; make deps installs it)", tool)
		}
	}
}

// testNetns is a network namespace of a test, with lo up.
type testNetns struct {
	t    *testing.T
	name string
}

var netnsSeq atomic.Int64

// newNetns creates a namespace removed at cleanup. Names carry the pid,
// so parallel test processes do not collide.
func newNetns(t *testing.T) *testNetns {
	t.Helper()
	n := &testNetns{t: t, name: fmt.Sprintf("ikfd-%d-%d", os.Getpid(), netnsSeq.Add(1))}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
	n.ip("link", "set", "lo", "up")
	return n
}

// ip runs ip(8) inside the namespace.
func (n *testNetns) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %v: %v %s", args, err, out)
	}
}

// veth adds a veth pair inside the namespace, both ends up.
func (n *testNetns) veth(a, b string) {
	n.t.Helper()
	n.ip("link", "add", a, "type", "veth", "peer", "name", b)
	n.ip("link", "set", a, "up")
	n.ip("link", "set", b, "up")
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemonProc is an ikefragd started by a test.
type daemonProc struct {
	t        *testing.T
	bins     binaries
	netns    string // network namespace (ip netns) to run in; "": the test's own
	dir      string
	config   string
	socket   string
	cmd      *exec.Cmd
	stderr   *syncBuffer
	notify   *net.UnixConn
	waited   chan struct{}
	err      error // from Wait
	restarts int
	// wrap is a command line the daemon runs under (setpriv ... --); env
	// is added to its environment.
	wrap []string
	env  []string
}

// newDaemon prepares a daemon with its own directory, config file (yaml
// gets control.socket added) and notify socket.
func newDaemon(t *testing.T, bins binaries, netnsName string, yamlText string) *daemonProc {
	t.Helper()
	// What the unit's LimitMEMLOCK=infinity gives the daemon, inherited:
	// kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, and a daemon
	// run without CAP_SYS_RESOURCE (as the unit runs it) cannot raise it.
	// Elsewhere this changes nothing.
	if err := kfeat.Memlock(); err != nil {
		t.Logf("RLIMIT_MEMLOCK stays: %v", err)
	}
	dir, err := os.MkdirTemp("", "ikfd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &daemonProc{t: t, bins: bins, netns: netnsName, dir: dir, socket: filepath.Join(dir, "control.sock"),
		config: filepath.Join(dir, "ikefragd.yaml")}
	d.writeConfig(yamlText)
	return d
}

func (d *daemonProc) writeConfig(yamlText string) {
	d.t.Helper()
	text := yamlText + "\ncontrol:\n  socket: " + d.socket + "\n"
	if err := os.WriteFile(d.config, []byte(text), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// start runs the daemon and waits for READY=1 on its notify socket.
func (d *daemonProc) start() {
	t := d.t
	t.Helper()
	ns := filepath.Join(d.dir, "notify.sock")
	if d.notify != nil {
		d.notify.Close() // a restart
	}
	os.Remove(ns)
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d.notify = nc
	d.cmd = d.command()
	d.cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="+ns, "IKEFRAG_LOG_FORMAT=text"), d.env...)
	d.stderr = &syncBuffer{}
	d.cmd.Stderr = d.stderr
	d.cmd.Stdout = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	d.waited = waited
	cmd := d.cmd
	go func() { err := cmd.Wait(); d.err = err; close(waited) }()
	if d.restarts == 0 {
		t.Cleanup(d.stop)
	}
	d.restarts++
	msg, err := d.waitNotify("READY=1", 90*time.Second)
	if err != nil {
		t.Fatalf("daemon not ready: %v\n%s", err, d.stderr)
	}
	if !strings.Contains(msg, "STATUS=observing ") {
		t.Errorf("READY without a STATUS line: %q", msg)
	}
}

// command is the daemon's command line: in its namespace, under wrap.
func (d *daemonProc) command() *exec.Cmd {
	argv := append(append(append([]string{}, d.wrap...), d.bins.daemon), "--config", d.config)
	if d.netns != "" {
		argv = append([]string{"ip", "netns", "exec", d.netns}, argv...)
	}
	return exec.Command(argv[0], argv[1:]...)
}

// runToExit runs a daemon expected to fail at start and returns its exit
// status and output.
func (d *daemonProc) runToExit(timeout time.Duration) (int, string) {
	d.t.Helper()
	cmd := d.command()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "IKEFRAG_LOG_FORMAT=text")
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String()
		}
		if err != nil {
			d.t.Fatal(err)
		}
		return 0, out.String()
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		d.t.Fatalf("still running after %v:\n%s", timeout, out.String())
		return 0, ""
	}
}

// waitNotify reads notify messages until one contains want.
func (d *daemonProc) waitNotify(want string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for time.Now().Before(deadline) {
		select {
		case <-d.waited:
			return "", fmt.Errorf("daemon exited: %v", d.err)
		default:
		}
		_ = d.notify.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := d.notify.Read(buf)
		if err != nil {
			continue
		}
		if msg := string(buf[:n]); strings.Contains(msg, want) {
			return msg, nil
		}
	}
	return "", fmt.Errorf("no %q within %v", want, timeout)
}

// signal sends sig to the daemon.
func (d *daemonProc) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
}

// stop ends the daemon with SIGTERM and checks that it stopped cleanly.
func (d *daemonProc) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.waited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.waited:
		if d.err != nil {
			d.t.Errorf("ikefragd exited with %v after SIGTERM\n%s", d.err, d.stderr)
		}
	case <-time.After(30 * time.Second):
		// SIGQUIT makes the Go runtime print every goroutine's stack: the
		// log then shows where the shutdown waits.
		_ = d.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-d.waited:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.waited
		}
		d.t.Errorf("ikefragd did not stop within 30 s of SIGTERM\n%s", d.stderr)
	}
	if d.t.Failed() {
		d.t.Logf("ikefragd log:\n%s", d.stderr)
	}
	d.notify.Close()
}

// kill ends the daemon with SIGKILL and waits for it.
func (d *daemonProc) kill() {
	_ = d.cmd.Process.Kill()
	<-d.waited
}

// ctl runs ikefragctl against the daemon and returns its stdout and exit
// status.
func (d *daemonProc) ctl(args ...string) (string, int) {
	d.t.Helper()
	cmd := exec.Command(d.bins.ctl, append(args, "--socket", d.socket)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatal(err)
	}
	if code != 0 && code != 1 {
		d.t.Logf("ikefragctl %v: exit %d: %s", args, code, errOut.String())
	}
	return out.String(), code
}

// ctlJSON runs `ikefragctl CMD --json` and decodes its output into v.
func (d *daemonProc) ctlJSON(v any, args ...string) int {
	d.t.Helper()
	out, code := d.ctl(append(args, "--json")...)
	if code == 0 || code == 1 {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			d.t.Fatalf("ikefragctl %v --json: %v\n%s", args, err, out)
		}
	}
	return code
}

// events runs `ikefragctl events --json`: one event per line.
func (d *daemonProc) events() []control.Event {
	d.t.Helper()
	out, code := d.ctl("events", "--json")
	if code != 0 {
		d.t.Fatalf("ikefragctl events: exit %d", code)
	}
	var evs []control.Event
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var e control.Event
		if err := dec.Decode(&e); err != nil {
			d.t.Fatalf("ikefragctl events --json: %v\n%s", err, out)
		}
		evs = append(evs, e)
	}
	return evs
}

// nsHTTP returns an HTTP client whose connections are made inside a
// network namespace (the daemon's 127.0.0.1 is the namespace's own).
func nsHTTP(t *testing.T, name string) *http.Client {
	t.Helper()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netcfg.Do(h, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}

// scrape fetches /metrics and returns samples by their full name with
// labels as the exposition format prints them.
func scrape(t *testing.T, c *http.Client, addr string) map[string]float64 {
	t.Helper()
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: %s: %s", resp.Status, b)
	}
	return parseMetrics(t, resp.Body)
}

// scrapeText fetches /metrics as text.
func scrapeText(t *testing.T, c *http.Client, addr string) string {
	t.Helper()
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func parseMetrics(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// ifaceIn returns the name of the interface node has on its link to peer.
func ifaceIn(l *lab.Lab, node, peer *lab.Node) string {
	k := l.Link(node, peer)
	if k.A == node {
		return k.IfA
	}
	return k.IfB
}

// waitFor polls f every 500 ms until it returns true or timeout passes.
func waitFor(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}
