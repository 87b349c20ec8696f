package fastpath

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/ikefrag/ikefrag/test/netns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// BenchmarkProgram measures the program under BPF_PROG_TEST_RUN, next to
// an empty tc program on the same frame in the same run (x_empty is the
// ratio). The redirect case includes the rewrite, both checksum updates,
// the MTU check and the counters; the neighbour output happens later, in
// the kernel, and is not part of it.
func BenchmarkProgram(b *testing.B) {
	fp := newTestFP(b, Options{})
	// A repeated run sees the frame as the previous run left it, so each
	// flow has a mirror whose rewrite turns it back: every run redirects.
	for _, f := range []Flow{flow4(), flow6()} {
		mustPut(b, fp, f)
		mustPut(b, fp, Flow{Client: f.Upstream, Local: f.Backend, Upstream: f.Client, Backend: f.Local,
			ClientIfindex: loIfindex, BackendIfindex: loIfindex})
	}
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	esp := espPayload(0x1001, 1, 200)
	cases := []struct {
		name  string
		frame []byte
	}{
		{"esp_v4_redirect", udpPacket{src: cli4, dst: loc4, payload: esp}.frame()},
		{"esp_v4_no_checksum_redirect", udpPacket{src: cli4, dst: loc4, payload: esp, noCsum: true}.frame()},
		{"esp_v6_redirect", udpPacket{src: cli6, dst: loc6, payload: esp}.frame()},
		{"ike_mapped_pass", udpPacket{src: cli4, dst: loc4, payload: ikePayload(300)}.frame()},
		{"udp_unmapped_pass", udpPacket{src: netip.MustParseAddrPort("10.201.1.77:53"), dst: loc4, payload: esp}.frame()},
		{"tcp_pass", rawIP(cli4.Addr(), loc4.Addr(), 6, make([]byte, 40))},
	}
	ctx := new(skbCtx).set(ctxIngressIfindex, loIfindex)
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			bench := func(p *ebpf.Program) float64 {
				var total time.Duration
				left := b.N
				for left > 0 {
					// The kernel runs at most a few million repeats per call
					// before it checks for signals; chunks keep calls short.
					n := min(left, 1000000)
					ret, d, err := benchRun(p, c.frame, ctx, n)
					if err != nil {
						b.Fatal(err)
					}
					if p != empty && strings.HasSuffix(c.name, "redirect") != (ret == tcActRedirect) {
						b.Fatalf("returned %#x", ret)
					}
					total += d * time.Duration(n)
					left -= n
				}
				return float64(total.Nanoseconds()) / float64(b.N)
			}
			e := bench(empty)
			ns := bench(fp.objs.EspFastpath)
			b.ReportMetric(ns, "ns/pkt")
			b.ReportMetric(e, "empty_ns/pkt")
			b.ReportMetric(ns/e, "x_empty")
		})
	}
}

// benchRun runs frame repeat times with a context (which
// Program.Benchmark does not pass) and returns the kernel's time per run.
func benchRun(p *ebpf.Program, frame []byte, ctx *skbCtx, repeat int) (uint32, time.Duration, error) {
	var attr struct {
		progFD, retval, sizeIn, sizeOut uint32
		dataIn, dataOut                 uint64
		repeat, duration                uint32
		ctxSizeIn, ctxSizeOut           uint32
		ctxIn, ctxOut                   uint64
		flags, cpu, batchSize           uint32
		_                               uint32
	}
	attr.progFD = uint32(p.FD())
	attr.sizeIn = uint32(len(frame))
	attr.dataIn = uint64(uintptr(unsafe.Pointer(&frame[0])))
	attr.repeat = uint32(repeat)
	attr.ctxSizeIn = uint32(len(ctx))
	attr.ctxIn = uint64(uintptr(unsafe.Pointer(&ctx[0])))
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(frame)
		runtime.KeepAlive(ctx)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, errno
		}
		return attr.retval, time.Duration(attr.duration), nil
	}
}

// ---- The relay benchmark -------------------------------------------------

// benchConfig is one way of relaying NAT-T through the proxy namespace.
type benchConfig struct {
	name  string
	label string
	start func() (stop func(), err error)
	// counters reports user-space and fast-path ESP counts after a run.
	counters func() string
}

