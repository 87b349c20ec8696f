package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/proxy"
)

// IKE over an RFC 9329 stream reaches the engine live: a client on
// loopback speaks IKE_SA_INIT and IKE_AUTH over TCP to the proxy's
// listener, which relays them over UDP to a backend on 127.0.0.2 that
// answers; the proxy hands each message to the pipeline
// (Deps.TCPFrames = pipeline.tcpFrame), and the engine shows one session
// marked TCP, its ladder rows TCP, established.
func TestPipelineTCPFramesFromProxy(t *testing.T) {
	pipe := newPipeline(diag.Options{}, 20, slog.New(slog.DiscardHandler), newEventHub(), newMetrics())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pipe.run(ctx, nil)

	// the backend answers every request with a response of the same
	// exchange and Message ID, under its own SPI
	be, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 on loopback: %v", err)
	}
	defer be.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := be.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n < 4+ike.HeaderLen {
				continue
			}
			h, err := ike.ParseHeader(buf[4:n])
			if err != nil {
				continue
			}
			resp := marker(tcpTestMsg(h.SPIi, 0x5150, false, true, h.Exchange, h.MessageID))
			_, _ = be.WriteToUDPAddrPort(resp, from)
		}
	}()
	bePort := be.LocalAddr().(*net.UDPAddr).Port
	// the backend's IKE port: streams go to its NAT-T port only
	beIKE, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer beIKE.Close()
	ikePort, nattPort := freeUDPPort(t), freeUDPPort(t)
	cfg := proxy.Config{Listen: []string{"127.0.0.1"}, IKEPort: ikePort, NATTPort: nattPort, FastPath: proxy.FastPathOff,
		TCP:      proxy.TCPConfig{Listen: []string{"127.0.0.1:0"}},
		Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", beIKE.LocalAddr().(*net.UDPAddr).Port, bePort)}}
	px, err := proxy.New(cfg, proxy.Deps{TCPFrames: pipe.tcpFrame})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = px.Run(ctx) }()
	defer px.Close()

	c, err := net.DialTimeout("tcp", px.TCPAddrs()[0].String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	spi := ike.SPI{0, 0, 0, 0, 0, 0, 0x70, 0x01}
	frame := func(b []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(b)+2)), b...) }
	recv := func() {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, int(binary.BigEndian.Uint16(l[:]))-2)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Write(append([]byte("IKETCP"), frame(marker(tcpTestMsg(spi, 0, true, false, ike.ExchangeIKESAInit, 0)))...)); err != nil {
		t.Fatal(err)
	}
	recv()
	if _, err := c.Write(frame(marker(tcpTestMsg(spi, 0x5150, true, false, ike.ExchangeIKEAuth, 1)))); err != nil {
		t.Fatal(err)
	}
	recv()

	var rep diag.Report
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := pipe.query(ctx, func(e *diag.Engine) { rep = e.Report(true) }); err != nil {
			t.Fatal(err)
		}
		if len(rep.Sessions) == 1 && len(rep.Sessions[0].Ladder) == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(rep.Sessions) != 1 {
		t.Fatalf("sessions %+v", rep.Sessions)
	}
	s := rep.Sessions[0]
	if s.Transport != diag.TransportTCP || !s.Established || len(s.Ladder) != 4 || s.Client != c.LocalAddr().String() || s.Server != px.TCPAddrs()[0].String() {
		t.Fatalf("session %+v", s)
	}
	for _, r := range s.Ladder {
		if !r.TCP {
			t.Errorf("ladder row not marked TCP: %+v", r)
		}
	}
	if pipe.recTCP.Load() != 4 || pipe.tcpDropped.Load() != 0 || pipe.recDatagrams.Load() != 0 {
		t.Errorf("records: tcp %d, dropped %d, datagrams %d", pipe.recTCP.Load(), pipe.tcpDropped.Load(), pipe.recDatagrams.Load())
	}
	// what `ikefragctl stats` gets: the frames in records and engine, the
	// listener's counters as proxy_tcp
	if r := pipe.recordCounts(); r.TCPFrames != 4 || r.TCPFramesDropped != 0 {
		t.Errorf("stats records %+v", r)
	}
	var es diag.Stats
	if err := pipe.query(ctx, func(e *diag.Engine) { es = e.Stats() }); err != nil {
		t.Fatal(err)
	}
	if w := engineStats(es); w.TCPFrames != 4 || w.Datagrams != 4 {
		t.Errorf("stats engine %+v", w)
	}
	if pt := proxyTCP(px.TCPStats()); pt == nil || pt.Connections != 1 || pt.FramesIn != 2 || pt.FramesOut != 2 || pt.Split != 0 {
		t.Errorf("stats proxy_tcp %+v", pt)
	}
}

// tcpTestMsg is an IKEv2 message: IKE_SA_INIT with SA, KE and Nonce, any
// other exchange with an SK payload.
func tcpTestMsg(spii ike.SPI, spir uint64, fromInitiator, response bool, x ike.ExchangeType, mid uint32) []byte {
	h := ike.Header{MajorVersion: 2, Exchange: x, MessageID: mid, SPIi: spii}
	if spir != 0 {
		binary.BigEndian.PutUint64(h.SPIr[:], spir)
	}
	if fromInitiator {
		h.Flags |= ike.FlagInitiator
	}
	if response {
		h.Flags |= ike.FlagResponse
	}
	var ps []ike.Payload
	if x == ike.ExchangeIKESAInit {
		sa := &ike.SA{Proposals: []ike.Proposal{{Number: 1, Protocol: ike.ProtocolIKE, Transforms: []ike.Transform{
			{Type: ike.TransformENCR, ID: uint16(ike.EncrAESCBC), Attributes: []ike.Attribute{{Type: ike.AttrKeyLength, TV: true, Value: []byte{1, 0}}}},
			{Type: ike.TransformPRF, ID: uint16(ike.PRFHMACSHA2_256)},
			{Type: ike.TransformINTEG, ID: uint16(ike.IntegHMACSHA2_256128)},
			{Type: ike.TransformDH, ID: uint16(ike.GroupMODP2048)}}}}}
		sa.SetMarkers()
		ps = []ike.Payload{{Type: ike.PayloadSA, Body: sa}, {Type: ike.PayloadKE, Body: &ike.KE{Group: ike.GroupMODP2048, Data: make([]byte, 256)}},
			{Type: ike.PayloadNonce, Body: &ike.Nonce{Data: make([]byte, 32)}}}
	} else {
		ps = []ike.Payload{{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDi, Data: make([]byte, 200)}}}
	}
	return (&ike.Message{Header: h, Payloads: ps}).Encode()
}

// marker prefixes the non-ESP marker (RFC 3948 §2.2; RFC 9329 §3).
func marker(b []byte) []byte { return append(make([]byte, 4), b...) }

// freeUDPPort returns a UDP port on 127.0.0.1 free at the time of the call.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
