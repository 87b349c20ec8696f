package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// refusedSocket returns a loopback socket with IP_RECVERR that has sent a
// datagram to dst, a port nobody listens on: the kernel answers with ICMP
// port unreachable, which the socket gets as a pending error.
func refusedSocket(t *testing.T) (*udpSock, netip.AddrPort) {
	t.Helper()
	s, err := listenUDP(netip.MustParseAddrPort("127.0.0.1:0"), sockOpts{recvErr: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	closed, err := listenUDP(netip.MustParseAddrPort("127.0.0.1:0"), sockOpts{})
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort(closed.c.LocalAddr().String())
	closed.Close()
	if _, err := s.c.WriteToUDPAddrPort([]byte("x"), dst); err != nil {
		t.Fatal(err)
	}
	return s, dst
}

// TestDrainErrorsBesideReader: a flow's writer drains the listener's ICMP
// errors while the listener's reader waits for datagrams with the
// descriptor's read side held; the drain must not wait for the next client
// datagram (it once did, and a client's IKE_AUTH response stalled there).
func TestDrainErrorsBesideReader(t *testing.T) {
	s, dst := refusedSocket(t)

	// Hold the read side the way a parked ReadBatch does.
	release := make(chan struct{})
	held := make(chan struct{})
	go func() {
		_ = s.raw.Read(func(uintptr) bool {
			select {
			case <-held:
			default:
				close(held)
			}
			<-release
			return true
		})
	}()
	<-held
	defer close(release)

	got := make(chan []sockErr, 1)
	go func() {
		var errs []sockErr
		// the ICMP error is queued asynchronously: look a few times
		for i := 0; i < 50 && len(errs) == 0; i++ {
			s.drainErrors(func(e sockErr) { errs = append(errs, e) })
			if len(errs) == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		got <- errs
	}()
	select {
	case errs := <-got:
		if len(errs) != 1 || errs[0].Errno != unix.ECONNREFUSED || errs[0].Dst != dst {
			t.Fatalf("drained %+v, want one ECONNREFUSED for %v", errs, dst)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drainErrors waited for the reader's read lock")
	}
}

// FuzzCmsg: the control-message parsers take what the kernel wrote, but a
// length field they trust too far would read past the buffer; neither may
// panic, and an IPv6 pktinfo message made by srcCmsg reads back as its
// address (IPv4 sends in ipi_spec_dst and receives in ipi_addr).
func FuzzCmsg(f *testing.F) {
	for _, a := range []string{"192.0.2.1", "2001:db8::1"} {
		f.Add(srcCmsg(netip.MustParseAddr(a)))
	}
	f.Add(append(srcCmsg(netip.MustParseAddr("192.0.2.1")), srcCmsg(netip.MustParseAddr("2001:db8::1"))...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = parseRx(b)
		_, _ = parseErrCmsg(b)
		if len(b) >= 16 {
			a := netip.AddrFrom16([16]byte(b[:16]))
			if a.Is4In6() {
				return
			}
			if got := parseRx(srcCmsg(a)).dst; got != a {
				t.Fatalf("pktinfo %v read back as %v", a, got)
			}
		}
	})
}

// TestSendClientAfterICMPError: an ICMP error for one client makes the
// next send on the shared socket fail with it instead of sending; that
// datagram, for another client, must still go out and count as sent.
func TestSendClientAfterICMPError(t *testing.T) {
	s, _ := refusedSocket(t)
	// Wait until the port unreachable is pending (POLLERR), without
	// taking it.
	pending := false
	_ = s.raw.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLERR}}
		n, err := unix.Poll(pfd, 2000)
		pending = err == nil && n == 1 && pfd[0].Revents&unix.POLLERR != 0
	})
	if !pending {
		t.Fatal("no ICMP error pending on the socket")
	}

	rcv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	p := &Proxy{}
	f := &Flow{p: p, ln: &listener{p: p, sock: s}, be: &backend{}, cl: &client{}}
	p.sendClient(f, []message{{Buffers: [][]byte{[]byte("IKE_AUTH response")}, Addr: rcv.LocalAddr()}})

	_ = rcv.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, _, err := rcv.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "IKE_AUTH response" {
		t.Fatalf("client got %q, %v", buf[:n], err)
	}
	st := p.total.snapshot()
	if st.DatagramsOut != 1 || len(st.Dropped) != 0 {
		t.Fatalf("counters: %+v", st)
	}
}
