package ebpf

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
	"github.com/ikefrag/ikefrag/netcfg"
)

var (
	labCli   = netip.MustParseAddr("10.200.1.2")
	labSrv   = netip.MustParseAddr("10.200.2.2")
	labSrvNT = netip.MustParseAddr("10.200.2.3") // the address whose fragments are dropped
)

// pathLab builds cli -- mid -- srv. mid routes and drops, with nftables
// before defragmentation, the fragment at offset 1480 of every datagram
// sent to labSrvNT.
func pathLab(t *testing.T) *lab {
	l := newLab(t, "cli", "mid", "srv")
	l.veth("cli", "cli0", "mid", "midc")
	l.veth("mid", "mids", "srv", "srv0")
	l.in("cli", "ip", "addr", "add", "10.200.1.2/24", "dev", "cli0")
	l.in("mid", "ip", "addr", "add", "10.200.1.1/24", "dev", "midc")
	l.in("mid", "ip", "addr", "add", "10.200.2.1/24", "dev", "mids")
	l.in("srv", "ip", "addr", "add", "10.200.2.2/24", "dev", "srv0")
	l.in("srv", "ip", "addr", "add", "10.200.2.3/24", "dev", "srv0")
	l.in("cli", "ip", "route", "add", "default", "via", "10.200.1.1")
	l.in("srv", "ip", "route", "add", "default", "via", "10.200.2.1")
	l.in("mid", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.in("srv", "sysctl", "-qw", "net.ipv4.ipfrag_time=2")
	l.in("mid", "nft", "add table ip ikfdrop; add chain ip ikfdrop pre { type filter hook prerouting priority -500; policy accept; }; "+
		"add rule ip ikfdrop pre ip daddr 10.200.2.3 ip frag-off & 0x1fff == 185 counter drop")
	return l
}

// send sends each payload as one UDP datagram from the cli namespace.
func (l *lab) send(t *testing.T, to netip.AddrPort, payloads ...[]byte) {
	t.Helper()
	var err error
	l.do("cli", func() {
		var c *net.UDPConn
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			return
		}
		defer c.Close()
		for _, p := range payloads {
			if _, err = c.Write(p); err != nil {
				return
			}
		}
	})
	if err != nil {
		t.Fatalf("send to %v: %v", to, err)
	}
}

func collect(t *testing.T, o *Observer, until time.Duration, done func([]obs.Record) bool) []obs.Record {
	t.Helper()
	var out []obs.Record
	deadline := time.After(until)
	for !done(out) {
		select {
		case r, ok := <-o.Records():
			if !ok {
				return out
			}
			// The kfree_skb hook sees the whole host: keep only this lab.
			if r.Drop != nil && r.Drop.Src != labCli {
				continue
			}
			out = append(out, r)
		case <-deadline:
			return out
		}
	}
	return out
}

func TestIntegrationPathDropsFragment(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachTC} {
		t.Run(string(mode), func(t *testing.T) { runPathLab(t, mode) })
	}
}

