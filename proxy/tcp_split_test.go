package proxy

import (
	"bytes"
	"container/list"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
)

// clientAuth is a TCP client's IKE_AUTH request of n inner payload bytes
// sealed whole as one SK message with the initiator's keys, as RFC 9329
// clients send it, behind the non-ESP marker.
func clientAuth(t testing.TB, sa *sk.SA, spiI, spiR ike.SPI, mid uint32, n int) (*sk.Decrypted, []byte) {
	t.Helper()
	d := &sk.Decrypted{Header: ike.Header{SPIi: spiI, SPIr: spiR, MajorVersion: 2, Exchange: ike.ExchangeIKEAuth,
		Flags: ike.FlagInitiator, MessageID: mid}, Inner: ike.PayloadType(35), Payloads: make([]byte, n)}
	_, _ = rand.Read(d.Payloads)
	msg, err := sa.Seal(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d, marked(msg)
}

// checkSplit plays the backend (the responder) on the datagrams the proxy
// sent for d: each fits mtu as an IPv4 datagram and carries the marker;
// they are SKF fragments 1..T of T of d's Message ID with the header's
// SPIs and flags, the first inner payload type in fragment 1 only, and
// distinct IVs; reassembled with the responder's copy of the keys they
// give d back.
func checkSplit(t *testing.T, sa *sk.SA, d *sk.Decrypted, ds [][]byte, mtu int) {
	t.Helper()
	checkSplitFor(t, sa, d, ds, mtu, 20)
}

// checkSplitFor is checkSplit for a path whose IP header is ipHdr bytes.
func checkSplitFor(t *testing.T, sa *sk.SA, d *sk.Decrypted, ds [][]byte, mtu, ipHdr int) {
	t.Helper()
	if len(ds) < 2 {
		t.Fatalf("%d datagrams, want a split", len(ds))
	}
	r := sk.NewReassembler(sk.ReassemblerConfig{})
	var done *sk.Decrypted
	ivs := map[string]bool{}
	for i, dg := range ds {
		if ipHdr+8+len(dg) > mtu {
			t.Errorf("fragment %d: IP datagram of %d bytes exceeds %d", i+1, ipHdr+8+len(dg), mtu)
		}
		if !bytes.Equal(dg[:4], []byte{0, 0, 0, 0}) {
			t.Fatalf("fragment %d without the non-ESP marker", i+1)
		}
		msg := dg[4:]
		h, err := ike.ParseHeader(msg)
		if err != nil || int(h.Length) != len(msg) || h.NextPayload != ike.PayloadEncryptedFragment ||
			h.SPIi != d.Header.SPIi || h.SPIr != d.Header.SPIr || h.MessageID != d.Header.MessageID ||
			h.Flags != d.Header.Flags || h.Exchange != d.Header.Exchange {
			t.Fatalf("fragment %d header %+v (err %v)", i+1, h, err)
		}
		skf := msg[ike.HeaderLen:]
		np, number, total := ike.PayloadType(skf[0]), binary.BigEndian.Uint16(skf[4:]), binary.BigEndian.Uint16(skf[6:])
		if int(number) != i+1 || int(total) != len(ds) {
			t.Errorf("fragment %d says %d of %d, %d sent", i+1, number, total, len(ds))
		}
		if (i == 0 && np != d.Inner) || (i > 0 && np != ike.PayloadNone) {
			t.Errorf("fragment %d: SKF Next Payload %d", i+1, np)
		}
		iv := string(skf[ike.SKFHeaderLen : ike.SKFHeaderLen+8])
		if ivs[iv] {
			t.Errorf("fragment %d repeats an IV", i+1)
		}
		ivs[iv] = true
		res := r.Add(sa, msg)
		if res.Status == sk.StatusComplete {
			done = res.Message
		} else if res.Status != sk.StatusStored {
			t.Fatalf("fragment %d: responder says %v (%v)", i+1, res.Status, res.Drop)
		}
	}
	if done == nil || !bytes.Equal(done.Payloads, d.Payloads) || done.Inner != d.Inner || done.Header.MessageID != d.Header.MessageID {
		t.Fatalf("reassembled %+v, want the client's message", done)
	}
}

// splitEngine is engine with the TCP path's split state; the flow's
// upstream socket is connected to sink (what the proxy sends the backend
// itself: key prompts).
func splitEngine(t testing.TB, src keys.Source) (p *Proxy, f *Flow, sink *net.UDPConn) {
	p, f = engine(t, src, false)
	p.tcp = &tcpServer{p: p, frag: sk.NewFragmenter(sk.FragmenterConfig{Now: p.now}), noFlow: list.New()}
	f.ln = &listener{p: p, natt: true, tcp: &tcpConn{}}
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	up, err := dialUDP(sink.LocalAddr().(*net.UDPAddr).AddrPort(), sockOpts{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	f.up = up
	return p, f, sink
}

// Keyed: a TCP client's IKE_AUTH larger than the path to the backend is
// cut into SKF fragments the responder takes back whole, each fitting the
// path; its retransmission gets the same fragments byte for byte (and so
// does a copy the client sealed again with another IV).
func TestTCPSplitsLargeClientMessage(t *testing.T) {
	spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
	for _, suite := range []sk.Suite{
		{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128},
		{Encr: sk.EncrAESGCM16, KeyBits: 256},
	} {
		for _, path := range []struct {
			mtu int
			v6  bool
		}{{1280, false}, {576, false}, {1280, true}} {
			mtu, ipHdr := path.mtu, 20
			if path.v6 {
				ipHdr = 40
			}
			t.Run(fmt.Sprintf("%s/%d/v6=%v", suite, mtu, path.v6), func(t *testing.T) {
				sa := testSA(t, suite)
				p, f, _ := splitEngine(t, oneKey{sa})
				if path.v6 {
					f.be.cfg.NATT = netip.MustParseAddrPort("[2001:db8::1]:4500")
				}
				negotiate(p, f, spiI, spiR, true)
				d, payload := clientAuth(t, sa, spiI, spiR, 1, 4500)
				fr := ike.ClassifyNATT(payload)
				out := p.tcpSplit(f, payload, fr, mtu, p.now())
				checkSplitFor(t, sa, d, out, mtu, ipHdr)
				first := make([][]byte, len(out))
				for i, o := range out {
					first[i] = append([]byte(nil), o...)
				}
				again := p.tcpSplit(f, payload, fr, mtu, p.now())
				// the client seals the same message again (another IV)
				resealed, err := sa.Seal(d, nil)
				if err != nil {
					t.Fatal(err)
				}
				third := p.tcpSplit(f, marked(resealed), ike.ClassifyNATT(marked(resealed)), mtu, p.now())
				for _, got := range [][][]byte{again, third} {
					if len(got) != len(first) {
						t.Fatalf("retransmission: %d fragments, first time %d", len(got), len(first))
					}
					for i := range got {
						if !bytes.Equal(got[i], first[i]) {
							t.Fatalf("retransmission: fragment %d differs", i+1)
						}
					}
				}
				st := p.tcp.stats()
				if st.Split != 1 || st.SplitReplays != 2 || st.SplitFragments != uint64(3*len(out)) || len(st.Unsplit) != 0 {
					t.Errorf("stats %+v", st)
				}
				// a new message (next Message ID) is cut afresh
				d2, p2 := clientAuth(t, sa, spiI, spiR, 2, 3000)
				checkSplitFor(t, sa, d2, p2Split(t, p, f, p2, mtu), mtu, ipHdr)
				if st := p.tcp.stats(); st.Split != 2 {
					t.Errorf("second message: split %d", st.Split)
				}
			})
		}
	}
}

func p2Split(t *testing.T, p *Proxy, f *Flow, payload []byte, mtu int) [][]byte {
	t.Helper()
	return p.tcpSplit(f, payload, ike.ClassifyNATT(payload), mtu, p.now())
}

// What is relayed as it is, and the reasons counted for an oversize
// message left whole.
func TestTCPSplitPreconditions(t *testing.T) {
	suite := sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128}
	sa := testSA(t, suite)
	spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
	_, big := clientAuth(t, sa, spiI, spiR, 1, 4500)
	cases := []struct {
		name    string
		src     keys.Source
		neg     bool // the backend announced fragmentation
		off     bool // refragment: off
		payload []byte
		mtu     int
		miss    string // "": nothing counted
		prompts uint64 // key prompts sent
	}{
		{name: "fits", src: oneKey{sa}, neg: true, payload: big, mtu: 9000},
		{name: "small", src: oneKey{sa}, neg: true, payload: marked(ikeRequest(spiI, spiR, ike.ExchangeInformational, 2)), mtu: 576},
		{name: "ike_sa_init", src: oneKey{sa}, neg: true, payload: marked(bigInit()), mtu: 576},
		{name: "esp", src: oneKey{sa}, neg: true, payload: append([]byte{0xc0, 1, 2, 3}, make([]byte, 3000)...), mtu: 576},
		{name: "not negotiated", src: oneKey{sa}, payload: big, mtu: 1280, miss: "not_negotiated"},
		{name: "no keys", src: oneKey{}, neg: true, payload: big, mtu: 1280, miss: "no_keys", prompts: 1},
		{name: "no keys for a response", src: oneKey{}, neg: true, payload: func() []byte {
			d := &sk.Decrypted{Header: ike.Header{SPIi: spiI, SPIr: spiR, MajorVersion: 2, Exchange: ike.ExchangeCreateChildSA,
				Flags: ike.FlagInitiator | ike.FlagResponse, MessageID: 3}, Inner: ike.PayloadType(33), Payloads: make([]byte, 3000)}
			m, err := sa.Seal(d, nil)
			if err != nil {
				t.Fatal(err)
			}
			return marked(m)
		}(), mtu: 1280, miss: "no_keys"},
		{name: "keyless", neg: true, payload: big, mtu: 1280, miss: "no_keys"},
		{name: "refragment off", src: oneKey{sa}, neg: true, off: true, payload: big, mtu: 1280, miss: "refragment_off"},
		{name: "other keys", src: oneKey{testSA(t, suite)}, neg: true, payload: big, mtu: 1280, miss: "open_failed"},
		{name: "too many fragments", src: oneKey{sa}, neg: true, payload: func() []byte {
			_, m := clientAuth(t, sa, spiI, spiR, 1, 40000)
			return m
		}(), mtu: 576, miss: "cut_failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, f, _ := splitEngine(t, c.src)
			if c.src == nil {
				p.keys, p.keyed = nil, false
			}
			if c.off {
				p.s.Refragment = RefragmentOff
			}
			negotiate(p, f, spiI, spiR, c.neg)
			if out := p.tcpSplit(f, c.payload, ike.ClassifyNATT(c.payload), c.mtu, p.now()); out != nil {
				t.Fatalf("%d datagrams, want the frame relayed as it is", len(out))
			}
			st := p.tcp.stats()
			want := map[string]uint64(nil)
			if c.miss != "" {
				want = map[string]uint64{c.miss: 1}
			}
			if fmt.Sprint(st.Unsplit) != fmt.Sprint(want) || st.Split != 0 || st.SplitKeyPrompts != c.prompts {
				t.Errorf("unsplit %v, split %d, key prompts %d; want %v, %d prompts", st.Unsplit, st.Split, st.SplitKeyPrompts, want, c.prompts)
			}
		})
	}
}

// bigInit is an IKE_SA_INIT request of 2 KB (a large KE payload).
func bigInit() []byte {
	m := ikeSAInit(7, true)
	ke := 8 + 20 // the notify, the SA
	m = append(m[:ike.HeaderLen+ke+8], append(make([]byte, 2000), m[ike.HeaderLen+ke+8:]...)...)
	binary.BigEndian.PutUint16(m[ike.HeaderLen+ke+2:], uint16(12+2000))
	binary.BigEndian.PutUint32(m[24:], uint32(len(m)))
	return m
}

// splitBackend answers IKE_SA_INIT requests (ikeAnswer: the notifies are
// echoed, IKEV2_FRAGMENTATION_SUPPORTED among them) and records every
// other datagram.
type splitBackend struct {
	c  *net.UDPConn
	mu sync.Mutex
	in [][]byte
}

func (b *splitBackend) serve() {
	buf := make([]byte, 65536)
	for {
		n, from, err := b.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		h, err := ike.ParseHeader(buf[min(4, n):n])
		if err == nil && h.Exchange == ike.ExchangeIKESAInit && !h.Flags.Response() {
			r := ikeAnswer(buf[:n], 7)
			_, _ = b.c.WriteToUDPAddrPort(r, from)
			continue
		}
		b.mu.Lock()
		b.in = append(b.in, append([]byte(nil), buf[:n]...))
		b.mu.Unlock()
	}
}

func (b *splitBackend) got() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.in...)
}

