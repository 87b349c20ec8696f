package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/test/packet"
)

// testFrames is an IKE_AUTH-like train of 3 fragments plus one whole packet,
// as raw IPv4.
func testFrames() (frames [][]byte, payload []byte) {
	payload = pattern(3000, 11)
	frames = packet.SplitIPv4(packet.IPv4{Src: addrA, Dst: addrB, ID: 0x1b1e, Proto: 17}, packet.UDPBytes(4500, 4500, payload, 0), 1440, 2880)
	frames = append(frames, packet.IPv4{Src: addrB, Dst: addrA, ID: 1, Proto: 17, Payload: packet.UDPBytes(500, 500, []byte("x"), 0)}.Bytes())
	return frames, payload
}

// pcapBytes writes frames as a classic pcap file by hand, so both byte
// orders and both resolutions are covered.
func pcapBytes(order binary.AppendByteOrder, nano bool, lt uint32, frames [][]byte) []byte {
	magic := uint32(0xa1b2c3d4)
	if nano {
		magic = 0xa1b23c4d
	}
	var b []byte
	b = order.AppendUint32(b, magic)
	b = order.AppendUint16(b, 2)
	b = order.AppendUint16(b, 4)
	b = order.AppendUint32(b, 0)
	b = order.AppendUint32(b, 0)
	b = order.AppendUint32(b, 65535)
	b = order.AppendUint32(b, lt)
	for i, f := range frames {
		ts := t0.Add(time.Duration(i)*time.Second + 123456789)
		sub := uint32(ts.Nanosecond() / 1000)
		if nano {
			sub = uint32(ts.Nanosecond())
		}
		b = order.AppendUint32(b, uint32(ts.Unix()))
		b = order.AppendUint32(b, sub)
		b = order.AppendUint32(b, uint32(len(f)))
		b = order.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

func readRecords(t *testing.T, data []byte, name string) ([]obs.Record, Stats, error) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(data), name, Options{})
	if err != nil {
		return nil, Stats{}, err
	}
	var recs []obs.Record
	for {
		rec, err := r.Next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return recs, r.Stats(), err
		}
		recs = append(recs, rec)
	}
}

func checkTestRecords(t *testing.T, recs []obs.Record, payload []byte, micro bool) {
	t.Helper()
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	d := recs[0].Datagram
	if d == nil || !d.Complete || !bytes.Equal(d.Payload, payload) || len(d.Frags) != 3 || d.IPID != 0x1b1e {
		t.Fatalf("first record %+v", recs[0])
	}
	want := t0.Add(123456789)
	if micro {
		want = want.Truncate(time.Microsecond)
	}
	if !d.Time.Equal(want) || !d.Last.Equal(want.Add(2*time.Second)) {
		t.Errorf("times %v %v, want %v", d.Time, d.Last, want)
	}
	if w := recs[1].Datagram; w == nil || w.Frame != 4 || string(w.Payload) != "x" {
		t.Errorf("second record %+v", recs[1])
	}
}

func TestPcapVariants(t *testing.T) {
	frames, payload := testFrames()
	for _, c := range []struct {
		name  string
		order binary.AppendByteOrder
		nano  bool
	}{
		{"le-micro", binary.LittleEndian, false},
		{"be-micro", binary.BigEndian, false},
		{"le-nano", binary.LittleEndian, true},
		{"be-nano", binary.BigEndian, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			recs, st, err := readRecords(t, pcapBytes(c.order, c.nano, 101, frames), c.name)
			if err != nil {
				t.Fatal(err)
			}
			checkTestRecords(t, recs, payload, !c.nano)
			if st.Frames != 4 || st.Decoded != 4 || st.Defrag.Reassembled != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	t.Run("gzip", func(t *testing.T) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(pcapBytes(binary.LittleEndian, true, 101, frames))
		zw.Close()
		recs, _, err := readRecords(t, buf.Bytes(), "gz")
		if err != nil {
			t.Fatal(err)
		}
		checkTestRecords(t, recs, payload, false)
	})
	t.Run("pcapgo writer, Ethernet", func(t *testing.T) {
		var buf bytes.Buffer
		w := pcapgo.NewWriterNanos(&buf)
		if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
			t.Fatal(err)
		}
		for i, f := range frames {
			eth := packet.Cat(make([]byte, 12), []byte{0x08, 0x00}, f)
			ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i)*time.Second + 123456789), CaptureLength: len(eth), Length: len(eth)}
			if err := w.WritePacket(ci, eth); err != nil {
				t.Fatal(err)
			}
		}
		recs, _, err := readRecords(t, buf.Bytes(), "eth")
		if err != nil {
			t.Fatal(err)
		}
		checkTestRecords(t, recs, payload, false)
	})
}

