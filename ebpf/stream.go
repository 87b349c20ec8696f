package ebpf

import (
	"errors"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/ikefrag/ikefrag/diag/obs"
)

func (o *Observer) readLoop() {
	defer o.wg.Done()
	var rec ringbuf.Record
	for {
		if err := o.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		o.handleRecord(rec.RawSample)
	}
}

// handleRecord turns one ring-buffer record into zero or one obs.Record.
func (o *Observer) handleRecord(b []byte) {
	r, err := decodeRecord(b)
	if err != nil {
		o.decodeErrors.Add(1)
		return
	}
	ev := &r.ev
	switch ev.Type {
	case tcEventTypeEV_DATAGRAM:
		d := datagramFromEvent(o.clock, ev, r.payload)
		if ev.IpFlags&tcIpFlagIPF_FRAG == 0 {
			o.emit(obs.Record{Datagram: d})
			return
		}
		// The first fragment of a train: the record is emitted when the
		// train completes or times out.
		o.addPending(keyOfEvent(ev), d, ev.TsNs)
	case tcEventTypeEV_TRAIN:
		k := keyOfEvent(ev)
		o.mu.Lock()
		p := o.pending[k]
		delete(o.pending, k)
		o.mu.Unlock()
		var first *obs.Datagram
		if p != nil {
			first = p.d
		}
		o.emit(obs.Record{Datagram: datagramFromTrain(o.clock, ev, &r.train, first, true)})
	case tcEventTypeEV_TOO_BIG:
		o.emit(obs.Record{TooBig: tooBigFromEvent(o.clock, &r)})
	case tcEventTypeEV_DROP:
		d := dropFromEvent(o.clock, ev, o.reasons)
		// The tracepoint is host-wide: drops in namespaces that are not
		// observed belong to someone else (another container's traffic).
		if d.Netns != 0 && !o.observedNetns(d.Netns) {
			if !o.opts.AllNamespaces {
				o.dropsOtherNetns.Add(1)
				return
			}
			d.OtherNetns = true
		}
		o.emit(obs.Record{Drop: d})
	}
}

func keyOfEvent(ev *tcEvent) pendKey {
	return pendKey{src: ev.Saddr, dst: ev.Daddr, id: ev.IpId, family: ev.Family, proto: ev.Proto, dir: ev.Dir, ifindex: ev.Ifindex}
}

// addPending keeps a first fragment's record until its train ends. The
// table is bounded by the train map size: when full, entries older than
// the train timeout go first, else the new one is dropped and counted.
func (o *Observer) addPending(k pendKey, d *obs.Datagram, ts uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.pending[k]; !ok && len(o.pending) >= o.opts.TrainMapSize {
		o.expirePendingLocked(monoNow())
		if len(o.pending) >= o.opts.TrainMapSize {
			o.pendingEvicted.Add(1)
			return
		}
	}
	o.pending[k] = &pendingFirst{d: d, seen: ts}
}

// expirePendingLocked drops first-fragment records whose train the sweep
// has had time to report (twice the timeout: the sweep runs periodically).
func (o *Observer) expirePendingLocked(now uint64) {
	limit := 2 * uint64(o.opts.TrainTimeout)
	for k, p := range o.pending {
		if now > p.seen && now-p.seen > limit {
			delete(o.pending, k)
			o.pendingEvicted.Add(1)
		}
	}
}

func (o *Observer) sweepInterval() time.Duration {
	iv := o.opts.TrainTimeout / 4
	if iv > time.Second {
		iv = time.Second
	}
	if iv < 20*time.Millisecond {
		iv = 20 * time.Millisecond
	}
	return iv
}

func (o *Observer) sweepLoop() {
	defer o.wg.Done()
	t := time.NewTicker(o.sweepInterval())
	defer t.Stop()
	for {
		select {
		case <-o.done:
			return
		case <-t.C:
			o.sweep(monoNow())
		}
	}
}

// sweep reports trains older than the timeout that never completed and
// removes every train older than that from the map: a completed train
// stays until then so that late duplicates are recognised as such.
func (o *Observer) sweep(now uint64) {
	limit := uint64(o.opts.TrainTimeout)
	var (
		key  tcTrainKey
		val  tcTrain
		old  []tcTrainKey
		vals []tcTrain
		live uint64
	)
	it := o.trains.Iterate()
	for it.Next(&key, &val) {
		live++
		if now <= val.FirstNs || now-val.FirstNs <= limit {
			continue
		}
		old = append(old, key)
		vals = append(vals, val)
	}
	removed := uint64(0)
	for i := range old {
		if err := o.trains.Delete(&old[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		removed++
		t := &vals[i]
		if t.Flags&tcTrainFlagTF_COMPLETE != 0 {
			continue
		}
		k := &old[i]
		o.mu.Lock()
		if int(k.Slot) < len(o.incomplete) && k.Dir < uint8(tcDirectionDIR_MAX) {
			o.incomplete[k.Slot][k.Dir]++
		}
		o.mu.Unlock()
		if t.Flags&tcTrainFlagTF_NOT_IKE != 0 {
			continue
		}
		ev := tcEvent{Family: k.Family, Proto: k.Proto, Saddr: k.Saddr, Daddr: k.Daddr, IpId: k.Id, Dir: k.Dir, Ifindex: t.Ifindex}
		pk := keyOfEvent(&ev)
		o.mu.Lock()
		p := o.pending[pk]
		delete(o.pending, pk)
		o.mu.Unlock()
		var first *obs.Datagram
		if p != nil {
			first = p.d
		}
		o.emit(obs.Record{Datagram: datagramFromTrain(o.clock, &ev, t, first, false)})
	}
	o.mu.Lock()
	o.swept += removed
	if live >= removed {
		o.live = live - removed
	} else {
		o.live = 0
	}
	o.expirePendingLocked(now)
	o.mu.Unlock()
}
