// Package pmtuprobe measures the path MTU toward a host with ICMP echo
// requests that must not be fragmented: the active probe of
// `ikefragctl pmtu`. It reads the route's interface MTU over netlink and
// needs CAP_NET_RAW; it attaches nothing and links no BPF loader.
package pmtuprobe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Probe configures an active path-MTU probe: ICMP echo requests that
// must not be fragmented (DF on IPv4; IPv6 never fragments in transit),
// sized by binary search between a floor and the outgoing interface's MTU.
// Routers on the path answer "fragmentation needed" / "packet too big"
// with their MTU, which narrows the search at once; silence counts as
// "too big" (an ICMP black hole).
type Probe struct {
	// Timeout per attempt. Default 1 s.
	Timeout time.Duration
	// Tries per size before silence counts as loss. Default 2.
	Tries int
	// Min is the search floor: 68 for IPv4 and 1280 for IPv6 by default,
	// the sizes every path must carry.
	Min int
	// Max is the ceiling; default the MTU of the route's interface.
	Max int
}

// Step is one probe of the search.
type Step struct {
	Size   int    // IP packet size sent
	Result string // "reply", "too big (MTU n)", "no answer", "local: message too long"
}

// Result is the outcome of a probe.
type Result struct {
	Dst       netip.Addr
	Iface     string
	IfMTU     int
	MTU       int // the largest size that got an echo reply
	TooBig    int // the smallest MTU a router reported, 0 if none
	Steps     []Step
	BlackHole bool // a size got no answer while a larger router MTU was not reported
}

// Run measures the path MTU toward dst.
func Run(ctx context.Context, dst netip.Addr, p Probe) (*Result, error) {
	if p.Timeout <= 0 {
		p.Timeout = time.Second
	}
	if p.Tries <= 0 {
		p.Tries = 2
	}
	v6 := dst.Is6() && !dst.Is4In6()
	dst = dst.Unmap()
	if p.Min <= 0 {
		p.Min = 68
		if v6 {
			p.Min = 1280
		}
	}
	res := &Result{Dst: dst}
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return nil, fmt.Errorf("no route to %s: %v", dst, err)
	}
	if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err == nil {
		res.Iface, res.IfMTU = l.Attrs().Name, l.Attrs().MTU
	}
	if p.Max <= 0 {
		p.Max = res.IfMTU
		if routes[0].MTU > 0 && routes[0].MTU < p.Max {
			p.Max = routes[0].MTU
		}
	}
	if p.Max < p.Min {
		return nil, fmt.Errorf("interface %s MTU %d is below the probe floor %d", res.Iface, p.Max, p.Min)
	}
	pr, err := newPinger(dst, v6)
	if err != nil {
		return nil, err
	}
	defer pr.close()

	lo, hi := 0, p.Max
	try := func(size int, tries int, timeout time.Duration) (bool, error) {
		for i := 0; i < tries; i++ {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			out, mtu, err := pr.echo(size, timeout)
			if err != nil {
				return false, err
			}
			switch out {
			case echoReply:
				res.Steps = append(res.Steps, Step{size, "reply"})
				return true, nil
			case echoTooBig:
				res.Steps = append(res.Steps, Step{size, fmt.Sprintf("too big (MTU %d)", mtu)})
				if mtu > 0 && (res.TooBig == 0 || mtu < res.TooBig) {
					res.TooBig = mtu
				}
				if mtu > 0 && mtu < size {
					hi = mtu
				} else {
					hi = size - 1
				}
				return false, nil
			case echoLocal:
				res.Steps = append(res.Steps, Step{size, "local: message too long"})
				hi = size - 1
				return false, nil
			}
		}
		res.Steps = append(res.Steps, Step{size, "no answer"})
		hi = size - 1
		return false, nil
	}
	// The floor must answer, or the destination is unreachable, not small.
	// The first packet may wait for neighbour discovery: allow it longer.
	ok, err := try(p.Min, p.Tries+1, 3*p.Timeout)
	if err != nil {
		return nil, err
	}
	if !ok {
		return res, fmt.Errorf("%s does not answer ICMP echo of %d bytes", dst, p.Min)
	}
	lo = p.Min
	for lo < hi {
		mid := (lo + hi + 1) / 2
		// A router's reported MTU is the likeliest answer: try it first.
		if res.TooBig > lo && res.TooBig <= hi {
			mid = res.TooBig
		}
		ok, err := try(mid, p.Tries, p.Timeout)
		if err != nil {
			return nil, err
		}
		if ok {
			lo = mid
		} else if hi >= mid {
			hi = mid - 1
		}
	}
	res.MTU = lo
	for _, s := range res.Steps {
		if s.Result == "no answer" && (res.TooBig == 0 || s.Size <= res.TooBig) {
			res.BlackHole = true
		}
	}
	return res, nil
}

