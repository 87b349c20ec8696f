package fastpath

// Pinning (Options.PinPath): the maps and links outlive the process, and
// the next run takes them over.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/ikefrag/ikefrag/netcfg"
)

// inherit takes over the entries a previous run left in the pinned flows
// map: their counter slots stay taken until they are put again or
// released.
func (fp *FastPath) inherit() error {
	var k fastpathFpKey
	var v fastpathFpFlow
	inh := map[fastpathFpKey]fastpathFpFlow{}
	used := map[uint32]bool{}
	it := fp.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		inh[k] = v
		used[v.Slot] = true
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("fastpath: read pinned flows: %w", err)
	}
	if len(inh) == 0 {
		return nil
	}
	fp.inherited = inh
	free := fp.free[:0]
	for _, s := range fp.free {
		if !used[s] {
			free = append(free, s)
		}
	}
	fp.free = free
	return nil
}

// Inherited reports how many map entries (two per flow) of an earlier
// run are still waiting to be put again or released.
func (fp *FastPath) Inherited() int {
	if fp == nil {
		return 0
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return len(fp.inherited)
}

// ReleaseInherited unmaps what an earlier run left in the pinned maps and
// this run has not put again, and detaches that run's pinned tcx links on
// interfaces this run has not attached. The owner calls it once it has
// put every flow it keeps (the proxy: after re-adopting its state file).
// It returns the number of map entries removed.
func (fp *FastPath) ReleaseInherited() (int, error) {
	if fp == nil {
		return 0, ErrDisabled
	}
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return 0, ErrClosed
	}
	n := 0
	for k, v := range fp.inherited {
		_ = fp.objs.Flows.Delete(&k)
		fp.free = append(fp.free, v.Slot)
		n++
	}
	fp.inherited = nil
	if fp.opts.PinPath == "" {
		return n, nil
	}
	ents, err := os.ReadDir(fp.opts.PinPath)
	if err != nil {
		return n, fmt.Errorf("fastpath: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), linkPinPrefix) && !fp.linkPins[e.Name()] {
			if _, err := netcfg.DetachPinned(filepath.Join(fp.opts.PinPath, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return n, errors.Join(errs...)
}

// linkPinPrefix names the pinned tcx links: tcx-IFINDEX.
const linkPinPrefix = "tcx-"

// RemovePinned stops for good a fast path pinned in dir: it detaches the
// tcx links pinned there and the legacy tc filters (named FilterPrefix) of
// every interface in the calling thread's namespace, then removes the
// pins and the directory. A missing dir is not an error.
func RemovePinned(dir string) error {
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			_, _ = netcfg.RemoveBPF(l, netcfg.Ingress, FilterPrefix)
		}
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), linkPinPrefix) {
			if _, err := netcfg.DetachPinned(path); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// adoptLocked puts a flow that an earlier run left in the pinned maps:
// both directions there, it keeps their counter slots (and counts) and
// is updated in place, without a moment unmapped. A direction there
// alone belonged to another flow and is removed. fp.mu is held.
func (fp *FastPath) adoptLocked(f Flow, up, down fastpathFpKey, values func([2]uint32) (fastpathFpFlow, fastpathFpFlow)) (bool, error) {
	iu, okU := fp.inherited[up]
	id, okD := fp.inherited[down]
	if !okU || !okD {
		for _, k := range []fastpathFpKey{up, down} {
			if v, ok := fp.inherited[k]; ok {
				_ = fp.objs.Flows.Delete(&k)
				fp.free = append(fp.free, v.Slot)
				delete(fp.inherited, k)
			}
		}
		return false, nil
	}
	key := f.Key()
	slots := [2]uint32{iu.Slot, id.Slot}
	upV, downV := values(slots)
	delete(fp.inherited, up)
	delete(fp.inherited, down)
	for _, kv := range []struct {
		k *fastpathFpKey
		v *fastpathFpFlow
	}{{&up, &upV}, {&down, &downV}} {
		if err := fp.objs.Flows.Update(kv.k, kv.v, ebpf.UpdateAny); err != nil {
			fp.putErrors.Add(1)
			_ = fp.objs.Flows.Delete(&up)
			_ = fp.objs.Flows.Delete(&down)
			fp.free = append(fp.free, slots[0], slots[1])
			return true, fmt.Errorf("fastpath: update %v: %w", key, err)
		}
	}
	fp.flows[key] = &entry{flow: f, up: up, down: down, slots: slots, mapped: fp.clock()}
	fp.owner[up], fp.owner[down] = key, key
	return true, nil
}
