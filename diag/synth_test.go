package diag_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/test/packet"
)

// Synthetic captures: datagrams built with the ike codec and test/packet
// for the verdicts the lab (real strongSwan, testdata/lab) cannot produce,
// written to testdata/synth as raw-IP pcaps and read back through the
// capture reader like any file. TestSynthCaptures keeps the files equal to
// what these builders make; -update rewrites them.

// synth accumulates the frames of one synthetic capture.
type synth struct {
	t0     time.Time
	frames []packet.Frame
	id     uint32
}

func newSynth() *synth { return &synth{t0: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)} }

// udp adds the IP packet(s) of one UDP datagram, IP-fragmented to mtu
// (0: never).
func (s *synth) udp(at time.Duration, src, dst netip.AddrPort, payload []byte, mtu int) {
	s.id++
	for _, p := range packet.UDPPackets(src, dst, s.id, payload, mtu) {
		s.frames = append(s.frames, packet.Frame{Time: s.t0.Add(at), Data: p})
	}
}

func (s *synth) ip(at time.Duration, p []byte) {
	s.frames = append(s.frames, packet.Frame{Time: s.t0.Add(at), Data: p})
}

func (s *synth) pcap() []byte { return packet.Pcap(packet.LinkTypeRaw, s.frames) }

// ikeMsg encodes an IKEv2 message of the SA with initiator SPI spii.
func ikeMsg(spii, spir uint64, fromInitiator, response bool, x ike.ExchangeType, mid uint32, ps ...ike.Payload) []byte {
	h := ike.Header{MajorVersion: 2, Exchange: x, MessageID: mid, SPIi: spiOf(spii), SPIr: spiOf(spir)}
	if fromInitiator {
		h.Flags |= ike.FlagInitiator
	}
	if response {
		h.Flags |= ike.FlagResponse
	}
	return (&ike.Message{Header: h, Payloads: ps}).Encode()
}

// natt prefixes the non-ESP marker of UDP port 4500 (RFC 3948 §2.2).
func natt(b []byte) []byte { return append([]byte{0, 0, 0, 0}, b...) }

func sk(n int) ike.Payload {
	return ike.Payload{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDi, Data: make([]byte, n)}}
}

var (
	synCli  = netip.AddrPortFrom(cliAddr, 500)
	synSrv  = netip.AddrPortFrom(srvAddr, 500)
	synCliN = netip.AddrPortFrom(cliAddr, 4500)
	synSrvN = netip.AddrPortFrom(srvAddr, 4500)
)

// initExchange adds an answered IKE_SA_INIT choosing the baseline suite.
func (s *synth) initExchange(at time.Duration, spii, spir uint64) {
	s.udp(at, synCli, synSrv, ikeMsg(spii, 0, true, false, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()), 0)
	s.udp(at+20*time.Millisecond, synSrv, synCli, ikeMsg(spii, spir, false, true, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()), 0)
}

