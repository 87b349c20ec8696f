package diag_test

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/test/packet"
)

// RFC 9329 streams in synthetic captures: a TCP connection whose client
// sends the IKETCP prefix, then length-framed messages each way
// (diag/capture's EncapReader decodes them).

// synthTCP is one TCP connection of a synthetic capture.
type synthTCP struct {
	s          *synth
	cli, srv   netip.AddrPort
	seqC, seqS uint32 // next sequence number of each side
	prefixed   bool
}

// tcpOpen adds the three-way handshake of a connection from cli to srv.
func (s *synth) tcpOpen(at time.Duration, cli, srv netip.AddrPort) *synthTCP {
	c := &synthTCP{s: s, cli: cli, srv: srv, seqC: 1000, seqS: 5000}
	c.seg(at, true, packet.TCPSYN, nil)
	c.seg(at+time.Millisecond, false, packet.TCPSYN|packet.TCPACK, nil)
	c.seg(at+2*time.Millisecond, true, packet.TCPACK, nil)
	return c
}

// seg adds one segment; SYN and FIN take a sequence number.
func (c *synthTCP) seg(at time.Duration, fromClient bool, flags uint8, data []byte) {
	src, dst, seq, ack := c.cli, c.srv, &c.seqC, c.seqS
	if !fromClient {
		src, dst, seq, ack = c.srv, c.cli, &c.seqS, c.seqC
	}
	if flags&packet.TCPSYN != 0 && flags&packet.TCPACK == 0 {
		ack = 0
	}
	c.s.id++
	c.s.ip(at, packet.IPv4{Src: src.Addr(), Dst: dst.Addr(), ID: uint16(c.s.id), Proto: packet.ProtoTCP, DF: true,
		Payload: packet.TCP{SrcPort: src.Port(), DstPort: dst.Port(), Seq: *seq, Ack: ack, Flags: flags, Payload: data,
			Src: src.Addr(), Dst: dst.Addr()}.Bytes()}.Bytes())
	*seq += uint32(len(data))
	if flags&(packet.TCPSYN|packet.TCPFIN) != 0 {
		*seq++
	}
}

// frame sends one RFC 9329 frame (IKE with its non-ESP marker, or ESP),
// after the prefix on the client's first, in segments of at most mss
// bytes.
func (c *synthTCP) frame(at time.Duration, fromClient bool, payload []byte, mss int) {
	var b []byte
	if fromClient && !c.prefixed {
		b, c.prefixed = []byte("IKETCP"), true
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)+2))
	b = append(b, payload...)
	for len(b) > 0 {
		n := min(len(b), mss)
		c.seg(at, fromClient, packet.TCPACK|packet.TCPPSH, b[:n])
		b = b[n:]
		at += 100 * time.Microsecond
	}
}

// close adds the client's FIN and the server's.
func (c *synthTCP) close(at time.Duration) {
	c.seg(at, true, packet.TCPFIN|packet.TCPACK, nil)
	c.seg(at+time.Millisecond, false, packet.TCPFIN|packet.TCPACK, nil)
}

// espFrame is an ESP packet of SPI spi, sequence number seq, n bytes.
func espFrame(spi, seq uint32, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b[0:], spi)
	binary.BigEndian.PutUint32(b[4:], seq)
	return b
}

var (
	synCliT = netip.AddrPortFrom(cliAddr, 40001) // the client's TCP port
	synSrvT = netip.AddrPortFrom(srvAddr, 4500)  // RFC 9329's suggested port
)

func init() {
	// A client behind a path that drops IP fragments: its IKE_AUTH
	// request over UDP (3000 bytes, three IP fragments at 1500) is sent
	// three times and never answered; 12 s later it starts again over
	// TCP (RFC 9329, a new IKE SA), where the same request crosses in
	// TCP segments, is answered, and ESP follows in frames.
	synthCaptures["tcp-fallback"] = func() []byte {
		s := newSynth()
		s.initExchange(0, 0x1010, 0x2010)
		req := natt(ikeMsg(0x1010, 0x2010, true, false, ike.ExchangeIKEAuth, 1, sk(3000)))
		for _, at := range []time.Duration{50 * time.Millisecond, 2050 * time.Millisecond, 6050 * time.Millisecond} {
			s.udp(at, synCliN, synSrvN, req, 1500)
		}
		c := s.tcpOpen(18*time.Second, synCliT, synSrvT)
		c.frame(18010*time.Millisecond, true, natt(ikeMsg(0x1011, 0, true, false, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce())), 1448)
		c.frame(18030*time.Millisecond, false, natt(ikeMsg(0x1011, 0x2011, false, true, ike.ExchangeIKESAInit, 0, sa(baseline), ke(ike.GroupMODP2048, 256), nonce())), 1448)
		c.frame(18060*time.Millisecond, true, natt(ikeMsg(0x1011, 0x2011, true, false, ike.ExchangeIKEAuth, 1, sk(3000))), 1448)
		c.frame(18100*time.Millisecond, false, natt(ikeMsg(0x1011, 0x2011, false, true, ike.ExchangeIKEAuth, 1, sk(2000))), 1448)
		for i := range 3 {
			at := 18200*time.Millisecond + time.Duration(i)*50*time.Millisecond
			c.frame(at, true, espFrame(0xc1a0beef, uint32(i+1), 1400), 1448)
			c.frame(at+10*time.Millisecond, false, espFrame(0xc2a0beef, uint32(i+1), 1400), 1448)
		}
		c.close(20 * time.Second)
		return s.pcap()
	}
	// One IKE SA moves from UDP to TCP: IKE_SA_INIT over UDP, the
	// IKE_AUTH request over UDP in IP fragments twice without an
	// answer, then the same request over a TCP stream (RFC 9329),
	// answered there.
	synthCaptures["tcp-switch"] = func() []byte {
		s := newSynth()
		s.initExchange(0, 0x1012, 0x2012)
		req := natt(ikeMsg(0x1012, 0x2012, true, false, ike.ExchangeIKEAuth, 1, sk(3000)))
		for _, at := range []time.Duration{50 * time.Millisecond, 2050 * time.Millisecond} {
			s.udp(at, synCliN, synSrvN, req, 1500)
		}
		c := s.tcpOpen(6*time.Second, synCliT, synSrvT)
		c.frame(6010*time.Millisecond, true, req, 1448)
		c.frame(6050*time.Millisecond, false, natt(ikeMsg(0x1012, 0x2012, false, true, ike.ExchangeIKEAuth, 1, sk(2000))), 1448)
		c.close(8 * time.Second)
		return s.pcap()
	}
}
