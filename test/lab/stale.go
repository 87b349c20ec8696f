package lab

// Tearing a lab down, and sweeping what a killed test run left behind.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// destroy removes everything New created; it runs from t.Cleanup after the
// charons and captures (registered later) are gone.
func (l *Lab) destroy() {
	ctx := context.Background()
	for i := len(l.nodes) - 1; i >= 0; i-- {
		removeNS(ctx, l.nodes[i].Name)
	}
	_ = os.Remove(filepath.Join(ownersDir, l.Prefix))
	if keepFiles() {
		l.t.Logf("lab: kept %s", l.Dir)
		return
	}
	_ = os.RemoveAll(l.Dir)
}

// removeNS kills what still runs in one of the harness's namespaces (only
// processes the lab started can be there) and deletes it.
func removeNS(ctx context.Context, name string) {
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
		return
	}
	if out, err := run(ctx, "ip", "netns", "pids", name); err == nil {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	// A namespace whose last process is still exiting can be busy briefly.
	for i := 0; i < 20; i++ {
		if _, err := run(ctx, "ip", "netns", "delete", name); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeOwner records which process owns a lab: "<pid> <start time> <dir>".
func writeOwner(prefix, dir string) error {
	if err := os.MkdirAll(ownersDir, 0o700); err != nil {
		return err
	}
	st, err := procStart(os.Getpid())
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(ownersDir, prefix), fmt.Appendf(nil, "%d %d %s\n", os.Getpid(), st, dir), 0o600)
}

// procStart is the start time of a process in clock ticks since boot; with
// the pid it identifies the process even after pid reuse.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("lab: malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// field 22 of stat; f[0] is field 3
	if len(f) < 20 {
		return 0, errors.New("lab: short /proc stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ownerAlive reports whether the process that created a lab still runs.
func ownerAlive(prefix string) (alive bool, dir string) {
	b, err := os.ReadFile(filepath.Join(ownersDir, prefix))
	if err != nil {
		return false, ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return false, ""
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return false, f[2]
	}
	now, err := procStart(pid)
	return err == nil && now == start, f[2]
}

// sweepStale removes namespaces and files left by lab runs whose process is
// gone (a crash, or a test binary killed on timeout). Labs of live processes,
// such as other packages' tests running at the same time, are left alone.
func sweepStale(t testing.TB) {
	ctx := context.Background()
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return
	}
	prefixes := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !staleNS.MatchString(f[0]) {
			continue
		}
		prefix := f[0][:strings.LastIndexByte(f[0], '-')]
		alive, _ := ownerAlive(prefix)
		if alive {
			continue
		}
		removeNS(ctx, f[0])
		prefixes[prefix] = true
	}
	// owner records without namespaces, e.g. a crash right after writing one
	entries, _ := os.ReadDir(ownersDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), nsPrefix) {
			if alive, _ := ownerAlive(e.Name()); !alive {
				prefixes[e.Name()] = true
			}
		}
	}
	for prefix := range prefixes {
		_, dir := ownerAlive(prefix)
		if dir != "" && strings.HasPrefix(filepath.Base(dir), nsPrefix) {
			_ = os.RemoveAll(dir)
		}
		_ = os.Remove(filepath.Join(ownersDir, prefix))
		t.Logf("lab: removed stale lab %s", prefix)
	}
}
