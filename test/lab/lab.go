// Package lab builds throwaway networks of Linux network namespaces with real
// strongSwan peers, for tests that need live IKEv2 traffic: a client (cli), a
// router (mid) that can shrink the MTU and drop IP fragments, an optional
// second router (gw) for a proxy, and a responder (srv).
//
// Everything a lab creates (namespaces, veth pairs, charon processes,
// captures, files) belongs to one test and is removed in t.Cleanup, also when
// the test fails. Addresses come from 10.99.0.0/16 and fd00:99::/32 and exist
// only inside the lab's namespaces, so no packet leaves them.
//
// Tests call Require first; it skips unless the process is root and the
// tools are installed.
package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CharonBin is strongSwan's IKE daemon as Debian installs it.
const CharonBin = "/usr/lib/ipsec/charon"

// libipsecPlugin provides userspace ESP; the labs depend on it because the
// development kernels are built without CONFIG_INET_ESP.
const libipsecPlugin = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"

// commandTimeout bounds the helper commands (ip, nft, ethtool, swanctl
// loads), which finish in milliseconds unless something is badly wrong.
const commandTimeout = 30 * time.Second

// Require skips the test unless it runs as root with everything the lab
// needs installed (make deps installs the packages).
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab: needs root (network namespaces, charon); run the tests as root")
	}
	var missing []string
	for _, tool := range []string{"ip", "nft", "ethtool", "tcpdump", "ping", "swanctl", "pki"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, f := range []string{CharonBin, libipsecPlugin, "/dev/net/tun"} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		t.Skipf("lab: missing %s (Debian: strongswan-charon strongswan-swanctl strongswan-pki "+
			"libcharon-extra-plugins nftables iproute2 ethtool tcpdump iputils-ping)", strings.Join(missing, ", "))
	}
}

// CacheDir is where expensive artefacts (PKI, the save-keys plugin) are kept
// between runs: $IKEFRAG_LAB_CACHE, else /var/cache/ikefrag-lab.
func CacheDir() string {
	if d := os.Getenv("IKEFRAG_LAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/ikefrag-lab"
}

// keepFiles reports whether lab directories should survive the test, for
// looking at logs and captures afterwards (IKEFRAG_LAB_KEEP=1).
func keepFiles() bool {
	v := os.Getenv("IKEFRAG_LAB_KEEP")
	return v != "" && v != "0"
}

// run executes a command and returns its combined output; the error carries
// the command line and the output, which is what a failing test needs.
func run(ctx context.Context, name string, args ...string) (string, error) {
	return runIn(ctx, nil, "", name, args...)
}

// runIn is run with extra environment and standard input.
func runIn(ctx context.Context, env []string, stdin string, name string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	cmd := execCommand(ctx, env, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// execCommand is exec.CommandContext with variables added to the
// environment.
func execCommand(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	return cmd
}

// writeFile writes data with the given mode, also when the file already
// exists with a wider one.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// tail returns the last n lines of a file, for failure reports.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
