package main

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/cmd/internal/control"

	"github.com/ikefrag/ikefrag/cmd/ikefragd/internal/config"
)

// Capabilities the daemon needs (numbers from linux/capability.h).
const (
	capNetBindService = 10 // the proxy's UDP 500 and 4500
	capNetAdmin       = 12 // tc programs: load and attach (tcx, clsact)
	capPerfmon        = 38 // the verifier's pointer arithmetic, kfree_skb tracing
	capBPF            = 39 // programs and maps
)

var capNames = map[int]string{
	capNetBindService: "CAP_NET_BIND_SERVICE", capNetAdmin: "CAP_NET_ADMIN",
	capPerfmon: "CAP_PERFMON", capBPF: "CAP_BPF",
}

// proxyDropIn is the drop-in that grants the proxy its capability; the
// package and make install put it next to the unit.
const proxyDropIn = "ikefragd.service.d/proxy.conf"

// effectiveCaps returns this process's effective capability set.
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

// proxyPrivilegedPort returns the lowest port the proxy binds when it is
// below the kernel's first unprivileged port (so binding it needs
// CAP_NET_BIND_SERVICE), else 0.
func proxyPrivilegedPort(c config.Config) int {
	if !c.Proxy.Enabled {
		return 0
	}
	ike, natt := c.Proxy.IKEPort, c.Proxy.NATTPort
	if ike <= 0 {
		ike = 500
	}
	if natt <= 0 {
		natt = 4500
	}
	low := min(ike, natt)
	for _, l := range c.Proxy.Listen {
		if ap, err := netip.ParseAddrPort(l); err == nil && int(ap.Port()) < low {
			low = int(ap.Port())
		}
	}
	// Per network namespace; 1024 unless an administrator lowered it.
	start := 1024
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			start = n
		}
	}
	if low < start {
		return low
	}
	return 0
}

// missingCaps names the capabilities the configuration needs that this
// process does not have, and the port that makes the proxy need one.
func missingCaps(c config.Config) (missing []string, port int) {
	have, err := effectiveCaps()
	if err != nil {
		return nil, 0 // cannot tell: the kernel's refusals will say
	}
	need := []int{capBPF, capNetAdmin, capPerfmon}
	if port = proxyPrivilegedPort(c); port > 0 {
		need = append(need, capNetBindService)
	}
	for _, n := range need {
		if have&(1<<n) == 0 {
			missing = append(missing, capNames[n])
		}
	}
	return missing, port
}

// capsError explains missing capabilities: which are missing, what each
// is for, and where they come from.
func capsError(missing []string, port int) error {
	msg := fmt.Sprintf("ikefragd lacks %s: it needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON to load and attach its BPF programs", strings.Join(missing, ", "))
	if port > 0 {
		msg += fmt.Sprintf(", and CAP_NET_BIND_SERVICE for the proxy to bind UDP port %d", port)
	}
	msg += "; run it as root, or through the shipped unit (which grants them"
	if port > 0 {
		msg += "; CAP_NET_BIND_SERVICE through " + proxyDropIn
	}
	return fmt.Errorf("%s)", msg)
}

// unitDirs are the directories systemd reads units from, highest
// precedence first; SYSTEMD_UNIT_PATH replaces them as it does for
// systemd (a trailing ":" appends the defaults).
func unitDirs() []string {
	defaults := []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
		"/usr/lib/systemd/system", "/lib/systemd/system"}
	p, ok := os.LookupEnv("SYSTEMD_UNIT_PATH")
	if !ok || p == "" {
		return defaults
	}
	var dirs []string
	for _, d := range strings.Split(strings.TrimSuffix(p, ":"), ":") {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	if strings.HasSuffix(p, ":") {
		dirs = append(dirs, defaults...)
	}
	return dirs
}

