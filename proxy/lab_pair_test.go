package proxy_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/test/lab"
)

// pairRunsEnv sets how many times each failover of TestLabPair is
// measured (default 1; the figures were taken with 5).
const pairRunsEnv = "IKEFRAG_PAIR_RUNS"

// pingInterval is the probe rate of the gap measurements: a gap is
// measured to this resolution.
const pingInterval = 100 * time.Millisecond

// pairBox is one gateway of the pair: its proxy, its keepalived and the
// file whose value lowers its VRRP priority (a planned switch).
type pairBox struct {
	node  *lab.Node
	prio  int
	proxy *gwProxy
	vrrp  *lab.Process
	drain string
	cfg   string
}

// keepalivedConf is the lab's VRRP configuration of one box: the two
// virtual addresses in one sync group (they move together), a track
// script asking the proxy (as configs/keepalived/ does with ikefragctl
// status), and a track file whose 1 takes 100 off the priority. The
// script may take seconds to answer: a slow machine (an emulated kernel-
// matrix guest under load) spawns curl slowly, and a check that times out
// there puts the box in FAULT although its proxy is up. A dead proxy still
// fails at once (nothing listens on the socket).
func keepalivedConf(l *lab.Lab, b *pairBox) string {
	return fmt.Sprintf(`global_defs {
	router_id %[1]s
	script_user root
	enable_script_security
	vrrp_version 3
}
vrrp_script proxy_ok {
	script "/usr/bin/curl -sf -m 4 -o /dev/null --unix-socket %[2]s http://proxy/stats"
	interval 1
	timeout 5
	fall 2
	rise 1
}
track_file drain {
	file "%[3]s"
	init_file 0 overwrite
}
vrrp_sync_group ikefrag {
	group {
		client_side
		server_side
	}
	sync_group_tracking_weight
}
vrrp_instance client_side {
	state BACKUP
	interface %[4]s
	virtual_router_id 51
	priority %[5]d
	advert_int 0.5
	virtual_ipaddress {
		%[6]s/24 dev %[4]s
	}
	track_script {
		proxy_ok
	}
	track_file {
		drain weight -100
	}
}
vrrp_instance server_side {
	state BACKUP
	interface %[7]s
	virtual_router_id 52
	priority %[5]d
	advert_int 0.5
	virtual_ipaddress {
		%[8]s/24 dev %[7]s
	}
	track_script {
		proxy_ok
	}
	track_file {
		drain weight -100
	}
}
`, b.node.Role, b.proxy.ctl, b.drain, b.node.Interface(l.Mid), b.prio, lab.PairClientVIP4,
		b.node.Interface(l.Srv), lab.PairServerVIP4)
}

// pingResult is one ping stream: which sequence numbers came back, and
// when (ping -D).
type pingResult struct {
	sent int
	got  map[int]bool
	at   map[int]time.Time
	out  string
}

// pingStream pings srv's inner address from cli's through the tunnel n
// times, every pingInterval, and returns the result when done.
func pingStream(ctx context.Context, l *lab.Lab, n int) <-chan pingResult {
	ch := make(chan pingResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, time.Duration(n)*pingInterval+10*time.Second)
		defer cancel()
		out, _ := l.Cli.Run(ctx, "ping", "-n", "-D", "-c", strconv.Itoa(n), "-i", fmt.Sprint(pingInterval.Seconds()), "-W", "1",
			"-I", l.Cli.Inner4.String(), l.Srv.Inner4.String())
		r := pingResult{sent: n, got: map[int]bool{}, at: map[int]time.Time{}, out: out}
		for _, m := range regexp.MustCompile(`\[(\d+)\.(\d+)\] \d+ bytes from .* icmp_seq=(\d+)`).FindAllStringSubmatch(out, -1) {
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			us, _ := strconv.ParseInt((m[2] + "000000")[:6], 10, 64)
			k, _ := strconv.Atoi(m[3])
			r.got[k] = true
			r.at[k] = time.Unix(sec, us*1000)
		}
		ch <- r
	}()
	return ch
}

