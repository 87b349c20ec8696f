package fastpath

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ErrNoRoute: no route toward the address, for now. RouteInterface wraps
// it together with ErrUnsupported, so a caller can tell a route that may
// still appear from an address that is this host's own.
var ErrNoRoute = errors.New("no route")

// RouteInterface returns the index and name of the interface the route
// toward dst uses in the namespace New ran in: the interface to Attach
// for flows toward dst and the one their datagrams from dst are expected
// on. A local address or a missing route is ErrUnsupported, the latter
// also ErrNoRoute.
func (fp *FastPath) RouteInterface(dst netip.Addr) (int, string, error) {
	if fp == nil {
		return 0, "", ErrDisabled
	}
	dst = dst.Unmap()
	if !dst.IsValid() || dst.Zone() != "" {
		return 0, "", fmt.Errorf("%w: address %v", ErrUnsupported, dst)
	}
	fp.nlMu.Lock()
	defer fp.nlMu.Unlock()
	if fp.nl == nil {
		return 0, "", ErrClosed
	}
	routes, err := fp.nl.RouteGet(dst.AsSlice())
	if err != nil {
		return 0, "", fmt.Errorf("%w: %w to %v: %v", ErrUnsupported, ErrNoRoute, dst, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex <= 0 {
		return 0, "", fmt.Errorf("%w: %w to %v", ErrUnsupported, ErrNoRoute, dst)
	}
	if routes[0].Type == unix.RTN_LOCAL {
		return 0, "", fmt.Errorf("%w: %v is an address of this host", ErrUnsupported, dst)
	}
	l, err := fp.nl.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return 0, "", fmt.Errorf("fastpath: interface %d of the route to %v: %w", routes[0].LinkIndex, dst, err)
	}
	return routes[0].LinkIndex, l.Attrs().Name, nil
}
