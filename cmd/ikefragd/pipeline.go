package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/proxy"
)

// pipeline owns the diagnosis engine and wires it: one goroutine drains the
// observer's records into it, moves its clock, expires idle sessions, and
// reports what the engine's live judge (diag.Engine.Judge) returns on each
// tick: the rules of which verdict is new belong to the engine.
// Everyone else reads the snapshot it publishes or sends it a query.
type pipeline struct {
	eng    *diag.Engine
	settle time.Duration
	log    *slog.Logger
	events *eventHub
	m      *metrics

	// epoch anchors the engine's clock to the monotonic clock, like the
	// observer's record times: a wall-clock step does not age sessions.
	epoch time.Time

	queries chan func(*diag.Engine)
	limiter logLimiter
	// frames carries the IKE messages the proxy relays over RFC 9329
	// streams (tcpFrame) to the engine goroutine.
	frames chan obs.Record

	lastExpire, lastPeers time.Time
	peerMTUs              []int

	snap     atomic.Pointer[engineSnapshot]
	lastTick atomic.Int64 // unix nanoseconds, for health
	records  atomic.Uint64
	// By kind: datagrams, ICMP too-big, drops; and sessions expired.
	recDatagrams, recTooBig, recDrops, expired atomic.Uint64
	counts                                     map[diag.Code]int
	// provisional counts verdicts reported before their session settled
	// (ikefrag_provisional_verdicts_total).
	provisional *prometheus.CounterVec
	// withdrawnVerdicts counts provisional verdicts that did not hold
	// (ikefrag_provisional_verdicts_withdrawn_total).
	withdrawnVerdicts *prometheus.CounterVec

	// recTCP counts RFC 9329 frames taken in, tcpDropped those not
	// taken because the frames queue was full.
	recTCP, tcpDropped atomic.Uint64
}

// engineSnapshot is what the engine goroutine publishes every tick.
type engineSnapshot struct {
	At       time.Time
	Sessions int
	Peers    int
	PeerMTUs []int
	Stats    diag.Stats
	Verdicts map[diag.Code]int
	Records  uint64
	// Memory is the engine's memory budget (read on the engine's
	// goroutine, which alone may touch the engine).
	Memory diag.MemoryStats
}

const (
	tickInterval = time.Second
	// expireInterval and peersInterval space out the full walks over
	// sessions and peers.
	expireInterval = 10 * time.Second
	peersInterval  = 10 * time.Second
	// recordBatch records are taken per wake-up before the other cases
	// get a chance.
	recordBatch = 512
	// tcpFrameQueue bounds the proxy's RFC 9329 frames waiting for the
	// engine goroutine: IKE messages only, a handful per handshake, from
	// clients at most proxy.tcp.max_ike_message bytes (10,000 by
	// default), from backends at most a UDP datagram, so the queue holds
	// under 3 MB of handshakes and 16 MiB at the very worst; a full queue
	// means the engine is behind, and a frame that does not fit is
	// counted and dropped rather than making the proxy's connection wait.
	tcpFrameQueue = 256
)

func newPipeline(opt diag.Options, logRate int, log *slog.Logger, events *eventHub, m *metrics) *pipeline {
	eng := diag.New(opt)
	p := &pipeline{
		eng:     eng,
		settle:  opt.Settle,
		log:     log,
		events:  events,
		m:       m,
		epoch:   time.Now(),
		queries: make(chan func(*diag.Engine)),
		frames:  make(chan obs.Record, tcpFrameQueue),
		limiter: newLogLimiter(logRate),
		counts:  map[diag.Code]int{},
		provisional: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "provisional_verdicts_total",
			Help: "Verdicts reported before their session settled (from retransmissions), by code and severity; each is reported again in verdicts_total when final."},
			[]string{"code", "severity"}),
		withdrawnVerdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "provisional_verdicts_withdrawn_total",
			Help: "Provisional verdicts that no longer held before they became final (a late response arrived), by code."},
			[]string{"code"}),
	}
	if m != nil && m.reg != nil {
		m.reg.MustRegister(p.provisional, p.withdrawnVerdicts)
	}
	if p.settle <= 0 {
		p.settle = diag.DefaultOptions.Settle
	}
	p.snap.Store(&engineSnapshot{At: p.now(), Verdicts: map[diag.Code]int{}})
	p.lastTick.Store(time.Now().UnixNano())
	return p
}

