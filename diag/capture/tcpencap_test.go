package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
)

var (
	encCli = netip.MustParseAddrPort("192.0.2.7:40001")
	encSrv = netip.MustParseAddrPort("198.51.100.1:4500")
)

// seg is a TCP segment as the Defragmenter yields it.
func seg(src, dst netip.AddrPort, seq uint32, flags byte, data []byte) *obs.Datagram {
	h := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint16(h[0:], src.Port())
	binary.BigEndian.PutUint16(h[2:], dst.Port())
	binary.BigEndian.PutUint32(h[4:], seq)
	h[12] = 5 << 4
	h[13] = flags
	return &obs.Datagram{Proto: protoTCP, IPVersion: 4, Src: netip.AddrPortFrom(src.Addr(), 0),
		Dst: netip.AddrPortFrom(dst.Addr(), 0), Payload: append(h, data...), Length: -1, Complete: true, Time: time.Unix(1, 0)}
}

func frame(payload []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(payload)+2)), payload...)
}

func TestTCPStreamsDecode(t *testing.T) {
	ike := append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0x21}, 40)...)
	esp := []byte{0xc0, 0, 0, 1, 0, 0, 0, 7, 1, 2, 3}
	stream := append(append([]byte(tcpEncapPrefix), frame(ike)...), frame(esp)...)
	isn := uint32(1000)

	cases := []struct {
		name string
		segs func() []*obs.Datagram
		want int
		st   func(TCPStats) bool
	}{
		{"in order, split", func() []*obs.Datagram {
			return []*obs.Datagram{seg(encCli, encSrv, isn, tcpSYN, nil),
				seg(encCli, encSrv, isn+1, 0, stream[:3]), seg(encCli, encSrv, isn+4, 0, stream[3:20]),
				seg(encCli, encSrv, isn+21, 0, stream[20:])}
		}, 2, func(s TCPStats) bool { return s.Streams == 1 && s.Frames == 2 }},
		{"out of order and retransmitted", func() []*obs.Datagram {
			return []*obs.Datagram{seg(encCli, encSrv, isn, tcpSYN, nil),
				seg(encCli, encSrv, isn+21, 0, stream[20:]), seg(encCli, encSrv, isn+1, 0, stream[:25]),
				seg(encCli, encSrv, isn+1, 0, stream[:10])}
		}, 2, func(s TCPStats) bool { return s.Retransmits == 1 }},
		{"no SYN, starts at the prefix", func() []*obs.Datagram {
			return []*obs.Datagram{seg(encCli, encSrv, 77, 0, stream)}
		}, 2, nil},
		{"no SYN, mid-stream", func() []*obs.Datagram {
			return []*obs.Datagram{seg(encCli, encSrv, 77, 0, stream[6:])}
		}, 0, func(s TCPStats) bool { return s.Unsynced == 1 }},
		{"not RFC 9329", func() []*obs.Datagram {
			return []*obs.Datagram{seg(encCli, encSrv, isn, tcpSYN, nil), seg(encCli, encSrv, isn+1, 0, []byte("GET / HTTP/1.1\r\n"))}
		}, 0, func(s TCPStats) bool { return s.NotEncap == 1 }},
		{"bad length", func() []*obs.Datagram {
			return []*obs.Datagram{seg(encCli, encSrv, isn, tcpSYN, nil), seg(encCli, encSrv, isn+1, 0, []byte("IKETCP\x00\x03abc"))}
		}, 0, func(s TCPStats) bool { return s.BadFrames == 1 && s.LostBytes == 5 }},
		{"a hole never filled", func() []*obs.Datagram {
			// 4 bytes of the first frame read, 35 after the hole held
			return []*obs.Datagram{seg(encCli, encSrv, isn, tcpSYN, nil),
				seg(encCli, encSrv, isn+1, 0, stream[:10]), seg(encCli, encSrv, isn+31, tcpFIN, stream[30:])}
		}, 0, func(s TCPStats) bool { return s.Gaps == 1 && s.LostBytes == 39 && s.Truncated == 0 }},
		{"FIN inside a frame", func() []*obs.Datagram {
			return []*obs.Datagram{seg(encCli, encSrv, isn, tcpSYN, nil), seg(encCli, encSrv, isn+1, tcpFIN, stream[:20])}
		}, 0, func(s TCPStats) bool { return s.Truncated == 1 }},
	}
	for _, c := range cases {
		s := NewTCPStreams(TCPOptions{})
		var out []*obs.Datagram
		for _, d := range c.segs() {
			out = s.Add(d, out)
		}
		s.Flush()
		if len(out) != c.want {
			t.Errorf("%s: %d frames, want %d (%+v)", c.name, len(out), c.want, s.Stats())
			continue
		}
		if c.want == 2 && (!bytes.Equal(out[0].Payload, ike) || !bytes.Equal(out[1].Payload, esp) ||
			out[0].Src != encCli || out[0].Dst != encSrv || out[0].Proto != protoTCP || out[0].Length != len(ike)) {
			t.Errorf("%s: frames %+v", c.name, out)
		}
		if c.st != nil && !c.st(s.Stats()) {
			t.Errorf("%s: stats %+v", c.name, s.Stats())
		}
	}
}

