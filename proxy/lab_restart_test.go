package proxy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ebpf/fastpath"
	"github.com/ikefrag/ikefrag/test/lab"
)

// TestLabRestartKeepsTunnel: a strongSwan tunnel through the proxy, pinged
// 10 times a second while the proxy is killed (SIGKILL) and started again.
// With proxy.state_file the new proxy reopens the flows' upstream ports,
// the backend sees the tunnel's ESP from where it knows it, and the pings
// come back; without it (the earlier behaviour) the tunnel stays dark.
func TestLabRestartKeepsTunnel(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	for _, c := range []struct {
		name       string
		state, pin bool
		sig        syscall.Signal
	}{
		{"state_file+fast_path_pin", true, true, syscall.SIGKILL},
		// an orderly stop (systemctl restart) leaves the flows mapped too
		{"state_file+fast_path_pin/SIGTERM", true, true, syscall.SIGTERM},
		{"state_file", true, false, syscall.SIGKILL},
		{"no_state_file", false, false, syscall.SIGKILL},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			l := lab.New(t, lab.Topology{Gateway: true, PKI: lab.ECDSA256})
			l.StartCharon(lab.Charon{Role: lab.Server})
			cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4})
			cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n", l.Gw.Addr4, l.Srv.Addr4)
			if c.state {
				cfg += fmt.Sprintf("  state_file: %s\n", filepath.Join(l.Dir, "proxy-state.json"))
			}
			if c.pin {
				// a BPF file system of the test's own: the namespaces'
				// processes see the host's mounts, not /sys/fs/bpf
				bpffs := filepath.Join(l.Dir, "bpffs")
				if err := os.MkdirAll(bpffs, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := unix.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
					t.Skipf("cannot mount a BPF file system: %v", err)
				}
				pin := filepath.Join(bpffs, "fastpath")
				t.Cleanup(func() {
					_ = fastpath.RemovePinned(pin)
					_ = unix.Unmount(bpffs, unix.MNT_DETACH)
				})
				cfg += fmt.Sprintf("  fast_path_pin: %s\n", pin)
			}
			g := startProxy(t, l, l.Gw, cfg)
			if ok, out, err := cli.Initiate(ctx); err != nil || !ok {
				t.Fatalf("initiate: %v %v\n%s", ok, err, out)
			}
			if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
				t.Fatalf("ping before the restart: %v", err)
			}
			time.Sleep(1500 * time.Millisecond) // the state file is written within a second
			mappedBefore := g.stats(t).FastPath.Flows

			// 150 pings, 10 a second, across the kill and the restart
			type result struct {
				out string
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", "150", "-i", "0.1", "-W", "1",
					"-I", l.Cli.Inner4.String(), l.Srv.Inner4.String())
				done <- result{out, err}
			}()
			time.Sleep(2 * time.Second)
			killed := time.Now()
			if err := syscall.Kill(g.proc.Pid(), c.sig); err != nil {
				t.Fatal(err)
			}
			for !g.proc.Exited() {
				time.Sleep(10 * time.Millisecond)
			}
			// down for 2 s, as the shipped unit's RestartSec=2s keeps it
			time.Sleep(2 * time.Second)
			g2 := startProxy(t, l, l.Gw, cfg)
			ready := time.Since(killed)
			r := <-done
			m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(r.out)
			if m == nil {
				t.Fatalf("ping: %v\n%s", r.err, r.out)
			}
			sent, _ := strconv.Atoi(m[1])
			got, _ := strconv.Atoi(m[2])
			after := l.Ping(ctx, l.Cli, l.Srv.Inner4)
			st := g2.stats(t)
			t.Logf("%s: proxy ready %.2f s after %v; %d of %d pings answered (%.0f%% loss over 15 s); ping after: %v; adopted %d, skipped %d",
				c.name, ready.Seconds(), c.sig, got, sent, 100*float64(sent-got)/float64(sent), after, st.Adopted, st.AdoptSkipped)
			if c.state {
				if after != nil || st.Adopted == 0 {
					t.Errorf("with the state file the tunnel must carry pings after the restart")
				}
			}
			if c.pin {
				// ESP stayed in the kernel: nothing is lost while no
				// proxy runs, and the new proxy carries the flow on
				t.Logf("%s: fast path flows before the kill %d, after the restart %d", c.name, mappedBefore, st.FastPath.Flows)
				if mappedBefore == 0 {
					t.Skip("the tunnel's flow was not in the ESP fast path (program not loaded here)")
				}
				if got != sent {
					t.Errorf("with fast_path_pin %d of %d pings were lost across the stop (%v) and restart, want none", sent-got, sent, c.sig)
				}
				if st.FastPath.Flows == 0 {
					t.Errorf("the restarted proxy did not take the flow over in the fast path")
				}
			}
		})
	}
}
