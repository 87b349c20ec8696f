package main

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// sd_notify(3) without blocking. systemd reads NOTIFY_SOCKET from its main
// loop; when it is slow (or, in tests, when nobody reads) the datagram
// socket's receive queue fills (net.unix.max_dgram_qlen, 10 by default)
// and a plain blocking write — what go-systemd's SdNotify does — waits
// until systemd reads. Waiting there stalled the watchdog loop, a SIGHUP
// reload and, worst, the stop itself. So messages go through a notifier:
// callers only queue them, one goroutine writes them with a deadline, and
// stopping never waits for it.

// notifyWriteTimeout bounds one write attempt; a message that cannot be
// written in this time is retried (state messages) or replaced by a newer
// one (watchdog and status), so the goroutine notices close and newer
// messages at least this often.
const notifyWriteTimeout = time.Second

// maxPendingStates bounds the queued state messages (READY, RELOADING,
// STOPPING). Only a reader that stopped reading lets them pile up; past
// the bound the oldest are dropped (and counted), since only the latest
// state matters to systemd.
const maxPendingStates = 16

type notifier struct {
	log  *slog.Logger
	conn *net.UnixConn
	wake chan struct{} // 1-slot: "there is something to send"
	done chan struct{} // closed by close

	mu       sync.Mutex // guards what follows
	states   []string   // state messages, in order: each is sent
	periodic string     // the latest watchdog/status message: newer replaces older
	closed   bool
	dropped  uint64
	sent     uint64
}

// newNotifier connects to NOTIFY_SOCKET; without it (not run by systemd)
// it returns nil, whose methods do nothing.
func newNotifier(log *slog.Logger) *notifier {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	// net turns a leading "@" into the abstract namespace, as systemd means
	// it. The connection is non-blocking under Go's poller, so the write
	// deadline below is honoured.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		log.Warn("cannot reach systemd's notify socket; readiness and watchdog are not reported", "socket", addr, "err", err)
		return nil
	}
	n := &notifier{log: log, conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go n.run()
	return n
}

// state queues a state change (READY=1, RELOADING=1, STOPPING=1, ...):
// each is delivered in order unless more than maxPendingStates wait.
func (n *notifier) state(lines ...string) { n.queue(true, lines) }

// periodicState queues a watchdog pet or status refresh: only the latest
// waiting one is delivered.
func (n *notifier) periodicState(lines ...string) { n.queue(false, lines) }

func (n *notifier) queue(isState bool, lines []string) {
	if n == nil || len(lines) == 0 {
		return
	}
	msg := strings.Join(lines, "\n")
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	if isState {
		if len(n.states) >= maxPendingStates {
			n.states = n.states[1:]
			n.dropped++
		}
		n.states = append(n.states, msg)
	} else {
		if n.periodic != "" {
			n.dropped++
		}
		n.periodic = msg
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// close stops the notifier without waiting: a write in progress is
// abandoned.
func (n *notifier) close() {
	if n == nil {
		return
	}
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.done)
	}
	n.mu.Unlock()
	_ = n.conn.Close()
}

// counts returns how many messages were written and how many were dropped
// (replaced by newer ones or past the bound).
func (n *notifier) counts() (sent, dropped uint64) {
	if n == nil {
		return 0, 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sent, n.dropped
}

// next returns the message to write: the oldest state, else the periodic
// one. It waits for one, or returns ok false once closed.
func (n *notifier) next() (msg string, isState, ok bool) {
	for {
		n.mu.Lock()
		switch {
		case n.closed:
			n.mu.Unlock()
			return "", false, false
		case len(n.states) > 0:
			msg, isState = n.states[0], true
		case n.periodic != "":
			msg = n.periodic
		}
		n.mu.Unlock()
		if msg != "" {
			return msg, isState, true
		}
		select {
		case <-n.wake:
		case <-n.done:
		}
	}
}

func (n *notifier) run() {
	for {
		msg, isState, ok := n.next()
		if !ok {
			return
		}
		_ = n.conn.SetWriteDeadline(time.Now().Add(notifyWriteTimeout))
		_, err := n.conn.Write([]byte(msg))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// The reader is behind: try again, with whatever is
			// newest by then.
			continue
		}
		n.mu.Lock()
		if err == nil {
			n.sent++
		} else if !n.closed {
			// Not a full queue: the socket is gone (systemd
			// restarted, or the reader closed it). Dropped and logged
			// at debug level, as sd_notify(3) callers ignore it too.
			n.dropped++
			n.log.Debug("sd_notify failed", "err", err)
		}
		if isState {
			if len(n.states) > 0 && n.states[0] == msg {
				n.states = n.states[1:]
			}
		} else if n.periodic == msg {
			n.periodic = ""
		}
		n.mu.Unlock()
	}
}
