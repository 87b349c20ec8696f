package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
)

// interfaces: default observes the default route's link and follows the
// route when it moves to another link (netlink route updates; the attach
// and release go through the usual reconciliation). While no default
// route exists the last link stays.
func TestDefaultRouteFollowed(t *testing.T) {
	requireRoot(t)
	bins := buildBinaries(t)
	t.Parallel()
	n := newNetns(t)
	n.veth("r0", "r1")
	n.veth("s0", "s1")
	n.ip("addr", "add", "10.61.0.1/24", "dev", "r0")
	n.ip("addr", "add", "10.62.0.1/24", "dev", "s0")
	n.ip("route", "add", "default", "via", "10.61.0.2", "dev", "r0")
	d := newDaemon(t, bins, n.name, "interfaces: default\nmetrics:\n  listen: \"\"\n")
	d.start()
	if got := attachedNames(d.status()); !slices.Equal(got, []string{"r0"}) {
		t.Fatalf("attached %v, want [r0]", got)
	}
	waitAttached := func(want []string) {
		t.Helper()
		var got []string
		if !waitFor(20*time.Second, func() bool { got = attachedNames(d.status()); return slices.Equal(got, want) }) {
			t.Fatalf("attached %v, want %v\n%s", got, want, d.stderr)
		}
	}
	n.ip("route", "replace", "default", "via", "10.62.0.2", "dev", "s0")
	waitAttached([]string{"s0"})
	st := d.status()
	if i := slices.IndexFunc(st.Interfaces, func(i control.Interface) bool { return i.State == "default" }); i < 0 || st.Interfaces[i].Follows != "s0" {
		t.Errorf("status does not say the default route is followed to s0: %+v", st.Interfaces)
	}
	out, _ := d.ctl("status")
	if !strings.Contains(out, "default (the default route's: s0)") {
		t.Errorf("ikefragctl status:\n%s", out)
	}
	// No default route for a moment: s0 stays.
	n.ip("route", "del", "default")
	time.Sleep(2 * time.Second)
	if got := attachedNames(d.status()); !slices.Equal(got, []string{"s0"}) {
		t.Errorf("without a default route: attached %v, want s0 kept", got)
	}
	n.ip("route", "add", "default", "via", "10.61.0.2", "dev", "r0")
	waitAttached([]string{"r0"})
	var moved int
	for _, e := range d.events() {
		if e.Kind == control.EventInterface && strings.HasPrefix(e.Message, "default route now via") {
			moved++
		}
	}
	if moved != 2 {
		t.Errorf("%d default-route events, want 2", moved)
	}
	// The log reaches the test through a pipe; it may trail the events.
	if !waitFor(5*time.Second, func() bool {
		return strings.Contains(d.stderr.String(), `msg="the default route moved; following it" component=interfaces from=r0 to=s0`)
	}) {
		t.Errorf("no log line for the move:\n%s", d.stderr)
	}
}
