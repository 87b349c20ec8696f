package main

import (
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fillDgramQueue sends datagrams to the unixgram socket at path from a
// socket of its own until the receiver's queue is full (EAGAIN), and
// returns how many it sent.
func fillDgramQueue(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrUnix{Name: path}
	for n := 0; n < 100000; n++ {
		err := unix.Sendto(fd, []byte("FILLER=1"), unix.MSG_DONTWAIT, sa)
		if errors.Is(err, unix.EAGAIN) {
			if n == 0 {
				t.Fatalf("%s: full before the first datagram", path)
			}
			return n
		}
		if err != nil {
			t.Fatalf("filling %s: %v", path, err)
		}
	}
	t.Fatalf("%s never filled", path)
	return 0
}

// A notify socket nobody reads does not hold the callers: queueing
// returns, close returns, and once the reader drains its queue every
// state arrives in order while watchdog pets are coalesced to the latest.
func TestNotifierNeverBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	rd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	filled := fillDgramQueue(t, path)

	n := newNotifier(slog.New(slog.DiscardHandler))
	if n == nil {
		t.Fatal("no notifier with NOTIFY_SOCKET set")
	}
	returned := make(chan struct{})
	go func() {
		n.state("READY=1", "STATUS=one")
		for range 50 {
			n.periodicState("WATCHDOG=1")
		}
		n.state("RELOADING=1")
		n.state("READY=1", "STATUS=two")
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("queueing a notification blocked on a full notify socket")
	}
	if sent, _ := n.counts(); sent != 0 {
		t.Fatalf("%d messages written into a full queue", sent)
	}

	// Drain: the filler first, then our messages.
	var got []string
	done := func() bool {
		return strings.Contains(strings.Join(got, "|"), "READY=1\nSTATUS=two") && strings.Contains(strings.Join(got, "|"), "WATCHDOG=1")
	}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !done() {
		_ = rd.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		k, err := rd.Read(buf)
		if err != nil {
			continue
		}
		if m := string(buf[:k]); m != "FILLER=1" {
			got = append(got, m)
		} else {
			filled--
		}
	}
	want := []string{"READY=1\nSTATUS=one", "RELOADING=1", "READY=1\nSTATUS=two"}
	var states []string
	pets := 0
	for _, m := range got {
		if m == "WATCHDOG=1" {
			pets++
			continue
		}
		states = append(states, m)
	}
	if strings.Join(states, "|") != strings.Join(want, "|") {
		t.Errorf("states %q, want %q", states, want)
	}
	if pets < 1 || pets > 2 {
		t.Errorf("%d watchdog pets delivered of 50 queued while full; want the latest one or two", pets)
	}
	if filled != 0 {
		t.Errorf("%d filler datagrams not read back", filled)
	}

	// Full again, then close: it returns without waiting for the reader.
	fillDgramQueue(t, path)
	n.state("STOPPING=1")
	closed := make(chan struct{})
	go func() { n.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("close waited on a full notify socket")
	}
	n.state("READY=1") // after close: ignored, no panic
}

// The daemon with a notify socket whose queue is full and that nobody
// reads: the watchdog loop, a SIGHUP reload and the stop all go on. Before
// notifications were queued, the stop hung in the write of STOPPING=1.
func TestStopWithUnreadNotifySocket(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	n := newNetns(t)
	n.veth("n0", "n1")
	d := newDaemon(t, bins, n.name, "interfaces: [n0]\nmetrics:\n  listen: \"\"\n")
	d.env = []string{"WATCHDOG_USEC=200000"} // pets every 100 ms
	d.start()
	fillDgramQueue(t, filepath.Join(d.dir, "notify.sock"))

	// The main loop still answers and reloads.
	d.signal(syscall.SIGHUP)
	if !waitFor(20*time.Second, func() bool { return d.status().Config.Reloads == 1 }) {
		t.Fatalf("the reload did not complete with the notify socket full\n%s", d.stderr)
	}
	d.signal(syscall.SIGHUP)
	if !waitFor(20*time.Second, func() bool { return d.status().Config.Reloads == 2 }) {
		t.Fatalf("the second reload did not complete with the notify socket full\n%s", d.stderr)
	}
	// stop fails the test unless the daemon exits cleanly after SIGTERM
	// (it gives 30 s, then dumps the goroutines).
	d.stop()
	select {
	case <-d.waited:
	default:
		t.Fatal("daemon still running after stop")
	}
}
