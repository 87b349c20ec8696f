package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// legit runs one IKE_SA_INIT round trip over a new connection from
// 127.0.0.1: what every abuse test checks still works.
func (l *tcpLab) legit(t *testing.T, spi uint64) {
	t.Helper()
	tc := newTCPClient(t, netip.MustParseAddr("127.0.0.1"), l.tcp)
	init := marked(ikeSAInit(spi, false))
	tc.send(init)
	got, err := readFrame(tc.c, 3*time.Second)
	if err != nil || !bytes.Equal(got, ikeAnswer(init, 1)) {
		t.Fatalf("legitimate client: answer %x, %v; tcp %+v, drops %v", got, err, l.tcpStats(t), l.p.Stats().Total.Dropped)
	}
	tc.c.Close()
}

// raiseNoFile lifts RLIMIT_NOFILE to n (root may raise the hard limit).
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= n {
		return
	}
	nl := syscall.Rlimit{Cur: n, Max: max(n, old.Max)}
	if n <= old.Max {
		nl.Max = old.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
		t.Skipf("cannot raise RLIMIT_NOFILE to %d: %v", n, err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

func rssBytes(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// 10,000 idle connections from 100 addresses: per-address refusals,
// evictions at max_connections and first-message timeouts, each counted;
// the proxy's memory stays bounded and a legitimate client gets through
// while they are open.
func TestTCPIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	raiseNoFile(t, 14000) // 10,000 client sockets, at most 2,000 accepted
	l := startTCPLab(t, 1, TCPConfig{MessageTimeout: 3 * time.Second, MaxConnections: 2000, ConnectionsPerAddress: 64}, nil)
	runtime.GC()
	rss0 := rssBytes(t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	const sources, perSource = 100, 100
	for s := 0; s < sources; s++ {
		from := netip.AddrFrom4([4]byte{127, 0, 1, byte(1 + s)})
		for i := 0; i < perSource; i++ {
			c, err := dialTCP(t, from, l.tcp)
			if errors.Is(err, syscall.ECONNRESET) {
				continue // refused before connect returned
			}
			if err != nil {
				t.Fatalf("dial %d from %s: %v", i, from, err)
			}
			conns = append(conns, c)
		}
	}
	waitFor(t, "every connection accepted or refused", func() bool {
		st := l.tcpStats(t)
		return st.Accepted+st.Refused["per_address"] >= sources*perSource
	})
	st := l.tcpStats(t)
	if st.Refused["per_address"] != sources*(perSource-64) || st.Accepted != sources*64 {
		t.Errorf("accepted %d, refused %v; want %d accepted, %d refused per address", st.Accepted, st.Refused,
			sources*64, sources*(perSource-64))
	}
	// Connections beyond max_connections are evicted, or, on a machine
	// slow enough that dialling outlasts message_timeout, ended by the
	// first-message timeout first: either way counted and gone.
	if ended := st.Ended["evicted_no_flow"] + st.Ended["first_message_timeout"]; st.Connections > 2000 || ended < sources*64-2000 {
		t.Errorf("%d connections open, %d evicted, %d timed out; want at most 2000 open, the rest ended", st.Connections,
			st.Ended["evicted_no_flow"], st.Ended["first_message_timeout"])
	}
	// with the table full of idle connections, a legitimate client is
	// served at once
	l.legit(t, 0xA1)
	runtime.GC()
	if rss := rssBytes(t); rss > rss0+128<<20 && !tcpRaceEnabled {
		t.Errorf("RSS grew from %d to %d MiB", rss0>>20, rss>>20)
	}
	t.Logf("RSS %d MiB before, %d MiB with 10,000 connections dialled; tcp %+v", rss0>>20, rssBytes(t)>>20, st)
	// the last connections accepted time out message_timeout after their
	// accept, and closing up to 2,000 of them takes its time on a loaded
	// machine: wait that long and more, not waitFor's 3 s
	for end := time.Now().Add(3*time.Second + 20*time.Second); ; time.Sleep(50 * time.Millisecond) {
		st := l.tcpStats(t)
		if st.Ended["first_message_timeout"] > 0 && st.Connections == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("first-message timeouts: %d connections still open, %d timed out", st.Connections, st.Ended["first_message_timeout"])
		}
	}
	l.legit(t, 0xA2)
}

// A slowloris sender (the prefix and a frame a byte at a time), before
// and after its first message, is closed at message_timeout and counted;
// a legitimate client is served meanwhile.
func TestTCPSlowloris(t *testing.T) {
	l := startTCPLab(t, 1, TCPConfig{MessageTimeout: time.Second}, nil)
	trickle := func(c net.Conn, b []byte) error {
		for _, x := range b {
			if _, err := c.Write([]byte{x}); err != nil {
				return err
			}
			time.Sleep(300 * time.Millisecond)
		}
		return nil
	}
	// before the first message
	c1, err := dialTCP(t, netip.Addr{}, l.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	done1 := make(chan error, 1)
	go func() {
		done1 <- trickle(c1, append([]byte(tcpPrefix), appendTCPFrame(nil, marked(ikeSAInit(7, false)))...))
	}()
	// after it: a flow, then a frame that never completes
	tc := newTCPClient(t, netip.Addr{}, l.tcp)
	init := marked(ikeSAInit(8, false))
	tc.send(init)
	if _, err := readFrame(tc.c, 3*time.Second); err != nil {
		t.Fatalf("%v: tcp %+v, drops %v", err, l.tcpStats(t), l.p.Stats().Total.Dropped)
	}
	done2 := make(chan error, 1)
	go func() {
		done2 <- trickle(tc.c, appendTCPFrame(nil, []byte{0xc0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}))
	}()
	l.legit(t, 0xB1)
	for _, d := range []chan error{done1, done2} {
		select {
		case err := <-d:
			if err == nil {
				t.Error("a slowloris sender finished its message")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a slowloris sender was never cut off")
		}
	}
	st := l.tcpStats(t)
	if st.Ended["first_message_timeout"] != 1 || st.Ended["message_timeout"] != 1 {
		t.Errorf("ended %v", st.Ended)
	}
	l.legit(t, 0xB2)
}

// 64 KiB of length-prefixed junk, as a first message and behind the
// marker on an established flow, ends the connection before the proxy
// reads or holds it; the relay goes on for others.
func TestTCPJunk(t *testing.T) {
	l := startTCPLab(t, 1, TCPConfig{}, nil)
	junk := bytes.Repeat([]byte{0x5a}, DefaultTCPMaxMessage)
	c, err := dialTCP(t, netip.Addr{}, l.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(append([]byte(tcpPrefix), appendTCPFrame(nil, junk)...))
	if _, err := readFrame(c, 3*time.Second); err == nil {
		t.Fatal("junk answered")
	}
	tc := newTCPClient(t, netip.Addr{}, l.tcp)
	init := marked(ikeSAInit(9, false))
	tc.send(init)
	tc.recv()
	copy(junk, []byte{0, 0, 0, 0})
	_, _ = tc.c.Write(appendTCPFrame(nil, junk))
	if _, err := readFrame(tc.c, 3*time.Second); err == nil {
		t.Fatal("marked junk answered")
	}
	// a stream that is not RFC 9329 at all
	c3, err := dialTCP(t, netip.Addr{}, l.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	_, _ = c3.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := readFrame(c3, 3*time.Second); err == nil {
		t.Fatal("HTTP answered")
	}
	l.legit(t, 0xC1)
	waitFor(t, "junk counted", func() bool {
		st := l.tcpStats(t)
		return st.Ended["ike_too_long"] == 2 && st.Ended["bad_prefix"] == 1
	})
	if src := l.backends[0].sources(); len(src) != 2 {
		t.Errorf("backend sources %v: want the two IKE_SA_INITs only", src)
	}
}

// A client that sends and never reads: ESP beyond send_buffer is dropped
// and counted, and the connection is closed as a slow reader once writes
// make no progress for message_timeout.
func TestTCPSlowReader(t *testing.T) {
	l := startTCPLab(t, 1, TCPConfig{MessageTimeout: time.Second, SendBuffer: 1 << 17}, nil)
	tc := newTCPClient(t, netip.Addr{}, l.tcp)
	_ = tc.c.SetReadBuffer(4096)
	init := marked(ikeSAInit(10, false))
	tc.send(init)
	tc.recv()
	esp := bytes.Repeat([]byte{0xc1}, 30000)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_ = tc.c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := tc.c.Write(appendTCPFrame(nil, esp)); err != nil {
			break
		}
		if st := l.tcpStats(t); st.Ended["slow_reader"] > 0 {
			break
		}
	}
	waitFor(t, "slow reader closed", func() bool { return l.tcpStats(t).Ended["slow_reader"] == 1 })
	st := l.tcpStats(t)
	if st.ESPDropped == 0 || l.p.Stats().Total.Dropped["tcp_send_buffer"] != st.ESPDropped {
		t.Errorf("ESP dropped %d, stats %v", st.ESPDropped, l.p.Stats().Total.Dropped)
	}
	l.legit(t, 0xD1)
}

// Expiry covers TCP flows both ways: a flow the backend answered only with
// IKE_SA_INIT ends at half_open_timeout and takes its connection with it;
// an established connection with no message either way for the TCP
// idle_timeout is closed and its flow ends; traffic from the backend alone
// keeps it open.
func TestTCPExpiry(t *testing.T) {
	l := startTCPLab(t, 1, TCPConfig{}, func(c *Config) { c.HalfOpenTimeout = time.Second })
	// half-open: IKE_SA_INIT answered, nothing more
	tc := newTCPClient(t, netip.Addr{}, l.tcp)
	init := marked(ikeSAInit(0xE1, false))
	tc.send(init)
	tc.recv()
	if _, err := readFrame(tc.c, 5*time.Second); err == nil {
		t.Fatal("frame on a half-open flow")
	}
	waitFor(t, "half-open expiry", func() bool {
		st := l.p.Stats()
		return st.FlowEnds["half_open"] == 1 && st.TCP.Ended["flow_ended"] == 1 && st.TCP.Connections == 0
	})

	// established, then idle
	l = startTCPLab(t, 1, TCPConfig{IdleTimeout: 1500 * time.Millisecond}, nil)
	tc = newTCPClient(t, netip.Addr{}, l.tcp)
	init = marked(ikeSAInit(0xE2, false))
	tc.send(init)
	got := tc.recv()
	var spiI, spiR ike.SPI
	copy(spiI[:], got[4:12])
	copy(spiR[:], got[12:20])
	tc.send(marked(ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1)))
	tc.recv()
	// the backend talks, the client does not: still open past idle_timeout
	fs := l.p.Flows()
	if len(fs) != 1 {
		t.Fatalf("flows %+v", fs)
	}
	stop := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(stop) {
		for _, c := range l.backends[0].conns {
			if addrOf(c) == fs[0].Backend {
				_, _ = c.WriteToUDPAddrPort([]byte{0xc0, 0, 0, 5, 0, 0, 0, 1, 9}, fs[0].Upstream)
			}
		}
		if _, err := readFrame(tc.c, time.Second); err != nil {
			t.Fatalf("connection closed while the backend was sending: %v; tcp %+v", err, l.tcpStats(t))
		}
		time.Sleep(300 * time.Millisecond)
	}
	// now nobody talks
	if _, err := readFrame(tc.c, 5*time.Second); err == nil {
		t.Fatal("a frame on an idle connection")
	}
	waitFor(t, "idle close", func() bool {
		st := l.p.Stats()
		return st.TCP.Ended["idle"] == 1 && st.FlowEnds["tcp_closed"] == 1 && st.Flows == 0
	})
}
