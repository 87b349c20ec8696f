package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"net/netip"

	dto "github.com/prometheus/client_model/go"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

// repoLab is a capture of diag/testdata/lab, recorded by the project's lab
// with real strongSwan (diag's TestRecordLab).
func repoLab(name string) string {
	return filepath.Join("..", "..", "diag", "testdata", "lab", name)
}

// records reads a capture into observation records.
func records(t *testing.T, path string) []obs.Record {
	t.Helper()
	r, err := capture.Open(path, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []obs.Record
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
}

// The pipeline judges a session once it settles, reports each verdict
// once per session (log line, event, metric), and does not repeat it on
// later ticks. The repository's lab captures of scenarios b and c are the
// input.
func TestPipelineReportsEachVerdictOnce(t *testing.T) {
	for _, c := range []struct {
		pcap string
		want diag.Code
	}{{"b.pcap", diag.FragmentsDropped}, {"c.pcap", diag.OK}} {
		t.Run(c.pcap, func(t *testing.T) {
			recs := records(t, repoLab(c.pcap))
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			hub := newEventHub()
			p := newPipeline(diag.Options{}, 20, log, hub, newMetrics())
			for _, r := range recs {
				p.add(r)
			}
			// The capture is old: on the wall clock everything has settled
			// (and is idle: the first expiry walk forgets the session, after
			// it was judged).
			for i := 0; i < 3; i++ {
				p.tick()
			}
			snap := p.snapshot()
			if snap.Verdicts[c.want] != 1 || snap.Records != uint64(len(recs)) || p.expired.Load() != 1 {
				t.Errorf("snapshot %+v, want one %s", snap, c.want)
			}
			if n := strings.Count(logs.String(), "code="+string(c.want)+" "); n != 1 {
				t.Errorf("%s logged %d times:\n%s", c.want, n, logs.String())
			}
			var got []control.Event
			_ = hub.serve(context.Background(), false, func(e control.Event) error { got = append(got, e); return nil })
			if len(got) != len(snap.Verdicts) || len(got) == 0 || got[0].Verdict == nil || got[0].Verdict.Code != c.want {
				t.Errorf("events %+v", got)
			}
			if strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("error logged:\n%s", logs.String())
			}
		})
	}
}

// Sessions the engine forgets are forgotten by the pipeline too, and the
// engine's clock follows the wall clock without traffic.
func TestPipelineRetention(t *testing.T) {
	recs := records(t, repoLab("c.pcap"))
	p := newPipeline(diag.Options{Idle: time.Minute}, 20, slog.New(slog.DiscardHandler), newEventHub(), newMetrics())
	for _, r := range recs {
		p.add(r)
	}
	p.lastExpire = time.Now() // hold the expiry walk back for one tick
	p.tick()
	if p.eng.Judged() != 1 || p.snapshot().Sessions != 1 {
		t.Fatalf("%d marks, %d sessions after one session", p.eng.Judged(), p.snapshot().Sessions)
	}
	// The capture is older than Idle: the next expiry walk removes it, and
	// the tick after that its mark.
	p.lastExpire = time.Time{}
	p.tick()
	p.tick()
	if s := p.snapshot(); s.Sessions != 0 || p.eng.Judged() != 0 || p.expired.Load() != 1 {
		t.Errorf("after expiry: %d sessions, %d marks, %d expired", s.Sessions, p.eng.Judged(), p.expired.Load())
	}
	if d := time.Since(p.eng.Now()); d > 5*time.Second || d < 0 {
		t.Errorf("engine clock %v behind the wall clock", d)
	}
}

// A flood of verdicts is logged at the configured rate; the rest is
// counted, summarised, and still published as events.
func TestVerdictLogRateLimit(t *testing.T) {
	var logs bytes.Buffer
	hub := newEventHub()
	p := newPipeline(diag.Options{}, 2, slog.New(slog.NewTextHandler(&logs, nil)), hub, newMetrics())
	now := time.Now()
	for i := 0; i < 100; i++ {
		p.report(now, diag.Verdict{Code: diag.UnansweredSAInit, Severity: diag.Error, Session: i, Summary: "IKE_SA_INIT was never answered"})
	}
	if n := strings.Count(logs.String(), "verdict:"); n != 10 {
		t.Errorf("%d verdict lines, want the burst of 10", n)
	}
	if n := p.limiter.takeSuppressed(now.Add(11 * time.Second)); n != 90 {
		t.Errorf("%d suppressed, want 90", n)
	}
	var evs int
	_ = hub.serve(context.Background(), false, func(control.Event) error { evs++; return nil })
	if evs != 100 {
		t.Errorf("%d events, want 100", evs)
	}
}

// shiftRecords moves a capture's records in time by d, so that the
// pipeline's wall clock sees them as live traffic.
func shiftRecords(recs []obs.Record, d time.Duration) {
	for _, r := range recs {
		switch {
		case r.Datagram != nil:
			r.Datagram.Time, r.Datagram.Last = r.Datagram.Time.Add(d), r.Datagram.Last.Add(d)
			for i := range r.Datagram.Frags {
				r.Datagram.Frags[i].Time = r.Datagram.Frags[i].Time.Add(d)
			}
		case r.TooBig != nil:
			r.TooBig.Time = r.TooBig.Time.Add(d)
		case r.Drop != nil:
			r.Drop.Time = r.Drop.Time.Add(d)
		}
	}
}

