package netcfg

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachBPFPriority is AttachBPF at an explicit tc priority, for a filter
// that must run after (a higher number) or before the ones AttachBPF
// installs at priority 1.
func AttachBPFPriority(l netlink.Link, d Dir, fd int, name string, prio uint16) error {
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index,
			Parent:    d.parent(),
			Priority:  prio,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           fd,
		Name:         name,
		DirectAction: true,
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("add %s filter %q to %s at priority %d: %w", d, name, l.Attrs().Name, prio, err)
	}
	return nil
}
