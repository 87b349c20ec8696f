package lab

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultFilter keeps IKE (UDP 500/4500), ICMP (frag-needed, packet too big)
// and every IP fragment; non-first fragments carry no UDP header, so a port
// filter alone would miss them.
const DefaultFilter = "udp port 500 or udp port 4500 or icmp or icmp6 or " + fragmentFilter

// SnapLen is the capture's snap length; packets above it (only possible on
// lo or with link MTUs above 9000) are truncated.
const SnapLen = 9216

const fragmentFilter = "(ip[6:2] & 0x3fff != 0) or (ip6[6] == 44)"

// Pcap is a running tcpdump.
type Pcap struct {
	// Path of the pcap file (in the lab directory).
	Path string
	// Captured and Dropped are tcpdump's "packets captured" and "packets
	// dropped by kernel" counts, set by Stop. Dropped > 0 means the file
	// misses packets.
	Captured, Dropped int

	cmd      *exec.Cmd
	done     chan struct{}
	mu       sync.Mutex
	stderr   strings.Builder
	stopOnce sync.Once
	stopErr  error
}

// Capture starts tcpdump in a node's namespace on iface ("any" for all)
// and returns once it listens. An empty filter means DefaultFilter; any
// other filter is widened to also match IP fragments. Stop it with Stop; the
// cleanup stops it too. With "any" the file is Linux cooked v2 and a router
// sees each forwarded packet twice, in and out.
func Capture(t testing.TB, n *Node, iface, filter string) *Pcap {
	t.Helper()
	p, err := startCapture(n, iface, filter)
	if err != nil {
		t.Fatalf("lab: capture on %s/%s: %v", n.Role, iface, err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

func startCapture(n *Node, iface, filter string) (*Pcap, error) {
	if filter == "" {
		filter = DefaultFilter
	} else {
		filter = "(" + filter + ") or " + fragmentFilter
	}
	l := n.lab
	l.mu.Lock()
	l.seq++
	name := fmt.Sprintf("%s-%s-%d.pcap", n.Role, iface, l.seq)
	l.mu.Unlock()
	dir := filepath.Join(l.Dir, "captures")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &Pcap{Path: filepath.Join(dir, name), done: make(chan struct{})}
	// -U and --immediate-mode: every packet reaches the file right away,
	// so nothing is lost in a kernel buffer when tcpdump is stopped.
	// Immediate mode makes libpcap use a ring of fixed-size slots sized by
	// the snap length (on "any" it cannot use an MTU instead): with the
	// default 256 KiB and 2 MiB only 8 slots exist and a loaded machine
	// drops packets of an IKE_AUTH burst. 9216 bytes covers every lab MTU,
	// 8 MiB gives hundreds of slots.
	// -Z root: Debian's tcpdump otherwise switches to user tcpdump, who
	// cannot write into the private lab directory.
	p.cmd = exec.Command("ip", "netns", "exec", n.Name, "tcpdump", "-i", iface, "-n",
		"-s", strconv.Itoa(SnapLen), "-B", "8192", "-U", "--immediate-mode", "-Z", "root",
		"-w", p.Path, filter)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	select {
	case <-listening:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("tcpdump exited: %s", p.Stderr())
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("tcpdump did not start: %s", p.Stderr())
	}
}

// Stderr is what tcpdump printed so far.
func (p *Pcap) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

var (
	reCaptured = regexp.MustCompile(`(\d+) packets? captured`)
	reDropped  = regexp.MustCompile(`(\d+) packets? dropped by kernel`)
)

// Stop ends the capture with SIGTERM (tcpdump then flushes and closes the
// file) and waits for it; safe to call more than once.
func (p *Pcap) Stop() error {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			p.stopErr = errors.New("tcpdump ignored SIGTERM, killed")
		}
		if m := reCaptured.FindStringSubmatch(p.Stderr()); m != nil {
			p.Captured, _ = strconv.Atoi(m[1])
		}
		if m := reDropped.FindStringSubmatch(p.Stderr()); m != nil {
			p.Dropped, _ = strconv.Atoi(m[1])
		}
		if p.stopErr == nil {
			if _, err := os.Stat(p.Path); err != nil {
				p.stopErr = err
			}
		}
	})
	return p.stopErr
}

