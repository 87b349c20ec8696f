package proxy_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/test/lab"
)

// The floods of "Hold at the edge", against the proxy in front of a real
// strongSwan backend, with a real strongSwan client trying to establish
// (and tear down) an IKE SA ten times during each. Long: it runs only
// with IKEFRAG_FLOODS=1. IKEFRAG_PROXYRUN names another proxyrun binary
// (an earlier build, for a before/after table); its configuration uses
// only the keys every version knows.
//
//	IKEFRAG_FLOODS=1 go test -run TestLabFloods -v ./proxy/
//
// It prints one table: attack, offered rate, the proxy's peak RSS,
// clients established of 10 during the flood, the time from the end of
// the flood to the next establishment, and what the proxy said.
func TestLabFloods(t *testing.T) {
	if os.Getenv("IKEFRAG_FLOODS") == "" {
		t.Skip("IKEFRAG_FLOODS=1 runs the floods (several minutes)")
	}
	lab.Require(t)
	bin := os.Getenv("IKEFRAG_PROXYRUN")
	var rows []string
	for _, fc := range floodCases() {
		t.Run(fc.name, func(t *testing.T) {
			row := fc.run(t, bin)
			rows = append(rows, row)
			t.Log(row)
		})
	}
	t.Logf("\n| attack | rate | RSS peak | established (of 10) | recover | proxy |\n| --- | --- | --- | --- | --- | --- |\n%s",
		strings.Join(rows, "\n"))
}

type floodCase struct {
	name string
	rate int    // datagrams per second (spoofed); 0 for the half-open attacker
	kind string // "init": well-formed IKE_SA_INIT; "noI": without the I flag; "halfopen": one real address
	// backend is strongswan.conf charon lines for the server.
	backend string
	// total stops the flood after this many datagrams (0: runs until the
	// clients are done).
	total int
	// dur spreads the ten attempts of the client over this long (one
	// every dur/10, the first 2 s into the flood).
	dur time.Duration
}

func floodCases() []floodCase {
	return []floodCase{
		{name: "none", rate: 0, kind: ""},
		{name: "spoofed IKE_SA_INIT, 100k sources", rate: 10000, kind: "init", total: 100000, dur: 10 * time.Second},
		{name: "spoofed IKE_SA_INIT, sustained", rate: 400, kind: "init", dur: 40 * time.Second},
		{name: "spoofed IKE_SA_INIT answered with COOKIE", rate: 1200, kind: "init", dur: 20 * time.Second,
			backend: "\tcookie_threshold = 1\n"},
		{name: "spoofed IKE_SA_INIT without the I flag", rate: 50, kind: "noI", dur: 10 * time.Second},
		{name: "6 half-open IKE SAs from one address, backend defaults", kind: "halfopen"},
		{name: "6 half-open IKE SAs from one address, backend per docs/proxy.md", kind: "halfopen",
			backend: "\tcookie_threshold_ip = 100000\n\tblock_threshold = 100001\n"},
	}
}

// initMessage is a well-formed IKE_SA_INIT request strongSwan answers
// (aes256gcm16-prfsha256-ecp256 with a valid P-256 value), with flags and
// an optional COOKIE.
func initMessage(spi uint64, flags ike.Flags, ke []byte, cookie []byte) []byte {
	h := ike.Header{NextPayload: ike.PayloadSA, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit, Flags: flags}
	binary.BigEndian.PutUint64(h.SPIi[:], spi)
	var pre []byte
	if cookie != nil {
		h.NextPayload = ike.PayloadNotify
		pre = append([]byte{33, 0, 0, byte(8 + len(cookie)), 0, 0, 0x40, 0x06}, cookie...)
	}
	body := append(pre, 34, 0, 0, 40, 0, 0, 0, 36, 1, 1, 0, 3,
		3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 1, 0,
		3, 0, 0, 8, 2, 0, 0, 5,
		0, 0, 0, 8, 4, 0, 0, 19)
	body = append(body, 40, 0, 0, 8+64, 0, 19, 0, 0)
	body = append(body, ke...)
	nonce := make([]byte, 4+32)
	nonce[3] = byte(len(nonce))
	_, _ = rand.Read(nonce[4:])
	body = append(body, nonce...)
	h.Length = uint32(ike.HeaderLen + len(body))
	return append(h.AppendTo(nil), body...)
}

