package fastpath

// The ESP relay benchmark's traffic generator: many flows, closed loop or paced.

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

type genFlow struct {
	c   *net.UDPConn
	pc  *ipv4.PacketConn
	spi uint32
	seq uint32
}

type generator struct {
	b     testing.TB
	flows []*genFlow
	size  int
	to    netip.AddrPort
}

func newGenerator(b testing.TB, l *lab, from netip.Addr, to netip.AddrPort, n, size int) *generator {
	g := &generator{b: b, size: size, to: to}
	for i := 0; i < n; i++ {
		var c *net.UDPConn
		var err error
		l.do("cli", func() {
			c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), net.UDPAddrFromAddrPort(to))
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		// The generator is the instrument, not a configuration under
		// test: it gets buffers beyond rmem_max, so that a moment
		// without CPU for its receiver on this shared machine does not
		// count as the relay's loss.
		if raw, err := c.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
			})
		}
		g.flows = append(g.flows, &genFlow{c: c, pc: ipv4.NewPacketConn(c), spi: 0x10000 + uint32(i)})
	}
	return g
}

func (g *generator) msgs(f *genFlow, ms []ipv4.Message, k int) []ipv4.Message {
	for i := 0; i < k; i++ {
		f.seq++
		p := ms[i].Buffers[0][:g.size]
		binary.BigEndian.PutUint32(p[0:], f.spi)
		binary.BigEndian.PutUint32(p[4:], f.seq)
		ms[i].Buffers[0] = p
	}
	return ms[:k]
}

// hello sends one IKE-marker datagram per flow and waits for its echo:
// relays learn the flows (and map them), neighbours get resolved, nginx
// opens its sessions. Leftovers of an earlier phase are drained first.
func (g *generator) hello() error {
	for _, f := range g.flows {
		g.drain(f, 20*time.Millisecond)
	}
	for _, f := range g.flows {
		ok := false
		for try := 0; try < 20 && !ok; try++ {
			p := make([]byte, g.size)
			binary.BigEndian.PutUint32(p[4:], 0xfeed)
			if _, err := f.c.Write(p); err != nil {
				return err
			}
			buf := make([]byte, 65536)
			_ = f.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			for {
				n, err := f.c.Read(buf)
				if err != nil {
					break
				}
				if n >= 8 && binary.BigEndian.Uint32(buf[4:]) == 0xfeed {
					ok = true
					break
				}
			}
		}
		if !ok {
			return errors.New("no answer through the proxy namespace")
		}
	}
	for _, f := range g.flows {
		g.drain(f, 20*time.Millisecond)
	}
	return nil
}

func (g *generator) drain(f *genFlow, d time.Duration) int {
	ms := newMsgs(relayBatch, 2048)
	total := 0
	for {
		_ = f.c.SetReadDeadline(time.Now().Add(d))
		n, err := f.pc.ReadBatch(ms, 0)
		if err != nil {
			return total
		}
		total += n
	}
}

// closedLoop keeps window datagrams in flight per flow for d and returns
// round trips per second and the share of datagrams given up as lost
// (after 20 ms without any reply the window is refilled).
func (g *generator) closedLoop(d time.Duration, window int) (rate, loss float64, sentN, recvN uint64) {
	var recv, lost, sent, drained atomic.Uint64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for _, f := range g.flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wms, rms := newMsgs(relayBatch, g.size), newMsgs(relayBatch, 2048)
			out := 0
			for time.Now().Before(end) {
				for out < window {
					k := min(window-out, relayBatch)
					n, err := f.pc.WriteBatch(g.msgs(f, wms, k), 0)
					if err != nil || n == 0 {
						break
					}
					out += n
					sent.Add(uint64(n))
				}
				_ = f.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				n, err := f.pc.ReadBatch(rms, 0)
				if err != nil {
					lost.Add(uint64(out))
					out = 0
					continue
				}
				recv.Add(uint64(n))
				out = max(out-n, 0)
			}
			drained.Add(uint64(g.drain(f, 50*time.Millisecond)))
		}()
	}
	wg.Wait()
	if s := sent.Load(); s > 0 {
		loss = float64(lost.Load()) / float64(s)
	}
	return float64(recv.Load()) / d.Seconds(), loss, sent.Load(), recv.Load() + drained.Load()
}

// paced sends at rate datagrams per second in total, spread over the
// flows in batches, for d, and counts the replies until 300 ms after the
// last send.
func (g *generator) paced(rate float64, d time.Duration) (sent, recv uint64) {
	var s, r atomic.Uint64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	end := start.Add(d)
	per := rate / float64(len(g.flows))
	for _, f := range g.flows {
		wg.Add(2)
		go func() { // receiver
			defer wg.Done()
			rms := newMsgs(relayBatch, 2048)
			for {
				_ = f.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				n, err := f.pc.ReadBatch(rms, 0)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				r.Add(uint64(n))
			}
		}()
		go func() { // sender
			defer wg.Done()
			wms := newMsgs(relayBatch, g.size)
			var mine uint64
			for {
				now := time.Now()
				last := !now.Before(end)
				if last {
					now = end // what is still due at the end goes out now
				}
				due := uint64(per*now.Sub(start).Seconds()) - mine
				if due == 0 || int64(due) < 0 {
					if last {
						return
					}
					time.Sleep(100 * time.Microsecond)
					continue
				}
				k := int(min(due, relayBatch))
				n, err := f.pc.WriteBatch(g.msgs(f, wms, k), 0)
				if err != nil {
					if last {
						return
					}
					continue
				}
				mine += uint64(n)
				s.Add(uint64(n))
			}
		}()
	}
	time.Sleep(time.Until(end) + 300*time.Millisecond)
	cancel()
	wg.Wait()
	return s.Load(), r.Load()
}
