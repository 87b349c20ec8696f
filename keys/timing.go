package keys

import (
	"net"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// KeyTiming is when each stage of delivering one SA's keys over the key
// socket happened, for measuring where delivery time goes. The first three
// are the writer's clock (members "t", "tq", "tw"; zero when absent: the
// ikefrag-keys plugin sends tq and tw only with its timing setting on);
// the rest are this process's. Both are the system's real-time clock, so
// differences across the two are meaningful on one host.
type KeyTiming struct {
	SPIi, SPIr ike.SPI
	Derived    time.Time // the writer derived the keys
	Queued     time.Time // the writer queued the message for its sender
	Written    time.Time // the writer wrote it to the socket
	// SenderWait is how long, between Queued (or the line before) and
	// Written, the writer's sending thread was runnable but had no CPU
	// (member "rq", from its /proc schedstat)
	SenderWait time.Duration
	Read       time.Time // this process had read the whole line
	Installed  time.Time // the keys were in the store
	Replied    time.Time // the reply was written back
}

// timedConn is a key socket connection that reports a KeyTiming once the
// reply to the line that installed keys has been written: the protocol
// is strictly one reply per line, written by the goroutine that handled
// the line, so pending needs no lock.
type timedConn struct {
	net.Conn
	on      func(KeyTiming)
	pending KeyTiming
	has     bool
}

func (t *timedConn) Write(b []byte) (int, error) {
	n, err := t.Conn.Write(b)
	if t.has {
		t.has = false
		t.pending.Replied = time.Now()
		t.on(t.pending)
	}
	return n, err
}
