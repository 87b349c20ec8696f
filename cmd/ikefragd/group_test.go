package main

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// systemUser creates a system group and a system user in it (and, with
// member false, a user outside it), removed at cleanup.
func systemUser(t *testing.T, name, group string) {
	t.Helper()
	for _, tool := range []string{"useradd", "userdel", "groupadd", "groupdel", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	if group != "" {
		if _, err := user.LookupGroup(group); err != nil {
			if out, err := exec.Command("groupadd", "--system", group).CombinedOutput(); err != nil {
				t.Fatalf("groupadd %s: %v %s", group, err, out)
			}
			t.Cleanup(func() { _ = exec.Command("groupdel", group).Run() })
		}
	}
	args := []string{"--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"}
	if group != "" {
		args = append(args, "--groups", group)
	}
	if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v %s", name, err, out)
	}
	// userdel removes the user's own group too.
	t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
}

// asUser runs ikefragctl as a user with its groups (setpriv), returning
// stdout+stderr and the exit status.
func asUser(t *testing.T, bins binaries, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + name, "--regid=" + name, "--init-groups", "--", bins.ctl}, args...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// control.group works end to end, as under the unit: systemd creates the
// runtime directory root:root 0750 (RuntimeDirectory=, $RUNTIME_DIRECTORY)
// and runs the daemon with the unit's capabilities only (no CAP_CHOWN) and
// the group in SupplementaryGroups=; the daemon gives the directory and the
// socket to control.group, so a real member of the group (not root)
// reaches the 0660 socket and a non-member does not.
// A member's 32 event followers do not lock root out: it may hold 16, and
// root's status still answers.
func TestControlGroupMember(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	suffix := strconv.Itoa(os.Getpid() % 100000)
	group, member, other := "ikfdg"+suffix, "ikfdm"+suffix, "ikfdo"+suffix
	systemUser(t, member, group)
	systemUser(t, other, "")

	base, err := os.MkdirTemp("/run", "ikfd-group-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	_ = os.Chmod(base, 0o755) // like /run
	rt := filepath.Join(base, "ikefrag")
	if err := os.Mkdir(rt, 0o750); err != nil { // like RuntimeDirectoryMode=0750
		t.Fatal(err)
	}
	n := newNetns(t)
	n.veth("g0", "g1")
	d := newDaemon(t, bins, n.name, "")
	d.socket = filepath.Join(rt, "control.sock")
	cfg := "interfaces: [g0]\nmetrics:\n  listen: \"\"\ncontrol:\n  socket: " + d.socket + "\n  group: " + group + "\n"
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d.env = []string{"RUNTIME_DIRECTORY=" + rt}
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	// As under the unit: only its capabilities, so no CAP_CHOWN. Without
	// the group among its supplementary groups the daemon cannot give the
	// socket to it, and says what to add to the unit.
	unitCaps := []string{"setpriv", "--bounding-set=-all,+bpf,+net_admin,+perfmon", "--inh-caps=-all"}
	d.wrap = append(append([]string{}, unitCaps...), "--")
	if code, out := d.runToExit(60 * time.Second); code != exitFailure || !strings.Contains(out, "SupplementaryGroups="+group) {
		t.Errorf("control.group without membership or CAP_CHOWN: exit %d, want 1 naming SupplementaryGroups=%s:\n%s", code, group, out)
	}
	// SupplementaryGroups= of the unit.
	d.wrap = append(append([]string{}, unitCaps...), "--groups="+g.Gid, "--")
	d.start()

	for p, mode := range map[string]os.FileMode{rt: os.ModeDir | 0o750, d.socket: os.ModeSocket | 0o660} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || strconv.Itoa(int(st.Gid)) != g.Gid || st.Uid != 0 {
			t.Errorf("%s: %v %d:%d, want %v root:%s", p, fi.Mode(), st.Uid, st.Gid, mode, g.Gid)
		}
	}
	if out, code := asUser(t, bins, member, "status", "--socket", d.socket); code != 0 || !strings.Contains(out, "healthy") {
		t.Errorf("status as group member %s: exit %d\n%s", member, code, out)
	}
	if out, code := asUser(t, bins, other, "status", "--socket", d.socket); code != 2 || !strings.Contains(out, "permission denied") {
		t.Errorf("status as non-member %s: exit %d, want 2 with permission denied\n%s", other, code, out)
	}

	// 32 followers of the member. Each is waited for by one goroutine;
	// cleanup kills those still running and waits for that goroutine.
	type follower struct {
		cmd  *exec.Cmd
		out  *syncBuffer
		done chan struct{}
	}
	var fs []*follower
	t.Cleanup(func() {
		for _, f := range fs {
			_ = f.cmd.Process.Kill()
			<-f.done
		}
	})
	exited := make(chan int, 32)
	for i := range 32 {
		cmd := exec.Command("setpriv", "--reuid="+member, "--regid="+member, "--init-groups", "--", bins.ctl, "events", "--follow", "--socket", d.socket)
		f := &follower{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = f.out, f.out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
		go func() { _ = cmd.Wait(); close(f.done); exited <- i }()
	}
	// The refused ones exit; wait until 16 have.
	var refusedOut []string
	for len(refusedOut) < 16 {
		select {
		case i := <-exited:
			refusedOut = append(refusedOut, fs[i].out.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of 32 followers exited, want 16 refused: %q", len(refusedOut), refusedOut)
		}
	}
	for _, o := range refusedOut {
		if !strings.Contains(o, "too many connections from uid") {
			t.Errorf("a refused follower says: %s", o)
		}
	}
	if out, code := d.ctl("status"); code != 0 {
		t.Errorf("root's status with 16 followers of %s open: exit %d\n%s", member, code, out)
	}
	select {
	case i := <-exited:
		t.Errorf("a 17th follower ended: %s", fs[i].out.String())
	default:
	}
	if st := d.status(); !st.Healthy {
		t.Errorf("status: %+v", st)
	}
}