func (p *pipeline) now() time.Time { return p.epoch.Add(time.Since(p.epoch)) }

// run drains records until they end (the observer closed) or ctx is done.
func (p *pipeline) run(ctx context.Context, records <-chan obs.Record) {
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r, ok := <-records:
			if !ok {
				return
			}
			p.add(r)
			for i := 1; i < recordBatch; i++ {
				select {
				case r, ok = <-records:
					if !ok {
						return
					}
					p.add(r)
					continue
				default:
				}
				break
			}
		case r := <-p.frames:
			p.add(r)
		case q := <-p.queries:
			q(p.eng)
		case <-t.C:
			p.tick()
		}
	}
}

func (p *pipeline) add(r obs.Record) {
	p.records.Add(1)
	switch {
	case r.Datagram != nil && r.Datagram.Proto == protoTCP:
		p.recTCP.Add(1)
	case r.Datagram != nil:
		p.recDatagrams.Add(1)
	case r.TooBig != nil:
		p.recTooBig.Add(1)
	case r.Drop != nil:
		p.recDrops.Add(1)
		reason := r.Drop.Name
		if reason == "" {
			reason = "unknown"
		}
		kind := "ike"
		if r.Drop.Fragment {
			kind = "fragment"
		}
		p.m.kernelDrops.WithLabelValues(reason, kind).Inc()
	}
	p.eng.Add(r)
}

// protoTCP marks an RFC 9329 frame in an obs.Datagram (diag/tcp.go).
const protoTCP = 6

// tcpFrame is the proxy's Deps.TCPFrames: an IKE message relayed over an
// RFC 9329 stream becomes a record of Proto 6, as capture.EncapReader
// makes them from captures, stamped with the engine's clock. It runs on
// the proxy's connection goroutines: it copies the payload and never
// waits.
func (p *pipeline) tcpFrame(f proxy.TCPFrame) {
	now := p.now()
	src, dst := f.Client, f.Local
	if !f.FromClient {
		src, dst = dst, src
	}
	v := uint8(4)
	if src.Addr().Is6() {
		v = 6
	}
	d := &obs.Datagram{Time: now, Last: now, IPVersion: v, Proto: protoTCP, Src: src, Dst: dst,
		Length: len(f.Payload), Payload: bytes.Clone(f.Payload), Complete: true, TotalLen: -1}
	select {
	case p.frames <- obs.Record{Datagram: d}:
	default:
		p.tcpDropped.Add(1)
	}
}

func (p *pipeline) tick() {
	now := p.now()
	p.eng.Advance(now)
	// Judge before expiring, so that no session is forgotten unjudged.
	p.judge(now)
	if now.Sub(p.lastExpire) >= expireInterval {
		p.lastExpire = now
		p.expired.Add(uint64(p.eng.Expire(now)))
	}
	if now.Sub(p.lastPeers) >= peersInterval {
		p.lastPeers = now
		p.peerMTUs = p.eng.PeerMTUs(p.peerMTUs[:0])
	}
	if n := p.limiter.takeSuppressed(now); n > 0 {
		p.log.Warn("verdict log lines suppressed; every verdict is still counted in metrics and sent to event followers",
			"count", n, "limit_per_second", p.limiter.rate)
	}
	sessions, peers := p.eng.Counts()
	counts := make(map[diag.Code]int, len(p.counts))
	for k, v := range p.counts {
		counts[k] = v
	}
	p.snap.Store(&engineSnapshot{
		At: now, Sessions: sessions, Peers: peers,
		PeerMTUs: append([]int(nil), p.peerMTUs...),
		Stats:    p.eng.Stats(), Verdicts: counts, Records: p.records.Load(),
		Memory: p.eng.Memory(),
	})
	p.lastTick.Store(time.Now().UnixNano())
}

