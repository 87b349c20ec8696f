package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
)

// eventHub keeps the recent events and fans new ones out to followers.
// Publishing never blocks: a follower that reads too slowly loses events
// and is told how many.
type eventHub struct {
	mu     sync.Mutex
	seq    uint64
	recent []control.Event // ring of the last cap(recent) events
	next   int
	subs   map[*subscriber]struct{}
}

type subscriber struct {
	ch   chan control.Event
	lost atomic.Uint64
}

const (
	recentEvents   = 256
	followerBuffer = 1024
)

func newEventHub() *eventHub {
	return &eventHub{recent: make([]control.Event, 0, recentEvents), subs: map[*subscriber]struct{}{}}
}

func (h *eventHub) publish(e control.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	e.Seq = h.seq
	if len(h.recent) < cap(h.recent) {
		h.recent = append(h.recent, e)
	} else {
		h.recent[h.next] = e
		h.next = (h.next + 1) % cap(h.recent)
	}
	for s := range h.subs {
		select {
		case s.ch <- e:
		default:
			s.lost.Add(1)
		}
	}
}

// snapshotLocked returns the recent events, oldest first.
func (h *eventHub) snapshotLocked() []control.Event {
	out := make([]control.Event, 0, len(h.recent))
	out = append(out, h.recent[h.next:]...)
	return append(out, h.recent[:h.next]...)
}

// serve implements the events method: the recent events, then with
// follow every new one until ctx is done or send fails.
func (h *eventHub) serve(ctx context.Context, follow bool, send func(control.Event) error) error {
	h.mu.Lock()
	recent := h.snapshotLocked()
	var s *subscriber
	if follow {
		// Subscribing under the same lock as the snapshot: no event falls
		// between the two.
		s = &subscriber{ch: make(chan control.Event, followerBuffer)}
		h.subs[s] = struct{}{}
	}
	h.mu.Unlock()
	if s != nil {
		defer func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
		}()
	}
	for _, e := range recent {
		if err := send(e); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-s.ch:
			if n := s.lost.Swap(0); n > 0 {
				if err := send(control.Event{Time: time.Now(), Kind: control.EventLost, Lost: n,
					Message: "events were skipped: this follower read too slowly"}); err != nil {
					return err
				}
			}
			if err := send(e); err != nil {
				return err
			}
		}
	}
}
