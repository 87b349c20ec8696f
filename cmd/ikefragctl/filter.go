package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
)

// filter narrows sessions, verdicts and events: --peer, --session,
// --severity, --since. Every given filter must match (AND); repeated --peer
// or --session values are alternatives (OR).
type filter struct {
	peerArgs []string
	peers    []netip.Prefix
	sessions []int
	severity string // minimum: info, warning, error
	minRank  int
	sinceArg string
	since    time.Time     // absolute, or
	sinceAgo time.Duration // relative to now (daemon) or the capture's end (analyze)
}

// addFilterFlags adds the four flags to cmd. what says what --since is
// relative to, for the help text.
func addFilterFlags(cmd *cobra.Command, f *filter, sinceOf string) {
	cmd.Flags().StringSliceVar(&f.peerArgs, "peer", nil, "only sessions with this peer as client or server: an address or a prefix (10.0.0.0/8); repeat for several")
	cmd.Flags().IntSliceVar(&f.sessions, "session", nil, "only these session IDs; repeat or separate with commas")
	cmd.Flags().StringVar(&f.severity, "severity", "", "only verdicts of at least this severity (info, warning, error), and the sessions that have one")
	cmd.Flags().StringVar(&f.sinceArg, "since", "", "only sessions active (events raised) since then: a duration before "+sinceOf+" (10m, 2h) or a time (2006-01-02T15:04:05Z07:00)")
}

var severityRank = map[string]int{string(diag.Info): 1, string(diag.Warning): 2, string(diag.Error): 3}

// parse checks the flags; bad values are usage errors naming the flag.
func (f *filter) parse() error {
	for _, p := range f.peerArgs {
		if pf, err := netip.ParsePrefix(p); err == nil {
			f.peers = append(f.peers, pf.Masked())
			continue
		}
		a, err := netip.ParseAddr(p)
		if err != nil {
			return badInput("--peer %q: not an IP address or prefix", p)
		}
		f.peers = append(f.peers, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	if f.severity != "" {
		r, ok := severityRank[strings.ToLower(f.severity)]
		if !ok {
			return badInput("--severity %q: want info, warning or error", f.severity)
		}
		f.minRank = r
	}
	if f.sinceArg != "" {
		if d, err := time.ParseDuration(f.sinceArg); err == nil && d >= 0 {
			f.sinceAgo = d
		} else if t, err := time.Parse(time.RFC3339, f.sinceArg); err == nil {
			f.since = t
		} else {
			return badInput("--since %q: want a duration (10m, 2h) or an RFC 3339 time (2026-01-02T15:04:05Z)", f.sinceArg)
		}
	}
	return nil
}

func (f *filter) active() bool {
	return len(f.peers) > 0 || len(f.sessions) > 0 || f.minRank > 0 || f.sinceArg != ""
}

// cutoff is the --since time, given what relative durations count from.
func (f *filter) cutoff(now time.Time) time.Time {
	if f.sinceAgo > 0 {
		return now.Add(-f.sinceAgo)
	}
	return f.since
}

// peerMatch says whether an "addr:port" or "addr" string is one of the
// peers.
func (f *filter) peerMatch(s string) bool {
	var a netip.Addr
	if ap, err := netip.ParseAddrPort(s); err == nil {
		a = ap.Addr()
	} else if x, err := netip.ParseAddr(s); err == nil {
		a = x
	} else {
		return false
	}
	a = a.Unmap()
	for _, p := range f.peers {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// session keeps or drops one session, trimming its verdicts to the
// severity asked for.
func (f *filter) session(s *diag.SessionReport, cut time.Time) bool {
	if len(f.peers) > 0 && !f.peerMatch(s.Client) && !f.peerMatch(s.Server) {
		return false
	}
	if len(f.sessions) > 0 && !slices.Contains(f.sessions, s.ID) {
		return false
	}
	if !cut.IsZero() && s.End.Before(cut) {
		return false
	}
	if f.minRank > 0 {
		s.Verdicts = slices.DeleteFunc(s.Verdicts, func(v diag.Verdict) bool { return severityRank[string(v.Severity)] < f.minRank })
		if len(s.Verdicts) == 0 {
			return false
		}
	}
	return true
}

// sessionList filters a session list; relative --since counts from now.
func (f *filter) sessionList(ss []diag.SessionReport, now time.Time) []diag.SessionReport {
	if !f.active() {
		return ss
	}
	cut := f.cutoff(now)
	out := ss[:0]
	for i := range ss {
		if f.session(&ss[i], cut) {
			out = append(out, ss[i])
		}
	}
	return out
}

// report filters a report's sessions (and peers, by --peer) and counts
// its summary again, so the exit status follows what is shown. now is
// what a relative --since counts from.
func (f *filter) report(r *diag.Report, now time.Time) {
	if !f.active() {
		return
	}
	r.Sessions = f.sessionList(r.Sessions, now)
	if len(f.peers) > 0 {
		r.Peers = slices.DeleteFunc(r.Peers, func(p diag.PMTUEstimate) bool { return !f.peerMatch(p.Peer) })
	}
	r.Summary = diag.Summary{Verdicts: map[diag.Code]int{}}
	for _, s := range r.Sessions {
		r.Summary.Sessions++
		if s.Established {
			r.Summary.Established++
		}
		for _, v := range s.Verdicts {
			r.Summary.Verdicts[v.Code]++
			switch v.Severity {
			case diag.Error:
				r.Summary.Errors++
			case diag.Warning:
				r.Summary.Warnings++
			}
		}
	}
}

// captureEnd is the last time seen in a report: what a relative --since
// counts from for a capture.
func captureEnd(r *diag.Report) time.Time {
	var end time.Time
	for _, s := range r.Sessions {
		if s.End.After(end) {
			end = s.End
		}
	}
	return end
}

// event says whether an event passes. Session, peer and severity filters
// keep only verdict events that match them.
func (f *filter) event(e *control.Event, now time.Time) bool {
	if cut := f.cutoff(now); !cut.IsZero() && e.Time.Before(cut) {
		return false
	}
	if len(f.peers) == 0 && len(f.sessions) == 0 && f.minRank == 0 {
		return true
	}
	v := e.Verdict
	if v == nil {
		return false
	}
	if len(f.peers) > 0 && !f.peerMatch(v.Client) && !f.peerMatch(v.Server) {
		return false
	}
	if len(f.sessions) > 0 && !slices.Contains(f.sessions, v.Session) {
		return false
	}
	return severityRank[string(v.Severity)] >= f.minRank
}

func (f *filter) String() string {
	return fmt.Sprintf("peers %v sessions %v severity %q since %q", f.peers, f.sessions, f.severity, f.sinceArg)
}