type echoOutcome int

const (
	echoNone echoOutcome = iota
	echoReply
	echoTooBig
	echoLocal
)

type pinger struct {
	c   *net.IPConn
	dst netip.Addr
	v6  bool
	id  int
	seq int
}

func newPinger(dst netip.Addr, v6 bool) (*pinger, error) {
	network, laddr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	pc, err := net.ListenPacket(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("raw ICMP socket (needs CAP_NET_RAW): %w", err)
	}
	c := pc.(*net.IPConn)
	// Probe mode: DF set, and the kernel neither fragments nor refuses
	// because of a path MTU it cached earlier.
	var level, opt, val int = unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE
	if v6 {
		level, opt, val = unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE
	}
	var serr error
	rc, err := c.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, val) })
	}
	if err == nil {
		err = serr
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("setting DF on the probe socket: %w", err)
	}
	return &pinger{c: c, dst: dst, v6: v6, id: os.Getpid() & 0xffff}, nil
}

func (p *pinger) close() { p.c.Close() }

// echo sends one echo request whose IP packet is size bytes and waits for
// its reply or for an ICMP error about it.
func (p *pinger) echo(size int, timeout time.Duration) (echoOutcome, int, error) {
	p.seq = (p.seq + 1) & 0xffff
	hdr := 20
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if p.v6 {
		hdr, typ = 40, ipv6.ICMPTypeEchoRequest
	}
	data := make([]byte, max(0, size-hdr-8))
	for i := range data {
		data[i] = byte(i)
	}
	m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: p.seq, Data: data}}
	b, err := m.Marshal(nil)
	if err != nil {
		return echoNone, 0, err
	}
	if _, err := p.c.WriteTo(b, &net.IPAddr{IP: p.dst.AsSlice()}); err != nil {
		if errors.Is(err, unix.EMSGSIZE) {
			return echoLocal, 0, nil
		}
		return echoNone, 0, fmt.Errorf("sending a %d-byte probe to %s: %w", size, p.dst, err)
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	proto := 1
	if p.v6 {
		proto = 58
	}
	for {
		if err := p.c.SetReadDeadline(deadline); err != nil {
			return echoNone, 0, err
		}
		n, _, err := p.c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return echoNone, 0, nil
			}
			return echoNone, 0, err
		}
		rm, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		switch body := rm.Body.(type) {
		case *icmp.Echo:
			if (rm.Type == ipv4.ICMPTypeEchoReply || rm.Type == ipv6.ICMPTypeEchoReply) && body.ID == p.id && body.Seq == p.seq {
				return echoReply, 0, nil
			}
		case *icmp.DstUnreach:
			// IPv4 fragmentation needed: code 4, next-hop MTU in bytes 6-7
			// of the ICMP header, which x/net/icmp does not decode.
			if rm.Type == ipv4.ICMPTypeDestinationUnreachable && rm.Code == 4 && p.quotesOurs(body.Data) && n >= 8 {
				return echoTooBig, int(buf[6])<<8 | int(buf[7]), nil
			}
		case *icmp.PacketTooBig:
			if p.quotesOurs(body.Data) {
				return echoTooBig, body.MTU, nil
			}
		}
	}
}

// quotesOurs reports whether an ICMP error quotes our current echo request.
func (p *pinger) quotesOurs(q []byte) bool {
	off := 0
	if p.v6 {
		off = 40
	} else if len(q) > 0 {
		off = int(q[0]&0x0f) * 4
	}
	if len(q) < off+8 {
		return false
	}
	e := q[off:]
	return int(e[4])<<8|int(e[5]) == p.id && int(e[6])<<8|int(e[7]) == p.seq
}