func runPathLab(t *testing.T, mode AttachMode) {
	if mode == AttachTCX {
		kfeattest.Require(t, kfeat.TCX)
	}
	l := pathLab(t)
	// The fragment is dropped on mid, the observer watches srv: a drop in
	// a namespace it does not observe, reported because it is asked to.
	o, err := New(Options{AttachMode: mode, TrainTimeout: time.Second, AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var ifindex int
	l.do("srv", func() {
		if err = o.Attach("srv0"); err != nil {
			return
		}
		ln, e := netcfg.LinkByName("srv0")
		if e != nil {
			err = e
			return
		}
		ifindex = ln.Attrs().Index
	})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	if got := o.AttachedMode(ifindex); got != mode {
		t.Fatalf("attached with %q, want %q", got, mode)
	}

	whole := ike(2, 35, 1, 3000)
	natt := append([]byte{0, 0, 0, 0}, ike(2, 35, 1, 5000)...)
	l.send(t, netip.AddrPortFrom(labSrv, 500), whole)
	l.send(t, netip.AddrPortFrom(labSrvNT, 4500), natt)

	var complete, incomplete *obs.Datagram
	var drop *obs.Drop
	recs := collect(t, o, 10*time.Second, func(rs []obs.Record) bool {
		for _, r := range rs {
			if d := r.Datagram; d != nil && d.Complete && d.Dst.Addr() == labSrv {
				complete = d
			}
			if d := r.Datagram; d != nil && !d.Complete && d.Dst.Addr() == labSrvNT {
				incomplete = d
			}
			if r.Drop != nil && r.Drop.Dst == labSrvNT && r.Drop.Name == "NETFILTER_DROP" {
				drop = r.Drop
			}
		}
		return complete != nil && incomplete != nil && (drop != nil || !o.DropsEnabled())
	})
	if complete == nil || incomplete == nil {
		t.Fatalf("records: %d, complete %v, incomplete %v", len(recs), complete != nil, incomplete != nil)
	}
	// 3000 bytes of IKE, 3008 of UDP: 1480 + 1480 + 48.
	if complete.Length != 3000 || complete.TotalLen != 3008 || len(complete.Frags) != 3 || complete.Frags[2].Len != 48 ||
		complete.Src.Addr() != labCli || complete.Dst.Port() != 500 || complete.Source.Ifindex != ifindex || complete.Source.Dir != obs.DirIngress {
		t.Errorf("complete train: %+v", complete)
	}
	if len(complete.Payload) != 1472 || !complete.Truncated || string(complete.Payload) != string(whole[:1472]) {
		t.Errorf("complete train payload: %d bytes", len(complete.Payload))
	}
	// 5004 bytes of UDP payload, 5012 of IP payload; the fragment at 1480
	// never arrived.
	if incomplete.Length != 5004 || incomplete.TotalLen != 5012 || len(incomplete.Frags) != 3 ||
		len(incomplete.Missing) != 1 || incomplete.Missing[0] != (obs.Range{Start: 1480, End: 2960}) || incomplete.Dst.Port() != 4500 {
		t.Errorf("incomplete train: %+v", incomplete)
	}
	if kfeat.DropReasons() == nil && !o.DropsEnabled() {
		t.Errorf("the kernel has drop reasons but the drop reporter is off: %+v", o.Features())
	}
	if o.DropsEnabled() {
		if drop == nil {
			t.Fatal("no NETFILTER_DROP record for the dropped fragment")
		}
		if !drop.Fragment || drop.FragOffset != 1480 || drop.IPID != incomplete.IPID || drop.Proto != 17 || !drop.OtherNetns || drop.Netns == 0 {
			t.Errorf("drop record: %+v", drop)
		}
	} else {
		t.Log("kfree_skb program unavailable: drop record not checked")
	}

	s, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Interfaces) != 1 {
		t.Fatalf("counters for %d interfaces", len(s.Interfaces))
	}
	in := s.Interfaces[0].Ingress
	if in[CounterFragFirst].Packets != 2 || in[CounterFragMiddle].Packets != 2 || in[CounterFragLast].Packets != 2 ||
		in[CounterTrainsStarted].Packets != 2 || in[CounterTrainsCompleted].Packets != 1 || in[CounterTrainsIncomplete].Packets != 1 ||
		in[CounterIKEv2].Packets != 2 {
		t.Errorf("ingress counters: %v", in)
	}

	// Detach leaves nothing behind.
	o.Close()
	l.do("srv", func() {
		err = checkNothingAttached(ifindex)
	})
	if err != nil {
		t.Error(err)
	}
}

func checkNothingAttached(ifindex int) error {
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		if kfeat.TCX() != nil {
			break
		}
		r, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		if err != nil {
			return err
		}
		if len(r.Programs) != 0 {
			return errorf("%d tcx programs left on %v", len(r.Programs), at)
		}
	}
	l, err := netcfg.LinkByIndex(ifindex)
	if err != nil {
		return err
	}
	for _, d := range []netcfg.Dir{netcfg.Ingress, netcfg.Egress} {
		names, err := netcfg.BPFFilters(l, d)
		if err != nil && !strings.Contains(err.Error(), "invalid argument") {
			return err
		}
		if len(names) != 0 {
			return errorf("tc filters left on %s: %v", d, names)
		}
	}
	return nil
}

