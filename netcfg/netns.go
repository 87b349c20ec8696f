package netcfg

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// CurrentNS returns a handle of the calling thread's network namespace,
// to come back to it later with Do. The caller closes it.
func CurrentNS() (netns.NsHandle, error) {
	h, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("get network namespace: %w", err)
	}
	return h, nil
}

// CurrentNSInode returns the inode number of the calling thread's network
// namespace: what the kernel calls the namespace's inum, which BPF programs
// read from a device (dev->nd_net.net->ns.inum).
func CurrentNSInode() (uint32, error) {
	h, err := CurrentNS()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		return 0, fmt.Errorf("stat network namespace: %w", err)
	}
	return uint32(st.Ino), nil
}

// Do runs fn on an OS thread inside namespace ns and returns its error.
// The calling goroutine's own thread is left alone.
func Do(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		// Entering a network namespace needs CAP_SYS_ADMIN, even the one
		// the thread is in, and the daemon runs without it: in its own
		// namespace fn runs as it is.
		if orig.Equal(ns) {
			runtime.UnlockOSThread()
			errc <- fn()
			return
		}
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		// A thread that cannot go back stays locked, so it exits with
		// this goroutine instead of running other code in ns.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}
