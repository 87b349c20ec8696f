package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/ike"
)

// Flood rates: a million distinct fragment trains per minute and 10 000
// IKE_SA_INIT-shaped datagrams per second.
const (
	floodTrainsPerSec = 1_000_000 / 60
	floodIKEPerSec    = 10_000
	// rssBound is the resident set the daemon must stay under, in bytes.
	rssBound = 128 << 20
)

// TestFloodMemoryAndAccounting floods the observed interface of a daemon
// from another namespace with distinct fragment trains (one middle
// fragment each, so none completes) and IKE_SA_INIT requests with distinct
// SPIs from many sources. The daemon's RSS must stay under rssBound, and
// the counters must account for every packet sent. 10 s by default;
// IKEFRAG_LONG=1 runs the full 60 s.
func TestFloodMemoryAndAccounting(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	dur := 10 * time.Second
	if os.Getenv("IKEFRAG_LONG") == "1" {
		dur = 60 * time.Second
	}
	if testing.Short() {
		t.Skip("-short: the flood takes tens of seconds")
	}
	gen, mon := newNetns(t), newNetns(t)
	gen.ip("link", "add", "g0", "type", "veth", "peer", "name", "m0", "netns", mon.name)
	gen.ip("addr", "add", "10.251.0.1/24", "dev", "g0")
	mon.ip("addr", "add", "10.251.0.2/24", "dev", "m0")
	gen.ip("link", "set", "g0", "up")
	mon.ip("link", "set", "m0", "up")
	// Spoofed sources must reach reassembly, so that the kernel's own
	// counters can be compared with the sender's.
	for _, k := range []string{"all", "default", "m0"} {
		if out, err := runIn(mon.name, "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0"); err != nil {
			t.Fatalf("sysctl: %v %s", err, out)
		}
	}

	d := newDaemon(t, bins, mon.name, "interfaces: [m0]\n")
	d.start()
	pid := d.cmd.Process.Pid
	hc := nsHTTP(t, mon.name)
	base := scrape(t, hc, "127.0.0.1:9717")
	rssStart, _ := procRSS(pid)

	s := newFloodSender(t, gen.name, mon.name)
	rssMax := rssStart
	stopSample := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopSample:
				return
			case <-tk.C:
				if r, _ := procRSS(pid); r > rssMax {
					rssMax = r
				}
			}
		}
	}()
	start := time.Now()
	trains, ikes := s.run(dur)
	elapsed := time.Since(start)

	// Let the ring buffer and the engine drain: wait until the records
	// counter stops moving.
	var stats control.Stats
	prev := uint64(0)
	waitFor(30*time.Second, func() bool {
		stats = control.Stats{}
		d.ctlJSON(&stats, "stats")
		n := stats.Records.Datagrams
		// Settled: no new records, and the engine has taken every record
		// read (its counters come from a snapshot it publishes).
		e := stats.Engine
		stable := n == prev && n > 0 && e.Datagrams+e.Undecodable+e.Orphans == n
		prev = n
		return stable
	})
	close(stopSample)
	<-sampled
	rssEnd, hwm := procRSS(pid)
	if hwm > rssMax {
		rssMax = hwm
	}
	m := scrape(t, hc, "127.0.0.1:9717")
	t.Logf("flood %v (sent in %v): %d trains (%.0f/s), %d IKE_SA_INIT (%.0f/s)", dur, elapsed.Round(time.Millisecond),
		trains, float64(trains)/elapsed.Seconds(), ikes, float64(ikes)/elapsed.Seconds())
	t.Logf("daemon RSS: %.1f MiB at start, %.1f MiB peak, %.1f MiB at the end (bound %d MiB)",
		mib(rssStart), mib(rssMax), mib(rssEnd), rssBound>>20)
	if rssMax > rssBound {
		t.Errorf("RSS peaked at %.1f MiB, above the %d MiB bound", mib(rssMax), rssBound>>20)
	}

	var ing control.IfaceStats
	for _, i := range stats.Interfaces {
		if i.Name == "m0" {
			ing = i
		}
	}
	c := func(class string) uint64 { return ing.Ingress[class].Packets }
	o, e, r := stats.Observer, stats.Engine, stats.Records
	t.Logf("BPF m0 ingress: ikev2 %d, frag_middle %d, trains started %d, insert failures %d, incomplete %d, ringbuf failures %d; trains evicted %d, live %d",
		c("ikev2"), c("frag_middle"), c("trains_started"), c("lru_insert_fail"), c("trains_incomplete"), c("ringbuf_fail"), o.TrainsEvicted, o.TrainsLive)
	t.Logf("user space: %d datagram records, %d dropped (queue full), %d undecodable; engine: %d IKE datagrams, %d orphan trains, %d undecodable, sessions evicted %d",
		r.Datagrams, o.RecordsDropped, o.DecodeErrors, e.Datagrams, e.Orphans, e.Undecodable, e.Evicted)
	t.Logf("kernel (mon): %v", stats.Kernel["ipv4"])

	// Every packet sent was classified.
	if c("ikev2") != ikes || c("frag_middle") != trains {
		t.Errorf("BPF counted ikev2 %d and frag_middle %d; sent %d and %d", c("ikev2"), c("frag_middle"), ikes, trains)
	}
	if got := c("trains_started") + c("lru_insert_fail"); got != trains {
		t.Errorf("trains started %d + insert failures %d = %d; sent %d", c("trains_started"), c("lru_insert_fail"), got, trains)
	}
	// Every train is live, evicted by the LRU map or reported incomplete.
	if got := o.TrainsLive + o.TrainsEvicted + c("trains_incomplete"); got != c("trains_started") {
		t.Errorf("live %d + evicted %d + incomplete %d = %d; started %d", o.TrainsLive, o.TrainsEvicted, c("trains_incomplete"), got, c("trains_started"))
	}
	// Every IKE datagram reached the engine or was counted as lost on the
	// way: in the ring buffer, the record queue or the decoder.
	reached := e.Datagrams + e.Undecodable
	lost := c("ringbuf_fail") + o.RecordsDropped + o.DecodeErrors
	if reached > ikes || reached+lost < ikes {
		t.Errorf("IKE datagrams: %d sent, %d reached the engine, %d counted lost", ikes, reached, lost)
	}
	// Records are IKE datagrams and the incomplete trains reported.
	if r.Datagrams != e.Datagrams+e.Undecodable+e.Orphans {
		t.Errorf("%d datagram records, engine took %d + %d undecodable + %d orphan trains", r.Datagrams, e.Datagrams, e.Undecodable, e.Orphans)
	}
	// The kernel saw the same fragments.
	if k := stats.Kernel["ipv4"]["ReasmReqds"]; k < trains {
		t.Errorf("kernel ReasmReqds %d < %d fragments sent", k, trains)
	}
	// Retention is bounded.
	var st control.Status
	d.ctlJSON(&st, "status")
	if st.Sessions > 10000 || st.Peers > 40000 {
		t.Errorf("engine holds %d sessions and %d peers", st.Sessions, st.Peers)
	}
	delta := func(name string) float64 { return m[name] - base[name] }
	if delta(`ikefrag_packets_total{class="ikev2",direction="ingress",interface="m0"}`) != float64(ikes) {
		t.Errorf("/metrics ikev2 delta %v, sent %d", delta(`ikefrag_packets_total{class="ikev2",direction="ingress",interface="m0"}`), ikes)
	}
	if m[`ikefrag_kernel_ip_frag_total{counter="ReasmReqds",family="ipv4"}`] < float64(trains) {
		t.Errorf("/metrics kernel ReasmReqds %v", m[`ikefrag_kernel_ip_frag_total{counter="ReasmReqds",family="ipv4"}`])
	}
	if h := d.status(); !h.Healthy {
		t.Errorf("unhealthy after the flood: %v", h.Problems)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// procRSS returns a process's resident set and its peak (VmHWM), in bytes.
func procRSS(pid int) (rss, hwm uint64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm
}

func runIn(ns string, name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	return string(out), err
}

// floodSender writes Ethernet frames straight onto g0 (AF_PACKET): no
// socket or routing work in the sender, so the two cores go to the
// receiving side.
type floodSender struct {
	t      *testing.T
	fd     int
	addr   unix.SockaddrLinklayer
	srcMAC net.HardwareAddr
	dstMAC net.HardwareAddr
	ike    []byte // an IKE_SA_INIT request; its SPI changes per datagram
}

func newFloodSender(t *testing.T, genNS, monNS string) *floodSender {
	t.Helper()
	s := &floodSender{t: t}
	inNetns(t, monNS, func() error {
		l, err := netlink.LinkByName("m0")
		if err != nil {
			return err
		}
		s.dstMAC = l.Attrs().HardwareAddr
		return nil
	})
	inNetns(t, genNS, func() error {
		l, err := netlink.LinkByName("g0")
		if err != nil {
			return err
		}
		s.srcMAC = l.Attrs().HardwareAddr
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		s.fd = fd
		s.addr = unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Halen: 6, Protocol: htons(unix.ETH_P_IP)}
		copy(s.addr.Addr[:], s.dstMAC)
		// Skip the sender's qdisc: frames go to the driver directly.
		return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	})
	t.Cleanup(func() { unix.Close(s.fd) })
	s.ike = ikeSAInit()
	if _, err := ike.Decode(s.ike); err != nil {
		t.Fatalf("the flood's IKE_SA_INIT does not decode: %v", err)
	}
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// run sends for dur, paced in 10 ms slices, and returns what it sent.
func (s *floodSender) run(dur time.Duration) (trains, ikes uint64) {
	const slice = 10 * time.Millisecond
	frag := s.frame(64)
	dgram := s.frame(8 + len(s.ike))
	start := time.Now()
	for n := 1; ; n++ {
		due := start.Add(time.Duration(n) * slice)
		elapsed := due.Sub(start)
		if elapsed > dur {
			break
		}
		wantT := uint64(elapsed.Seconds() * floodTrainsPerSec)
		wantI := uint64(elapsed.Seconds() * floodIKEPerSec)
		for trains < wantT || ikes < wantI {
			if trains < wantT {
				s.fillTrain(frag, trains)
				if s.send(frag) {
					trains++
				}
			}
			if ikes < wantI {
				s.fillIKE(dgram, ikes)
				if s.send(dgram) {
					ikes++
				}
			}
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
	return trains, ikes
}

func (s *floodSender) send(frame []byte) bool {
	for {
		err := unix.Sendto(s.fd, frame, 0, &s.addr)
		if err == nil {
			return true
		}
		if err != unix.ENOBUFS && err != unix.EAGAIN {
			s.t.Fatalf("send: %v", err)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// frame returns an Ethernet + IPv4 frame with room for payloadLen bytes.
func (s *floodSender) frame(payloadLen int) []byte {
	b := make([]byte, 14+20+payloadLen)
	copy(b[0:], s.dstMAC)
	copy(b[6:], s.srcMAC)
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+payloadLen))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	copy(ip[16:], []byte{10, 251, 0, 2})
	return b
}

// fillTrain makes frame the only fragment of train i: a middle fragment
// (offset 1480, MF) from 10.252.0.0/16, distinct by source and IP ID.
func (s *floodSender) fillTrain(b []byte, i uint64) {
	ip := b[14:]
	binary.BigEndian.PutUint16(ip[4:], uint16(i))
	binary.BigEndian.PutUint16(ip[6:], 0x2000|1480/8)
	copy(ip[12:], []byte{10, 252, byte(i >> 24), byte(i >> 16)})
	ipChecksum(ip)
}

// fillIKE makes frame IKE_SA_INIT request i: UDP 500 → 500 from one of
// 65 536 sources in 10.253.0.0/16, with SPIi i.
func (s *floodSender) fillIKE(b []byte, i uint64) {
	ip := b[14:]
	binary.BigEndian.PutUint16(ip[4:], uint16(i))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	copy(ip[12:], []byte{10, 253, byte(i >> 8), byte(i)})
	ipChecksum(ip)
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 500)
	binary.BigEndian.PutUint16(udp[2:], 500)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(s.ike)))
	binary.BigEndian.PutUint16(udp[6:], 0) // no checksum (IPv4)
	copy(udp[8:], s.ike)
	binary.BigEndian.PutUint64(udp[8:], i+1) // SPIi, never zero
}

func ipChecksum(ip []byte) {
	ip[10], ip[11] = 0, 0
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
}

// ikeSAInit builds a typical IKE_SA_INIT request: one proposal
// (AES-CBC-256, SHA2-256 PRF and integrity, MODP-2048), a 256-byte KE, a
// 32-byte nonce and the NAT detection notifies.
func ikeSAInit() []byte {
	type pl struct {
		t    ike.PayloadType
		body []byte
	}
	hexb := func(s string) []byte {
		s = strings.Join(strings.Fields(s), "")
		b := make([]byte, len(s)/2)
		for i := range b {
			v, _ := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
			b[i] = byte(v)
		}
		return b
	}
	ps := []pl{
		{ike.PayloadSA, hexb(`00 00 002c 01 01 00 04
			03 00 000c 01 00 000c 800e0100
			03 00 0008 02 00 0005
			03 00 0008 03 00 000c
			00 00 0008 04 00 000e`)},
		{ike.PayloadKE, append(hexb("000e 0000"), make([]byte, 256)...)},
		{ike.PayloadNonce, make([]byte, 32)},
		{ike.PayloadNotify, append(hexb("00 00 4004"), make([]byte, 20)...)},
		{ike.PayloadNotify, append(hexb("00 00 4005"), make([]byte, 20)...)},
	}
	h := ike.Header{MajorVersion: 2, Exchange: ike.ExchangeIKESAInit, Flags: ike.FlagInitiator, NextPayload: ps[0].t}
	h.SPIi[7] = 1
	b := h.AppendTo(nil)
	for i, p := range ps {
		next := ike.PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].t
		}
		b = append(b, byte(next), 0)
		b = binary.BigEndian.AppendUint16(b, uint16(4+len(p.body)))
		b = append(b, p.body...)
	}
	binary.BigEndian.PutUint32(b[24:], uint32(len(b)))
	return b
}
