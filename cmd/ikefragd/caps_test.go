package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ikefrag/ikefrag/cmd/ikefragd/internal/config"
)

// --check-config reads the installed unit and its drop-ins as systemd
// merges them: a proxy on port 500 under a unit without
// CAP_NET_BIND_SERVICE is refused, naming the drop-in; with the shipped
// drop-in it passes; masking the drop-in (a link to /dev/null) refuses it
// again; an observer-only configuration does not care.
func TestCheckConfigUnitCapabilities(t *testing.T) {
	etc, lib := t.TempDir(), t.TempDir()
	t.Setenv("SYSTEMD_UNIT_PATH", etc+":"+lib)
	unit, err := os.ReadFile("../../systemd/ikefragd.service")
	if err != nil {
		t.Fatal(err)
	}
	dropin, err := os.ReadFile("../../systemd/ikefragd.service.d/proxy.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lib, "ikefragd.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	proxyCfg := filepath.Join(dir, "proxy.yaml")
	observeCfg := filepath.Join(dir, "observe.yaml")
	_ = os.WriteFile(proxyCfg, []byte("interfaces: [lo]\nproxy:\n  enabled: true\n  backends: [192.0.2.10]\n"), 0o644)
	_ = os.WriteFile(observeCfg, []byte("interfaces: [lo]\n"), 0o644)
	check := func(cfg string) (int, string) {
		var out, errb bytes.Buffer
		code := execute(context.Background(), []string{"--check-config", "--config", cfg}, &out, &errb)
		return code, errb.String()
	}

	if code, msg := check(proxyCfg); code != exitConfig || !strings.Contains(msg, "does not grant CAP_NET_BIND_SERVICE, which binding UDP port 500 needs") ||
		!strings.Contains(msg, proxyDropIn) {
		t.Errorf("proxy under the bare unit: exit %d, want 2 naming the drop-in:\n%s", code, msg)
	}
	if code, msg := check(observeCfg); code != exitOK {
		t.Errorf("observer under the bare unit: exit %d:\n%s", code, msg)
	}
	d := filepath.Join(lib, "ikefragd.service.d")
	_ = os.MkdirAll(d, 0o755)
	if err := os.WriteFile(filepath.Join(d, "proxy.conf"), dropin, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, msg := check(proxyCfg); code != exitOK {
		t.Errorf("proxy with the drop-in: exit %d:\n%s", code, msg)
	}
	// A pin the drop-in opens passes; one elsewhere in /sys is refused.
	pinCfg := func(pin string) string {
		f := filepath.Join(dir, "pin.yaml")
		_ = os.WriteFile(f, []byte("interfaces: [lo]\nproxy:\n  enabled: true\n  backends: [192.0.2.10]\n  state_file: /run/ikefrag/proxy-state.json\n  fast_path_pin: "+pin+"\n"), 0o644)
		return f
	}
	if code, msg := check(pinCfg("/sys/fs/bpf/ikefrag/fastpath")); code != exitOK {
		t.Errorf("pin below /sys/fs/bpf/ikefrag with the drop-in: exit %d:\n%s", code, msg)
	}
	if code, msg := check(pinCfg("/sys/fs/bpf/vpn")); code != exitConfig || !strings.Contains(msg, `proxy.fast_path_pin: "/sys/fs/bpf/vpn", but the installed unit`) ||
		!strings.Contains(msg, "/sys/fs/bpf/ikefrag/fastpath") {
		t.Errorf("pin outside the opened directory: exit %d, want 2 naming the directory:\n%s", code, msg)
	}
	// Masked from the higher-precedence directory.
	md := filepath.Join(etc, "ikefragd.service.d")
	_ = os.MkdirAll(md, 0o755)
	if err := os.Symlink(os.DevNull, filepath.Join(md, "proxy.conf")); err != nil {
		t.Fatal(err)
	}
	if code, msg := check(proxyCfg); code != exitConfig {
		t.Errorf("proxy with the drop-in masked: exit %d, want 2:\n%s", code, msg)
	}
	// An override that empties the list takes everything away again.
	_ = os.Remove(filepath.Join(md, "proxy.conf"))
	_ = os.WriteFile(filepath.Join(md, "zz-local.conf"), []byte("[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON\n"), 0o644)
	if code, _ := check(proxyCfg); code != exitConfig {
		t.Errorf("proxy with a local override resetting the bounding set: exit %d, want 2", code)
	}
}

// --check-config: control.group under a unit that does not make the
// daemon a member of the group is refused (the unit keeps CAP_CHOWN out);
// SupplementaryGroups= with the group, by name or id, passes.
func TestCheckConfigUnitGroup(t *testing.T) {
	grp, err := user.LookupGroup("nogroup")
	if err != nil {
		t.Skip("no group nogroup")
	}
	lib := t.TempDir()
	t.Setenv("SYSTEMD_UNIT_PATH", lib)
	unit, err := os.ReadFile("../../systemd/ikefragd.service")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(lib, "ikefragd.service"), unit, 0o644)
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(cfg, []byte("interfaces: [lo]\ncontrol:\n  group: nogroup\n"), 0o644)
	check := func() (int, string) {
		var out, errb bytes.Buffer
		code := execute(context.Background(), []string{"--check-config", "--config", cfg}, &out, &errb)
		return code, errb.String()
	}
	if code, msg := check(); code != exitConfig || !strings.Contains(msg, "control.group: \"nogroup\", but the installed unit") || !strings.Contains(msg, "SupplementaryGroups=nogroup") {
		t.Errorf("control.group without SupplementaryGroups: exit %d:\n%s", code, msg)
	}
	d := filepath.Join(lib, "ikefragd.service.d")
	_ = os.MkdirAll(d, 0o755)
	for _, v := range []string{"nogroup", grp.Gid} {
		_ = os.WriteFile(filepath.Join(d, "group.conf"), []byte("[Service]\nSupplementaryGroups=adm "+v+"\n"), 0o644)
		if code, msg := check(); code != exitOK {
			t.Errorf("SupplementaryGroups=adm %s: exit %d:\n%s", v, code, msg)
		}
	}
	// An empty assignment later resets the list.
	_ = os.WriteFile(filepath.Join(d, "zz.conf"), []byte("[Service]\nSupplementaryGroups=\n"), 0o644)
	if code, _ := check(); code != exitConfig {
		t.Errorf("after a reset: exit %d, want 2", code)
	}
}

// The capability check names exactly the missing ones, and the proxy's
// only when it binds a port below ip_unprivileged_port_start.
func TestCapsError(t *testing.T) {
	err := capsError([]string{"CAP_PERFMON"}, 0)
	if !strings.Contains(err.Error(), "ikefragd lacks CAP_PERFMON: it needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON") || strings.Contains(err.Error(), "BIND") {
		t.Errorf("%v", err)
	}
	err = capsError([]string{"CAP_NET_BIND_SERVICE"}, 500)
	if !strings.Contains(err.Error(), "CAP_NET_BIND_SERVICE for the proxy to bind UDP port 500") || !strings.Contains(err.Error(), proxyDropIn) {
		t.Errorf("%v", err)
	}
	var c config.Config
	if p := proxyPrivilegedPort(c); p != 0 {
		t.Errorf("proxy off: privileged port %d", p)
	}
	c.Proxy.Enabled = true
	if p := proxyPrivilegedPort(c); p != 500 {
		t.Errorf("defaults: privileged port %d, want 500", p)
	}
	c.Proxy.IKEPort, c.Proxy.NATTPort = 1500, 14500
	if p := proxyPrivilegedPort(c); p != 0 {
		t.Errorf("ports 1500/14500: privileged port %d, want 0", p)
	}
	c.Proxy.Listen = []string{"[::]:400"}
	if p := proxyPrivilegedPort(c); p != 400 {
		t.Errorf("listen [::]:400: privileged port %d, want 400", p)
	}
}

// A bind refused with EACCES — as net reports it, wrapped in *net.OpError
// and *os.SyscallError — names CAP_NET_BIND_SERVICE and the drop-in; other
// errors get no such hint.
func TestBindHint(t *testing.T) {
	eacces := &net.OpError{Op: "listen", Net: "udp4", Err: os.NewSyscallError("bind", syscall.EACCES)}
	if h := bindHint(fmt.Errorf("proxy: %w", eacces)); !strings.Contains(h, "CAP_NET_BIND_SERVICE") || !strings.Contains(h, proxyDropIn) {
		t.Errorf("EACCES: %q", h)
	}
	inUse := &net.OpError{Op: "listen", Net: "udp4", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	if h := bindHint(inUse); h != "" {
		t.Errorf("EADDRINUSE: %q", h)
	}
}
