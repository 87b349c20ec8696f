package lab

// An RFC 9329 initiator for strongSwan clients, which have none.

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs fn on a thread in the named network namespace: sockets it
// creates stay in that namespace.
func inNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer orig.Close()
	ns, err := os.Open("/run/netns/" + name)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return err
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			panic("cannot return to the test's network namespace: " + err.Error())
		}
	}()
	return fn()
}

// TCPShim (StartTCPShim) is an RFC 9329 initiator for a strongSwan
// client, which has none: it takes the client's IKE and NAT-T datagrams
// on UDP 500 and 4500 of addr in a lab node (the client's RemoteAddr) and
// carries them in one TCP stream to the proxy at to, as
// libreswan with enable-tcp would (IKE behind the non-ESP marker, ESP
// as it is), and the frames coming back to the client as datagrams from
// the port it used. NAT-T keepalives stay behind (RFC 9329 §3).
type TCPShim struct {
	ns    string
	to    string
	udp   [2]*net.UDPConn // ports 500 and 4500
	mu    sync.Mutex
	tcp   net.Conn
	peer  netip.AddrPort
	via   int // the socket the client used last
	dials int
	fails int
}

func StartTCPShim(t testing.TB, n *Node, addr netip.Addr, to netip.AddrPort) *TCPShim {
	t.Helper()
	s := &TCPShim{ns: n.Name, to: to.String()}
	if err := inNetns(n.Name, func() error {
		for i, port := range []uint16{500, 4500} {
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
			if err != nil {
				return err
			}
			s.udp[i] = c
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range s.udp {
			if c != nil {
				c.Close()
			}
		}
		s.mu.Lock()
		if s.tcp != nil {
			s.tcp.Close()
		}
		s.mu.Unlock()
	})
	go s.run(0)
	go s.run(1)
	return s
}

func (s *TCPShim) run(i int) {
	buf := make([]byte, 65536)
	for {
		n, from, err := s.udp[i].ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if n == 1 && buf[0] == 0xff {
			continue
		}
		c := s.conn(from, i)
		if c == nil {
			continue
		}
		d := buf[:n]
		if i == 0 {
			// IKE on port 500 has no marker; a stream frames IKE
			// behind one
			d = append([]byte{0, 0, 0, 0}, d...)
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(d)+2)), d...)); err != nil {
			s.drop(c)
		}
	}
}

func (s *TCPShim) drop(c net.Conn) {
	s.mu.Lock()
	if s.tcp == c {
		s.tcp = nil
	}
	s.mu.Unlock()
	c.Close()
}

// conn returns the stream, opening it (with the IKETCP prefix) if needed.
func (s *TCPShim) conn(from netip.AddrPort, via int) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peer, s.via = from, via
	if s.tcp != nil {
		return s.tcp
	}
	s.dials++
	var c net.Conn
	err := inNetns(s.ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", s.to, 2*time.Second)
		return err
	})
	if err == nil {
		_, err = c.Write([]byte("IKETCP"))
	}
	if err != nil {
		s.fails++
		return nil
	}
	s.tcp = c
	go func() {
		var h [2]byte
		for {
			if _, err := io.ReadFull(c, h[:]); err != nil {
				s.drop(c)
				return
			}
			p := make([]byte, int(binary.BigEndian.Uint16(h[:]))-2)
			if _, err := io.ReadFull(c, p); err != nil {
				s.drop(c)
				return
			}
			s.mu.Lock()
			to, via := s.peer, s.via
			s.mu.Unlock()
			if via == 0 {
				if len(p) < 4 || p[0]|p[1]|p[2]|p[3] != 0 {
					continue // ESP toward a client on port 500: none
				}
				p = p[4:]
			}
			_, _ = s.udp[via].WriteToUDPAddrPort(p, to)
		}
	}()
	return c
}

// Counts returns the streams the shim tried to open and those that failed.
func (s *TCPShim) Counts() (dials, fails int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials, s.fails
}

// BlockIKEUDP makes mid forward no UDP 500 or 4500, either way: the path
// of a client whose network lets only TCP through. mid's own sockets (a
// TCPShim there) are not affected.
func (l *Lab) BlockIKEUDP() error {
	ctx := context.Background()
	for _, args := range [][]string{
		{"add", "table", "inet", "ikefrag_lab_udp"},
		{"add", "chain", "inet", "ikefrag_lab_udp", "blockike", "{ type filter hook forward priority 0 ; }"},
		{"add", "rule", "inet", "ikefrag_lab_udp", "blockike", "udp", "dport", "{ 500, 4500 }", "counter", "drop"},
		{"add", "rule", "inet", "ikefrag_lab_udp", "blockike", "udp", "sport", "{ 500, 4500 }", "counter", "drop"},
	} {
		if _, err := l.Mid.Run(ctx, "nft", args...); err != nil {
			return err
		}
	}
	return nil
}
