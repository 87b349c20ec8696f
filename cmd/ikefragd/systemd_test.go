package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/netcfg"
)

const unitFile = "../../systemd/ikefragd.service"

// unitValues returns the values of key in the unit (every occurrence).
func unitValues(t *testing.T, text, key string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// The unit passes systemd-analyze verify without a single warning, and
// says what the daemon needs.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd; make deps installs it)")
	}
	bins := buildBinaries(t)
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	want := map[string]string{
		"Type": "notify", "WatchdogSec": "30s", "Restart": "on-failure", "RestartPreventExitStatus": "2",
		"RuntimeDirectory": "ikefrag", "ConfigurationDirectory": "ikefrag", "NoNewPrivileges": "yes",
		"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"CapabilityBoundingSet": "CAP_BPF CAP_NET_ADMIN CAP_PERFMON", "ExecReload": "/bin/kill -HUP $MAINPID",
		"ExecStart": "/usr/local/sbin/ikefragd --config /etc/ikefrag/ikefragd.yaml",
	}
	for k, v := range want {
		if got := unitValues(t, text, k); !slices.Equal(got, []string{v}) {
			t.Errorf("%s=%v, want %q", k, got, v)
		}
	}
	// verify checks that ExecStart exists: point it at the built binary.
	dir := t.TempDir()
	unit := filepath.Join(dir, "ikefragd.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(text, "/usr/local/sbin/ikefragd", bins.daemon)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// A broken copy must be caught, or the check above proves nothing.
	bad := filepath.Join(dir, "bad", "ikefragd.service")
	_ = os.Mkdir(filepath.Dir(bad), 0o755)
	_ = os.WriteFile(bad, []byte(strings.ReplaceAll(strings.ReplaceAll(text, "/usr/local/sbin/ikefragd", bins.daemon), "ProtectHome=", "ProtectHom=")), 0o644)
	if out, _ := exec.Command(analyze, "verify", "--man=no", bad).CombinedOutput(); !bytes.Contains(out, []byte("ProtectHom")) {
		t.Errorf("systemd-analyze verify does not report an unknown key: %s", out)
	}
}

