package proxy

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/ikefrag/ikefrag/ebpf/fastpath"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
	"github.com/ikefrag/ikefrag/netcfg"
)

// syncBuf is a log sink for tests.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) lines(sub string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.b.String(), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

// fpNamespaces makes two namespaces of the test's own: a, where the proxy
// runs, with a veth toward b (10.99.61.0/24) and a TUN device (an L3
// interface without an Ethernet header, 10.99.62.0/24). They are deleted
// at cleanup.
func fpNamespaces(t *testing.T) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip")
	}
	pre := fmt.Sprintf("ikpfp%d-", os.Getpid()%100000)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	for _, n := range []string{"a", "b"} {
		_ = exec.Command("ip", "netns", "del", pre+n).Run()
		sh("ip", "netns", "add", pre+n)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", pre+n).Run() })
	}
	a, b := pre+"a", pre+"b"
	sh("ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
	sh("ip", "-n", a, "addr", "add", "10.99.61.1/24", "dev", "va")
	sh("ip", "-n", b, "addr", "add", "10.99.61.2/24", "dev", "vb")
	sh("ip", "-n", a, "tuntap", "add", "dev", "tn0", "mode", "tun")
	sh("ip", "-n", a, "addr", "add", "10.99.62.1/24", "dev", "tn0")
	for _, c := range [][]string{{a, "lo"}, {a, "va"}, {a, "tn0"}, {b, "lo"}, {b, "vb"}} {
		sh("ip", "-n", c[0], "link", "set", c[1], "up")
	}
	h, err := netns.GetFromName(a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestFastPathInterfaces: the proxy attaches the fast path to the
// interfaces of its backends' routes; one it cannot carry (an L3 TUN
// device) leaves those flows in user space with one log line and a
// counter, and when no backend is left the program is not kept at all.
func TestFastPathInterfaces(t *testing.T) {
	ns := fpNamespaces(t)
	kfeattest.Require(t, kfeat.CheckMTU)
	cases := []struct {
		name       string
		backends   []string
		fastPath   string
		active     bool
		ifaces     []string
		attachFail uint64
		warn       string // the one warning expected
	}{
		{name: "tun_only", backends: []string{"10.99.62.2"}, attachFail: 1,
			warn: "ESP fast path not used; ESP is relayed in user space"},
		{name: "veth_and_tun", backends: []string{"10.99.62.2", "10.99.61.2"}, active: true, ifaces: []string{"va"}, attachFail: 1,
			warn: "ESP fast path not attached for some backends"},
		{name: "veth", backends: []string{"10.99.61.2"}, active: true, ifaces: []string{"va"}},
		// no route yet: kept loaded, flows attach their interfaces later
		{name: "no_route", backends: []string{"10.99.63.2"}, active: true,
			warn: "ESP fast path not attached for some backends"},
		{name: "off", backends: []string{"10.99.61.2"}, fastPath: FastPathOff},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs syncBuf
			var st FastPathStats
			err := netcfg.Do(ns, func() error {
				p, err := New(Config{Listen: []string{"10.99.61.1"}, Backends: c.backends, FastPath: c.fastPath},
					Deps{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
				if err != nil {
					return err
				}
				st = p.Stats().FastPath
				return p.Close()
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", st)
			if st.Active != c.active || st.AttachFailures != c.attachFail || len(st.Interfaces) != len(c.ifaces) {
				t.Errorf("fast path %+v: want active %v, %d attach failures, interfaces %v", st, c.active, c.attachFail, c.ifaces)
			}
			for _, i := range c.ifaces {
				if st.Interfaces[i] == "" {
					t.Errorf("not attached to %s: %+v", i, st.Interfaces)
				}
			}
			warns := logs.lines("level=WARN")
			if c.warn == "" && len(warns) != 0 || c.warn != "" && (len(warns) != 1 || !strings.Contains(warns[0], c.warn)) {
				t.Errorf("warnings %q, want only %q", warns, c.warn)
			}
			if c.fastPath == FastPathOff && (st.Mode != FastPathOff || st.LoadFailures != 0 || st.Reason == "") {
				t.Errorf("off: %+v", st)
			}
			if !c.active && c.fastPath != FastPathOff && !strings.Contains(st.Reason, "link type") {
				t.Errorf("reason %q does not name the interface's link type", st.Reason)
			}
		})
	}
}

// Counters read back from the fast path are added once: a later read adds
// only the difference, a stale one (taken before an earlier read, or the
// final counters read again) adds nothing, and both directions land in
// the flow's, client's, backend's and total counters, apart and in the
// datagram totals.
func TestFastPathAbsorb(t *testing.T) {
	p, f := engine(t, nil, false)
	mapped := time.Unix(2000, 0)
	f.fpSeen = fastpath.FlowCounters{Mapped: mapped}
	read := func(up, upB, down, downB uint64) fastpath.FlowCounters {
		return fastpath.FlowCounters{Mapped: mapped, Up: fastpath.DirCounters{Packets: up, Bytes: upB},
			Down: fastpath.DirCounters{Packets: down, Bytes: downB}}
	}
	p.fpAbsorbLocked(f, read(10, 1000, 7, 700))
	stale := read(4, 400, 2, 200)
	p.fpAbsorbLocked(f, stale)
	p.fpAbsorbLocked(f, read(15, 1500, 7, 700))
	p.fpAbsorbLocked(f, read(15, 1500, 7, 700))
	for name, k := range map[string]Counters{"total": p.total.snapshot(), "backend": f.be.ctr.snapshot(), "client": f.cl.ctr.snapshot()} {
		if k.ESPFastPathIn != 15 || k.ESPFastPathBytesIn != 1500 || k.ESPFastPathOut != 7 || k.ESPFastPathBytesOut != 700 ||
			k.DatagramsIn != 15 || k.BytesIn != 1500 || k.DatagramsOut != 7 || k.BytesOut != 700 || k.ESPIn != 0 {
			t.Errorf("%s: %+v", name, k)
		}
	}
	if f.fpIn.Load() != 15 || f.fpOut.Load() != 7 || f.pktsIn.Load() != 15 || f.pktsOut.Load() != 7 {
		t.Errorf("flow: fast path %d/%d, datagrams %d/%d", f.fpIn.Load(), f.fpOut.Load(), f.pktsIn.Load(), f.pktsOut.Load())
	}
}