// Legacy tc filters survive the process; a new observer removes those a
// crashed run left and installs its own, and Close removes those.
func TestTCStaleFiltersRemoved(t *testing.T) {
	l := newLab(t, "one")
	l.in("one", "ip", "link", "add", "e0", "type", "veth", "peer", "name", "e1")
	l.in("one", "ip", "link", "set", "e0", "up")
	stale := emptyTC(t)
	var err error
	l.do("one", func() {
		ln, e := netcfg.LinkByName("e0")
		if e != nil {
			err = e
			return
		}
		if _, err = netcfg.EnsureClsact(ln); err != nil {
			return
		}
		for _, d := range []netcfg.Dir{netcfg.Ingress, netcfg.Egress} {
			if err = netcfg.AttachBPF(ln, d, stale.FD(), FilterPrefix+"-"+d.String()); err != nil {
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(Options{AttachMode: AttachTC, NoDrops: true})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var ifindex int
	var in, eg []string
	l.do("one", func() {
		if err = o.Attach("e0"); err != nil {
			return
		}
		ln, _ := netcfg.LinkByName("e0")
		ifindex = ln.Attrs().Index
		in, _ = netcfg.BPFFilters(ln, netcfg.Ingress)
		eg, _ = netcfg.BPFFilters(ln, netcfg.Egress)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 1 || len(eg) != 1 {
		t.Fatalf("filters after attach: ingress %v egress %v", in, eg)
	}
	if err := o.Detach(ifindex); err != nil {
		t.Fatal(err)
	}
	l.do("one", func() { err = checkNothingAttached(ifindex) })
	if err != nil {
		t.Fatal(err)
	}
}

func TestOptionsValidation(t *testing.T) {
	bad := []Options{
		{CaptureBytes: CaptureMax + 1},
		{RingBufferSize: 5000},
		{MaxInterfaces: 300},
		{AttachMode: "xdp"},
		{TrainMapSize: -1},
		{TrainTimeout: -time.Second},
	}
	for _, o := range bad {
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	d, err := Options{}.withDefaults()
	if err != nil || d.IKEPort != 500 || d.NATTPort != 4500 || d.CaptureBytes != 1500 || d.TrainTimeout <= 0 || d.AttachMode != AttachAuto {
		t.Errorf("defaults %+v %v", d, err)
	}
}

// A fragmentation-needed message that the receiving host's firewall drops
// is a local path-MTU discovery black hole: the drop reporter hands it up
// with its ICMP type and code.
func TestDropOfICMPTooBig(t *testing.T) {
	requireBPF(t)
	kfeattest.Require(t, kfeat.DropReasons)
	l := pathLab(t)
	l.in("srv", "nft", "add table ip ikficmp; add chain ip ikficmp in { type filter hook input priority 0; policy accept; }; "+
		"add rule ip ikficmp in icmp type destination-unreachable icmp code frag-needed counter drop")
	o, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if !o.DropsEnabled() {
		t.Fatalf("drop reporter off: %+v", o.Features())
	}
	// An ICMP fragmentation needed (MTU 1280) quoting a UDP datagram from
	// srv to cli's port 500, sent from cli to srv.
	quoted := []byte{0x45, 0, 0, 0x30, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 200, 2, 2, 10, 200, 1, 2, 0x01, 0xf4, 0x01, 0xf4, 0, 0x1c, 0, 0}
	msg, err := (&icmp.Message{Type: ipv4.ICMPTypeDestinationUnreachable, Code: 4,
		Body: &icmp.DstUnreach{Data: quoted}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint16(msg[6:], 1280) // next-hop MTU (RFC 1191)
	binary.BigEndian.PutUint16(msg[2:], 0)
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	send := func() {
		t.Helper()
		l.do("cli", func() {
			var c net.PacketConn
			if c, err = net.ListenPacket("ip4:icmp", "0.0.0.0"); err != nil {
				return
			}
			defer c.Close()
			_, err = c.WriteTo(msg, &net.IPAddr{IP: labSrv.AsSlice()})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Nothing of srv's namespace is observed yet: the drop is counted, not
	// reported.
	send()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := o.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if s.DropsOtherNetns > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the drop in an unobserved namespace was not counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.do("srv", func() { err = o.Attach("srv0") })
	if err != nil {
		t.Fatal(err)
	}
	send()
	var drop *obs.Drop
	collect(t, o, 10*time.Second, func(rs []obs.Record) bool {
		for _, r := range rs {
			if d := r.Drop; d != nil && d.Proto == 1 && d.Src == labCli && d.Dst == labSrv {
				drop = d
			}
		}
		return drop != nil
	})
	if drop == nil {
		t.Fatal("no drop record for the dropped fragmentation-needed message")
	}
	if drop.ICMPType != 3 || drop.ICMPCode != 4 || drop.Name != "NETFILTER_DROP" || drop.SrcPort != 0 || drop.DstPort != 0 || drop.OtherNetns {
		t.Errorf("drop record: %+v", drop)
	}
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