// TestTCPStreamsLostBytes: a direction given up at its out-of-order bound
// counts what it held and every later byte once, retransmissions not
// again.
func TestTCPStreamsLostBytes(t *testing.T) {
	ike := append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0x21}, 40)...)
	stream := append(append([]byte(tcpEncapPrefix), frame(ike)...), frame(ike)...)
	isn := uint32(1000)
	s := NewTCPStreams(TCPOptions{MaxPending: 16})
	var out []*obs.Datagram
	for _, d := range []*obs.Datagram{seg(encCli, encSrv, isn, tcpSYN, nil),
		seg(encCli, encSrv, isn+1, 0, stream[:10]),    // the prefix and 4 bytes of the first frame
		seg(encCli, encSrv, isn+31, 0, stream[30:40]), // held
		seg(encCli, encSrv, isn+41, 0, stream[40:50]), // beyond MaxPending: given up, 4+10+10 lost
		seg(encCli, encSrv, isn+41, 0, stream[40:50]), // a retransmission: not again
		seg(encCli, encSrv, isn+51, 0, stream[50:]),   // the rest: lost
	} {
		out = s.Add(d, out)
	}
	s.Flush()
	st := s.Stats()
	if len(out) != 0 || st.Gaps != 1 || st.LostBytes != 24+len(stream)-50 {
		t.Errorf("%d frames, stats %+v; want 0 frames, 1 gap, %d bytes lost", len(out), st, 24+len(stream)-50)
	}
}

// FuzzTCPStreams: any segments, any order: no panic, frames only from
// streams that began with the prefix, each within 6..65535 bytes framed,
// the held data within its bound, and no byte both decoded and lost.
func FuzzTCPStreams(f *testing.F) {
	f.Add([]byte("IKETCP\x00\x08\x00\x00\x00\x00ab"), uint8(3), uint16(2))
	f.Add([]byte("IKETCP\xff\xff"), uint8(1), uint16(0))
	f.Fuzz(func(t *testing.T, stream []byte, cuts uint8, shuffle uint16) {
		s := NewTCPStreams(TCPOptions{MaxPending: 1 << 12, MaxStreams: 2})
		n := int(cuts%16) + 1
		var segs []*obs.Datagram
		segs = append(segs, seg(encCli, encSrv, 1, tcpSYN, nil))
		step := max(1, len(stream)/n)
		for off := 0; off < len(stream); off += step {
			end := min(off+step, len(stream))
			segs = append(segs, seg(encCli, encSrv, uint32(2+off), 0, stream[off:end]))
		}
		for i := 1; i+1 < len(segs); i++ {
			if shuffle>>(uint(i)%16)&1 == 1 {
				segs[i], segs[i+1] = segs[i+1], segs[i]
			}
		}
		var out []*obs.Datagram
		for _, d := range segs {
			out = s.Add(d, out)
			for _, t2 := range s.dirs {
				if t2.pendingN > 1<<12 || len(t2.buf) > 65535+len(stream) {
					t.Fatalf("held %d pending, %d buffered", t2.pendingN, len(t2.buf))
				}
			}
		}
		if len(out) > 0 && !bytes.HasPrefix(stream, []byte(tcpEncapPrefix)) {
			t.Fatalf("frames from a stream without the prefix")
		}
		decoded := 0
		for _, d := range out {
			if len(d.Payload) < tcpFrameMin-2 || len(d.Payload) > 65533 {
				t.Fatalf("frame of %d bytes", len(d.Payload))
			}
			decoded += 2 + len(d.Payload)
		}
		// the segments do not overlap: a byte is decoded or lost, once
		s.Flush()
		if st := s.Stats(); st.LostBytes < 0 || decoded+st.LostBytes > len(stream) {
			t.Fatalf("%d bytes decoded and %d lost of a %d-byte stream", decoded, st.LostBytes, len(stream))
		}
	})
}