// End to end on loopback: a client's IKE_AUTH over an RFC 9329 stream
// reaches a UDP backend as SKF fragments sized to proxy.tcp.backend_mtu
// (loopback's own MTU is 64 KiB), and its retransmission as the same
// fragments; without keys it arrives whole, after one key prompt.
func TestTCPSplitToBackend(t *testing.T) {
	sa := testSA(t, sk.Suite{Encr: sk.EncrAESGCM16, KeyBits: 128})
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			ikePort, nattPort := testPorts()
			bePort := ikePort%1000 + 36000
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(bePort))))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			be := &splitBackend{c: c}
			go be.serve()
			var src keys.Source = oneKey{sa}
			if !keyed {
				src = oneKey{}
			}
			p := startProxy(t, Config{Listen: []string{"127.0.0.1"}, IKEPort: ikePort, NATTPort: nattPort, FastPath: FastPathOff,
				Backends: []string{fmt.Sprintf("127.0.0.2:%d/%d", bePort+1, bePort)},
				TCP:      TCPConfig{Listen: []string{"127.0.0.1:0"}, BackendMTU: 1280}}, Deps{Keys: src})
			tc := newTCPClient(t, netip.Addr{}, p.TCPAddrs()[0])
			tc.send(marked(ikeSAInit(0x0102030405060708, true)))
			got := tc.recv()
			var spiI, spiR ike.SPI
			copy(spiI[:], got[4:12])
			copy(spiR[:], got[12:20])
			d, auth := clientAuth(t, sa, spiI, spiR, 1, 4000)
			tc.send(auth)
			waitFor(t, "the IKE_AUTH at the backend", func() bool { return len(be.got()) > 0 })
			if !keyed {
				// a key prompt (the source never has the keys), then the
				// message as it is
				waitFor(t, "the message", func() bool { return len(be.got()) == 2 })
				if in := be.got(); len(in[0]) != 4+ike.HeaderLen+4+keyPromptBody || !bytes.Equal(in[1], auth) {
					t.Fatalf("keyless: backend got %d datagrams (%d, %d bytes), want a prompt and the message whole", len(in), len(in[0]), len(in[1]))
				}
				if st := p.Stats().TCP; st.Unsplit["no_keys"] != 1 || st.SplitKeyPrompts != 1 {
					t.Errorf("tcp stats %+v", st)
				}
				return
			}
			var first [][]byte
			waitFor(t, "every fragment", func() bool {
				first = be.got()
				return len(first) > 1 && len(first) == int(binary.BigEndian.Uint16(first[0][4+ike.HeaderLen+6:]))
			})
			checkSplit(t, sa, d, first, 1280)
			tc.send(auth)
			waitFor(t, "the retransmission", func() bool { return len(be.got()) == 2*len(first) })
			for i, dg := range be.got()[len(first):] {
				if !bytes.Equal(dg, first[i]) {
					t.Errorf("retransmission: fragment %d differs", i+1)
				}
			}
			st := p.Stats().TCP
			if st.Split != 1 || st.SplitReplays != 1 || st.SplitFragments != uint64(2*len(first)) {
				t.Errorf("tcp stats %+v", st)
			}
			series := gatherSeries(t, p.Collector())
			for k, want := range map[string]float64{
				"ikefrag_proxy_tcp_ike_split_total": 1, "ikefrag_proxy_tcp_ike_split_replays_total": 1,
				"ikefrag_proxy_tcp_ike_split_fragments_total":                float64(2 * len(first)),
				"ikefrag_proxy_tcp_ike_unsplit_total,reason=no_keys":         0,
				"ikefrag_proxy_tcp_ike_split_key_prompts_total,outcome=keys": 0,
			} {
				if v, ok := series[k]; !ok || v != want {
					t.Errorf("metric %s = %v (present %v), want %v", k, v, ok, want)
				}
			}
		})
	}
}