// unitGrantsBindService reads the installed ikefragd.service and its
// drop-ins as systemd merges them (the unit from the first directory that
// has it; drop-ins from all, a name in a higher-precedence directory
// hiding the same name below, applied in name order; a drop-in linked to
// /dev/null masks it) and says whether CapabilityBoundingSet leaves
// CAP_NET_BIND_SERVICE in. installed is false when no unit is found; files
// lists what was read.
func unitGrantsBindService() (grants, installed bool, files []string) {
	files = unitFiles()
	if files == nil {
		return false, false, nil
	}
	grants = true // no CapabilityBoundingSet= at all: every capability
	for _, f := range files {
		for _, v := range serviceValues(f, "CapabilityBoundingSet") {
			v = strings.TrimSpace(v)
			switch {
			case v == "":
				grants = false // an empty assignment resets the list
			case strings.HasPrefix(v, "~"):
				grants = grants && !hasWord(v[1:], "CAP_NET_BIND_SERVICE")
			default:
				// The first positive list replaces "every capability";
				// later ones add to it.
				if f == files[0] {
					grants = hasWord(v, "CAP_NET_BIND_SERVICE")
				} else {
					grants = grants || hasWord(v, "CAP_NET_BIND_SERVICE")
				}
			}
		}
	}
	return grants, true, files
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if f == w {
			return true
		}
	}
	return false
}

// serviceValues returns the values of key in the [Service] section of a
// unit file, in order.
func serviceValues(path, key string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[':
			section = l
		case section == "[Service]":
			if k, v, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
				out = append(out, v)
			}
		}
	}
	return out
}

// checkUnit is --check-config's look at how the installed unit would run
// this configuration: a proxy on a privileged port needs the drop-in, and
// control.group needs the group among the unit's SupplementaryGroups= (the
// daemon gives the socket to a group only as a member: the unit keeps
// CAP_CHOWN out).
func checkUnit(c config.Config) config.Problems {
	var ps config.Problems
	if port := proxyPrivilegedPort(c); port > 0 {
		grants, installed, files := unitGrantsBindService()
		if installed && !grants {
			ps = append(ps, config.Problem{Key: "proxy.enabled", Msg: fmt.Sprintf(
				"true, but the installed unit (%s) does not grant CAP_NET_BIND_SERVICE, which binding UDP port %d needs: install the drop-in %s next to it (make install and the package ship it), then systemctl daemon-reload",
				strings.Join(files, ", "), port, proxyDropIn)})
		}
	}
	if pin := c.Proxy.FastPathPin; c.Proxy.Enabled && pin != "" {
		if files, ro := unitLeavesReadOnly(pin); ro {
			ps = append(ps, config.Problem{Key: "proxy.fast_path_pin", Msg: fmt.Sprintf(
				"%q, but the installed unit (%s) leaves it read-only: the drop-in %s opens only %s to the daemon; pin below it, e.g. %s/fastpath",
				pin, strings.Join(files, ", "), proxyDropIn, unitPinDir, unitPinDir)})
		}
	}
	if g := c.Control.Group; g != "" {
		groups, installed, files := unitSupplementaryGroups()
		if installed && !slices.Contains(groups, g) && !sameGroup(groups, g) {
			ps = append(ps, config.Problem{Key: "control.group", Msg: fmt.Sprintf(
				"%q, but the installed unit (%s) does not make the daemon a member of it, so it cannot give the socket to that group (the unit keeps CAP_CHOWN out): systemctl edit ikefragd, add SupplementaryGroups=%s under [Service]",
				g, strings.Join(files, ", "), g)})
		}
	}
	return ps
}

// unitPinDir is the directory of the BPF file system the proxy drop-in
// makes writable for proxy.fast_path_pin.
const unitPinDir = "/sys/fs/bpf/ikefrag"