func p256() []byte {
	k, _ := ecdh.P256().GenerateKey(rand.Reader)
	return k.PublicKey().Bytes()[1:]
}

// spoofer sends IPv4/UDP datagrams with random sources in 198.18.0.0/15
// from a raw socket in mid, toward the proxy's IKE port.
type spoofer struct {
	fd        int
	dst       netip.Addr
	sent      atomic.Int64
	sentBytes atomic.Int64 // UDP payload bytes
}

func (s *spoofer) run(ctx context.Context, rate, total int, kind string) {
	kes := [][]byte{p256(), p256(), p256(), p256()}
	flags := ike.FlagInitiator
	if kind == "noI" {
		flags = 0
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	per := max(1, rate/100)
	to := &unix.SockaddrInet4{Addr: s.dst.As4()}
	for n := 0; total == 0 || n < total; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i := 0; i < per && (total == 0 || n < total); i++ {
			msg := initMessage(mrand.Uint64()|1, flags, kes[n%len(kes)], nil)
			pkt := make([]byte, 28+len(msg))
			pkt[0], pkt[8], pkt[9] = 0x45, 64, 17
			binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
			src := [4]byte{198, 18 + byte(mrand.IntN(2)), byte(mrand.IntN(256)), byte(1 + mrand.IntN(254))}
			copy(pkt[12:16], src[:])
			d := s.dst.As4()
			copy(pkt[16:20], d[:])
			binary.BigEndian.PutUint16(pkt[20:], uint16(1024+mrand.IntN(60000)))
			binary.BigEndian.PutUint16(pkt[22:], 500)
			binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(msg)))
			copy(pkt[28:], msg)
			if unix.Sendto(s.fd, pkt, 0, to) == nil {
				s.sent.Add(1)
				s.sentBytes.Add(int64(len(msg)))
			}
			n++
		}
	}
}

// halfOpen completes IKE_SA_INIT (answering a COOKIE) for n new IKE SAs
// from one address and returns how many got an SA payload back.
func halfOpen(t *testing.T, c *net.UDPConn, n int) int {
	ke := p256()
	got := 0
	buf := make([]byte, 4096)
	for i := range n {
		spi := uint64(0x6600+i) << 16
		var cookie []byte
		for try := 0; try < 2; try++ {
			if _, err := c.Write(initMessage(spi, ike.FlagInitiator, ke, cookie)); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			k, err := c.Read(buf)
			if err != nil {
				break
			}
			m, err := ike.Decode(buf[:k])
			if err != nil {
				break
			}
			if nt := m.Notify(ike.NotifyCookie); nt != nil && cookie == nil {
				cookie = nt.Data
				continue
			}
			if m.Find(ike.PayloadSA) != nil {
				got++
			}
			break
		}
	}
	return got
}

func vmHWM(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}

