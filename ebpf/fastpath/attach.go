package fastpath

import (
	"fmt"
	"path/filepath"

	"github.com/ikefrag/ikefrag/netcfg"
)

// Attach runs the program on ingress of the interface called name (in the
// namespace New ran in): the proxy's client-facing and backend-facing
// interfaces, once each when they are the same. Only Ethernet interfaces
// are supported; others are refused with an error and their traffic stays
// in user space. Attaching an interface twice is a no-op.
//
// With tcx the program runs after the programs attached before it; attach
// the observer first so that it still counts the ESP redirected here.
func (fp *FastPath) Attach(name string) error {
	if fp == nil {
		return ErrDisabled
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return ErrClosed
	}
	if _, ok := fp.ifaces[name]; ok {
		return nil
	}
	var ifc *iface
	err := netcfg.Do(fp.ns, func() error {
		var err error
		ifc, err = fp.attach(name)
		return err
	})
	if err != nil {
		fp.attachFailures.Add(1)
		return err
	}
	fp.ifaces[name] = ifc
	return nil
}

// attach runs on a thread in fp.ns.
func (fp *FastPath) attach(name string) (*iface, error) {
	l, err := netcfg.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("fastpath: %w", err)
	}
	if l.Attrs().EncapType != "ether" {
		return nil, fmt.Errorf("fastpath: attach %s: link type %q has no Ethernet header for the neighbour redirect", name, l.Attrs().EncapType)
	}
	at, err := netcfg.AttachTC(l, []netcfg.TCProgram{
		{Dir: netcfg.Ingress, Prog: fp.objs.EspFastpath, Name: FilterPrefix + "-ingress"},
	}, netcfg.TCOptions{Mode: fp.opts.AttachMode, Priority: FilterPriority, Prefix: FilterPrefix})
	if err != nil {
		return nil, fmt.Errorf("fastpath: %w", err)
	}
	if at.Fallback != nil && !fp.tcxNote {
		fp.tcxNote = true
		fp.opts.Logger.Info("tcx links are not supported by this kernel; the ESP fast path uses a clsact qdisc and a cls_bpf filter", "err", at.Fallback)
	}
	if fp.opts.PinPath != "" && at.Mode == netcfg.TCX {
		// The new link runs after an earlier run's, on the same maps: no
		// datagram goes unrelayed while the earlier one is detached.
		pin := fmt.Sprintf("%s%d", linkPinPrefix, l.Attrs().Index)
		if _, err := netcfg.DetachPinned(filepath.Join(fp.opts.PinPath, pin)); err != nil {
			fp.opts.Logger.Warn("fastpath: cannot detach an earlier run's link", "interface", name, "err", err)
		}
		if err := at.Pin(fp.opts.PinPath, pin); err != nil {
			_ = at.Close()
			return nil, fmt.Errorf("fastpath: %w", err)
		}
		fp.linkPins[pin] = true
	}
	if at.Stale > 0 {
		fp.opts.Logger.Info("removed stale ESP fast path tc filters", "interface", name, "count", at.Stale)
	}
	return &iface{name: name, ifindex: l.Attrs().Index, mode: at.Mode, tc: at}, nil
}

// AttachedMode reports how the interface called name is attached, or ""
// when it is not.
func (fp *FastPath) AttachedMode(name string) netcfg.TCMode {
	if fp == nil {
		return ""
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if ifc, ok := fp.ifaces[name]; ok {
		return ifc.mode
	}
	return ""
}

// Detach removes the program from the interface called name. Mapped flows
// arriving there go to the proxy's sockets again.
func (fp *FastPath) Detach(name string) error {
	if fp == nil {
		return ErrDisabled
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return ErrClosed
	}
	ifc, ok := fp.ifaces[name]
	if !ok {
		return fmt.Errorf("fastpath: %s is not attached", name)
	}
	return fp.detachLocked(ifc)
}

func (fp *FastPath) detachLocked(ifc *iface) error {
	delete(fp.ifaces, ifc.name)
	if fp.opts.PinPath != "" && ifc.mode == netcfg.TCX {
		// a pinned link outlives its handle: remove the pin first
		pin := fmt.Sprintf("%s%d", linkPinPrefix, ifc.ifindex)
		delete(fp.linkPins, pin)
		if _, err := netcfg.DetachPinned(filepath.Join(fp.opts.PinPath, pin)); err != nil {
			return fmt.Errorf("fastpath: detach %s: %w", ifc.name, err)
		}
	}
	if err := ifc.tc.Close(); err != nil {
		return fmt.Errorf("fastpath: detach %s: %w", ifc.name, err)
	}
	return nil
}
