package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/test/lab"
)

// TestDaemonTCPDiagnosis: ikefragd on gw runs the proxy with its RFC 9329
// listener; mid forwards no UDP 500/4500, and the lab's shim in mid
// carries a strongSwan client's datagrams to the listener as one RFC 9329
// stream (strongSwan has no RFC 9329). The IKE SA comes up over TCP, and
// the daemon's verdicts show the client's session live, marked TCP,
// established, every ladder row TCP, judged OK.
func TestDaemonTCPDiagnosis(t *testing.T) {
	lab.Require(t)
	bins := buildBinaries(t)
	t.Parallel()
	l := lab.New(t, lab.Topology{Gateway: true})
	if err := l.BlockIKEUDP(); err != nil {
		t.Fatal(err)
	}
	shim := lab.StartTCPShim(t, l.Mid, l.Mid.Addr4, netip.AddrPortFrom(l.Gw.Addr4, 4500))
	cli, _ := l.StartPair(lab.Charon{RemoteAddr: l.Mid.Addr4}, lab.Charon{})
	cfg := fmt.Sprintf("interfaces: [%s, %s]\ndiag:\n  settle: 3s\n"+
		"proxy:\n  enabled: true\n  listen: [%q]\n  backends: [%q]\n  tcp:\n    listen: [\"%s:4500\"]\n",
		ifaceIn(l, l.Gw, l.Mid), ifaceIn(l, l.Gw, l.Srv), l.Gw.Addr4, l.Srv.Addr4, l.Gw.Addr4)
	d := newDaemon(t, bins, l.Gw.Name, cfg)
	d.start()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ok, out, err := cli.Initiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if dials, _ := shim.Counts(); !ok || dials == 0 {
		t.Fatalf("not established over TCP (ok=%v, %d dials):\n%s", ok, dials, out)
	}

	// the stream comes from the shim in mid to the listener on gw (the
	// proxy's relayed UDP leg toward srv is a relay-leg session)
	listener := netip.AddrPortFrom(l.Gw.Addr4, 4500).String()
	var rep diag.Report
	var s *diag.SessionReport
	judged := waitFor(20*time.Second, func() bool {
		rep, s = diag.Report{}, nil
		d.ctlJSON(&rep, "verdicts")
		for i := range rep.Sessions {
			if rep.Sessions[i].Server == listener && len(rep.Sessions[i].Verdicts) > 0 {
				s = &rep.Sessions[i]
				return true
			}
		}
		return false
	})
	if !judged {
		t.Fatalf("no verdict for the stream's session; report %+v", rep)
	}
	t.Logf("session %d %s → %s transport %q established %v, %d ladder rows", s.ID, s.Client, s.Server, s.Transport, s.Established, len(s.Ladder))
	if s.Transport != diag.TransportTCP || !s.Established || s.RelayLeg || len(s.Ladder) < 4 {
		t.Errorf("session %+v", s)
	}
	for _, r := range s.Ladder {
		if !r.TCP || r.IPFragments != 1 {
			t.Errorf("ladder row %+v, want TCP", r)
		}
	}
	codes := map[diag.Code]bool{}
	for _, v := range s.Verdicts {
		codes[v.Code] = true
		if v.Severity == diag.Error {
			t.Errorf("error verdict on a working tunnel over TCP: %+v", v)
		}
	}
	if !codes[diag.OK] {
		t.Errorf("verdicts %+v, want OK", s.Verdicts)
	}
	text, _ := d.ctl("verdicts")
	if !strings.Contains(text, "over TCP (RFC 9329)") || !strings.Contains(text, "[TCP]") {
		t.Errorf("ikefragctl verdicts does not mark the session TCP:\n%s", text)
	}
}