// Retransmissions give a provisional verdict from the second unanswered
// copy on, reported (event, log, metric) as provisional, and the final
// verdict once the session settles.
func TestPipelineProvisionalThenFinal(t *testing.T) {
	recs := records(t, repoLab("b.pcap"))
	var logs bytes.Buffer
	hub := newEventHub()
	p := newPipeline(diag.Options{}, 100, slog.New(slog.NewTextHandler(&logs, nil)), hub, newMetrics())
	var first time.Time
	for _, r := range recs {
		if r.Datagram != nil {
			first = r.Datagram.Time
			break
		}
	}
	start := p.now()
	shiftRecords(recs, start.Sub(first))
	provisionalAt := -1
	for i, r := range recs {
		p.add(r)
		at := start
		if r.Datagram != nil {
			at = r.Datagram.Time
		}
		p.eng.Advance(at)
		p.judge(at)
		if provisionalAt < 0 && strings.Contains(logs.String(), "provisional verdict") {
			provisionalAt = i
		}
	}
	if provisionalAt < 0 || provisionalAt == len(recs)-1 {
		t.Fatalf("provisional verdict at record %d of %d:\n%s", provisionalAt, len(recs), logs.String())
	}
	if p.counts[diag.FragmentsDropped] != 0 {
		t.Errorf("final FRAGMENTS_DROPPED counted before settle")
	}
	last := p.eng.Now()
	p.eng.Advance(last.Add(p.settle))
	p.judge(last.Add(p.settle))
	if p.counts[diag.FragmentsDropped] != 1 {
		t.Errorf("final FRAGMENTS_DROPPED counted %d times after settle", p.counts[diag.FragmentsDropped])
	}
	var prov, final int
	_ = hub.serve(context.Background(), false, func(e control.Event) error {
		if e.Verdict != nil && e.Verdict.Code == diag.FragmentsDropped {
			if e.Verdict.Provisional {
				prov++
			} else {
				final++
			}
		}
		return nil
	})
	if prov != 1 || final != 1 {
		t.Errorf("events: %d provisional, %d final FRAGMENTS_DROPPED; want 1 and 1", prov, final)
	}
	if n := testutilCount(t, p, diag.FragmentsDropped); n != 1 {
		t.Errorf("provisional metric %v", n)
	}
}

func testutilCount(t *testing.T, p *pipeline, c diag.Code) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := p.provisional.WithLabelValues(string(c), string(diag.Error)).Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A provisional verdict that stops holding (the response came late) is
// withdrawn once: logged and counted, never made final.
func TestPipelineProvisionalWithdrawn(t *testing.T) {
	var logs bytes.Buffer
	p := newPipeline(diag.Options{}, 100, slog.New(slog.NewTextHandler(&logs, nil)), newEventHub(), newMetrics())
	cli, srv := netip.MustParseAddrPort("192.0.2.10:500"), netip.MustParseAddrPort("198.51.100.20:500")
	t0 := p.now()
	send := func(at time.Duration, fromClient, response bool, x ike.ExchangeType, mid uint32, ps ...ike.Payload) {
		h := ike.Header{MajorVersion: 2, Exchange: x, MessageID: mid}
		h.SPIi[7] = 1
		if x != ike.ExchangeIKESAInit || response {
			h.SPIr[7] = 2
		}
		src, dst := cli, srv
		if fromClient {
			h.Flags |= ike.FlagInitiator
		} else {
			src, dst = srv, cli
		}
		if response {
			h.Flags |= ike.FlagResponse
		}
		b := (&ike.Message{Header: h, Payloads: ps}).Encode()
		d := &obs.Datagram{Time: t0.Add(at), IPVersion: 4, Proto: 17, Src: src, Dst: dst, Length: len(b), Payload: b, Complete: true, TotalLen: -1}
		if len(b) > 1400 {
			d.Frags = []obs.Frag{{Offset: 0, Len: 1480, MF: true, IPLen: 1500}, {Offset: 1480, Len: len(b) + 8 - 1480, IPLen: 28 + len(b) - 1480}}
		}
		p.add(obs.Record{Datagram: d})
		p.eng.Advance(d.Time)
		p.judge(d.Time)
	}
	sk := func(n int) ike.Payload {
		return ike.Payload{Type: ike.PayloadEncrypted, Body: &ike.Encrypted{NextPayload: ike.PayloadIDi, Data: make([]byte, n)}}
	}
	send(0, true, false, ike.ExchangeIKESAInit, 0)
	send(10*time.Millisecond, false, true, ike.ExchangeIKESAInit, 0)
	send(20*time.Millisecond, true, false, ike.ExchangeIKEAuth, 1, sk(2000))
	send(2020*time.Millisecond, true, false, ike.ExchangeIKEAuth, 1, sk(2000))
	if !strings.Contains(logs.String(), "provisional verdict: ") {
		t.Fatalf("no provisional verdict after the second copy:\n%s", logs.String())
	}
	// The response comes late, and the client moves on: no loss after all.
	send(2100*time.Millisecond, false, true, ike.ExchangeIKEAuth, 1, sk(300))
	send(2200*time.Millisecond, true, false, ike.ExchangeInformational, 2, sk(60))
	send(2210*time.Millisecond, false, true, ike.ExchangeInformational, 2, sk(60))
	if n := strings.Count(logs.String(), "provisional verdict withdrawn"); n != 1 {
		t.Errorf("withdrawn logged %d times, want 1:\n%s", n, logs.String())
	}
	m := &dto.Metric{}
	if err := p.withdrawnVerdicts.WithLabelValues(string(diag.FragmentsDropped)).Write(m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("withdrawn metric %v (%v)", m.GetCounter().GetValue(), err)
	}
	// Settling does not make it final.
	at := p.eng.Now().Add(p.settle)
	p.eng.Advance(at)
	p.judge(at)
	if p.counts[diag.FragmentsDropped] != 0 {
		t.Errorf("FRAGMENTS_DROPPED counted final: %v", p.counts)
	}
}