// gap is the longest time without an answer beyond the ping interval
// (the time between the answers around the longest run of unanswered
// pings, less one interval; 0 when every ping was answered), and how
// many pings after that run went unanswered.
func (r pingResult) gap() (time.Duration, int) {
	longest, run, end := 0, 0, 0
	for s := 1; s <= r.sent; s++ {
		if r.got[s] {
			run = 0
			continue
		}
		if run++; run > longest {
			longest, end = run, s
		}
	}
	lostAfter := 0
	for s := end + 1; s <= r.sent; s++ {
		if !r.got[s] {
			lostAfter++
		}
	}
	if longest == 0 {
		return 0, 0
	}
	before, after := r.at[end-longest], r.at[end+1]
	if before.IsZero() || after.IsZero() {
		// the run touches the start or the end of the stream
		return time.Duration(longest) * pingInterval, lostAfter
	}
	return max(after.Sub(before)-pingInterval, 0), lostAfter
}

// The gap of a ping stream is measured between the answers around the
// longest run of lost pings.
func TestPingGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := pingResult{sent: 10, got: map[int]bool{}, at: map[int]time.Time{}}
	for _, s := range []int{1, 2, 3, 6, 7, 9, 10} {
		r.got[s] = true
		r.at[s] = t0.Add(time.Duration(s) * 105 * time.Millisecond)
	}
	r.at[6] = r.at[6].Add(50 * time.Millisecond) // 3 → 6: 365 ms, less 100 ms
	if g, after := r.gap(); g != 265*time.Millisecond || after != 1 {
		t.Errorf("gap %v, lost after %d; want 265ms, 1", g, after)
	}
	r.got[8] = true
	r.at[8] = t0.Add(8 * 105 * time.Millisecond)
	if g, after := r.gap(); g != 265*time.Millisecond || after != 0 {
		t.Errorf("gap %v, lost after %d; want 265ms, 0", g, after)
	}
	all := pingResult{sent: 2, got: map[int]bool{1: true, 2: true}, at: map[int]time.Time{1: t0, 2: t0.Add(pingInterval)}}
	if g, after := all.gap(); g != 0 || after != 0 {
		t.Errorf("no loss: gap %v, lost after %d", g, after)
	}
	tail := pingResult{sent: 3, got: map[int]bool{1: true}, at: map[int]time.Time{1: t0}}
	if g, after := tail.gap(); g != 2*pingInterval || after != 0 {
		t.Errorf("lost at the end: gap %v, lost after %d", g, after)
	}
}

// holdWait bounds the wait for keepalived to move the virtual addresses.
// It takes about two seconds (3 × advert_int + skew); the ping streams'
// gaps are what the test asserts about failover. The bound only has to
// outlast a loaded emulated guest, where keepalived's transitions and the
// test's own `ip` calls each take seconds.
const holdWait = 30 * time.Second

