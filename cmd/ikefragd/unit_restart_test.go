package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ebpf/fastpath"
	"github.com/ikefrag/ikefrag/test/lab"
)

// TestUnitRestartKeepsTunnel: ikefragd under the installed systemd unit
// proxies a strongSwan tunnel, and the tunnel carries pings across
// `systemctl restart ikefragd`. The daemon runs in the lab's gw namespace
// (a drop-in with NetworkNamespacePath=), with proxy.state_file in the
// unit's runtime directory and proxy.fast_path_pin below
// /sys/fs/bpf/ikefrag, the directory the proxy drop-in opens. It needs
// systemd as PID 1 and the unit installed (make install), so it runs only
// where IKEFRAG_UNIT_RESTART=1 says so: the kernel matrix's systemd guest
// (test/kernels/systemd.sh), whose kernel has ESP.
func TestUnitRestartKeepsTunnel(t *testing.T) {
	if os.Getenv("IKEFRAG_UNIT_RESTART") != "1" {
		t.Skip("IKEFRAG_UNIT_RESTART=1 runs it (systemd as PID 1, the unit installed)")
	}
	lab.Require(t)
	const (
		conf   = "/etc/ikefrag/ikefragd.yaml"
		dropin = "/etc/systemd/system/ikefragd.service.d/zz-test-netns.conf"
		pin    = "/sys/fs/bpf/ikefrag/fastpath-unit-test"
	)
	systemctl := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
			j, _ := exec.Command("journalctl", "-u", "ikefragd", "--no-pager", "-n", "20", "-o", "cat").CombinedOutput()
			t.Fatalf("systemctl %s: %v\n%s\n%s", strings.Join(args, " "), err, out, j)
		}
	}
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, PKI: lab.ECDSA256})
	l.StartCharon(lab.Charon{Role: lab.Server})
	cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4})

	old, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	// Runs before the lab's own cleanup: the daemon leaves gw's namespace
	// before it goes.
	t.Cleanup(func() {
		_ = exec.Command("systemctl", "stop", "ikefragd").Run()
		_ = os.Remove(dropin)
		_ = os.WriteFile(conf, old, 0o644)
		_ = fastpath.RemovePinned(pin)
		_ = exec.Command("systemctl", "daemon-reload").Run()
		_ = exec.Command("systemctl", "reset-failed", "ikefragd").Run()
		_ = exec.Command("systemctl", "start", "ikefragd").Run()
	})
	cfg := fmt.Sprintf("interfaces: [%s]\nproxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n"+
		"  state_file: /run/ikefrag/proxy-state.json\n  fast_path_pin: %s\n",
		ifaceIn(l, l.Gw, l.Srv), l.Gw.Addr4, l.Srv.Addr4, pin)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dropin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dropin, []byte("[Service]\nNetworkNamespacePath=/run/netns/"+l.Gw.Name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	systemctl("daemon-reload")
	systemctl("reset-failed", "ikefragd")
	// Type=notify: returns once the daemon is ready
	systemctl("restart", "ikefragd")

	if ok, out, err := cli.Initiate(ctx); err != nil || !ok {
		t.Fatalf("initiate: %v %v\n%s", ok, err, out)
	}
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Fatalf("ping before the restart: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // the state file is written within a second
	web := nsHTTP(t, l.Gw.Name)
	before := scrape(t, web, "127.0.0.1:9717")["ikefrag_fastpath_flows"]

	// ping runs 10 pings a second for n seconds across stop, and returns
	// how many were sent and answered, how long stop took, and whether a
	// ping crosses afterwards.
	ping := func(n int, stop func()) (sent, got int, took time.Duration, afterPing error) {
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(10*n), "-i", "0.1", "-W", "1",
				"-I", l.Cli.Inner4.String(), l.Srv.Inner4.String())
			done <- result{out, err}
		}()
		time.Sleep(2 * time.Second)
		t0 := time.Now()
		stop()
		took = time.Since(t0)
		r := <-done
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(r.out)
		if m == nil {
			t.Fatalf("ping: %v\n%s", r.err, r.out)
		}
		sent, _ = strconv.Atoi(m[1])
		got, _ = strconv.Atoi(m[2])
		return sent, got, took, l.Ping(ctx, l.Cli, l.Srv.Inner4)
	}
	if before == 0 {
		t.Fatalf("the tunnel's flow was not in the ESP fast path before the restart")
	}

	// systemctl restart: SIGTERM, then a new start (ready by sd_notify)
	sent, got, took, afterPing := ping(15, func() { systemctl("restart", "ikefragd") })
	after := scrape(t, web, "127.0.0.1:9717")["ikefrag_fastpath_flows"]
	t.Logf("systemctl restart took %.1f s; %d of %d pings answered; fast path flows %v before, %v after; ping after: %v",
		took.Seconds(), got, sent, before, after, afterPing)
	if afterPing != nil {
		t.Errorf("the tunnel carries no ping after systemctl restart: %v", afterPing)
	}
	if got != sent {
		t.Errorf("%d of %d pings lost across systemctl restart with fast_path_pin, want none", sent-got, sent)
	}
	if after == 0 {
		t.Errorf("the restarted daemon did not take the flow over in the fast path")
	}

	// SIGKILL: the unit's Restart=on-failure starts it again after
	// RestartSec
	restarts := func() int {
		out, _ := exec.Command("systemctl", "show", "ikefragd", "-p", "NRestarts", "--value").Output()
		n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		return n
	}
	active := func() bool {
		out, _ := exec.Command("systemctl", "show", "ikefragd", "-p", "SubState", "--value").Output()
		return strings.TrimSpace(string(out)) == "running"
	}
	n0 := restarts()
	sent, got, took, afterPing = ping(25, func() {
		systemctl("kill", "-s", "KILL", "ikefragd")
		deadline := time.Now().Add(90 * time.Second)
		for (restarts() == n0 || !active()) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	})
	after = scrape(t, web, "127.0.0.1:9717")["ikefrag_fastpath_flows"]
	t.Logf("SIGKILL: running again after %.1f s; %d of %d pings answered; fast path flows %v after; ping after: %v",
		took.Seconds(), got, sent, after, afterPing)
	if restarts() == n0 {
		t.Fatalf("systemd did not restart the killed daemon")
	}
	if afterPing != nil {
		t.Errorf("the tunnel carries no ping after SIGKILL and restart: %v", afterPing)
	}
	if got != sent {
		t.Errorf("%d of %d pings lost across SIGKILL and restart with fast_path_pin, want none", sent-got, sent)
	}
	if after == 0 {
		t.Errorf("the daemon restarted after SIGKILL did not take the flow over in the fast path")
	}
}