// PcapSummary counts what a capture holds, for quick assertions; use tshark
// or the product's reader for anything finer.
type PcapSummary struct {
	Frames int
	// IPv4Fragments and IPv6Fragments count frames carrying a fragment
	// (first or later).
	IPv4Fragments, IPv6Fragments int
	// UDP500 and UDP4500 count unfragmented or first-fragment UDP frames
	// from or to that port.
	UDP500, UDP4500 int
	// FragNeeded counts ICMPv4 "fragmentation needed" and ICMPv6 "packet
	// too big" messages.
	FragNeeded int
	// MaxIPLen is the largest IP packet seen (header included).
	MaxIPLen int
}

// Summarize reads a pcap file (not pcapng) with Ethernet, raw IP or Linux
// cooked (v1, v2) framing.
func Summarize(path string) (PcapSummary, error) {
	var s PcapSummary
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var gh [24]byte
	if _, err := io.ReadFull(r, gh[:]); err != nil {
		return s, fmt.Errorf("%s: pcap header: %w", path, err)
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(gh[:4]) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return s, fmt.Errorf("%s: not a pcap file", path)
	}
	linkType := bo.Uint32(gh[20:24]) & 0x0fffffff
	var rh [16]byte
	for {
		if _, err := io.ReadFull(r, rh[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return s, nil
			}
			// tcpdump killed mid-record leaves a partial one; count what is whole
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return s, nil
			}
			return s, err
		}
		incl := bo.Uint32(rh[8:12])
		if incl > 1<<20 {
			return s, fmt.Errorf("%s: record of %d bytes", path, incl)
		}
		data := make([]byte, incl)
		if _, err := io.ReadFull(r, data); err != nil {
			return s, nil
		}
		s.Frames++
		if ip := ipPayload(linkType, data); ip != nil {
			s.addIP(ip)
		}
	}
}

// ipPayload strips the link-layer header; nil for non-IP frames.
func ipPayload(linkType uint32, d []byte) []byte {
	var proto uint16
	switch linkType {
	case 1: // Ethernet
		if len(d) < 14 {
			return nil
		}
		proto, d = binary.BigEndian.Uint16(d[12:14]), d[14:]
	case 113: // Linux cooked v1
		if len(d) < 16 {
			return nil
		}
		proto, d = binary.BigEndian.Uint16(d[14:16]), d[16:]
	case 276: // Linux cooked v2
		if len(d) < 20 {
			return nil
		}
		proto, d = binary.BigEndian.Uint16(d[0:2]), d[20:]
	case 101, 12, 14: // raw IP
		if len(d) == 0 {
			return nil
		}
		return d
	default:
		return nil
	}
	if proto != 0x0800 && proto != 0x86dd {
		return nil
	}
	return d
}

func (s *PcapSummary) addIP(ip []byte) {
	port := func(l4 []byte) {
		if len(l4) < 4 {
			return
		}
		sp, dp := binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		if sp == 500 || dp == 500 {
			s.UDP500++
		}
		if sp == 4500 || dp == 4500 {
			s.UDP4500++
		}
	}
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return
		}
		s.MaxIPLen = max(s.MaxIPLen, int(binary.BigEndian.Uint16(ip[2:4])))
		hl := int(ip[0]&0x0f) * 4
		frag := binary.BigEndian.Uint16(ip[6:8])
		offset, more := frag&0x1fff, frag&0x2000 != 0
		if offset != 0 || more {
			s.IPv4Fragments++
		}
		if offset != 0 || len(ip) < hl {
			return
		}
		switch ip[9] {
		case 17:
			port(ip[hl:])
		case 1:
			if len(ip) >= hl+2 && ip[hl] == 3 && ip[hl+1] == 4 {
				s.FragNeeded++
			}
		}
	case 6:
		if len(ip) < 40 {
			return
		}
		s.MaxIPLen = max(s.MaxIPLen, 40+int(binary.BigEndian.Uint16(ip[4:6])))
		next, rest := ip[6], ip[40:]
		if next == 44 {
			s.IPv6Fragments++
			if len(rest) < 8 || binary.BigEndian.Uint16(rest[2:4])&0xfff8 != 0 {
				return
			}
			next, rest = rest[0], rest[8:]
		}
		switch next {
		case 17:
			port(rest)
		case 58:
			if len(rest) >= 1 && rest[0] == 2 {
				s.FragNeeded++
			}
		}
	}
}
