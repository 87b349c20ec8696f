package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// message is one datagram slot of a batch; ipv4.Message and ipv6.Message
// are the same type.
type message = ipv4.Message

// batchConn is the part of ipv4.PacketConn and ipv6.PacketConn the proxy
// uses: recvmmsg and sendmmsg.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// udpSock is one UDP socket with batched I/O.
type udpSock struct {
	c    *net.UDPConn
	b    batchConn
	raw  syscall.RawConn
	is6  bool
	addr netip.AddrPort // local address
}

// sockOpts are the options set before bind.
type sockOpts struct {
	recvErr   bool // IP_RECVERR / IPV6_RECVERR: ICMP errors reach the socket
	fragSize  bool // IP_RECVFRAGSIZE / IPV6_RECVFRAGSIZE: largest fragment of a reassembled datagram
	pktInfo   bool // IP_PKTINFO / IPV6_RECVPKTINFO: the address the client sent to
	rcvBuf    int
	sndBuf    int
	reusePort bool
	// transparent: IP_TRANSPARENT / IPV6_TRANSPARENT and SO_REUSEADDR, to
	// bind a client's address (proxy.source: client)
	transparent bool
	// freebind: IP_FREEBIND / IPV6_FREEBIND, to bind an address the host
	// does not hold yet (proxy.freebind: a pair's virtual address)
	freebind bool
}