// make install puts binaries, unit and configuration in place, points the
// unit at PREFIX and keeps an edited configuration.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	dest := t.TempDir()
	install := func() string {
		t.Helper()
		cmd := exec.Command("make", "-s", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
		return string(out)
	}
	install()
	for path, mode := range map[string]os.FileMode{
		"usr/sbin/ikefragd": 0o755, "usr/bin/ikefragctl": 0o755,
		"etc/ikefrag/ikefragd.yaml": 0o644, "etc/systemd/system/ikefragd.service": 0o644,
		"etc/systemd/system/ikefragd.service.d/proxy.conf": 0o644,
	} {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/ikefragd.service"))
	if !bytes.Contains(unit, []byte("ExecStart=/usr/sbin/ikefragd --config /etc/ikefrag/ikefragd.yaml")) {
		t.Errorf("installed unit does not start /usr/sbin/ikefragd:\n%s", unit)
	}
	cfg := filepath.Join(dest, "etc/ikefrag/ikefragd.yaml")
	if err := os.WriteFile(cfg, []byte("interfaces: [lo]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := install(); !strings.Contains(out, "kept") {
		t.Errorf("second install did not say it kept the configuration: %s", out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "interfaces: [lo]\n" {
		t.Errorf("make install overwrote an edited configuration")
	}
	if _, err := os.Stat(cfg + ".dist"); err != nil {
		t.Errorf("no ikefragd.yaml.dist next to the kept file: %v", err)
	}
}

// The capabilities the unit grants are the ones the daemon needs: with
// exactly CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON it runs fully (no
// CAP_SYS_ADMIN, CAP_NET_RAW or CAP_SYS_RESOURCE); without any one of the
// three it cannot observe and says which capabilities it needs. CAP_PERFMON
// is needed by the tc programs too: the verifier allows their packet
// pointer arithmetic only to perfmon-capable loaders.
func TestCapabilities(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed (util-linux)")
	}
	bins := buildBinaries(t)
	t.Parallel()
	n := newNetns(t)
	n.veth("c0", "c1")
	const needs = "it needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
	cases := []struct {
		caps       string
		ok, drops  bool
		errContain string
		proxy      bool
		tc         bool // legacy tc filters, which the daemon removes itself on stop
	}{
		{"+bpf,+net_admin,+perfmon", true, true, "", false, false},
		// Without CAP_SYS_ADMIN the daemon cannot enter a network
		// namespace, not even its own: removing its filters must not try.
		{"+bpf,+net_admin,+perfmon", true, true, "", false, true},
		// What the unit with its proxy drop-in grants, to a daemon that
		// only observes: it gives CAP_NET_BIND_SERVICE up, in every thread.
		{"+bpf,+net_admin,+perfmon,+net_bind_service", true, true, "", false, false},
		// The unit with its drop-in, running the proxy: its ESP fast path
		// loads too (it once entered its own network namespace to open a
		// netlink socket, which needs CAP_SYS_ADMIN, and fell back to
		// relaying ESP in user space under the unit).
		{"+bpf,+net_admin,+perfmon,+net_bind_service", true, true, "", true, false},
		{"+bpf,+net_admin", false, false, "ikefragd lacks CAP_PERFMON: " + needs, false, false},
		{"+net_admin,+perfmon", false, false, "ikefragd lacks CAP_BPF: " + needs, false, false},
		{"+bpf,+perfmon", false, false, "ikefragd lacks CAP_NET_ADMIN: " + needs, false, false},
		// The proxy on UDP 500 needs CAP_NET_BIND_SERVICE, and says where
		// the unit grants it.
		{"+bpf,+net_admin,+perfmon", false, false, "ikefragd lacks CAP_NET_BIND_SERVICE: " + needs + " to load and attach its BPF programs, and CAP_NET_BIND_SERVICE for the proxy to bind UDP port 500", true, false},
		// Not root at all: every capability named, no developer hint.
		{"nonroot", false, false, "ikefragd lacks CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON: " + needs, false, false},
	}
	for _, c := range cases {
		name := c.caps
		if c.proxy {
			name += ",proxy"
		}
		if c.tc {
			name += ",tc"
		}
		t.Run(name, func(t *testing.T) {
			yml := "interfaces: [c0]\nmetrics:\n  listen: \"\"\n"
			if c.tc {
				yml += "observe:\n  attach_mode: tc\n"
			}
			if c.proxy {
				yml += "proxy:\n  enabled: true\n  backends: [192.0.2.10]\n"
			}
			d := newDaemon(t, bins, n.name, yml)
			// For root, the bounding set is what an exec keeps: this is
			// what CapabilityBoundingSet= does.
			d.wrap = []string{"setpriv", "--bounding-set=-all," + c.caps, "--inh-caps=-all", "--"}
			if c.caps == "nonroot" {
				// nobody reads the configuration through the opened-up
				// directory.
				_ = os.Chmod(d.dir, 0o755)
				d.wrap = []string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"}
			}
			if !c.ok {
				code, stderr := d.runToExit(60 * time.Second)
				if code != exitFailure || !strings.Contains(stderr, c.errContain) || strings.Contains(stderr, "MEMLOCK") {
					t.Errorf("exit %d, want 1 naming %q (and no MEMLOCK hint); stderr:\n%s", code, c.errContain, stderr)
				}
				return
			}
			d.start()
			st := d.status()
			if got := attachedNames(st); !slices.Equal(got, []string{"c0"}) || st.DropsEnabled != c.drops || !st.Healthy {
				t.Errorf("attached %v, drop reasons %v (want %v), healthy %v", got, st.DropsEnabled, c.drops, st.Healthy)
			}
			want := wantCapMask(c.caps)
			if !c.proxy {
				// an observer gives the capability up
				want &^= 1 << capNetBindService
			}
			if c.proxy {
				if out := d.stderr.String(); !strings.Contains(out, "proxy: ESP fast path on") {
					t.Errorf("the proxy's ESP fast path did not load with the unit's capabilities:\n%s", out)
				}
			}
			tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", d.cmd.Process.Pid))
			for _, task := range tasks {
				if capEff := procCapEff(t, task); capEff != want {
					t.Errorf("%s: CapEff %#x, want %#x", task, capEff, want)
				}
			}
			var evs []control.Event = d.events()
			if len(evs) == 0 {
				t.Errorf("no events")
			}
			if c.tc {
				d.stop()
				var left []string
				inNetns(t, n.name, func() error {
					l, err := netlink.LinkByName("c0")
					if err != nil {
						return err
					}
					for _, dir := range []netcfg.Dir{netcfg.Ingress, netcfg.Egress} {
						names, _ := netcfg.BPFFilters(l, dir)
						left = append(left, names...)
					}
					return nil
				})
				if len(left) != 0 || strings.Contains(d.stderr.String(), "detaching the tc programs failed") {
					t.Errorf("filters left after a clean stop: %v\n%s", left, d.stderr)
				}
			}
		})
	}
}

func procCapEff(t *testing.T, proc string) uint64 {
	t.Helper()
	b, err := os.ReadFile(proc + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			var x uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &x)
			return x
		}
	}
	t.Fatal("no CapEff")
	return 0
}

// wantCapMask turns "+bpf,+net_admin" into a capability bit mask.
func wantCapMask(caps string) uint64 {
	bits := map[string]uint{"net_bind_service": 10, "net_admin": 12, "net_raw": 13, "perfmon": 38, "bpf": 39}
	var m uint64
	for _, c := range strings.Split(caps, ",") {
		m |= 1 << bits[strings.TrimPrefix(c, "+")]
	}
	return m
}