// unitLeavesReadOnly says whether the installed unit makes path read-only
// to the daemon: it sets ProtectSystem=strict or ProtectKernelTunables=yes
// (each makes /sys read-only) and no ReadWritePaths= entry below a mount
// point holds path. An entry naming /sys/fs/bpf itself, the mount point,
// does not count: systemd keeps that mount read-only.
func unitLeavesReadOnly(path string) (files []string, readOnly bool) {
	files = unitFiles()
	if files == nil {
		return nil, false
	}
	strict := false
	var rw []string
	for _, f := range files {
		for _, v := range serviceValues(f, "ProtectSystem") {
			strict = strings.TrimSpace(v) == "strict"
		}
		for _, v := range serviceValues(f, "ProtectKernelTunables") {
			if b := strings.TrimSpace(v); b == "yes" || b == "true" || b == "on" || b == "1" {
				strict = true
			}
		}
		for _, v := range serviceValues(f, "ReadWritePaths") {
			if strings.TrimSpace(v) == "" {
				rw = nil
				continue
			}
			for _, p := range strings.Fields(v) {
				rw = append(rw, filepath.Clean(strings.TrimLeft(p, "-+")))
			}
		}
	}
	if !strict {
		return files, false
	}
	path = filepath.Clean(path)
	for _, p := range rw {
		if p == "/sys/fs/bpf" || p == "/sys" || p == "/" {
			continue
		}
		if path == p || strings.HasPrefix(path, p+"/") {
			return files, false
		}
	}
	return files, true
}

// sameGroup: one of groups names g by the other spelling (name or id).
func sameGroup(groups []string, g string) bool {
	want, err := control.LookupGroup(g)
	if err != nil {
		return false
	}
	for _, x := range groups {
		if id, err := control.LookupGroup(x); err == nil && id == want {
			return true
		}
	}
	return false
}

// unitFiles returns the installed unit and its drop-ins in the order
// systemd applies them (see unitGrantsBindService); nil when no unit is
// installed.
func unitFiles() []string {
	dirs := unitDirs()
	var unit string
	for _, d := range dirs {
		if p := filepath.Join(d, "ikefragd.service"); fileExists(p) {
			unit = p
			break
		}
	}
	if unit == "" {
		return nil
	}
	dropins := map[string]string{}
	for i := len(dirs) - 1; i >= 0; i-- {
		ms, _ := filepath.Glob(filepath.Join(dirs[i], "ikefragd.service.d", "*.conf"))
		for _, m := range ms {
			dropins[filepath.Base(m)] = m
		}
	}
	names := make([]string, 0, len(dropins))
	for n := range dropins {
		names = append(names, n)
	}
	sort.Strings(names)
	files := []string{unit}
	for _, n := range names {
		if t, err := filepath.EvalSymlinks(dropins[n]); err == nil && t == os.DevNull {
			continue
		}
		files = append(files, dropins[n])
	}
	return files
}

// unitSupplementaryGroups merges SupplementaryGroups= of the installed
// unit and drop-ins (lists add up; an empty assignment resets).
func unitSupplementaryGroups() (groups []string, installed bool, files []string) {
	files = unitFiles()
	if files == nil {
		return nil, false, nil
	}
	for _, f := range files {
		for _, v := range serviceValues(f, "SupplementaryGroups") {
			if strings.TrimSpace(v) == "" {
				groups = nil
				continue
			}
			groups = append(groups, strings.Fields(v)...)
		}
	}
	return groups, true, files
}

// dropBindService gives up CAP_NET_BIND_SERVICE when the configuration
// binds no privileged port: the unit's drop-in grants it for the proxy,
// and a daemon that only observes then holds it only until this runs.
// Capabilities belong to threads, so every thread of the process drops
// it; that needs a binary without cgo (the Makefile builds with
// CGO_ENABLED=0), else it stays, and the error says so. Removed from the
// permitted set, it cannot come back: enabling the proxy takes a restart,
// as every proxy setting does.
func dropBindService(c config.Config) (dropped bool, err error) {
	if proxyPrivilegedPort(c) != 0 {
		return false, nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, err
	}
	bit := uint32(1) << capNetBindService
	if (data[0].Effective|data[0].Permitted|data[0].Inheritable)&bit == 0 {
		return false, nil
	}
	data[0].Effective &^= bit
	data[0].Permitted &^= bit
	data[0].Inheritable &^= bit
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	if errno != 0 {
		return false, fmt.Errorf("drop CAP_NET_BIND_SERVICE: %w", errno)
	}
	return true, nil
}