// A real capture: tcpdump on loopback records an RFC 9329 exchange
// between two sockets of this test (the prefix, an IKE message behind the
// marker, ESP, a frame split over writes, and the answers); the
// EncapReader yields each frame once, in each direction, marked TCP.
func TestEncapReaderCapture(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("tcpdump needs root")
	}
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("no tcpdump")
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	path := filepath.Join(t.TempDir(), "rfc9329.pcap")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dump := exec.CommandContext(ctx, "tcpdump", "-i", "lo", "-U", "--immediate-mode", "-n", "-s", "0", "-w", path, "tcp port "+strconv.Itoa(port))
	var errb bytes.Buffer
	dump.Stderr = &errb
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && !bytes.Contains(errb.Bytes(), []byte("listening")); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	ike := append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0x22}, 300)...)
	esp := append([]byte{0xc0, 0, 0, 9}, bytes.Repeat([]byte{0x33}, 3000)...)
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 6+2+len(ike)+2+len(esp))
		if _, err := io.ReadFull(c, buf); err != nil {
			done <- err
			return
		}
		_, err = c.Write(append(frame(ike), frame(esp)...))
		done <- err
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	all := append(append([]byte(tcpEncapPrefix), frame(ike)...), frame(esp)...)
	for _, part := range [][]byte{all[:4], all[4:100], all[100:]} {
		if _, err := c.Write(part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, c)
	c.Close()
	time.Sleep(300 * time.Millisecond)
	_ = dump.Process.Signal(os.Interrupt)
	_ = dump.Wait()

	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	er := NewEncapReader(r, TCPOptions{})
	defer er.Close()
	var frames []*obs.Datagram
	for {
		rec, err := er.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if d := rec.Datagram; d != nil && d.Proto == protoTCP {
			frames = append(frames, d)
		}
	}
	srv := uint16(port)
	if len(frames) != 4 {
		out, _ := exec.Command("tcpdump", "-n", "-r", path).CombinedOutput()
		t.Fatalf("%d frames, want 4; stats %+v, reader %+v; tcpdump stderr %s; capture:\n%s", len(frames), er.TCPStats(), er.Stats(), errb.String(), out)
	}
	for i, want := range []struct {
		toSrv   bool
		payload []byte
	}{{true, ike}, {true, esp}, {false, ike}, {false, esp}} {
		d := frames[i]
		if (d.Dst.Port() == srv) != want.toSrv || !bytes.Equal(d.Payload, want.payload) || d.Frame == 0 {
			t.Errorf("frame %d: %s → %s, %d bytes, capture frame %d", i, d.Src, d.Dst, len(d.Payload), d.Frame)
		}
	}
	if st := er.TCPStats(); st.Streams != 1 || st.Frames != 4 || st.Gaps != 0 {
		t.Errorf("stats %+v", st)
	}
}
