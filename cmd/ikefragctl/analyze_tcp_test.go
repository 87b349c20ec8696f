package main

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/test/packet"
)

// A session that moves from UDP to TCP (RFC 9329): the TCP rows carry
// [TCP], and one line between the last UDP row and the first TCP row says
// so, as wide as the rows.
func TestLadderTransportSwitch(t *testing.T) {
	s := diag.SessionReport{Transport: diag.TransportUDPTCP, Ladder: []diag.LadderRow{
		{FromClient: true, Exchange: "IKE_AUTH", MessageID: 1, Length: 3032, IPFragments: 3, Complete: true, Copies: 1},
		{Offset: 2 * time.Second, FromClient: true, Exchange: "IKE_AUTH", MessageID: 1, Length: 3032, IPFragments: 3, Complete: true, Retransmission: true, Copies: 1},
		{Offset: 6 * time.Second, FromClient: true, Exchange: "IKE_AUTH", MessageID: 1, Length: 3032, IPFragments: 1, Complete: true, Retransmission: true, TCP: true, Copies: 1},
		{Offset: 6050 * time.Millisecond, Exchange: "IKE_AUTH", MessageID: 1, Response: true, Length: 2032, IPFragments: 1, Complete: true, TCP: true, Copies: 1},
	}}
	var b bytes.Buffer
	writeLadder(&b, &s)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines, want a header, 4 rows and one switch line:\n%s", len(lines), b.String())
	}
	if !strings.Contains(lines[3], "UDP → TCP (RFC 9329)") || strings.Contains(lines[3], "|") {
		t.Errorf("line 4 is not the switch line:\n%s", b.String())
	}
	row := lines[2][strings.Index(lines[2], "|") : strings.LastIndex(lines[2], "|")+1]
	sw := strings.TrimLeft(lines[3], " ")
	if utf8.RuneCountInString(sw) != len(row) || strings.Index(lines[3], "~") != strings.Index(lines[2], "|") {
		t.Errorf("switch line not as wide as the rows:\n%s", b.String())
	}
	for i, l := range lines[2:] {
		if tcp := i >= 2; strings.Contains(l, "[TCP]") != tcp && strings.Contains(l, "|") {
			t.Errorf("line %d: [TCP] marker %v, want %v:\n%s", i+3, !tcp, tcp, b.String())
		}
	}
}

// An RFC 9329 stream the capture lost a segment of: what came before the
// hole is decoded (an IKE_SA_INIT over TCP), the IKE_AUTH request whose
// middle segment is missing is not, and analyze says how many bytes it
// could not decode, in a warning and in the stream counters (text and
// JSON). The capture is built with test/packet.
func TestAnalyzeTCPStreamGap(t *testing.T) {
	cli := netip.MustParseAddrPort("192.0.2.10:40001")
	srv := netip.MustParseAddrPort("198.51.100.20:4500")
	spi := func(v uint64) (s ike.SPI) { binary.BigEndian.PutUint64(s[:], v); return s }
	msg := func(fromClient, response bool, x ike.ExchangeType, mid uint32, ps ...ike.Payload) []byte {
		h := ike.Header{MajorVersion: 2, Exchange: x, MessageID: mid, SPIi: spi(0x9001)}
		if response || x != ike.ExchangeIKESAInit {
			h.SPIr = spi(0x9002)
		}
		if fromClient {
			h.Flags |= ike.FlagInitiator
		}
		if response {
			h.Flags |= ike.FlagResponse
		}
		return append(make([]byte, 4), (&ike.Message{Header: h, Payloads: ps}).Encode()...)
	}
	frame := func(b []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(b)+2)), b...) }
	nonce := ike.Payload{Type: ike.PayloadNonce, Body: &ike.Nonce{Data: make([]byte, 32)}}
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	var frames []packet.Frame
	seq := map[bool]uint32{true: 100, false: 700}
	id := uint16(0)
	seg := func(at time.Duration, fromClient bool, flags uint8, data []byte, captured bool) {
		src, dst := cli, srv
		if !fromClient {
			src, dst = srv, cli
		}
		id++
		p := packet.IPv4{Src: src.Addr(), Dst: dst.Addr(), ID: id, Proto: packet.ProtoTCP, DF: true,
			Payload: packet.TCP{SrcPort: src.Port(), DstPort: dst.Port(), Seq: seq[fromClient], Ack: seq[!fromClient], Flags: flags,
				Payload: data, Src: src.Addr(), Dst: dst.Addr()}.Bytes()}.Bytes()
		if captured {
			frames = append(frames, packet.Frame{Time: t0.Add(at), Data: p})
		}
		seq[fromClient] += uint32(len(data))
		if flags&(packet.TCPSYN|packet.TCPFIN) != 0 {
			seq[fromClient]++
		}
	}
	seg(0, true, packet.TCPSYN, nil, true)
	seg(time.Millisecond, false, packet.TCPSYN|packet.TCPACK, nil, true)
	seg(2*time.Millisecond, true, packet.TCPACK, nil, true)
	seg(10*time.Millisecond, true, packet.TCPACK|packet.TCPPSH, append([]byte("IKETCP"), frame(msg(true, false, ike.ExchangeIKESAInit, 0, nonce))...), true)
	seg(30*time.Millisecond, false, packet.TCPACK|packet.TCPPSH, frame(msg(false, true, ike.ExchangeIKESAInit, 0, nonce)), true)
	auth := frame(msg(true, false, ike.ExchangeIKEAuth, 1, ike.Payload{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDi, Data: make([]byte, 3000)}}))
	seg(50*time.Millisecond, true, packet.TCPACK, auth[:1000], true)
	seg(50*time.Millisecond, true, packet.TCPACK, auth[1000:2000], false) // not in the capture
	seg(50*time.Millisecond, true, packet.TCPACK|packet.TCPPSH, auth[2000:], true)
	seg(time.Second, true, packet.TCPFIN|packet.TCPACK, nil, true)
	path := filepath.Join(t.TempDir(), "gap.pcap")
	if err := os.WriteFile(path, packet.Pcap(packet.LinkTypeRaw, frames), 0o600); err != nil {
		t.Fatal(err)
	}
	lost := 1000 + len(auth) - 2000 // before the hole and after it
	r, code := analyzeJSON(t, path)
	if code != 0 || r.TCPStreams == nil || *r.TCPStreams != (diag.TCPStreamCounts{Streams: 1, Frames: 2, Gaps: 1, LostBytes: lost}) {
		t.Fatalf("exit %d, tcp_streams %+v; want 1 stream, 2 frames, 1 gap, %d bytes lost", code, r.TCPStreams, lost)
	}
	if len(r.Sessions) != 1 || r.Sessions[0].Transport != diag.TransportTCP || len(r.Sessions[0].Ladder) != 2 || !r.Sessions[0].Ladder[0].TCP {
		t.Fatalf("sessions %+v", r.Sessions)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "could not be decoded") {
		t.Errorf("warnings %q", r.Warnings)
	}
	out, _ := runCtl(t, "analyze", path)
	for _, want := range []string{"session 1  IKEv2 over TCP (RFC 9329)", "IKE_SA_INIT req #0", "[TCP]",
		"RFC 9329 TCP streams: 1 stream(s), 2 frame(s), " + strconv.Itoa(lost) + " byte(s) lost in 1 gap(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("analyze output lacks %q:\n%s", want, out)
		}
	}
}
