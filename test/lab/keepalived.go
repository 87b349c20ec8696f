package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// RequireKeepalived skips the test unless keepalived is installed (Debian:
// apt-get install keepalived), on top of Require.
func RequireKeepalived(t testing.TB) {
	t.Helper()
	Require(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("lab: keepalived not installed")
	}
}

// StartKeepalived runs keepalived (VRRP only) in the node with the given
// configuration: its own configuration, pid files and log in the lab
// directory, so several run side by side on one host. It is stopped in
// t.Cleanup like any Process; KillAll kills it hard.
func (n *Node) StartKeepalived(t testing.TB, conf string) *Process {
	t.Helper()
	RequireKeepalived(t)
	dir := filepath.Join(n.lab.Dir, "keepalived-"+n.Role)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		t.Fatal(err)
	}
	return n.Start(t, "", bin, "--dont-fork", "--log-console", "--log-detail", "--vrrp",
		"--use-file", path,
		"--pid", filepath.Join(dir, "keepalived.pid"),
		"--vrrp_pid", filepath.Join(dir, "vrrp.pid"),
		"--checkers_pid", filepath.Join(dir, "checkers.pid"))
}

// KillAll kills every process in the node's namespace with SIGKILL (a box
// losing power, as far as its programs go) and returns how many it
// signalled.
func (n *Node) KillAll() (int, error) {
	out, err := run(context.Background(), "ip", "netns", "pids", n.Name)
	if err != nil {
		return 0, err
	}
	k := 0
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				k++
			}
		}
	}
	return k, nil
}

// SetLinks sets every link of the node (its ends of the veth pairs) up or
// down. Up also puts back the node's routes, which the kernel removed with
// the links (as a booting box's network configuration would).
func (n *Node) SetLinks(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	for _, k := range n.lab.links {
		if k.A != n && k.B != n {
			continue
		}
		if _, err := run(context.Background(), "ip", "-n", n.Name, "link", "set", "dev", k.ifname(n), state); err != nil {
			return fmt.Errorf("lab: %s %s: %w", k.ifname(n), state, err)
		}
	}
	if !up {
		return nil
	}
	var routes strings.Builder
	for _, line := range strings.Split(n.lab.batch(n), "\n") {
		if r, ok := strings.CutPrefix(line, "route add "); ok {
			fmt.Fprintf(&routes, "route replace %s\n", r)
		}
	}
	if routes.Len() == 0 {
		return nil
	}
	_, err := runIn(context.Background(), nil, routes.String(), "ip", "-n", n.Name, "-batch", "-")
	return err
}

// DelAddr removes an address from whichever interface of the node holds
// it (as a box that restarts comes up without keepalived's virtual
// addresses); an address it does not hold is no error.
func (n *Node) DelAddr(a netip.Prefix) error {
	out, err := n.Run(context.Background(), "ip", "-o", "addr", "show")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" || f[i] == "inet6" {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil && p.Addr() == a.Addr() {
					dev, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
					if _, err := run(context.Background(), "ip", "-n", n.Name, "addr", "del", f[i+1], "dev", dev); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// Interface returns the name of the node's end of its link to peer ("" if
// they share none).
func (n *Node) Interface(peer *Node) string {
	if k := n.lab.Link(n, peer); k != nil {
		return k.ifname(n)
	}
	return ""
}

// HasAddr reports whether the node holds an address on any interface.
func (n *Node) HasAddr(a fmt.Stringer) (bool, error) {
	out, err := n.Run(context.Background(), "ip", "-o", "addr", "show")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if (f[i] == "inet" || f[i] == "inet6") && strings.SplitN(f[i+1], "/", 2)[0] == a.String() {
				return true, nil
			}
		}
	}
	return false, nil
}
