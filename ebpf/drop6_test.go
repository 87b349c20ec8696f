package ebpf

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
)

// TestDropIPv6ExtensionHeaders: the drop reporter walks IPv6 extension
// headers with the walk of bpf/ipv6.h. A datagram to the IKE port sent
// with a hop-by-hop header and cut in fragments (IPv6 | hop-by-hop |
// fragment | UDP) is dropped by the receiver's firewall before
// reassembly: the first fragment's record has the ports behind both
// headers, the others the fragment header's identification and offset.
func TestDropIPv6ExtensionHeaders(t *testing.T) {
	requireBPF(t)
	kfeattest.Require(t, kfeat.DropReasons)
	cli, srv := netip.MustParseAddr("fd00:201::1"), netip.MustParseAddr("fd00:201::2")
	l := newLab(t, "cli", "srv")
	l.veth("cli", "cli0", "srv", "srv0")
	l.in("cli", "ip", "addr", "add", cli.String()+"/64", "dev", "cli0", "nodad")
	l.in("srv", "ip", "addr", "add", srv.String()+"/64", "dev", "srv0", "nodad")
	l.in("srv", "nft", "add table ip6 ikfdrop6; add chain ip6 ikfdrop6 pre { type filter hook prerouting priority -500; policy accept; }; "+
		"add rule ip6 ikfdrop6 pre ip6 saddr "+cli.String()+" ip6 nexthdr 0 counter drop")
	o, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if !o.DropsEnabled() {
		t.Fatalf("drop reporter off: %+v", o.Features())
	}
	l.do("srv", func() { err = o.Attach("srv0") })
	if err != nil {
		t.Fatal(err)
	}

	// A hop-by-hop header of 8 bytes: next header (the kernel's), length
	// 0, one PadN option of 4 bytes.
	hbh := []byte{0, 0, 1, 4, 0, 0, 0, 0}
	l.do("cli", func() {
		var c *net.UDPConn
		if c, err = net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(srv, 500))); err != nil {
			return
		}
		defer c.Close()
		var rc interface{ Control(func(uintptr)) error }
		if rc, err = c.SyscallConn(); err != nil {
			return
		}
		var serr error
		if err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS, string(hbh))
		}); err == nil {
			err = serr
		}
		if err == nil {
			_, err = c.Write(make([]byte, 3000))
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	var first, later *obs.Drop
	deadline := time.After(10 * time.Second)
	for first == nil || later == nil {
		select {
		case r := <-o.Records():
			d := r.Drop
			if d == nil || d.Src != cli || d.Dst != srv || d.Name != "NETFILTER_DROP" {
				continue
			}
			if !d.Fragment || d.Proto != 17 || d.IPID == 0 || d.OtherNetns {
				t.Errorf("drop record: %+v", d)
			}
			if d.FragOffset == 0 {
				first = d
			} else {
				later = d
			}
		case <-deadline:
			t.Fatalf("drop records: first fragment %+v, later one %+v", first, later)
		}
	}
	if first.DstPort != 500 || first.SrcPort == 0 {
		t.Errorf("first fragment's ports not read behind the extension headers: %+v", first)
	}
	if later.DstPort != 0 || later.FragOffset%8 != 0 || later.IPID != first.IPID {
		t.Errorf("later fragment: %+v (first %+v)", later, first)
	}
}