// judge reports what the engine's live judge returns: new verdicts and
// findings (log line, event, metric) and withdrawn provisional verdicts.
func (p *pipeline) judge(now time.Time) {
	for _, v := range p.eng.Judge() {
		if v.Withdrawn {
			p.withdrawnVerdicts.WithLabelValues(string(v.Code)).Inc()
			p.log.Info("provisional verdict withdrawn: the evidence no longer holds", "code", string(v.Code), "session", v.Session,
				"client", v.Client, "server", v.Server, "exchange", v.Exchange)
			continue
		}
		p.report(now, v.Verdict)
	}
}

func (p *pipeline) report(now time.Time, v diag.Verdict) {
	if v.Provisional {
		// Counted apart, so verdicts_total counts each verdict once,
		// when final.
		p.provisional.WithLabelValues(string(v.Code), string(v.Severity)).Inc()
	} else {
		p.counts[v.Code]++
		p.m.verdicts.WithLabelValues(string(v.Code), string(v.Severity)).Inc()
	}
	vc := v
	p.events.publish(control.Event{Kind: control.EventVerdict, Message: v.Summary, Verdict: &vc})
	if !p.limiter.allow(now) {
		p.m.verdictLogsSuppressed.Inc()
		return
	}
	level := slog.LevelInfo
	if v.Severity == diag.Error || v.Severity == diag.Warning {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("code", string(v.Code)), slog.String("severity", string(v.Severity)),
		slog.Int("session", v.Session), slog.String("client", v.Client), slog.String("server", v.Server),
	}
	if v.Direction != "" {
		attrs = append(attrs, slog.String("direction", v.Direction))
	}
	if v.Exchange != "" {
		attrs = append(attrs, slog.String("exchange", v.Exchange))
	}
	if len(v.Evidence) > 0 {
		attrs = append(attrs, slog.String("evidence", strings.Join(v.Evidence, "; ")))
	}
	if len(v.Remedy) > 0 {
		attrs = append(attrs, slog.String("remedy", strings.Join(v.Remedy, "; ")))
	}
	if v.Provisional {
		attrs = append(attrs, slog.Bool("provisional", true))
	}
	if len(v.KernelDrops) > 0 {
		attrs = append(attrs, slog.String("kernel_drops", strings.Join(v.KernelDrops, "; ")))
	}
	msg := "verdict: "
	if v.Provisional {
		msg = "provisional verdict: "
	}
	p.log.LogAttrs(context.Background(), level, msg+v.Summary, attrs...)
}

var errBusy = errors.New("the diagnosis engine did not answer in time")

// query runs f on the engine goroutine and waits for it.
func (p *pipeline) query(ctx context.Context, f func(*diag.Engine)) error {
	done := make(chan struct{})
	select {
	case p.queries <- func(e *diag.Engine) { f(e); close(done) }:
	case <-ctx.Done():
		return errBusy
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errBusy
	}
}

func (p *pipeline) snapshot() *engineSnapshot { return p.snap.Load() }

func (p *pipeline) recordCounts() control.RecordStats {
	return control.RecordStats{Datagrams: p.recDatagrams.Load(), TooBig: p.recTooBig.Load(), Drops: p.recDrops.Load(),
		TCPFrames: p.recTCP.Load(), TCPFramesDropped: p.tcpDropped.Load()}
}

// healthy reports whether the engine goroutine is still ticking.
func (p *pipeline) healthy() bool {
	return time.Since(time.Unix(0, p.lastTick.Load())) < 10*tickInterval
}

// logLimiter is a token bucket for verdict log lines.
type logLimiter struct {
	rate       int
	tokens     float64
	last       time.Time
	suppressed uint64
	lastReport time.Time
}

func newLogLimiter(rate int) logLimiter {
	if rate <= 0 {
		rate = 20
	}
	return logLimiter{rate: rate, tokens: float64(5 * rate)}
}

func (l *logLimiter) allow(now time.Time) bool {
	if !l.last.IsZero() {
		l.tokens = min(float64(5*l.rate), l.tokens+now.Sub(l.last).Seconds()*float64(l.rate))
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true
	}
	l.suppressed++
	return false
}

// takeSuppressed returns the lines suppressed since the last report, at
// most every ten seconds.
func (l *logLimiter) takeSuppressed(now time.Time) uint64 {
	if l.suppressed == 0 || now.Sub(l.lastReport) < 10*time.Second {
		return 0
	}
	n := l.suppressed
	l.suppressed, l.lastReport = 0, now
	return n
}