func waitHolds(t *testing.T, b *pairBox, want bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err1 := b.node.HasAddr(lab.PairClientVIP4)
		s, err2 := b.node.HasAddr(lab.PairServerVIP4)
		if err1 == nil && err2 == nil && c == want && s == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: holds client VIP %v, server VIP %v after %v; want %v", b.node.Role, c, s, within, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// vipHeld is what the proxy of a box says about its listen address.
func vipHeld(t *testing.T, b *pairBox) bool {
	t.Helper()
	st := b.proxy.stats(t)
	if len(st.Pair.VIPs) != 1 {
		t.Fatalf("%s: virtual addresses %+v", b.node.Role, st.Pair.VIPs)
	}
	return st.Pair.VIPs[0].Held
}

func waitVIPHeld(t *testing.T, b *pairBox, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for vipHeld(t, b) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: proxy says held %v, want %v", b.node.Role, !want, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func setDrain(t *testing.T, b *pairBox, v int) {
	t.Helper()
	if err := os.WriteFile(b.drain, []byte(strconv.Itoa(v)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sameSA checks that the client still has the one IKE SA it had, with the
// same SPIs, and a CHILD SA.
func sameSA(t *testing.T, cli *lab.Daemon, want lab.SA, what string) {
	t.Helper()
	sa := established(t, cli)
	if sa.SPIi != want.SPIi || sa.SPIr != want.SPIr {
		t.Errorf("%s: IKE SA %s_i %s_r, want the one from before, %s_i %s_r", what, sa.SPIi, sa.SPIr, want.SPIi, want.SPIr)
	}
}

// TestLabPair: two gateways, gw and gw2, run the proxy (source: client,
// freebind, adopt: transparent, the backend's save-keys table read by
// both) behind two keepalived virtual addresses, in front of strongSwan
// (fragment_size 1500), with the client on a 1280-byte path whose router
// drops every IP fragment. The tunnel comes up through gw with
// re-fragmentation; then a planned switch to gw2 and back (a priority
// change), a rolling restart of both proxies, and a hard failure of gw
// (SIGKILL of everything on it, links down) each leave the same IKE SA
// carrying pings, with the gap measured; after the failure a new IKE SA
// comes up through gw2, re-fragmented there. IKEFRAG_PAIR_RUNS repeats
// each measurement.
func TestLabPair(t *testing.T) {
	lab.RequireKeepalived(t)
	t.Parallel()
	ctx := context.Background()
	runs := 1
	if v := os.Getenv(pairRunsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive count", pairRunsEnv, v)
		}
		runs = n
	}
	l := lab.New(t, lab.Topology{Pair: true, MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll})
	srv := l.StartCharon(lab.Charon{Role: lab.Server, FragmentSize: 1500, SaveKeys: true})
	cli := l.StartCharon(lab.Charon{Role: lab.Client, RemoteAddr: lab.PairClientVIP4})
	proxyCfg := fmt.Sprintf("proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  source: client\n  freebind: true\n  adopt: transparent\nkeys:\n  strongswan_table: %s\n",
		lab.PairClientVIP4, l.Srv.Addr4, srv.KeysFile())
	boxes := []*pairBox{{node: l.Gw, prio: 150}, {node: l.Gw2, prio: 100}}
	for _, b := range boxes {
		b.cfg = proxyCfg
		b.drain = filepath.Join(l.Dir, "drain-"+b.node.Role)
		// both proxies listen on the virtual address before either holds it
		b.proxy = startProxy(t, l, b.node, proxyCfg)
		if vipHeld(t, b) {
			t.Fatalf("%s: proxy says it holds the virtual address before keepalived runs", b.node.Role)
		}
	}
	for _, b := range boxes {
		b.vrrp = b.node.StartKeepalived(t, keepalivedConf(l, b))
	}
	gw, gw2 := boxes[0], boxes[1]
	waitHolds(t, gw, true, holdWait)
	waitHolds(t, gw2, false, holdWait)
	waitVIPHeld(t, gw, true)
	if vipHeld(t, gw2) {
		t.Errorf("gw2: proxy says it holds the virtual address")
	}

	if ok, out, err := cli.Initiate(ctx); err != nil || !ok {
		t.Fatalf("initiate through the pair: %v %v\n%s", ok, err, out)
	}
	sa := established(t, cli)
	if sa.Remote.Addr() != lab.PairClientVIP4 {
		t.Errorf("client's peer %v, want the virtual address %v", sa.Remote, lab.PairClientVIP4)
	}
	if sas, err := srv.SAs(ctx); err != nil || len(sas) != 1 || sas[0].Remote.Addr() != l.Cli.Addr4 {
		t.Errorf("backend's IKE SAs %+v (%v): want one with the client's own address", sas, err)
	}
	if st := gw.proxy.stats(t); st.Total.Refragmented == 0 {
		t.Errorf("gw: IKE_AUTH not re-fragmented: %+v", st.Total)
	}
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Fatalf("ping through gw: %v", err)
	}

	type measure struct {
		name string
		gaps []time.Duration
	}
	var results []*measure
	// record checks one stream: for a single switch, the longest gap is at
	// most maxGap and every ping after it is answered; for several
	// switches (several) all the pings lost together are at most maxGap.
	record := func(name string, r pingResult, maxGap time.Duration, several bool) {
		t.Helper()
		g, lostAfter := r.gap()
		lost := time.Duration(r.sent-len(r.got)) * pingInterval // at the nominal rate
		var m *measure
		for _, x := range results {
			if x.name == name {
				m = x
			}
		}
		if m == nil {
			m = &measure{name: name}
			results = append(results, m)
		}
		if several {
			m.gaps = append(m.gaps, lost)
		} else {
			m.gaps = append(m.gaps, g)
		}
		t.Logf("%s: %d of %d pings answered, longest gap %v, %d lost after it", name, len(r.got), r.sent, g, lostAfter)
		if several {
			if lost > maxGap {
				t.Errorf("%s: %v of pings lost (at most %v wanted)", name, lost, maxGap)
			}
			return
		}
		if g > maxGap || lostAfter > 0 {
			t.Errorf("%s: gap %v (at most %v wanted), %d pings lost after it", name, g, maxGap, lostAfter)
		}
	}
	// switchTo moves the addresses by priority (drain on the active box)
	// during a ping stream and measures it.
	switchTo := func(name string, from, to *pairBox) {
		t.Helper()
		done := pingStream(ctx, l, 60)
		time.Sleep(1500 * time.Millisecond)
		setDrain(t, from, 1)
		setDrain(t, to, 0)
		waitHolds(t, to, true, holdWait)
		waitHolds(t, from, false, holdWait)
		record(name, <-done, time.Second, false)
		waitVIPHeld(t, to, true)
		sameSA(t, cli, sa, name)
	}

	for i := 0; i < runs; i++ {
		switchTo("planned switch gw → gw2", gw, gw2)
		if st := gw2.proxy.stats(t); st.Pair.AdoptedESP+st.Pair.AdoptedIKE == 0 {
			t.Errorf("gw2 adopted nothing: %+v", st.Pair)
		}
		switchTo("planned switch gw2 → gw", gw2, gw)
	}

	// Rolling restart: each box in turn is drained (the other takes the
	// addresses), its proxy restarted, and undrained; the active box goes
	// last. One ping stream covers the whole of it.
	for i := 0; i < runs; i++ {
		done := pingStream(ctx, l, 180)
		time.Sleep(time.Second)
		for _, b := range []*pairBox{gw2, gw} {
			other := gw
			if b == gw {
				other = gw2
			}
			setDrain(t, b, 1)
			waitHolds(t, other, true, holdWait)
			waitHolds(t, b, false, holdWait)
			if err := b.proxy.proc.Stop(); err != nil {
				t.Errorf("%s: proxy stop: %v", b.node.Role, err)
			}
			b.proxy = startProxy(t, l, b.node, b.cfg)
			time.Sleep(2500 * time.Millisecond) // keepalived's track script sees it back (rise 1, interval 1)
			setDrain(t, b, 0)
			if b == gw {
				waitHolds(t, gw, true, holdWait)
			}
			time.Sleep(2 * time.Second)
		}
		// two switches: gw → gw2 and back
		record("rolling restart", <-done, time.Second, true)
		sameSA(t, cli, sa, "rolling restart")
	}

	// Hard failure of the active box: everything on gw killed with
	// SIGKILL, its links down; keepalived on gw2 takes over after its
	// master-down interval (3 × 0.5 s + skew).
	for i := 0; i < runs; i++ {
		waitHolds(t, gw, true, holdWait)
		done := pingStream(ctx, l, 80)
		time.Sleep(1500 * time.Millisecond)
		if _, err := gw.node.KillAll(); err != nil {
			t.Fatal(err)
		}
		if err := gw.node.SetLinks(false); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		waitHolds(t, gw2, true, holdWait)
		t.Logf("hard failure: gw2 holds the addresses %.2f s after the kill", time.Since(killed).Seconds())
		r := <-done
		for s := 1; s <= 10; s++ {
			if !r.got[s] {
				t.Errorf("hard failure: ping %d, before the kill, unanswered: gw was not carrying the tunnel", s)
				break
			}
		}
		record("hard failure of the active box", r, 5*time.Second, false)
		sameSA(t, cli, sa, "hard failure")
		if sas, err := srv.SAs(ctx); err != nil || len(sas) != 1 || sas[0].SPIi != sa.SPIi {
			t.Errorf("backend's IKE SAs after the failure %+v (%v): want the same one", sas, err)
		}
		if i == runs-1 {
			break
		}
		// bring gw back as a rebooted box: without the addresses its dead
		// keepalived left, links up with its routes, then the proxy and
		// keepalived; it takes the addresses again (priority 150)
		for _, a := range []netip.Addr{lab.PairClientVIP4, lab.PairServerVIP4} {
			if err := gw.node.DelAddr(netip.PrefixFrom(a, 24)); err != nil {
				t.Fatal(err)
			}
		}
		if err := gw.node.SetLinks(true); err != nil {
			t.Fatal(err)
		}
		gw.proxy = startProxy(t, l, gw.node, gw.cfg)
		gw.vrrp = gw.node.StartKeepalived(t, keepalivedConf(l, gw))
		waitHolds(t, gw, true, holdWait)
		waitVIPHeld(t, gw, true)
		time.Sleep(time.Second)
		if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
			t.Fatalf("run %d: ping after gw came back: %v", i+1, err)
		}
	}

	// IKE first: gw2's proxy, restarted without a state file, knows no
	// flow; the client's CREATE_CHILD_SA (a CHILD SA rekey) is the first
	// datagram it sees of the tunnel, adopted by the IKE rule (its SPI
	// pair is in the save-keys table), and the IKE SA goes on.
	if err := gw2.proxy.proc.Stop(); err != nil {
		t.Errorf("gw2: proxy stop: %v", err)
	}
	gw2.proxy = startProxy(t, l, gw2.node, gw2.cfg)
	if out, err := cli.Swanctl(ctx, "--rekey", "--child", "lab"); err != nil {
		t.Fatalf("rekey: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for gw2.proxy.stats(t).Pair.AdoptedIKE == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("gw2 adopted no IKE message after a restart and a CHILD SA rekey: %+v", gw2.proxy.stats(t).Pair)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitChildRekeyed(t, cli)
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Errorf("ping after the CHILD SA rekey through gw2: %v", err)
	}
	sameSA(t, cli, sa, "CHILD SA rekey through a restarted gw2")

	// A new IKE SA after the failure comes up through gw2, which
	// re-fragments its IKE_AUTH response.
	before := gw2.proxy.stats(t).Total.Refragmented
	if out, err := cli.Swanctl(ctx, "--terminate", "--ike", "lab"); err != nil {
		t.Fatalf("terminate: %v\n%s", err, out)
	}
	if ok, out, err := cli.Initiate(ctx); err != nil || !ok {
		t.Fatalf("initiate through gw2 after the failure: %v %v\n%s", ok, err, out)
	}
	if after := gw2.proxy.stats(t).Total.Refragmented; after <= before {
		t.Errorf("gw2 re-fragmented %d messages before the new IKE SA and %d after", before, after)
	}
	if err := l.Ping(ctx, l.Cli, l.Srv.Inner4); err != nil {
		t.Errorf("ping through the new IKE SA on gw2: %v", err)
	}
	st := gw2.proxy.stats(t)
	if !strings.Contains(statusLine(t, gw2), "active (holds 1/1 listen addresses)") {
		t.Errorf("gw2 status: %s", statusLine(t, gw2))
	}
	t.Logf("gw2: %+v; re-fragmented %d", st.Pair, st.Total.Refragmented)

	for _, m := range results {
		var s []string
		for _, g := range m.gaps {
			s = append(s, g.Round(10*time.Millisecond).String())
		}
		t.Logf("measured (ping every %v; longest time without an answer, or for the rolling restart all pings lost × interval), %s: %s", pingInterval, m.name, strings.Join(s, ", "))
	}
}

// waitChildRekeyed waits until the client's IKE SA has one installed
// CHILD SA again (a rekey briefly shows two, or a REKEYING one).
func waitChildRekeyed(t *testing.T, cli *lab.Daemon) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sas, err := cli.SAs(context.Background())
		if err == nil && len(sas) == 1 && len(sas[0].Children) == 1 && sas[0].Children[0].State == "INSTALLED" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client's SAs after the CHILD SA rekey: %+v (%v)", sas, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// statusLine is the proxy's status line, as ikefragctl status shows it.
func statusLine(t *testing.T, b *pairBox) string {
	t.Helper()
	var s string
	b.proxy.get(t, "status", &s)
	return s
}
