// Command espbench measures ESP-in-UDP relaying through the proxy against
// Debian's nginx UDP stream proxy, on the same machine, in one run: a
// private network namespace with loopback addresses only, an echo backend,
// and a closed-loop load generator (every flow keeps a window of
// datagrams in flight). Rounds alternate between the two relays; the
// report gives datagrams relayed per second, per CPU second of the relay
// process, the user/kernel split, and the ratio. It needs root, nginx and
// the stream module (apt-get install nginx-light).
//
//	go run ./proxy/internal/espbench -duration 5s -rounds 3
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"

	"github.com/ikefrag/ikefrag/netcfg"
)

var (
	duration = flag.Duration("duration", 5*time.Second, "length of one measuring round")
	rounds   = flag.Int("rounds", 3, "rounds per relay (alternating)")
	flows    = flag.Int("flows", 8, "client flows")
	window   = flag.Int("window", 32, "datagrams in flight per flow")
	size     = flag.Int("size", 128, "ESP datagram size (UDP payload)")
	profile  = flag.Bool("profile", true, "take a CPU profile of the proxy during its last round")
	workers  = flag.Int("nginx-workers", 0, "nginx worker processes (0: one per CPU, like worker_processes auto)")
)

const (
	echoAddr  = "127.0.0.2"
	proxyAddr = "127.0.0.1"
	nginxAddr = "127.0.0.3"
	nattPort  = 4500
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "espbench:", err)
		os.Exit(1)
	}
}