// TestPcapng writes a pcapng file with two interfaces of different link
// types and direction flags.
func TestPcapng(t *testing.T) {
	frames, payload := testFrames()
	var buf bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&buf, pcapgo.NgInterface{Name: "eth0", LinkType: layers.LinkTypeEthernet, SnapLength: 65535}, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := w.AddInterface(pcapgo.NgInterface{Name: "tun0", LinkType: layers.LinkTypeRaw, SnapLength: 65535})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i)*time.Second + 123456789), CaptureLength: len(f), Length: len(f), InterfaceIndex: raw}
		opts := pcapgo.NgPacketOptions{Flags: &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}}
		if err := w.WritePacketWithOptions(ci, f, opts); err != nil {
			t.Fatal(err)
		}
	}
	eth := packet.Cat(make([]byte, 12), []byte{0x08, 0x00}, frames[3])
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(eth), Length: len(eth)}, eth); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(bytes.NewReader(buf.Bytes()), "ng", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []obs.Record
	for rec, err := range r.All() {
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	checkTestRecords(t, recs[:2], payload, false)
	if d := recs[0].Datagram; d.Ifindex != 2 || d.Dir != obs.DirEgress {
		t.Errorf("raw interface: %+v", d.Source)
	}
	if d := recs[2].Datagram; d.Ifindex != 1 || d.Dir != obs.DirUnknown || d.Frame != 5 {
		t.Errorf("ethernet interface: %+v", d.Source)
	}
	if r.LinkType() != layers.LinkTypeRaw {
		t.Errorf("link type %v", r.LinkType())
	}
}

// TestTruncatedFile: a file cut inside a record yields the records before
// it, the open train as incomplete, then an error naming file and frame.
func TestTruncatedFile(t *testing.T) {
	frames, _ := testFrames()
	full := pcapBytes(binary.LittleEndian, false, 101, frames)
	hdr := 24
	rec := func(i int) int { // offset of record i
		off := hdr
		for j := 0; j < i; j++ {
			off += 16 + len(frames[j])
		}
		return off
	}
	for _, c := range []struct {
		name string
		cut  int
	}{
		{"inside the data", rec(2) + 16 + 100},
		{"after the record header", rec(2) + 16},
		{"inside the record header", rec(2) + 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			recs, st, err := readRecords(t, full[:c.cut], "cut.pcap")
			var fe *FileError
			if !errors.As(err, &fe) || fe.Frame != 3 || fe.Path != "cut.pcap" || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v", err)
			}
			if !strings.Contains(err.Error(), "cut.pcap") || !strings.Contains(err.Error(), "frame 3") {
				t.Errorf("message %q", err)
			}
			if len(recs) != 1 || recs[0].Datagram.Complete || len(recs[0].Datagram.Frags) != 2 || st.Frames != 2 {
				t.Errorf("records %d, frames %d", len(recs), st.Frames)
			}
		})
	}
	// A file that ends exactly after a record is fine.
	if _, _, err := readRecords(t, full[:rec(3)], "ok"); err != nil {
		t.Errorf("clean end: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	frames, _ := testFrames()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write("wifi.pcap", pcapBytes(binary.LittleEndian, false, 105, frames))
	_, err := Open(p, Options{})
	var lt *UnsupportedLinkTypeError
	if !errors.As(err, &lt) || lt.LinkType != 105 || !strings.Contains(err.Error(), "wifi.pcap") || !strings.Contains(err.Error(), "105") {
		t.Errorf("unsupported link type: %v", err)
	}
	if _, err := Open(write("text.pcap", []byte("hello world, not a capture")), Options{}); err == nil || !strings.Contains(err.Error(), "not a pcap") {
		t.Errorf("text file: %v", err)
	}
	if _, err := Open(write("empty.pcap", nil), Options{}); err == nil || !strings.Contains(err.Error(), "empty.pcap") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := Open(write("short.pcap", pcapBytes(binary.LittleEndian, false, 1, nil)[:10]), Options{}); err == nil {
		t.Error("short header accepted")
	}
	if _, err := Open(filepath.Join(dir, "missing.pcap"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestPacketsSkips: malformed frames are counted by reason, never fatal.
func TestPacketsSkips(t *testing.T) {
	good := packet.IPv4{Src: addrA, Dst: addrB, Proto: 17, Payload: packet.UDPBytes(500, 500, nil, 0)}.Bytes()
	bad := slices0(good)
	bad[0] = 0x44
	frames := [][]byte{good, bad, {0x60}, good[:19], good}
	pk, err := NewPackets(bytes.NewReader(pcapBytes(binary.BigEndian, false, 101, frames)), "skips")
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for p, err := range pk.All() {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Frame)
	}
	st := pk.Stats()
	if len(got) != 2 || got[0] != 1 || got[1] != 5 || st.Skipped[ReasonIPHeader] != 3 || st.SkippedTotal() != 3 || st.Frames != 5 {
		t.Errorf("frames %v stats %+v", got, st)
	}
}

func slices0(b []byte) []byte { return append([]byte(nil), b...) }
