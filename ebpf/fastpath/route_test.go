package fastpath

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"
)

// RouteInterface answers from the routing table of the namespace New ran
// in, whichever thread asks.
func TestRouteInterface(t *testing.T) {
	l := proxyLab(t)
	var fp *FastPath
	l.do("px", func() {
		var err error
		if fp, err = New(Options{MaxFlows: 4, Logger: slog.New(slog.DiscardHandler)}); err != nil {
			t.Error(err)
		}
	})
	if fp == nil {
		t.FailNow()
	}
	defer fp.Close()
	for _, c := range []struct {
		dst  string
		name string
		err  error
	}{
		{"10.201.1.2", "pc", nil},
		{"fd00:201:2::2", "pb", nil},
		{"::ffff:10.201.2.2", "pb", nil},
		{"10.201.1.1", "", ErrUnsupported}, // the proxy's own address
		{"192.0.2.1", "", ErrNoRoute},      // no route in px (also ErrUnsupported)
	} {
		idx, name, err := fp.RouteInterface(netip.MustParseAddr(c.dst))
		if !errors.Is(err, c.err) || name != c.name || (c.err == nil) != (idx > 0) ||
			c.err != nil && !errors.Is(err, ErrUnsupported) || c.err == ErrUnsupported && errors.Is(err, ErrNoRoute) {
			t.Errorf("%s: %d %q %v, want %q %v", c.dst, idx, name, err, c.name, c.err)
		}
	}
	if _, _, err := (*FastPath)(nil).RouteInterface(netip.MustParseAddr("10.201.1.2")); !errors.Is(err, ErrDisabled) {
		t.Errorf("nil: %v", err)
	}
	fp.Close()
	if _, _, err := fp.RouteInterface(netip.MustParseAddr("10.201.1.2")); !errors.Is(err, ErrClosed) {
		t.Errorf("closed: %v", err)
	}
}
