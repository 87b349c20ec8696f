package lab_test

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/test/lab"
)

// keyFeedLab is a client and a server with the ikefrag-keys plugin (no
// proxy: the key feed is what is measured), ECDSA certificates so that an
// SA costs little, and reuse_ikesa = no so that every initiation makes a
// new IKE SA. feed false leaves the plugin out.
func keyFeedLab(tb testing.TB, feed bool, queue int) (l *lab.Lab, sock string, cli, srv *lab.Daemon) {
	return keyFeedLabTiming(tb, feed, queue, false)
}

// keyFeedLabTiming is keyFeedLab with the plugin's timing setting (lines
// carry when they were queued and written: "tq", "tw").
func keyFeedLabTiming(tb testing.TB, feed bool, queue int, timing bool) (l *lab.Lab, sock string, cli, srv *lab.Daemon) {
	tb.Helper()
	l = lab.New(tb, lab.Topology{PKI: lab.ECDSA256})
	dir := filepath.Join(l.Dir, "keyfeed")
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	sock = filepath.Join(dir, "keys.sock")
	sc := lab.Charon{Role: lab.Server, Proposals: "aes128gcm16-prfsha256-ecp256", ESPProposals: "aes128gcm16"}
	if feed {
		sc.KeyFeed, sc.KeyFeedQueue = sock, queue
		if timing {
			// strongswan.conf merges this section with the lab's own
			sc.Extra = "\tplugins {\n\t\tikefrag-keys {\n\t\t\ttiming = yes\n\t\t}\n\t}"
		}
	}
	srv = l.StartCharon(sc)
	cli = l.StartCharon(lab.Charon{Role: lab.Client, Proposals: "aes128gcm16-prfsha256-ecp256", ESPProposals: "aes128gcm16",
		Extra: "\treuse_ikesa = no"})
	return l, sock, cli, srv
}

// establish makes n new IKE SAs from cli, one after the other, and
// returns how long it took; every one must come up.
func establish(tb testing.TB, cli *lab.Daemon, n int) time.Duration {
	tb.Helper()
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < n; i++ {
		out, err := cli.Swanctl(ctx, "--initiate", "--child", "lab", "--timeout", "20")
		if err != nil || !strings.Contains(out, "initiate completed successfully") {
			tb.Fatalf("SA %d: %v\n%s", i, err, out)
		}
	}
	return time.Since(start)
}

