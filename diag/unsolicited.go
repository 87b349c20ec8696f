package diag

import (
	"net/netip"
	"sort"
	"time"
)

// Unsolicited reports whether every datagram of the session is a response
// sent by the SA's responder, as the IKE header gives the roles: answers to
// requests never seen. An edge box receiving reflected IKE traffic (a
// spoofed-source scan) sees thousands of these; they are one finding per
// target address, never sessions of their own with the roles reversed.
func (s *Session) Unsolicited() bool {
	if s.IKEv1 && !s.rolesKnown {
		return false
	}
	return s.FromInitiator == 0 && s.Responses > 0 && s.Responses == s.FromResponder
}

// maxFindingSources bounds the sources named in a finding's evidence.
const maxFindingSources = 5

// Findings returns the report-level findings: UNSOLICITED_IKE_RESPONSES,
// one per target address, over the sessions that are settled (or all,
// when final); ESP verdicts between peers with no IKE session in view;
// PMTUD_BLACKHOLE_LOCAL.
func (e *Engine) Findings(final bool) []Verdict {
	type agg struct {
		sources     map[netip.Addr]struct{}
		msgs, bytes int
		first, last time.Time
		v1, v2      int
		frames      []int
	}
	by := map[netip.Addr]*agg{}
	for _, s := range e.sessions {
		if !s.Unsolicited() || !e.settled(s, final) {
			continue
		}
		t := s.Initiator.Addr()
		a := by[t]
		if a == nil {
			a = &agg{sources: map[netip.Addr]struct{}{}, first: s.First}
			by[t] = a
		}
		if len(a.sources) < 1<<16 {
			a.sources[s.Responder.Addr()] = struct{}{}
		}
		if s.IKEv1 {
			a.v1++
		} else {
			a.v2++
		}
		for _, x := range s.Exchanges {
			for _, ts := range [][]*Transmission{x.Requests, x.Responses} {
				datagrams(ts, func(d *Datagram) {
					a.msgs += d.Copies
					a.bytes += d.IPLen * d.Copies
					for _, f := range d.Frames {
						a.frames = keepFirstFrames(a.frames, f)
					}
				})
			}
		}
		if s.First.Before(a.first) {
			a.first = s.First
		}
		if s.Last.After(a.last) {
			a.last = s.Last
		}
	}
	targets := make([]netip.Addr, 0, len(by))
	for t := range by {
		targets = append(targets, t)
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].Less(targets[j]) })
	out := make([]Verdict, 0, len(targets))
	for _, t := range targets {
		a := by[t]
		srcs := make([]netip.Addr, 0, len(a.sources))
		for s := range a.sources {
			srcs = append(srcs, s)
		}
		sort.Slice(srcs, func(i, j int) bool { return srcs[i].Less(srcs[j]) })
		named := ""
		for i, s := range srcs {
			if i == maxFindingSources {
				named += sprintf(", and %d more", len(srcs)-i)
				break
			}
			if i > 0 {
				named += ", "
			}
			named += s.String()
		}
		sev := Warning
		if len(srcs) < 2 && a.msgs < 3 {
			// One stray answer: a capture that began mid-exchange.
			sev = Info
		}
		ver := "IKEv2"
		switch {
		case a.v1 > 0 && a.v2 > 0:
			ver = "IKEv1 and IKEv2"
		case a.v1 > 0:
			ver = "IKEv1"
		}
		out = append(out, Verdict{
			Code: UnsolicitedResponses, Severity: sev, Client: t.String(), Server: sprintf("%d source(s)", len(srcs)),
			Summary: sprintf("%s received %d %s response(s) from %d source(s) without sending a request: reflected or unsolicited traffic (or a capture of one direction)", t, a.msgs, ver, len(srcs)),
			Evidence: []string{
				sprintf("sources: %s", named),
				sprintf("%d message(s), %d bytes, over %s (%s to %s)", a.msgs, a.bytes, a.last.Sub(a.first).Round(time.Millisecond), a.first.UTC().Format(time.RFC3339), a.last.UTC().Format(time.RFC3339)),
				"roles from the IKE header: every message is a response from the SA's responder (IKEv2 R flag; IKEv1 responder cookie set and SA first), and nothing was seen from the initiator",
			},
			Frames: sortedFrames(a.frames), Remedy: remedies[UnsolicitedResponses],
		})
	}
	out = append(out, e.espFindings()...)
	return append(out, e.localICMPDrops()...)
}

// maxFindingFrames bounds the frames a finding cites.
const maxFindingFrames = 64

// keepFirstFrames adds frame f to fs, keeping the maxFindingFrames lowest:
// sessions are visited in map order, and the frames cited must not depend
// on it.
func keepFirstFrames(fs []int, f int) []int {
	if len(fs) < maxFindingFrames {
		return append(fs, f)
	}
	hi := 0
	for i := range fs {
		if fs[i] > fs[hi] {
			hi = i
		}
	}
	if f < fs[hi] {
		fs[hi] = f
	}
	return fs
}

func sortedFrames(fs []int) []int {
	sort.Ints(fs)
	return fs
}