func (fc floodCase) run(t *testing.T, bin string) string {
	ctx := context.Background()
	l := lab.New(t, lab.Topology{Gateway: true, PKI: lab.ECDSA256})
	prop := "aes256gcm16-prfsha256-ecp256"
	l.StartCharon(lab.Charon{Role: lab.Server, Proposals: prop, Extra: fc.backend})
	// ten clients, each on its own ports: every attempt is a new client
	// to the proxy (new flows), as in the field
	var clis []*lab.Daemon
	for i := range 10 {
		clis = append(clis, l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4, Proposals: prop,
			RetransmitTries: 2, RetransmitTimeout: 1, RetransmitBase: 1.4, Port: 11000 + 2*i, PortNATT: 11001 + 2*i, RemotePort: 500}))
	}
	// and an eleventh for the recovery after the flood
	cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: l.Gw.Addr4, Proposals: prop,
		RetransmitTries: 2, RetransmitTimeout: 1, RetransmitBase: 1.4, Port: 11100, PortNATT: 11101, RemotePort: 500})
	cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  fast_path: off\n", l.Gw.Addr4, l.Srv.Addr4)
	var g *gwProxy
	if bin != "" {
		g = startProxyBin(t, l, l.Gw, cfg, bin)
	} else {
		g = startProxy(t, l, l.Gw, cfg)
	}
	if _, err := l.Mid.Run(ctx, "ip", "route", "add", "blackhole", "198.18.0.0/15"); err != nil {
		t.Fatal(err)
	}

	fctx, stop := context.WithCancel(ctx)
	defer stop()
	var sp *spoofer
	var wg sync.WaitGroup
	start := time.Now()
	switch fc.kind {
	case "init", "noI":
		sp = &spoofer{dst: l.Gw.Addr4}
		inNS(t, l.Mid, func() (err error) {
			sp.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
			return err
		})
		defer unix.Close(sp.fd)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sp.run(fctx, fc.rate, fc.total, fc.kind)
		}()
		time.Sleep(2 * time.Second) // the flood is on before the clients try
	case "halfopen":
		a := "10.99.1.200"
		if _, err := l.Cli.Run(ctx, "ip", "addr", "add", a+"/24", "dev", "cli-mid"); err != nil {
			t.Fatal(err)
		}
		var c *net.UDPConn
		inNS(t, l.Cli, func() (err error) {
			c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a+":0")),
				net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.Gw.Addr4, 500)))
			return err
		})
		defer c.Close()
		n := halfOpen(t, c, 6)
		t.Logf("attacker: %d of 6 IKE SAs half-open", n)
	}

	established := 0
	for i := range 10 {
		if d := time.Until(start.Add(2*time.Second + time.Duration(i)*fc.dur/10)); d > 0 {
			time.Sleep(d)
		}
		ok, _, err := clis[i].Initiate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			established++
			_, _ = clis[i].Swanctl(ctx, "--terminate", "--ike", "lab", "--timeout", "5")
		}
	}
	if fc.total > 0 {
		// a flood of a given size runs to its end
		wg.Wait()
	}
	floodFor := time.Since(start)
	stop()
	wg.Wait()
	ended := time.Now()
	recover := "-"
	for time.Since(ended) < 60*time.Second {
		if ok, _, _ := cli.Initiate(ctx); ok {
			recover = fmt.Sprintf("%.1f s", time.Since(ended).Seconds())
			_, _ = cli.Swanctl(ctx, "--terminate", "--ike", "lab", "--timeout", "5")
			break
		}
	}
	rss := vmHWM(g.proc.Pid())
	if dir := os.Getenv("IKEFRAG_FLOOD_PPROF"); dir != "" {
		// the proxy's heap after the flood, for go tool pprof
		name := strings.NewReplacer(" ", "_", "/", "_", ",", "").Replace(fc.name)
		if out, err := exec.Command("curl", "-s", "--unix-socket", g.ctl, "-o", dir+"/"+name+".heap",
			"http://proxy/debug/pprof/heap").CombinedOutput(); err != nil {
			t.Logf("heap profile: %v %s", err, out)
		}
	}
	st := g.stats(t)
	up := 0
	for _, b := range st.Backends {
		if b.Up {
			up++
		}
	}
	rate := "-"
	amp := ""
	if sp != nil {
		rate = fmt.Sprintf("%d/s (%d sent in %.0f s)", fc.rate, sp.sent.Load(), floodFor.Seconds())
		// what the proxy sent (relayed answers, its own cookies) per
		// byte the spoofed sources sent, UDP payloads; the clients'
		// own exchanges are in the relayed bytes too (a few kB)
		out := float64(st.Total.BytesOut) + float64(st.CookiesSent)*(ike.HeaderLen+8+16)
		amp = fmt.Sprintf("; amplification %.3f", out/float64(max(1, sp.sentBytes.Load())))
	}
	var drops []string
	for k, v := range st.Total.Dropped {
		drops = append(drops, fmt.Sprintf("%s %d", k, v))
	}
	return fmt.Sprintf("| %s | %s | %d MB | %d | %s | flows %d, backend up %d/%d%s; dropped: %s; ended: %v |",
		fc.name, rate, rss, established, recover, st.Flows, up, len(st.Backends), amp, strings.Join(drops, ", "), st.FlowEnds)
}

// startProxyBin is startProxy with another proxyrun binary.
func startProxyBin(t *testing.T, l *lab.Lab, n *lab.Node, cfg, bin string) *gwProxy {
	t.Helper()
	path := fmt.Sprintf("%s/proxy-%s.yaml", l.Dir, n.Role)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl := fmt.Sprintf("%s/proxy-%s.ctl", l.Dir, n.Role)
	p := n.Start(t, "ready", bin, "-config", path, "-ctl", ctl, "-log", "info")
	return &gwProxy{proc: p, ctl: ctl}
}
