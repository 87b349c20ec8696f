package proxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// Backend health that spoofed clients cannot steer: a datagram a client
// sends proves nothing about the backend, so unanswered requests only
// raise a doubt (well-formed IKE_SA_INIT requests from HealthFailures
// distinct client addresses, or ICMP errors), and the proxy's own probe,
// which needs no client and creates no state on the backend, decides.

const (
	// probeTimeout is how long a probe waits for INVALID_MAJOR_VERSION: a
	// responder answers it at once, from its receive path.
	probeTimeout = 2 * time.Second
	// probeGap is the shortest time between two probes of one backend, so
	// a flood of doubts costs the backend at most one datagram a second.
	probeGap = time.Second
	// maxDoubt bounds the distinct client addresses remembered per
	// backend (only the count up to HealthFailures matters).
	maxDoubt = 64
	// probeMajor is the IKE major version of the probe: one above IKEv2.
	probeMajor = 3
	// downProbeEvery is how often a backend that is down is probed, to
	// bring it back before its hold ends.
	downProbeEvery = 5 * time.Second
)

type probeCounters struct {
	sent, answered atomic.Uint64
}

// ErrProbeUnanswered is returned by ProbeBackend when nothing came back.
var ErrProbeUnanswered = errors.New("no answer to an IKE_SA_INIT of major version 3")

// ProbeBackend sends addr an IKE_SA_INIT request of major version 3 (with
// the non-ESP marker when marker is set: every IKE port but 500) and waits
// for the answer RFC 7296 §2.5 asks for: "If an endpoint receives a
// message with a higher major version number, it MUST drop the message
// and SHOULD send an unauthenticated Notify message of type
// INVALID_MAJOR_VERSION". The responder keeps no state for it. It returns
// the notify type of the answer (INVALID_MAJOR_VERSION, or 0 when the
// answer carries none the codec reads), or an error: the socket's
// (ICMP unreachable), or ErrProbeUnanswered.
func ProbeBackend(ctx context.Context, addr netip.AddrPort, marker bool, timeout time.Duration) (ike.NotifyType, error) {
	c, err := net.DialUDP(network(addr.Addr()), nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var spi ike.SPI
	if _, err := rand.Read(spi[:]); err != nil {
		return 0, err
	}
	spi[0] |= 1 // never zero
	h := ike.Header{SPIi: spi, MajorVersion: probeMajor, Exchange: ike.ExchangeIKESAInit, Flags: ike.FlagInitiator,
		Length: ike.HeaderLen}
	msg := h.AppendTo(nil)
	if marker {
		msg = append(make([]byte, ike.NonESPMarkerLen), msg...)
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write(msg); err != nil {
		return 0, err
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, ErrProbeUnanswered
			}
			return 0, err
		}
		d := buf[:n]
		if marker {
			if len(d) < ike.NonESPMarkerLen || d[0]|d[1]|d[2]|d[3] != 0 {
				continue
			}
			d = d[ike.NonESPMarkerLen:]
		}
		rh, err := ike.ParseHeader(d)
		if err != nil || rh.SPIi != spi {
			continue // not the answer to this probe
		}
		if m, err := ike.Decode(d); err == nil {
			for _, nt := range m.Notifies() {
				return nt.Type, nil
			}
		}
		return 0, nil
	}
}

// initUnanswered records a well-formed IKE_SA_INIT request from client
// address ca that the backend left unanswered.
func (p *Proxy) initUnanswered(b *backend, ca netip.Addr, now time.Time) {
	b.mu.Lock()
	if b.doubt == nil {
		b.doubt = map[netip.Addr]time.Time{}
	}
	if len(b.doubt) < maxDoubt {
		b.doubt[ca] = now
	}
	n := len(b.doubt)
	b.mu.Unlock()
	if n < p.s.HealthFailures {
		return
	}
	why := fmt.Sprintf("IKE_SA_INIT unanswered from %d client addresses", n)
	if p.s.HealthProbe == HealthProbeOff {
		if b.markDown(now, why, p.s.HealthHold) {
			p.log.Warn("proxy: backend down", "backend", b.cfg.Name, "reason", why, "hold", p.s.HealthHold)
		}
		return
	}
	p.probeSoon(b, why, now)
}

// backendFailed records a socket error toward a backend (ICMP
// unreachable).
func (p *Proxy) backendFailed(b *backend, why string) {
	now := p.now()
	if p.s.HealthProbe == HealthProbeAuto {
		b.mu.Lock()
		b.lastFail = why
		b.mu.Unlock()
		p.probeSoon(b, why, now)
		return
	}
	if b.failed(now, why, p.s.HealthFailures, p.s.HealthHold) {
		p.log.Warn("proxy: backend down", "backend", b.cfg.Name, "reason", why, "hold", p.s.HealthHold)
	}
}

// probeSoon probes a backend unless a probe is running or one was sent
// within probeGap.
func (p *Proxy) probeSoon(b *backend, why string, now time.Time) {
	b.mu.Lock()
	if b.probing || now.Sub(b.lastProbe) < probeGap || p.ctx == nil || p.ctx.Err() != nil {
		b.mu.Unlock()
		return
	}
	b.probing, b.lastProbe = true, now
	b.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.probes.sent.Add(1)
		nt, err := ProbeBackend(p.ctx, b.cfg.IKE, b.cfg.IKEMarker, probeTimeout)
		now := p.now()
		b.mu.Lock()
		b.probing = false
		b.mu.Unlock()
		if err == nil {
			p.probes.answered.Add(1)
			p.log.Debug("proxy: backend answered the probe", "backend", b.cfg.Name, "notify", nt, "doubt", why)
			b.replied(now)
			return
		}
		if p.ctx.Err() != nil {
			return
		}
		reason := why + "; probe: " + err.Error()
		if b.markDown(now, reason, p.s.HealthHold) {
			p.log.Warn("proxy: backend down", "backend", b.cfg.Name, "reason", reason, "hold", p.s.HealthHold)
		}
	}()
}

// healthSweep probes the backends that are down, so that one that
// answers again takes new IKE SAs before its hold ends.
func (p *Proxy) healthSweep(now time.Time) {
	if p.s.HealthProbe != HealthProbeAuto {
		return
	}
	for _, b := range p.backends {
		b.mu.Lock()
		down, last := b.down, b.lastProbe
		b.mu.Unlock()
		if down && now.Sub(last) >= downProbeEvery {
			p.probeSoon(b, "down", now)
		}
	}
}