func (o sockOpts) control(is6 bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			set := func(level, opt, v int) {
				if e := unix.SetsockoptInt(int(fd), level, opt, v); e != nil && serr == nil {
					serr = e
				}
			}
			if is6 {
				if o.recvErr {
					set(unix.SOL_IPV6, unix.IPV6_RECVERR, 1)
				}
				if o.fragSize {
					set(unix.SOL_IPV6, unix.IPV6_RECVFRAGSIZE, 1)
				}
				if o.pktInfo {
					set(unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, 1)
				}
			} else {
				if o.recvErr {
					set(unix.SOL_IP, unix.IP_RECVERR, 1)
				}
				if o.fragSize {
					set(unix.SOL_IP, unix.IP_RECVFRAGSIZE, 1)
				}
				if o.pktInfo {
					set(unix.SOL_IP, unix.IP_PKTINFO, 1)
				}
			}
			if o.freebind {
				lvl, opt := freebindOpt(is6)
				set(lvl, opt, 1)
			}
			if o.reusePort {
				set(unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
			if o.transparent {
				if is6 {
					set(unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
				} else {
					set(unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				}
				set(unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
			// Buffer sizes are best effort: the FORCE variants need
			// CAP_NET_ADMIN, the plain ones are capped at rmem_max and
			// wmem_max.
			if o.rcvBuf > 0 && unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.rcvBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, o.rcvBuf)
			}
			if o.sndBuf > 0 && unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, o.sndBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, o.sndBuf)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

func wrap(c *net.UDPConn) (*udpSock, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	la, _ := c.LocalAddr().(*net.UDPAddr)
	s := &udpSock{c: c, raw: raw}
	if la != nil {
		s.addr = la.AddrPort()
		s.addr = netip.AddrPortFrom(s.addr.Addr().Unmap(), s.addr.Port())
	}
	s.is6 = s.addr.Addr().Is6()
	if s.is6 {
		s.b = ipv6.NewPacketConn(c)
	} else {
		s.b = ipv4.NewPacketConn(c)
	}
	return s, nil
}

func network(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

// listenUDP binds a socket to addr.
func listenUDP(addr netip.AddrPort, o sockOpts) (*udpSock, error) {
	lc := net.ListenConfig{Control: o.control(addr.Addr().Is6())}
	pc, err := lc.ListenPacket(context.Background(), network(addr.Addr()), addr.String())
	if err != nil {
		return nil, err
	}
	return wrap(pc.(*net.UDPConn))
}

// dialUDP opens a connected socket toward a backend: the kernel then only
// delivers datagrams from that address and port.
func dialUDP(to netip.AddrPort, o sockOpts) (*udpSock, error) {
	d := net.Dialer{Control: o.control(to.Addr().Is6())}
	c, err := d.DialContext(context.Background(), network(to.Addr()), to.String())
	if err != nil {
		return nil, err
	}
	return wrap(c.(*net.UDPConn))
}

func (s *udpSock) Close() error { return s.c.Close() }

// waitReadable blocks until a datagram or an error is queued, without
// holding buffers: the per-flow readers take pooled buffers only once
// there is something to read. A zero-length MSG_PEEK tells readiness
// without consuming; edge-triggered polling needs the syscall to see
// EAGAIN before it parks.
func (s *udpSock) waitReadable() (sockErr error, err error) {
	var one [1]byte
	err = s.raw.Read(func(fd uintptr) bool {
		_, _, e := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if e == unix.EAGAIN {
			return false
		}
		if e != nil && e != unix.EINTR {
			// a pending socket error (ECONNREFUSED, EMSGSIZE…) was
			// reported and cleared by this call
			sockErr = e
		}
		return true
	})
	return sockErr, err
}

// sockErr is one entry of the socket error queue (IP_RECVERR).
type sockErr struct {
	Errno  syscall.Errno
	Origin uint8 // SO_EE_ORIGIN_*
	Type   uint8 // ICMP type
	Code   uint8
	Info   uint32 // the MTU for "fragmentation needed" and "packet too big"
	Dst    netip.AddrPort
	From   netip.Addr // the router that sent the ICMP error
}

// MTU returns the path MTU an error reports, 0 when it reports none.
func (e sockErr) MTU() int {
	switch {
	case e.Origin == unix.SO_EE_ORIGIN_ICMP && e.Type == 3 && e.Code == 4, // fragmentation needed
		e.Origin == unix.SO_EE_ORIGIN_ICMP6 && e.Type == 2, // packet too big
		e.Origin == unix.SO_EE_ORIGIN_LOCAL && e.Errno == unix.EMSGSIZE:
		return int(e.Info)
	}
	return 0
}

// drainErrors reads the socket error queue (bounded per call). It goes
// through Control, not Read: a listener's reader holds the descriptor's
// read lock while it waits for datagrams, and a flow's writer that drains
// the listener's errors must never wait for the next client datagram.
// MSG_ERRQUEUE with MSG_DONTWAIT never blocks and takes nothing from the
// receive queue, so it may run beside that reader.
func (s *udpSock) drainErrors(fn func(sockErr)) {
	var buf [256]byte
	var oob [256]byte
	var errs []sockErr
	_ = s.raw.Control(func(fd uintptr) {
		for i := 0; i < 64; i++ {
			_, oobn, _, from, e := unix.Recvmsg(int(fd), buf[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if e != nil {
				return
			}
			se, ok := parseErrCmsg(oob[:oobn])
			if !ok {
				continue
			}
			switch a := from.(type) {
			case *unix.SockaddrInet4:
				se.Dst = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
			case *unix.SockaddrInet6:
				se.Dst = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
			}
			errs = append(errs, se)
		}
	})
	for _, se := range errs {
		fn(se)
	}
}

const sizeofSockExtendedErr = 16

func parseErrCmsg(oob []byte) (sockErr, bool) {
	var se sockErr
	found := false
	walkCmsg(oob, func(level, typ int32, data []byte) {
		if !((level == unix.SOL_IP && typ == unix.IP_RECVERR) || (level == unix.SOL_IPV6 && typ == unix.IPV6_RECVERR)) {
			return
		}
		if len(data) < sizeofSockExtendedErr {
			return
		}
		se.Errno = syscall.Errno(binary.NativeEndian.Uint32(data[0:4]))
		se.Origin, se.Type, se.Code = data[4], data[5], data[6]
		se.Info = binary.NativeEndian.Uint32(data[8:12])
		off := data[sizeofSockExtendedErr:]
		if len(off) >= 8 {
			switch binary.NativeEndian.Uint16(off[0:2]) {
			case unix.AF_INET:
				se.From = netip.AddrFrom4([4]byte(off[4:8]))
			case unix.AF_INET6:
				if len(off) >= 24 {
					se.From = netip.AddrFrom16([16]byte(off[8:24])).Unmap()
				}
			}
		}
		found = true
	})
	return se, found
}

// walkCmsg calls fn for each control message without allocating.
func walkCmsg(oob []byte, fn func(level, typ int32, data []byte)) {
	const hdr = unix.SizeofCmsghdr
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return
		}
		fn(h.Level, h.Type, oob[hdr:l])
		next := cmsgAlign(l)
		if next > len(oob) {
			return
		}
		oob = oob[next:]
	}
}

func cmsgAlign(n int) int {
	const a = int(unsafe.Sizeof(uintptr(0)))
	return (n + a - 1) &^ (a - 1)
}

// rxInfo is what the control messages of a received datagram tell.
type rxInfo struct {
	dst      netip.Addr // the address the client sent to (pktinfo)
	ifindex  int
	fragSize int // largest IP fragment of a reassembled datagram; 0 when unfragmented
}

func parseRx(oob []byte) rxInfo {
	var r rxInfo
	walkCmsg(oob, func(level, typ int32, data []byte) {
		switch {
		case level == unix.SOL_IP && typ == unix.IP_PKTINFO && len(data) >= 12:
			r.ifindex = int(binary.NativeEndian.Uint32(data[0:4]))
			r.dst = netip.AddrFrom4([4]byte(data[8:12]))
		case level == unix.SOL_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= 20:
			r.dst = netip.AddrFrom16([16]byte(data[0:16])).Unmap()
			r.ifindex = int(binary.NativeEndian.Uint32(data[16:20]))
		case level == unix.SOL_IP && typ == unix.IP_RECVFRAGSIZE && len(data) >= 4,
			level == unix.SOL_IPV6 && typ == unix.IPV6_RECVFRAGSIZE && len(data) >= 4:
			r.fragSize = int(int32(binary.NativeEndian.Uint32(data[0:4])))
		}
	})
	return r
}

// srcCmsg builds the control message that makes a reply leave from src
// (for sockets bound to a wildcard address).
func srcCmsg(src netip.Addr) []byte {
	if src.Is4() {
		b := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.SOL_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
		pi.Spec_dst = src.As4()
		return b
	}
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	pi.Addr = src.As16()
	return b
}

// isTemporary reports errors after which a socket is still usable.
func isTemporary(err error) bool {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case unix.ECONNREFUSED, unix.EMSGSIZE, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN,
			unix.ENETDOWN, unix.EAGAIN, unix.EINTR, unix.ENOBUFS, unix.EPERM, unix.EACCES, unix.ECONNRESET, unix.EPROTO:
			return true
		}
	}
	return false
}

func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return 0
}