// The path MTU toward a backend is the kernel's for the connected
// upstream socket (here loopback's link MTU), capped by backend_mtu and
// floored at the family minimum.
func TestBackendMTU(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip(err)
	}
	up, err := dialUDP(netip.MustParseAddrPort("127.0.0.2:9"), sockOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	want := min(lo.MTU, 65535) // (an IPv4 datagram's most)
	if got := up.pathMTU(); got != want {
		t.Fatalf("IP_MTU %d, lo's MTU %d", got, lo.MTU)
	}
	p, f, _ := splitEngine(t, nil)
	f.up = up
	if got := p.backendMTU(f); got != want {
		t.Errorf("no cap: %d, want %d", got, want)
	}
	p.s.TCP.BackendMTU = 1400
	if got := p.backendMTU(f); got != 1400 {
		t.Errorf("cap 1400: %d", got)
	}
	f.up = nil
	p.s.TCP.BackendMTU = 0
	if got := p.backendMTU(f); got != p.s.PMTUDefault {
		t.Errorf("no socket: %d, want pmtu_default %d", got, p.s.PMTUDefault)
	}
}

// lateKeys is a key source that has the keys only once the backend got a
// key prompt, as a strongSwan responder derives them only when the first
// request after IKE_SA_INIT arrives.
type lateKeys struct {
	sa    *sk.SA
	ready func() bool
}