// synthCaptures builds every synthetic capture, by name.
var synthCaptures = map[string]func() []byte{
	// IKE_AUTH requests that fit the path, sent four times, never
	// answered.
	"unanswered-ike-auth": func() []byte {
		s := newSynth()
		s.initExchange(0, 0x1001, 0x2001)
		req := natt(ikeMsg(0x1001, 0x2001, true, false, ike.ExchangeIKEAuth, 1, sk(600)))
		for _, at := range []time.Duration{50 * time.Millisecond, 2050 * time.Millisecond, 5050 * time.Millisecond, 9550 * time.Millisecond} {
			s.udp(at, synCliN, synSrvN, req, 1500)
		}
		return s.pcap()
	},
	// IKE_SA_INIT answered, then nothing from the initiator but a NAT
	// keepalive 5 s later (RFC 3948 §2.3): the IKE_AUTH request never
	// came into view.
	"ike-auth-not-seen": func() []byte {
		s := newSynth()
		s.initExchange(0, 0x1002, 0x2002)
		s.udp(5*time.Second, synCliN, synSrvN, []byte{0xff}, 0)
		return s.pcap()
	},
	// An IKEv1 Main Mode initiator retransmitting message 1 into silence.
	"ikev1-unanswered": func() []byte {
		s := newSynth()
		m := v1(0x1003, 0, 0, 180, true, 7)
		for _, at := range []time.Duration{0, 2 * time.Second, 6 * time.Second} {
			s.udp(at, synCli, synSrv, m, 0)
		}
		return s.pcap()
	},
	// IKE_SA_INIT responses toward an address that sent no request,
	// from three sources (reflection with a spoofed source).
	"unsolicited": func() []byte {
		s := newSynth()
		victim := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.50"), 500)
		for i, src := range []string{"198.51.100.7", "198.51.100.8", "198.51.100.9"} {
			from := netip.AddrPortFrom(netip.MustParseAddr(src), 500)
			s.udp(time.Duration(i)*100*time.Millisecond, from, victim,
				ikeMsg(uint64(0x3000+i), uint64(0x4000+i), false, true, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()), 0)
		}
		return s.pcap()
	},
	// Every error notify of the remedy table, each answering the
	// IKE_SA_INIT of a session of its own, in the clear.
	"error-notifies": func() []byte {
		s := newSynth()
		for i, t := range errorNotifyTypes() {
			spii, spir := uint64(0x5000+i), uint64(0x6000+i)
			at := time.Duration(i) * 100 * time.Millisecond
			s.udp(at, synCli, synSrv, ikeMsg(spii, 0, true, false, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce()), 0)
			var data []byte
			if t == ike.NotifyInvalidKEPayload {
				data = []byte{0, byte(ike.GroupECP256)}
			}
			s.udp(at+10*time.Millisecond, synSrv, synCli, ikeMsg(spii, spir, false, true, ike.ExchangeIKESAInit, 0, notify(t, data...)), 0)
		}
		return s.pcap()
	},
	// The tunnel is up (IKE on the NAT-T port); ESP-in-UDP datagrams of
	// 1400 bytes meet a 1280-byte link, and the router there answers with
	// ICMP fragmentation needed quoting them.
	"esp-exceeds-pmtu": func() []byte {
		s := newSynth()
		s.initExchange(0, 0x1004, 0x2004)
		s.udp(50*time.Millisecond, synCliN, synSrvN, natt(ikeMsg(0x1004, 0x2004, true, false, ike.ExchangeIKEAuth, 1, sk(900))), 0)
		s.udp(80*time.Millisecond, synSrvN, synCliN, natt(ikeMsg(0x1004, 0x2004, false, true, ike.ExchangeIKEAuth, 1, sk(700))), 0)
		router := netip.MustParseAddr("192.0.2.1")
		for i := range 3 {
			esp := make([]byte, 1372)
			binary.BigEndian.PutUint32(esp[0:4], 0xc1a0beef)
			binary.BigEndian.PutUint32(esp[4:8], uint32(i+1))
			at := time.Second + time.Duration(i)*300*time.Millisecond
			s.id++
			p := packet.IPv4{Src: cliAddr, Dst: srvAddr, ID: uint16(s.id), Proto: packet.ProtoUDP, DF: true,
				Payload: packet.UDP{SrcPort: 4500, DstPort: 4500, Payload: esp, Src: cliAddr, Dst: srvAddr}.Bytes()}.Bytes()
			s.ip(at, p)
			s.ip(at+time.Millisecond, packet.ICMPTooBig(router, p, 1280))
		}
		return s.pcap()
	},
}

// errorNotifyTypes are the notify types whose verdicts are named after
// them (diag.OtherVerdicts), in numeric order.
func errorNotifyTypes() []ike.NotifyType {
	codes := map[diag.Code]bool{}
	for _, v := range diag.OtherVerdicts() {
		codes[v.Code] = true
	}
	var out []ike.NotifyType
	for t := ike.NotifyType(1); t < 16384; t++ {
		if codes[diag.Code(t.String())] {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestSynthCaptures keeps testdata/synth equal to what the builders make.
func TestSynthCaptures(t *testing.T) {
	for name, build := range synthCaptures {
		t.Run(name, func(t *testing.T) {
			got := build()
			file := filepath.Join("testdata", "synth", name+".pcap")
			if *update {
				if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./diag -run TestSynthCaptures -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from what its builder makes: run go test ./diag -run TestSynthCaptures -update and review", file)
			}
		})
	}
}
