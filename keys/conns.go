package keys

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// connSet is what the key socket (Socket) and the key listener (Remote)
// share: the live connections of one listener and its counters S. It
// accepts up to a limit, serves each connection on a goroutine of its
// own, and on shutdown closes the listener and every connection and
// waits for their goroutines, so that Serve returns with nothing of the
// listener left running.
type connSet[S any] struct {
	// max bounds the live connections (MaxConns): each holds a goroutine
	// and a line buffer of MaxLineLen bytes, so a peer that opens
	// connections without end is refused instead of growing memory.
	max int

	// mu guards conns, closed and st. One lock for the set and the
	// counters: it is taken once a connection and once a line, too
	// seldom to contend, and Stats reads every counter at one instant.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// closed: close has run. A connection Accept returned just before it
	// is closed rather than tracked, or it would outlive close's sweep
	// and hold serve's return until its idle timeout.
	closed bool
	st     S

	wg sync.WaitGroup // the connections' goroutines; serve waits for them
}

// serve accepts from ln until ln is closed, by close or when ctx ends,
// and returns once every connection's goroutine has: ctx.Err() when ctx
// ended, nil after close, else Accept's error. A connection over the
// limit goes to refuse with the reason (refuse closes it); each other
// one to handle, on a goroutine of its own, and is closed when handle
// returns.
func (cs *connSet[S]) serve(ctx context.Context, ln net.Listener, refuse func(net.Conn, string), handle func(context.Context, net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { cs.close(ln) })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			cs.wg.Wait()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		added, full := cs.add(c)
		if !added {
			if full {
				refuse(c, fmt.Sprintf("more than %d connections", cs.max))
			} else {
				c.Close() // shutting down: neither served nor counted
			}
			continue
		}
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			defer cs.remove(c)
			handle(ctx, c)
		}()
	}
}

// add tracks c unless the set is closed or full (at max).
func (cs *connSet[S]) add(c net.Conn) (added, full bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	switch {
	case cs.closed:
		return false, false
	case len(cs.conns) >= cs.max:
		return false, true
	}
	if cs.conns == nil {
		cs.conns = map[net.Conn]struct{}{}
	}
	cs.conns[c] = struct{}{}
	return true, false
}

// remove closes c and forgets it, freeing its place under max.
func (cs *connSet[S]) remove(c net.Conn) {
	c.Close()
	cs.mu.Lock()
	delete(cs.conns, c)
	cs.mu.Unlock()
}

// close closes ln and every connection; serve then returns. Closing an
// already closed set is not an error.
func (cs *connSet[S]) close(ln net.Listener) error {
	err := ln.Close()
	cs.mu.Lock()
	cs.closed = true
	for c := range cs.conns {
		c.Close()
	}
	cs.mu.Unlock()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// count updates the counters.
func (cs *connSet[S]) count(f func(*S)) {
	cs.mu.Lock()
	f(&cs.st)
	cs.mu.Unlock()
}

// stats returns a copy of the counters.
func (cs *connSet[S]) stats() S {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.st
}