// establishBatch is establish with one shell loop running swanctl, so that
// this process forks once, not n times, while it measures.
func establishBatch(tb testing.TB, cli *lab.Daemon, n int) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", `i=0; while [ $i -lt "$1" ]; do
		swanctl --initiate --child lab --timeout 20 >/dev/null || exit 1; i=$((i+1)); done`, "sh", strconv.Itoa(n))
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(cli.Dir, "strongswan.conf"),
		"SWANCTL_DIR="+filepath.Join(cli.Dir, "swanctl"))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("initiating %d SAs: %v\n%s", n, err, out)
	}
	return time.Since(start)
}

// keySocket is ikefragd's key socket in this process, recording when each
// SA's keys were installed relative to their derivation in charon.
type keySocket struct {
	store  *keys.Store
	sock   *keys.Socket
	mu     sync.Mutex
	lat    []time.Duration
	spis   map[ike.SPI]bool
	stages []keys.KeyTiming
}

func listenKeys(tb testing.TB, path string) *keySocket {
	tb.Helper()
	k := &keySocket{store: keys.NewStore(keys.StoreConfig{}), spis: map[ike.SPI]bool{}}
	s, err := keys.ListenSocket(k.store, keys.SocketConfig{Path: path, OnKeys: func(spiI, _ ike.SPI, at time.Time) {
		d := time.Since(at)
		k.mu.Lock()
		k.spis[spiI] = true
		if !at.IsZero() {
			k.lat = append(k.lat, d)
		}
		k.mu.Unlock()
	}, OnTiming: func(t keys.KeyTiming) {
		k.mu.Lock()
		k.stages = append(k.stages, t)
		k.mu.Unlock()
	}})
	if err != nil {
		tb.Fatal(err)
	}
	k.sock = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done; k.store.Clear() })
	return k
}

func (k *keySocket) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.spis)
}

// BenchmarkLabKeyFeedLatency: the time from charon deriving an IKE SA's
// keys (the plugin's "t") to their installation in ikefragd's key store,
// over 1,000 IKE SAs a real charon establishes one after another, as p50
// and p99 in microseconds; ike_sa-ms is the wall time of one whole
// initiation (swanctl, IKE_SA_INIT and IKE_AUTH) for comparison. Run with
// -benchtime=1x.
//
// With the plugin's timing on, the log breaks the delivery down by stage
// (keyStages) and shows what the slowest 1 % spent where, how long the
// plugin's sender thread waited for a CPU in total (schedstat), and the
// machine's load and CPU pressure (PSI) over the run: the tail is
// CPU contention when it sits in a stage where a thread was runnable.
//
// IKEFRAG_BENCH_KEYFEED_RT=1 is the control experiment: the delivery path's
// threads (the plugin's sender thread and this process's threads, not
// charon's workers nor swanctl) run SCHED_FIFO priority 1 during the
// measurement, so they get a CPU as soon as they are runnable. If the
// tail is CPU contention it shrinks to the other stages' times.
func BenchmarkLabKeyFeedLatency(b *testing.B) {
	lab.Require(b)
	const n = 1000
	for i := 0; i < b.N; i++ {
		_, sock, cli, srv := keyFeedLabTiming(b, true, 0, true)
		k := listenKeys(b, sock)
		// the plugin connects within its first backoff
		deadline := time.Now().Add(10 * time.Second)
		for k.sock.Stats().Conns == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		sender := threadSched(b, srv.Pid(), "ikefrag-keys")
		if os.Getenv("IKEFRAG_BENCH_KEYFEED_RT") != "" {
			deliveryRealtime(b, srv.Pid())
		}
		self0 := procWait(os.Getpid())
		psi0, load0 := cpuPressure(), loadAvg()
		took := establishBatch(b, cli, n)
		deadline = time.Now().Add(10 * time.Second)
		for k.count() < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		psi := cpuPressure() - psi0
		self := procWait(os.Getpid()) - self0
		sender1 := threadSched(b, srv.Pid(), "ikefrag-keys")
		k.mu.Lock()
		lat := slices.Clone(k.lat)
		stages := slices.Clone(k.stages)
		k.mu.Unlock()
		if len(lat) < n {
			b.Fatalf("keys of %d of %d SAs arrived", len(lat), n)
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
		b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
		b.ReportMetric(float64(took.Milliseconds())/n, "ike_sa-ms")
		b.Logf("%d SAs: key delivery p50 %v, p99 %v, max %v; one initiation %.1f ms", len(lat), p50, p99,
			lat[len(lat)-1], float64(took.Milliseconds())/n)
		b.Logf("load average %s before, %s after; CPU pressure (PSI some): tasks waited for a CPU %.0f %% of the run",
			load0, loadAvg(), 100*psi.Seconds()/took.Seconds())
		if sender.ok && sender1.ok {
			b.Logf("plugin's sender thread: ran %v in %d slices, waited runnable for a CPU %v in total (%v per slice)",
				sender1.run-sender.run, sender1.slices-sender.slices, sender1.wait-sender.wait,
				(sender1.wait-sender.wait)/time.Duration(max(1, sender1.slices-sender.slices)))
		}
		b.Logf("this process (the key socket's side) waited runnable for a CPU %v in total over its threads", self)
		logStages(b, stages)
	}
}

// keyStages are the stages of one SA's key delivery, from the plugin's
// timing members and the key socket's own times (keys.KeyTiming).
var keyStages = []struct {
	name string
	d    func(t keys.KeyTiming) time.Duration
}{
	// charon's thread from deriving the keys to queueing the line (the
	// rest of the IKE_SA_INIT processing up to the ike_keys hook)
	{"derived→queued", func(t keys.KeyTiming) time.Duration { return t.Queued.Sub(t.Derived) }},
	// in the queue: the sender thread waking (or finishing the line
	// before) and formatting the times
	{"queued→written", func(t keys.KeyTiming) time.Duration { return t.Written.Sub(t.Queued) }},
	// the socket, and ikefragd's goroutine being scheduled to read it
	{"written→read", func(t keys.KeyTiming) time.Duration { return t.Read.Sub(t.Written) }},
	{"read→installed", func(t keys.KeyTiming) time.Duration { return t.Installed.Sub(t.Read) }},
	{"installed→replied", func(t keys.KeyTiming) time.Duration { return t.Replied.Sub(t.Installed) }},
}

// logStages logs p50, p99 and max of each stage, then for the slowest 1 %
// of deliveries (derived→installed) which stage took most of the time,
// and how many lines had to wait for the reply to the line before them.
func logStages(b *testing.B, ts []keys.KeyTiming) {
	b.Helper()
	ts = slices.DeleteFunc(ts, func(t keys.KeyTiming) bool {
		return t.Derived.IsZero() || t.Queued.IsZero() || t.Written.IsZero()
	})
	if len(ts) == 0 {
		b.Log("no stage times (plugin timing off?)")
		return
	}
	for _, st := range keyStages {
		d := make([]time.Duration, len(ts))
		for i, t := range ts {
			d[i] = st.d(t)
		}
		slices.Sort(d)
		b.Logf("  %-18s p50 %9v  p99 %9v  max %9v", st.name, d[len(d)/2], d[len(d)*99/100], d[len(d)-1])
	}
	// behind: queued before the reply to the previous line was written,
	// so the sender was still busy with that one
	slices.SortFunc(ts, func(a, c keys.KeyTiming) int { return a.Queued.Compare(c.Queued) })
	behind := 0
	for i := 1; i < len(ts); i++ {
		if ts[i].Queued.Before(ts[i-1].Replied) {
			behind++
		}
	}
	b.Logf("  %d of %d lines were queued while the sender still waited for the reply to the line before", behind, len(ts))
	slices.SortFunc(ts, func(a, c keys.KeyTiming) int {
		return cmp.Compare(a.Installed.Sub(a.Derived), c.Installed.Sub(c.Derived))
	})
	tail := ts[len(ts)-max(1, len(ts)/100):]
	worst := map[string]int{}
	sum := map[string]time.Duration{}
	for _, t := range tail {
		name, longest := "", time.Duration(-1)
		for _, st := range keyStages {
			d := st.d(t)
			sum[st.name] += d
			if d > longest {
				name, longest = st.name, d
			}
		}
		worst[name]++
	}
	// "rq" counts from when the sender began waiting for a line, which
	// can be a little before the line was queued: at most the stage
	var waited time.Duration
	for _, t := range tail {
		waited += min(t.SenderWait, t.Written.Sub(t.Queued))
	}
	for _, st := range keyStages {
		b.Logf("  slowest %d: %-18s longest stage in %3d, mean %v", len(tail), st.name, worst[st.name],
			sum[st.name]/time.Duration(len(tail)))
	}
	b.Logf("  slowest %d: of queued→written, the sender thread was runnable without a CPU for %v on average",
		len(tail), waited/time.Duration(len(tail)))
	d := make([]time.Duration, len(ts))
	for i, t := range ts {
		d[i] = t.Written.Sub(t.Queued) - min(t.SenderWait, t.Written.Sub(t.Queued))
	}
	slices.Sort(d)
	b.Logf("  queued→written less the sender's CPU wait: p50 %v, p99 %v, max %v", d[len(d)/2], d[len(d)*99/100], d[len(d)-1])
}

// schedStat is a thread's /proc/PID/task/TID/schedstat: time on a CPU,
// time runnable but waiting for one, and the number of slices it ran.
type schedStat struct {
	ok        bool
	run, wait time.Duration
	slices    int64
}

// threadSched reads schedstat of pid's thread named comm (the plugin names
// its sender thread "ikefrag-keys").
func threadSched(tb testing.TB, pid int, comm string) schedStat {
	tb.Helper()
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, d := range dirs {
		c, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(c)) != comm {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "schedstat"))
		if err != nil {
			return schedStat{}
		}
		var s schedStat
		var run, wait int64
		if _, err := fmt.Sscan(string(b), &run, &wait, &s.slices); err != nil {
			return schedStat{}
		}
		s.ok, s.run, s.wait = true, time.Duration(run), time.Duration(wait)
		return s
	}
	return schedStat{}
}

// deliveryRealtime makes the key delivery path's threads SCHED_FIFO 1
// with reset-on-fork (their children, like the swanctl loop, and threads
// created later stay normal): pid's thread named "ikefrag-keys" and this
// process's threads.
func deliveryRealtime(tb testing.TB, pid int) {
	tb.Helper()
	tids := []int{}
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, d := range dirs {
		if c, err := os.ReadFile(filepath.Join(d, "comm")); err == nil && strings.TrimSpace(string(c)) == "ikefrag-keys" {
			tid, _ := strconv.Atoi(filepath.Base(d))
			tids = append(tids, tid)
		}
	}
	if len(tids) != 1 {
		tb.Fatalf("charon %d: %d threads named ikefrag-keys, want 1", pid, len(tids))
	}
	dirs, _ = filepath.Glob("/proc/self/task/*")
	for _, d := range dirs {
		tid, _ := strconv.Atoi(filepath.Base(d))
		tids = append(tids, tid)
	}
	for _, tid := range tids {
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1,
			Flags: unix.SCHED_FLAG_RESET_ON_FORK}
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
			tb.Fatalf("SCHED_FIFO for thread %d: %v", tid, err)
		}
	}
	tb.Logf("SCHED_FIFO 1 for the sender thread and %d threads of this process", len(tids)-1)
}

// procWait is the total time pid's current threads were runnable without
// a CPU (schedstat).
func procWait(pid int) time.Duration {
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var run, wait int64
		if _, err := fmt.Sscan(string(b), &run, &wait); err == nil {
			sum += time.Duration(wait)
		}
	}
	return sum
}

// cpuPressure is the total time some task waited for a CPU
// (/proc/pressure/cpu, "some"); 0 without PSI.
func cpuPressure() time.Duration {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return 0
	}
	_, rest, ok := strings.Cut(strings.SplitN(string(b), "\n", 2)[0], "total=")
	if !ok {
		return 0
	}
	us, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// BenchmarkLabKeyFeedRate: IKE SAs a charon establishes per second, without
// the plugin, with it and ikefragd down (no socket), and with ikefragd up.
// The plugin must not slow charon down when ikefragd is down.
func BenchmarkLabKeyFeedRate(b *testing.B) {
	lab.Require(b)
	const n = 200
	for _, c := range []struct {
		name     string
		feed, up bool
	}{{"plugin_not_loaded", false, false}, {"ikefragd_down", true, false}, {"ikefragd_up", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				_, sock, cli, srv := keyFeedLab(b, c.feed, 0)
				if c.up {
					listenKeys(b, sock)
				}
				cpu0 := cpuTime(b, srv.Pid())
				took := establish(b, cli, n)
				cpu := cpuTime(b, srv.Pid()) - cpu0
				b.ReportMetric(float64(n)/took.Seconds(), "SAs/s")
				// wall time depends on the machine's load; the responder's
				// CPU time per SA is what the plugin could add to
				b.ReportMetric(float64(cpu.Microseconds())/1000/n, "srv-cpu-ms/SA")
			}
		})
	}
}

// cpuTime is the user and system CPU time of a process (/proc/PID/stat).
func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// fields after the command name in parentheses; utime and stime are
	// the 14th and 15th fields, in clock ticks (100 per second on Linux)
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var ut, st int64
	if _, err := fmt.Sscan(f[11], &ut); err != nil {
		tb.Fatal(err)
	}
	if _, err := fmt.Sscan(f[12], &st); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// TestLabKeyFeedStalled: ikefragd accepts the connection and then never
// reads or answers (hung). charon establishes every SA regardless, the
// plugin's queue stays within its bound (queue = 8): the lines beyond it
// are dropped, counted and logged without keys. When a working ikefragd
// takes the socket over, the plugin reconnects and re-sends the keys of
// every live SA, the dropped ones included.
func TestLabKeyFeedStalled(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	const n, queue = 40, 8
	_, sock, cli, srv := keyFeedLab(t, true, queue)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var hmu sync.Mutex
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, c) // never read
			hmu.Unlock()
		}
	}()
	took := establish(t, cli, n)
	t.Logf("%d SAs established in %v with a hung ikefragd", n, took)
	log, err := os.ReadFile(srv.Log())
	if err != nil {
		t.Fatal(err)
	}
	drops := regexp.MustCompile(`ikefrag-keys: queue full, keys of IKE_SA \S+ \(SPIs [0-9a-f]{16}_i [0-9a-f]{16}_r\) dropped`).FindAll(log, -1)
	// at most queue lines wait, one is in flight, one more may be in a
	// resync copy: the rest must have been dropped
	if len(drops) < n-queue-2 {
		t.Fatalf("%d key lines dropped of %d with a queue of %d: the bound does not hold", len(drops), n, queue)
	}
	if regexp.MustCompile(`sk_e|[0-9a-f]{64}`).Match(log) {
		t.Fatal("charon's log holds key material")
	}
	t.Logf("%d key lines dropped and logged (SPIs only)", len(drops))

	// a working ikefragd takes over
	ln.Close()
	hmu.Lock()
	for _, c := range held {
		c.Close()
	}
	hmu.Unlock()
	k := listenKeys(t, sock)
	deadline := time.Now().Add(20 * time.Second)
	for k.count() < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := k.count(); got < n {
		t.Fatalf("after the reconnect the plugin re-sent the keys of %d of %d live SAs", got, n)
	}
	sas, err := srv.SAs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != n {
		t.Fatalf("srv holds %d IKE SAs, want %d", len(sas), n)
	}
	for _, sa := range sas {
		var spi ike.SPI
		if b, err := hex.DecodeString(sa.SPIi); err != nil || len(b) != len(spi) {
			t.Fatalf("SPI %q: %v", sa.SPIi, err)
		} else {
			copy(spi[:], b)
		}
		k.mu.Lock()
		ok := k.spis[spi]
		k.mu.Unlock()
		if !ok {
			t.Errorf("no keys re-sent for live SA %s/%s", sa.SPIi, sa.SPIr)
		}
	}
	t.Logf("a working ikefragd received the keys of all %d live SAs after the reconnect", n)
}