func (l lateKeys) Lookup(spiI, spiR ike.SPI) (*sk.SA, error) {
	if !l.ready() {
		return nil, keys.ErrUnknownSA
	}
	return l.sa, nil
}

// Without keys for the IKE SA the backend gets one key prompt per message:
// a request of the message's exchange, Message ID, SPIs and flags with an
// Encrypted payload that cannot verify. Keys that follow it within the
// wait let the message be split; without them it is relayed whole
// (no_keys), and its retransmission sends no second prompt.
func TestTCPSplitKeyPrompt(t *testing.T) {
	sa := testSA(t, sk.Suite{Encr: sk.EncrAESCBC, KeyBits: 256, Integ: sk.AuthHMACSHA2_256_128})
	spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
	for _, answer := range []bool{true, false} {
		t.Run(fmt.Sprintf("keys_follow=%v", answer), func(t *testing.T) {
			var mu sync.Mutex
			got := 0
			src := lateKeys{sa: sa, ready: func() bool { mu.Lock(); defer mu.Unlock(); return answer && got > 0 }}
			p, f, sink := splitEngine(t, src)
			var prompts [][]byte
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 65536)
				for {
					_ = sink.SetReadDeadline(time.Now().Add(2 * time.Second))
					n, err := sink.Read(buf)
					if err != nil {
						return
					}
					mu.Lock()
					got++
					prompts = append(prompts, append([]byte(nil), buf[:n]...))
					mu.Unlock()
				}
			}()
			negotiate(p, f, spiI, spiR, true)
			d, payload := clientAuth(t, sa, spiI, spiR, 1, 4500)
			fr := ike.ClassifyNATT(payload)
			start := time.Now()
			out := p.tcpSplit(f, payload, fr, 1280, p.now())
			if answer {
				checkSplit(t, sa, d, out, 1280)
			} else {
				if out != nil || time.Since(start) < keyPromptWait {
					t.Fatalf("no keys: %d datagrams after %v", len(out), time.Since(start))
				}
				if again := p.tcpSplit(f, payload, fr, 1280, p.now()); again != nil {
					t.Fatal("retransmission split without keys")
				}
			}
			sink.Close()
			<-done
			st := p.tcp.stats()
			mu.Lock()
			defer mu.Unlock()
			if len(prompts) != 1 || st.SplitKeyPrompts != 1 {
				t.Fatalf("%d prompts at the backend, %d counted; want 1", len(prompts), st.SplitKeyPrompts)
			}
			pr := prompts[0]
			h, err := ike.ParseHeader(pr[4:])
			if !bytes.Equal(pr[:4], []byte{0, 0, 0, 0}) || err != nil || int(h.Length) != len(pr)-4 ||
				h.NextPayload != ike.PayloadEncrypted || h.SPIi != spiI || h.SPIr != spiR || h.MessageID != 1 ||
				h.Exchange != ike.ExchangeIKEAuth || h.Flags != ike.FlagInitiator {
				t.Fatalf("prompt %x", pr)
			}
			if _, err := sa.Open(pr[4:]); !errors.Is(err, sk.ErrIntegrity) {
				t.Errorf("the prompt opens with the IKE SA's keys: %v", err)
			}
			if answer && (st.SplitKeysAfterPrompt != 1 || st.Split != 1) {
				t.Errorf("stats %+v", st)
			}
			if !answer && (st.SplitKeysAfterPrompt != 0 || st.Unsplit["no_keys"] != 2) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// FuzzTCPSplit: whatever a TCP client frames, the split neither panics nor
// sends anything but fragments that fit the path (the keys are the IKE
// SA's, fragmentation negotiated).
func FuzzTCPSplit(f *testing.F) {
	sa := testSA(f, sk.Suite{Encr: sk.EncrAESGCM16, KeyBits: 128})
	spiI, spiR := ike.SPI{1, 2, 3, 4, 5, 6, 7, 8}, ike.SPI{9, 9, 9, 9, 9, 9, 9, 9}
	_, big := clientAuth(f, sa, spiI, spiR, 1, 3000)
	f.Add(big)
	f.Add(big[:1500])
	f.Add(marked(bigInit()))
	f.Add(marked(ikeRequest(spiI, spiR, ike.ExchangeIKEAuth, 1)))
	p, fl, _ := splitEngine(f, oneKey{sa})
	negotiate(p, fl, spiI, spiR, true)
	f.Fuzz(func(t *testing.T, payload []byte) {
		fr := ike.ClassifyNATT(payload)
		for _, d := range p.tcpSplit(fl, payload, fr, 576, p.now()) {
			if 28+len(d) > 576 {
				t.Fatalf("a %d-byte fragment for a 576-byte path", len(d))
			}
		}
	})
}