type benchResult struct {
	capacity   float64   // round trips per second, closed loop: median of the rounds
	capSamples []float64 // every round's
	capLoss    float64   // largest share given up as lost in a round
	offered    float64   // paced phase: datagrams sent per second
	delivered  float64   // round trips completed per second
	loss       float64   // fraction of the paced phase's datagrams not returned
	sent       uint64    // datagrams the generator sent in the last phase
	recv       uint64    // and received back
	counters   string
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkESPRelay measures ESP-in-UDP round trips per second through the
// proxy namespace in four configurations, one after the other on the same
// namespaces, addresses and CPUs: (a) the user-space relay with the fast
// path, (b) the same relay without it, (c) nginx's UDP stream proxy, (d)
// kernel forwarding with an nftables DNAT rule. The backend answers with
// a tc echo program (IKEFRAG_BENCH_ECHO=udp: a batched UDP echo socket).
// Each configuration is measured closed loop (capacity, the median of
// interleaved rounds) and then paced at twice nginx's capacity (delivered
// rate and loss). Runs only with
// IKEFRAG_BENCH=1, as root; `IKEFRAG_BENCH=1 make bench` prints the table.
//
// Knobs: IKEFRAG_BENCH_SECONDS (per phase, default 3),
// IKEFRAG_BENCH_ROUNDS (closed-loop rounds per configuration, default 3),
// IKEFRAG_BENCH_FLOWS
// (client flows, default 4), IKEFRAG_BENCH_SIZE (UDP payload bytes,
// default 256), IKEFRAG_BENCH_OUT (also write the Markdown table there).
func BenchmarkESPRelay(b *testing.B) {
	if os.Getenv("IKEFRAG_BENCH") != "1" {
		b.Skip("set IKEFRAG_BENCH=1 to run the relay benchmark (root, nginx with the stream module, nftables)")
	}
	requireBPF(b)
	netns.RequireTools(b, "ip", "nft", "nginx")
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err != nil {
		b.Skip("needs nginx's stream module (apt-get install nginx-light libnginx-mod-stream)")
	}
	secs := time.Duration(envInt("IKEFRAG_BENCH_SECONDS", 3)) * time.Second
	rounds := envInt("IKEFRAG_BENCH_ROUNDS", 3)
	nflows := envInt("IKEFRAG_BENCH_FLOWS", 4)
	size := envInt("IKEFRAG_BENCH_SIZE", 256)
	udpEcho := os.Getenv("IKEFRAG_BENCH_ECHO") == "udp"

	load0 := loadAvg()
	l := proxyLab(b)
	a := labAddrs(false)
	local := netip.AddrPortFrom(a.pc, 4500)
	backend := netip.AddrPortFrom(a.bk, 4500)
	echoDesc := startEcho(b, l, backend, udpEcho)

	var fp *FastPath
	var err error
	l.do("px", func() { fp, err = New(Options{Logger: slog.New(slog.DiscardHandler)}) })
	if err != nil {
		b.Fatal(err)
	}
	defer fp.Close()

	var cur *relay
	relayCounters := func() string {
		return fmt.Sprintf("relay ESP up/down %d/%d, other %d/%d", cur.espUp.Load(), cur.espDown.Load(), cur.otherUp.Load(), cur.otherDown.Load())
	}
	configs := []benchConfig{
		{name: "a", label: "ikefrag relay + ESP fast path", start: func() (func(), error) {
			for _, ifc := range []string{"pc", "pb"} {
				if err := fp.Attach(ifc); err != nil {
					return nil, err
				}
			}
			r, stop := startRelay(l, "px", local, a.pb, backend, fp)
			cur = r
			return func() {
				stop()
				_ = fp.Detach("pc")
				_ = fp.Detach("pb")
			}, nil
		}, counters: func() string {
			var up, down uint64
			all, _ := fp.All()
			for _, c := range all {
				up += c.Up.Packets
				down += c.Down.Packets
			}
			return relayCounters() + fmt.Sprintf("; fast path ESP up/down %d/%d over %d flows, put errors %d", up, down, len(all), cur.putErrs.Load())
		}},
		{name: "b", label: "ikefrag relay, no fast path (batched ReadBatch/WriteBatch)", start: func() (func(), error) {
			r, stop := startRelay(l, "px", local, a.pb, backend, nil)
			cur = r
			return stop, nil
		}, counters: relayCounters},
		{name: "c", label: "nginx stream UDP proxy", start: func() (func(), error) {
			return startNginx(b, l, local, backend, a.pb)
		}},
		{name: "d", label: "kernel forwarding + nftables DNAT", start: func() (func(), error) {
			return startDNAT(l, local, backend)
		}},
	}

	gen := newGenerator(b, l, a.cli, local, nflows, size)
	results := map[string]*benchResult{}
	run := func(c benchConfig, rate float64) {
		stop, err := c.start()
		if err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
		defer stop()
		if err := gen.hello(); err != nil {
			b.Fatalf("%s: warm-up: %v", c.name, err)
		}
		res := results[c.name]
		if res == nil {
			res = &benchResult{}
			results[c.name] = res
		}
		if rate == 0 {
			var rt, lost float64
			rt, lost, res.sent, res.recv = gen.closedLoop(secs, 64)
			res.capSamples = append(res.capSamples, rt)
			res.capLoss = max(res.capLoss, lost)
			res.capacity = median(res.capSamples)
		} else {
			res.sent, res.recv = gen.paced(rate, secs)
			res.offered = float64(res.sent) / secs.Seconds()
			res.delivered = float64(res.recv) / secs.Seconds()
			if res.sent > 0 {
				res.loss = 1 - float64(res.recv)/float64(res.sent)
			}
		}
		if c.counters != nil {
			res.counters = c.counters() + fmt.Sprintf("; generator sent %d, got back %d", res.sent, res.recv)
		}
		b.Logf("%s %s: %+v", c.name, map[bool]string{true: "capacity", false: "paced"}[rate == 0], *res)
	}
	// Capacity rounds interleave the configurations, so that a burst of
	// other work on the machine weighs on one sample, not on one
	// configuration; the median counts.
	for r := 0; r < rounds; r++ {
		for _, c := range configs {
			run(c, 0)
		}
	}
	rate := 2 * results["c"].capacity
	for _, c := range configs {
		run(c, rate)
	}

	table := benchTable(configs, results, rate, secs, nflows, size, echoDesc, load0)
	fmt.Println(table) // b.Log output of benchmarks is cut to a few lines
	if out := os.Getenv("IKEFRAG_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			b.Error(err)
		}
	}
	ra, rc, rd := results["a"], results["c"], results["d"]
	b.ReportMetric(ra.capacity, "a_rt/s")
	b.ReportMetric(results["b"].capacity, "b_rt/s")
	b.ReportMetric(rc.capacity, "c_rt/s")
	b.ReportMetric(rd.capacity, "d_rt/s")
	b.ReportMetric(ra.delivered/rc.capacity, "a_paced/c")
	b.ReportMetric(ra.capacity/rd.capacity, "a/d")
	b.ReportMetric(ra.loss*100, "a_paced_loss_%")
}