type result struct {
	relay            string
	pps              float64 // datagrams relayed per second (both directions)
	cpu, user, sys   float64 // CPU seconds of the relay process(es)
	lost, roundTrips uint64
}

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespace)")
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		return errors.New("nginx not found (apt-get install nginx-light)")
	}
	dir, err := os.MkdirTemp("", "espbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns := fmt.Sprintf("ikfbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up: %v %s", err, out)
	}
	h, err := netns.GetFromName(ns)
	if err != nil {
		return err
	}
	defer h.Close()

	// the proxy, as its own process
	bin := filepath.Join(dir, "proxyrun")
	gobin, err := exec.LookPath("go")
	if err != nil {
		return err
	}
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/ikefrag/ikefrag/proxy/internal/proxyrun").CombinedOutput(); err != nil {
		return fmt.Errorf("build proxyrun: %v %s", err, out)
	}
	// The user-space relay is what is measured; on loopback the ESP fast
	// path could not run anyway (no Ethernet header).
	cfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [\"%s\"]\n  backends: [\"%s\"]\n  refragment: off\n  fast_path: off\n", proxyAddr, echoAddr)
	if err := os.WriteFile(filepath.Join(dir, "proxy.yaml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	ctl := filepath.Join(dir, "proxy.ctl")
	px := exec.Command("ip", "netns", "exec", ns, bin, "-config", filepath.Join(dir, "proxy.yaml"), "-ctl", ctl, "-log", "warn")
	pxOut, _ := px.StdoutPipe()
	px.Stderr = os.Stderr
	if err := px.Start(); err != nil {
		return err
	}
	defer func() { _ = px.Process.Signal(syscall.SIGTERM); _ = px.Wait() }()
	if err := waitLine(pxOut, "ready"); err != nil {
		return fmt.Errorf("proxy: %v", err)
	}

	// nginx with a configuration of our own, in the same namespace
	w := "auto"
	if *workers > 0 {
		w = strconv.Itoa(*workers)
	}
	conf := fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes %s;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 4096; }
stream {
	server {
		listen %s:%d udp reuseport;
		proxy_pass %s:%d;
		proxy_timeout 30s;
	}
}
`, w, dir, dir, nginxAddr, nattPort, echoAddr, nattPort)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	ng := exec.Command("ip", "netns", "exec", ns, nginx, "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	ng.Stderr = os.Stderr
	if err := ng.Start(); err != nil {
		return err
	}
	defer func() { _ = ng.Process.Signal(syscall.SIGQUIT); _ = ng.Wait() }()

	var echo *net.UDPConn
	var clients map[string][]*net.UDPConn
	err = netcfg.Do(h, func() error {
		for _, a := range []string{echoAddr, nginxAddr} {
			if out, err := exec.Command("ip", "addr", "add", a+"/8", "dev", "lo").CombinedOutput(); err != nil && !strings.Contains(string(out), "exists") {
				return fmt.Errorf("addr %s: %v %s", a, err, out)
			}
		}
		var err error
		if echo, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(echoAddr), Port: nattPort}); err != nil {
			return err
		}
		forceBuf(echo)
		clients = map[string][]*net.UDPConn{}
		for _, target := range []string{proxyAddr, nginxAddr} {
			for i := 0; i < *flows; i++ {
				c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(target), Port: nattPort})
				if err != nil {
					return err
				}
				forceBuf(c)
				clients[target] = append(clients[target], c)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer echo.Close()
	go serveEcho(echo)
	time.Sleep(300 * time.Millisecond) // nginx workers up

	nginxPids := func() []int { return childPids(ng.Process.Pid) }
	proxyPids := func() []int { return []int{px.Process.Pid} }
	var res []result
	// warm-up: one short round each (flows, sockets, caches)
	measure("ikefrag", clients[proxyAddr], proxyPids, time.Second)
	measure("nginx", clients[nginxAddr], nginxPids, time.Second)
	var prof []byte
	for r := 0; r < *rounds; r++ {
		res = append(res, measure("nginx", clients[nginxAddr], nginxPids, *duration))
		if *profile && r == *rounds-1 {
			pc := make(chan []byte, 1)
			go func() { pc <- cpuProfile(ctl, *duration-time.Second) }()
			res = append(res, measure("ikefrag", clients[proxyAddr], proxyPids, *duration))
			prof = <-pc
		} else {
			res = append(res, measure("ikefrag", clients[proxyAddr], proxyPids, *duration))
		}
	}
	report(res)
	if len(prof) > 0 {
		pf := filepath.Join(os.TempDir(), "espbench-proxy.pprof")
		_ = os.WriteFile(pf, prof, 0o644)
		out, _ := exec.Command(gobin, "tool", "pprof", "-top", "-nodecount=25", bin, pf).CombinedOutput()
		fmt.Printf("\nCPU profile of the proxy during its last round (%s):\n%s", pf, out)
	}
	return nil
}

func forceBuf(c *net.UDPConn) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 8<<20)
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, 8<<20)
		})
	}
}

func waitLine(r interface{ Read([]byte) (int, error) }, want string) error {
	buf := make([]byte, 4096)
	var acc bytes.Buffer
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		n, err := r.Read(buf)
		acc.Write(buf[:n])
		if strings.Contains(acc.String(), want) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return fmt.Errorf("no %q", want)
}

// serveEcho answers every datagram to its source, in batches.
func serveEcho(c *net.UDPConn) {
	pc := ipv4.NewPacketConn(c)
	ms := make([]ipv4.Message, 64)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	out := make([]ipv4.Message, 64)
	for i := range out {
		out[i].Buffers = make([][]byte, 1)
	}
	for {
		n, err := pc.ReadBatch(ms, 0)
		if err != nil {
			return
		}
		for i := 0; i < n; i++ {
			out[i].Buffers[0] = ms[i].Buffers[0][:ms[i].N]
			out[i].Addr = ms[i].Addr
		}
		for k := 0; k < n; {
			m, err := pc.WriteBatch(out[k:n], 0)
			if err != nil {
				break
			}
			k += m
		}
	}
}

// measure runs the closed loop over the given client sockets for d.
func measure(name string, cs []*net.UDPConn, pids func() []int, d time.Duration) result {
	before := cpuOf(pids())
	var trips, lost atomic.Uint64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for fi, c := range cs {
		wg.Add(1)
		go func(fi int, c *net.UDPConn) {
			defer wg.Done()
			pc := ipv4.NewPacketConn(c)
			W := *window
			out := make([]ipv4.Message, W)
			in := make([]ipv4.Message, W)
			for i := range out {
				b := make([]byte, *size)
				binary.BigEndian.PutUint32(b, 0xc0de0000|uint32(fi+1)) // ESP SPI: non-zero first word
				out[i].Buffers = [][]byte{b}
				in[i].Buffers = [][]byte{make([]byte, 2048)}
			}
			var seq uint32
			for ctx.Err() == nil {
				for i := range out {
					seq++
					binary.BigEndian.PutUint32(out[i].Buffers[0][4:], seq)
				}
				for k := 0; k < W; {
					n, err := pc.WriteBatch(out[k:], 0)
					if err != nil {
						break
					}
					k += n
				}
				got := 0
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				for got < W {
					n, err := pc.ReadBatch(in[:W-got], 0)
					if err != nil {
						break
					}
					got += n
				}
				trips.Add(uint64(got))
				lost.Add(uint64(W - got))
			}
		}(fi, c)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	after := cpuOf(pids())
	r := result{relay: name, roundTrips: trips.Load(), lost: lost.Load()}
	r.pps = 2 * float64(r.roundTrips) / el
	r.user, r.sys = after[0]-before[0], after[1]-before[1]
	r.cpu = r.user + r.sys
	return r
}

// cpuOf sums utime and stime (seconds) of the processes and their threads.
func cpuOf(pids []int) [2]float64 {
	var u, s float64
	tick := 100.0 // USER_HZ on Linux
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		u += ut / tick
		s += st / tick
	}
	return [2]float64{u, s}
}

// childPids returns the nginx master (behind ip netns exec, which execs)
// and its workers.
func childPids(master int) []int {
	pids := []int{master}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(master) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cpuProfile(ctl string, d time.Duration) []byte {
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", ctl)
	}}, Timeout: d + 10*time.Second}
	resp, err := c.Get(fmt.Sprintf("http://proxy/debug/pprof/profile?seconds=%d", int(d.Seconds())))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return b.Bytes()
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

func report(rs []result) {
	fmt.Printf("ESP-in-UDP relay, %d-byte datagrams, %d flows x window %d, loopback in a private namespace, %d CPUs shared by generator, echo and relay\n\n",
		*size, *flows, *window, runtime.NumCPU())
	fmt.Printf("%-8s %12s %10s %8s %8s %16s %8s\n", "relay", "datagrams/s", "CPU s", "user", "kernel", "datagrams/CPU-s", "lost")
	by := map[string][][2]float64{}
	for _, r := range rs {
		eff := 0.0
		if r.cpu > 0 {
			eff = 2 * float64(r.roundTrips) / r.cpu
		}
		fmt.Printf("%-8s %12.0f %10.2f %8.2f %8.2f %16.0f %8d\n", r.relay, r.pps, r.cpu, r.user, r.sys, eff, r.lost)
		by[r.relay] = append(by[r.relay], [2]float64{r.pps, eff})
	}
	med := func(name string, i int) float64 {
		var v []float64
		for _, x := range by[name] {
			v = append(v, x[i])
		}
		return median(v)
	}
	fmt.Printf("\nmedian datagrams/s:      ikefrag %.0f, nginx %.0f, ratio %.2f\n", med("ikefrag", 0), med("nginx", 0), med("ikefrag", 0)/med("nginx", 0))
	fmt.Printf("median datagrams/CPU-s:  ikefrag %.0f, nginx %.0f, ratio %.2f\n", med("ikefrag", 1), med("nginx", 1), med("ikefrag", 1)/med("nginx", 1))
}
