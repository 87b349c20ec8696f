package main

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// One ordinary UDP socket sending distinct SKF fragments of one IKE SA
// makes the diagnosis forget state to stay within diag.max_memory: the
// daemon stays healthy and says it is degraded, and why, in status and on
// /healthz.
func TestMemoryBudgetDegradedInStatus(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	gen, mon := newNetns(t), newNetns(t)
	gen.ip("link", "add", "g0", "type", "veth", "peer", "name", "m0", "netns", mon.name)
	gen.ip("addr", "add", "10.252.0.1/24", "dev", "g0")
	mon.ip("addr", "add", "10.252.0.2/24", "dev", "m0")
	gen.ip("link", "set", "g0", "up")
	mon.ip("link", "set", "m0", "up")
	d := newDaemon(t, bins, mon.name, "interfaces: [m0]\ndiag:\n  max_memory: 1048576\n")
	d.start()
	defer d.stop()

	// SKF fragments (RFC 7383 §2.5): 256 of each of 40 messages, 1000
	// bytes of ciphertext each, far past one IKE SA's share of 1 MiB.
	msg := func(mid uint32, frag uint16) []byte {
		h := ike.Header{SPIi: ike.SPI{1, 2, 3}, SPIr: ike.SPI{4, 5, 6}, NextPayload: ike.PayloadEncryptedFragment,
			MajorVersion: 2, Exchange: ike.ExchangeIKEAuth, Flags: ike.FlagInitiator, MessageID: mid}
		body := make([]byte, 8+1000)
		body[0] = 0 // next payload: only the first fragment names one
		binary.BigEndian.PutUint16(body[2:], uint16(len(body)))
		binary.BigEndian.PutUint16(body[4:], frag)
		binary.BigEndian.PutUint16(body[6:], 256)
		h.Length = uint32(ike.HeaderLen + len(body))
		return append(h.AppendTo(nil), body...)
	}
	inNetns(t, gen.name, func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 252, 0, 2), Port: 500})
		if err != nil {
			return err
		}
		defer c.Close()
		for mid := uint32(1); mid <= 40; mid++ {
			for f := uint16(1); f <= 256; f++ {
				_, _ = c.Write(msg(mid, f))
			}
			time.Sleep(5 * time.Millisecond) // not faster than the ring buffer takes
		}
		return nil
	})
	hc := nsHTTP(t, mon.name)
	var body string
	ok := waitFor(30*time.Second, func() bool {
		st := d.status()
		if !st.Healthy || len(st.Degraded) == 0 {
			return false
		}
		r, err := hc.Get("http://127.0.0.1:9717/healthz")
		if err != nil {
			return false
		}
		defer r.Body.Close()
		b := make([]byte, 4096)
		n, _ := r.Body.Read(b)
		body = string(b[:n])
		return r.StatusCode == 200 && strings.HasPrefix(body, "degraded: ") && strings.Contains(body, "memory budget")
	})
	if !ok {
		st := d.status()
		t.Fatalf("not degraded: status healthy %v problems %v degraded %v; /healthz %q", st.Healthy, st.Problems, st.Degraded, body)
	}
	out, _ := d.ctl("status")
	if !strings.Contains(out, "DEGRADED: diagnosis memory budget") {
		t.Errorf("ikefragctl status does not say degraded:\n%s", out)
	}
}