func benchTable(configs []benchConfig, res map[string]*benchResult, rate float64, secs time.Duration, flows, size int, echo, load0 string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%d s per phase, %d client flows, %d-byte ESP-shaped payloads (IPv4), backend: %s; paced rate = 2 × nginx capacity = %.0f round trips/s; load average before/after: %s / %s\n\n",
		int(secs.Seconds()), flows, size, echo, rate, load0, loadAvg())
	fmt.Fprintf(&s, "| config | capacity rt/s (closed loop, median) | rounds | given up | paced: offered/s | delivered rt/s | loss |\n")
	fmt.Fprintf(&s, "| --- | ---: | --- | ---: | ---: | ---: | ---: |\n")
	for _, c := range configs {
		r := res[c.name]
		var rs []string
		for _, v := range r.capSamples {
			rs = append(rs, fmt.Sprintf("%.0fk", v/1000))
		}
		fmt.Fprintf(&s, "| (%s) %s | %.0f | %s | %.2f%% | %.0f | %.0f | %.3f%% |\n", c.name, c.label, r.capacity, strings.Join(rs, " "), 100*r.capLoss, r.offered, r.delivered, 100*r.loss)
	}
	a, c, d := res["a"], res["c"], res["d"]
	fmt.Fprintf(&s, "\nratios: (a)/(c) capacity %.2f, (a) paced delivered / (c) capacity %.2f (loss %.3f%%); (a)/(d) capacity %.2f, paced %.2f; (a)/(b) capacity %.2f\n",
		a.capacity/c.capacity, a.delivered/c.capacity, 100*a.loss, a.capacity/d.capacity, a.delivered/d.delivered, a.capacity/res["b"].capacity)
	for _, c := range configs {
		if r := res[c.name]; r.counters != "" {
			fmt.Fprintf(&s, "(%s) after the paced phase: %s\n", c.name, r.counters)
		}
	}
	return s.String()
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// loadAvg is the 1-minute load average: the machine is shared, and the
// table says how busy it was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// ---- backend echo --------------------------------------------------------

