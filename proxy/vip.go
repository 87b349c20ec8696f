package proxy

// proxy.freebind: the listen addresses of a pair are keepalived's virtual
// addresses, which only the active box holds. The proxy binds them with
// IP_FREEBIND / IPV6_FREEBIND whether or not they are on this host yet,
// so the backup is ready before it becomes the active box, and follows
// the addresses arriving and leaving through rtnetlink (RTM_NEWADDR,
// RTM_DELADDR) for status and the ikefrag_proxy_vip_held metric.

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vipResync is how often the watch reads the host's addresses again
// whatever netlink said: a missed notification (a full socket buffer,
// a netlink error) is then wrong for this long at most.
const vipResync = 5 * time.Second

// VIPInfo is one listen address of the proxy and whether this host holds
// it (proxy.freebind).
type VIPInfo struct {
	Address netip.Addr `json:"address"`
	Held    bool       `json:"held"`
	// Since is when it arrived or left (or when the proxy started).
	Since time.Time `json:"since"`
	// Changes counts its arrivals and departures since the start.
	Changes uint64 `json:"changes"`
}

// vipWatch follows the listen addresses on this host.
type vipWatch struct {
	// mu guards state: the netlink reader writes it, Stats reads it.
	mu    sync.Mutex
	state []VIPInfo // one per distinct specific listen address, in order
}

// newVIPWatch watches the specific (not wildcard) listen addresses; nil
// when there is none.
func newVIPWatch(listen []listenAddr) *vipWatch {
	w := &vipWatch{}
	for _, la := range listen {
		a := la.ap.Addr()
		if a.IsUnspecified() || slices.ContainsFunc(w.state, func(v VIPInfo) bool { return v.Address == a }) {
			continue
		}
		w.state = append(w.state, VIPInfo{Address: a})
	}
	if len(w.state) == 0 {
		return nil
	}
	return w
}

// set records the host's addresses; it returns the changes.
func (w *vipWatch) set(local map[netip.Addr]bool, now time.Time, first bool) []VIPInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	var changed []VIPInfo
	for i := range w.state {
		v := &w.state[i]
		held := local[v.Address]
		if first {
			v.Held, v.Since = held, now
			continue
		}
		if held != v.Held {
			v.Held, v.Since = held, now
			v.Changes++
			changed = append(changed, *v)
		}
	}
	return changed
}

func (w *vipWatch) snapshot() []VIPInfo {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.state)
}

// hostAddrs reads every address of the host's interfaces (tentative IPv6
// addresses included: the socket is bound already and receives as soon
// as DAD ends).
func hostAddrs() (map[netip.Addr]bool, error) {
	as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]bool, len(as))
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out[ip.Unmap()] = true
		}
	}
	return out, nil
}

// watchVIPs runs until the proxy stops: it reads the addresses at start,
// on every address notification and every vipResync.
func (p *Proxy) watchVIPs() {
	defer p.wg.Done()
	w := p.vips
	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	subscribed, warned := false, false
	subscribe := func() {
		err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
			ErrorCallback: func(error) {}, // the resync below covers a lost subscription
		})
		if err != nil {
			if !warned {
				// once: the resync below keeps the state right meanwhile
				warned = true
				p.log.Warn("proxy: cannot follow address changes (netlink); reading them every few seconds", "err", err)
			}
			return
		}
		subscribed = true
	}
	subscribe()
	read := func(first bool) {
		local, err := hostAddrs()
		if err != nil {
			p.log.Warn("proxy: cannot read the host's addresses", "err", err)
			return
		}
		for _, v := range w.set(local, p.now(), first) {
			if v.Held {
				p.log.Info("proxy: virtual address arrived: this box is active for it", "address", v.Address)
			} else {
				p.log.Info("proxy: virtual address left: this box is standby for it", "address", v.Address)
			}
		}
		if first {
			for _, v := range w.snapshot() {
				p.log.Info("proxy: listen address", "address", v.Address, "held", v.Held)
			}
		}
	}
	read(true)
	t := time.NewTicker(vipResync)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case _, ok := <-updates:
			if !ok {
				// the subscription ended (netlink error): poll until the
				// next tick subscribes again
				updates = make(chan netlink.AddrUpdate, 64)
				subscribed = false
				continue
			}
			// drain a burst (keepalived adds several addresses at once)
			for len(updates) > 0 {
				<-updates
			}
			read(false)
		case <-t.C:
			if !subscribed {
				subscribe()
			}
			read(false)
		}
	}
}

// vipsHeld counts the watched addresses held.
func vipsHeld(vs []VIPInfo) int {
	n := 0
	for _, v := range vs {
		if v.Held {
			n++
		}
	}
	return n
}

// freebindOpt is the socket option binding an address not (yet) on the
// host, per family.
func freebindOpt(is6 bool) (level, opt int) {
	if is6 {
		return unix.SOL_IPV6, unix.IPV6_FREEBIND
	}
	return unix.SOL_IP, unix.IP_FREEBIND
}
