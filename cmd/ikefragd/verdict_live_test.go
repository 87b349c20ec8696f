package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ebpf/kfeat"
	"github.com/ikefrag/ikefrag/ebpf/kfeat/kfeattest"
	"github.com/ikefrag/ikefrag/test/lab"
)

// startOnMid starts ikefragd on the lab's router, observing both of its
// interfaces, with the given settle time (and extra configuration).
func startOnMid(t *testing.T, bins binaries, l *lab.Lab, settle string, extra ...string) *daemonProc {
	t.Helper()
	next := l.Srv
	if l.Gw != nil {
		next = l.Gw
	}
	in, out := ifaceIn(l, l.Mid, l.Cli), ifaceIn(l, l.Mid, next)
	d := newDaemon(t, bins, l.Mid.Name, fmt.Sprintf("interfaces: [%s, %s]\ndiag:\n  settle: %s\n%s", in, out, settle, strings.Join(extra, "")))
	d.start()
	return d
}

// TestLiveESPBlackholeDaemon: ikefragd on the router of the ESP black-hole
// scenario (see diag's TestLiveESPBlackhole) names it from the kernel's
// drops of the ESP-in-UDP fragments, while the IKE SA stays OK.
func TestLiveESPBlackholeDaemon(t *testing.T) {
	lab.Require(t)
	// Live, the kernel's drops of the ESP fragments are the evidence (the
	// observer hands no ESP up).
	kfeattest.Require(t, kfeat.DropReasons)
	bins := buildBinaries(t)
	t.Parallel()
	l := lab.New(t, lab.Topology{MTU: lab.MTUs{CliMid: 1280}, Drop: lab.DropAll})
	d := startOnMid(t, bins, l, "3s")
	if t.Failed() {
		return
	}
	cli, _ := l.StartPair(lab.Charon{FragmentSize: 1280}, lab.Charon{FragmentSize: 1280})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if ok, out, err := cli.Initiate(ctx); err != nil || !ok {
		t.Fatalf("initiate ok=%v err=%v\n%s", ok, err, out)
	}
	ping := func(size int) error {
		_, err := l.Cli.Run(ctx, "ping", "-n", "-q", "-c", "3", "-i", "0.3", "-W", "1", "-s", fmt.Sprint(size), "-I", l.Cli.Inner4.String(), l.Srv.Inner4.String())
		return err
	}
	if err := ping(100); err != nil {
		t.Fatalf("small pings: %v", err)
	}
	if ping(1300) == nil {
		t.Fatal("large pings crossed: no black hole")
	}
	var rep diag.Report
	if !waitFor(20*time.Second, func() bool {
		rep = diag.Report{}
		code := d.ctlJSON(&rep, "verdicts")
		return (code == 0 || code == 1) && findVerdict(rep, diag.ESPFragmentsDropped) != nil
	}) {
		t.Fatalf("no ESP_FRAGMENTS_DROPPED; last report: %+v\n%s", rep, d.stderr)
	}
	v := findVerdict(rep, diag.ESPFragmentsDropped)
	if v.Direction != diag.TowardServer || len(v.KernelDrops) == 0 || findVerdict(rep, diag.OK) == nil {
		t.Errorf("verdict %+v (OK present: %v)", v, findVerdict(rep, diag.OK) != nil)
	}
	all := strings.Join(v.Remedy, "\n")
	if !strings.Contains(all, "kernel-libipsec.mtu = 1198") || !strings.Contains(all, "tcp option maxseg size set rt mtu") {
		t.Errorf("remedy:\n%s", all)
	}
	t.Logf("%s\n%s\n%s", v.Summary, strings.Join(append(v.Evidence, v.KernelDrops...), "\n"), all)
}

// TestLiveTimeToVerdict measures how long after the client's first
// IKE_SA_INIT `ikefragctl verdicts` serves FRAGMENTS_DROPPED (scenario b:
// no IKE fragmentation, every IP fragment dropped), and whether it came
// provisional or final:
//
//	router_drops: ikefragd on the router that drops the fragments; the
//	  kernel's drop records decide at once.
//	loss_elsewhere: ikefragd on mid, the fragments dropped further on at
//	  gw, kernel drop records off (observe.drops: false), as on a box that
//	  does not see the loss: retransmissions give a provisional verdict.
//
// It is a measurement, logged (and printed in benchmark format), never a
// timed assertion: the machine is shared.
func TestLiveTimeToVerdict(t *testing.T) {
	lab.Require(t)
	bins := buildBinaries(t)
	t.Parallel()
	for _, c := range []struct {
		name  string
		topo  lab.Topology
		extra string
	}{
		{"router_drops", lab.Topology{Drop: lab.DropAll}, ""},
		{"loss_elsewhere", lab.Topology{Drop: lab.DropAll, Gateway: true, DropAt: "gw"}, "observe:\n  drops: false\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, c.topo)
			d := startOnMid(t, bins, l, "30s", c.extra) // the default settle
			if t.Failed() {
				return
			}
			cli, _ := l.StartPair(lab.Charon{Fragmentation: "no"}, lab.Charon{Fragmentation: "no"})
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			start := time.Now()
			gaveUp := make(chan time.Duration, 1)
			go func() {
				_, _, _ = cli.Initiate(ctx)
				gaveUp <- time.Since(start)
			}()
			var rep diag.Report
			var v *diag.Verdict
			if !waitFor(60*time.Second, func() bool {
				rep = diag.Report{}
				code := d.ctlJSON(&rep, "verdicts")
				v = findVerdict(rep, diag.FragmentsDropped)
				return (code == 0 || code == 1) && v != nil
			}) {
				t.Fatalf("no FRAGMENTS_DROPPED; last report %+v\n%s", rep, d.stderr)
			}
			took := time.Since(start)
			if v.Direction != diag.TowardServer {
				t.Errorf("verdict %+v", v)
			}
			client := <-gaveUp
			t.Logf("time to verdict: FRAGMENTS_DROPPED served %.2f s after the client's first IKE_SA_INIT (provisional=%v, kernel drops cited=%d); the client gave up after %.2f s",
				took.Seconds(), v.Provisional, len(v.KernelDrops), client.Seconds())
			fmt.Printf("BenchmarkLiveTimeToVerdict/%s\t1\t%d ms/verdict\t%d ms/client-gives-up\n", c.name, took.Milliseconds(), client.Milliseconds())
		})
	}
}