func startEcho(b *testing.B, l *lab, at netip.AddrPort, udp bool) string {
	if udp {
		c := l.listen("bk", at)
		_ = c.SetReadBuffer(4 << 20)
		_ = c.SetWriteBuffer(4 << 20)
		pc := ipv4.NewPacketConn(c)
		done := make(chan struct{})
		go func() {
			defer close(done)
			ms := newMsgs(relayBatch, 65536)
			for {
				n, err := pc.ReadBatch(ms, 0)
				if err != nil {
					return
				}
				for i := 0; i < n; i++ {
					ms[i].Buffers[0] = ms[i].Buffers[0][:ms[i].N]
				}
				out := ms[:n]
				for len(out) > 0 {
					k, err := pc.WriteBatch(out, 0)
					if err != nil || k == 0 {
						break
					}
					out = out[k:]
				}
				for i := 0; i < n; i++ {
					ms[i].Buffers[0] = ms[i].Buffers[0][:cap(ms[i].Buffers[0])]
				}
			}
		}()
		b.Cleanup(func() { c.Close(); <-done })
		return "batched UDP echo socket"
	}
	spec, err := loadEcho()
	if err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables[echoVarCfgPort].Set(be16(at.Port())); err != nil {
		b.Fatal(err)
	}
	var objs echoObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { objs.Close() })
	var lk link.Link
	l.do("bk", func() {
		var ifc *net.Interface
		if ifc, err = net.InterfaceByName("b0"); err != nil {
			return
		}
		lk, err = link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: objs.UdpEcho, Attach: ebpf.AttachTCXIngress})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lk.Close() })
	return "tc echo program (reflects each datagram in the kernel)"
}

// ---- nginx and DNAT ------------------------------------------------------

func startNginx(b *testing.B, l *lab, local, backend netip.AddrPort, bind netip.Addr) (func(), error) {
	dir := b.TempDir()
	conf := fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; }
stream {
	server {
		listen %[2]s udp reuseport;
		proxy_pass %[3]s;
		proxy_bind %[4]s;
		proxy_timeout 60s;
	}
}
`, dir, local, backend, bind)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", "netns", "exec", l.ns("px"), "nginx", "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	out, _ := os.Create(filepath.Join(dir, "stdout"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		// The master was started by this test; SIGQUIT on its pid makes
		// it stop its workers.
		_ = cmd.Process.Signal(syscallSIGQUIT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		out.Close()
	}
	// Ready when the socket is bound.
	for i := 0; i < 100; i++ {
		if strings.Contains(l.in("px", "ss", "-uln"), local.String()) {
			return stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
	return nil, fmt.Errorf("nginx did not start: %s", log)
}

func startDNAT(l *lab, local, backend netip.AddrPort) (func(), error) {
	l.in("px", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	l.in("px", "nft", fmt.Sprintf("add table ip ikfbench; "+
		"add chain ip ikfbench pre { type nat hook prerouting priority dstnat; policy accept; }; "+
		"add chain ip ikfbench post { type nat hook postrouting priority srcnat; policy accept; }; "+
		"add rule ip ikfbench pre ip daddr %s udp dport %d dnat to %s; "+
		"add rule ip ikfbench post ip daddr %s udp dport %d masquerade",
		local.Addr(), local.Port(), backend, backend.Addr(), backend.Port()))
	return func() {
		l.in("px", "nft", "delete table ip ikfbench")
		l.in("px", "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
	}, nil
}

// ---- load generator ------------------------------------------------------
