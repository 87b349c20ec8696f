package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
)

// attachedNames lists the attached interfaces status reports.
func attachedNames(st control.Status) []string {
	var out []string
	for _, i := range st.Interfaces {
		if i.State == "attached" {
			out = append(out, i.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (d *daemonProc) status() control.Status {
	d.t.Helper()
	var st control.Status
	// Exit 1 is an unhealthy daemon's answer, still an answer.
	if code := d.ctlJSON(&st, "status"); code != 0 && code != 1 {
		d.t.Fatalf("status: exit %d", code)
	}
	return st
}

// reload sends SIGHUP and waits until the daemon says it is ready again.
func (d *daemonProc) reload() {
	d.t.Helper()
	d.signal(syscall.SIGHUP)
	if _, err := d.waitNotify("RELOADING=1", 10*time.Second); err != nil {
		d.t.Fatal(err)
	}
	if _, err := d.waitNotify("READY=1", 10*time.Second); err != nil {
		d.t.Fatal(err)
	}
}

// SIGHUP applies a valid file atomically, refuses a bad one as a whole
// (keeping what runs, counting the failure), and reports keys that need a
// restart. Interfaces matching a pattern are attached as they appear and
// released as they go.
func TestReloadAndInterfaceWatch(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	n := newNetns(t)
	n.veth("a0", "a1")
	n.veth("b0", "b1")
	keyDir := filepath.Join(t.TempDir(), "keys")
	keySock := filepath.Join(keyDir, "keys.sock")
	d := newDaemon(t, bins, n.name, "interfaces: [a0]\nkeys:\n  socket: "+keySock+"\n")
	d.env = []string{"WATCHDOG_USEC=1000000"}
	d.start()
	// The key socket's directory is created private, the socket 0600.
	for p, mode := range map[string]os.FileMode{keyDir: 0o700 | os.ModeDir, keySock: 0o600 | os.ModeSocket} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, mode)
		}
	}
	if _, err := d.waitNotify("WATCHDOG=1", 5*time.Second); err != nil {
		t.Errorf("watchdog not petted: %v", err)
	}
	hc := nsHTTP(t, n.name)
	if got := attachedNames(d.status()); !slices.Equal(got, []string{"a0"}) {
		t.Fatalf("attached %v, want [a0]", got)
	}

	// A valid change: one more interface, another log level, a pattern.
	keys := "keys:\n  socket: " + keySock + "\n"
	d.writeConfig("interfaces: [a0, b0, \"dyn*\"]\nlog:\n  level: debug\n" + keys)
	d.reload()
	st := d.status()
	if got := attachedNames(st); !slices.Equal(got, []string{"a0", "b0"}) || st.Config.Reloads != 1 || st.Config.ReloadFailures != 0 {
		t.Fatalf("after reload: attached %v, config %+v", got, st.Config)
	}

	// A bad file: nothing changes, the failure is counted and explained.
	d.writeConfig("interfaces: [a0]\nports:\n  ike: 70000\nbogus: 1\n" + keys)
	d.reload()
	st = d.status()
	if got := attachedNames(st); !slices.Equal(got, []string{"a0", "b0"}) {
		t.Errorf("a refused reload changed the interfaces: %v", got)
	}
	if st.Config.ReloadFailures != 1 || !strings.Contains(st.Config.LastError, "ports.ike: 70000 is not a UDP port") ||
		!strings.Contains(st.Config.LastError, "bogus: unknown key") {
		t.Errorf("config status after a bad reload: %+v", st.Config)
	}
	m := scrape(t, hc, "127.0.0.1:9717")
	if m["ikefrag_config_reload_failures_total"] != 1 || m["ikefrag_config_reloads_total"] != 1 || m["ikefrag_config_last_reload_successful"] != 0 {
		t.Errorf("reload metrics: failures %v, reloads %v, last ok %v", m["ikefrag_config_reload_failures_total"],
			m["ikefrag_config_reloads_total"], m["ikefrag_config_last_reload_successful"])
	}
	// The log reaches the test through a pipe; it may trail the metrics.
	if !waitFor(5*time.Second, func() bool {
		return strings.Contains(d.stderr.String(), `problem="ports.ike: 70000 is not a UDP port (1-65535)"`)
	}) {
		t.Errorf("the refusal is not logged with its reason:\n%s", d.stderr)
	}

	// A key the running BPF maps cannot change waits for a restart.
	d.writeConfig("interfaces: [a0, b0, \"dyn*\"]\nobserve:\n  train_map_size: 1024\n" + keys)
	d.reload()
	st = d.status()
	if !slices.Equal(st.Config.RestartPending, []string{"observe.train_map_size"}) || st.Config.LastError != "" {
		t.Errorf("restart pending %v, last error %q", st.Config.RestartPending, st.Config.LastError)
	}

	// Links that appear, go and come back.
	n.veth("dyn0", "px0")
	waitAttached := func(want []string) {
		t.Helper()
		var got []string
		if !waitFor(10*time.Second, func() bool { got = attachedNames(d.status()); return slices.Equal(got, want) }) {
			t.Fatalf("attached %v, want %v", got, want)
		}
	}
	waitAttached([]string{"a0", "b0", "dyn0"})
	n.ip("link", "del", "dyn0")
	waitAttached([]string{"a0", "b0"})
	n.veth("dyn0", "px0")
	waitAttached([]string{"a0", "b0", "dyn0"})
	var attach, release int
	for _, e := range d.events() {
		if e.Kind == control.EventInterface && e.Interface == "dyn0" {
			switch {
			case strings.HasPrefix(e.Message, "attached"):
				attach++
			case strings.HasPrefix(e.Message, "released"):
				release++
			}
		}
	}
	if attach != 2 || release != 1 {
		t.Errorf("dyn0: %d attach and %d release events, want 2 and 1", attach, release)
	}
	m = scrape(t, hc, "127.0.0.1:9717")
	if m[`ikefrag_interface_attached{interface="dyn0",mode="tcx"}`]+m[`ikefrag_interface_attached{interface="dyn0",mode="tc"}`] != 1 {
		t.Errorf("dyn0 is not reported attached in /metrics")
	}
}
