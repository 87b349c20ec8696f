package main

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The watchdog's SIGABRT must end the daemon with a status the unit
// restarts (1), not Go's default 2, which the unit treats as a
// configuration error and never restarts; the goroutines still reach the
// log.
func TestSIGABRTExitsForRestart(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	n := newNetns(t)
	n.veth("a0", "a1")
	d := newDaemon(t, bins, n.name, "interfaces: [a0]\n")
	d.start()
	d.signal(syscall.SIGABRT)
	select {
	case <-d.waited:
	case <-time.After(30 * time.Second):
		d.kill()
		t.Fatalf("ikefragd did not exit within 30 s of SIGABRT\n%s", d.stderr)
	}
	var ee *exec.ExitError
	if !errors.As(d.err, &ee) || ee.ExitCode() != exitFailure {
		t.Fatalf("exit after SIGABRT: %v, want status %d\n%s", d.err, exitFailure, d.stderr)
	}
	if s := d.stderr.String(); !strings.Contains(s, "SIGABRT") || !strings.Contains(s, "goroutine ") {
		t.Errorf("no goroutine dump after SIGABRT:\n%s", s)
	}
	d.notify.Close()
}
