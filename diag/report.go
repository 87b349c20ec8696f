package diag

import (
	"sort"
	"time"
)

// SchemaVersion is the version of the JSON report. It changes only when a
// field is removed or changes meaning; new fields may appear in any version.
//
// Version 2 added: report-level "warnings" (a capture cut short) and
// "findings" (UNSOLICITED_IKE_RESPONSES, one per target address; their
// sessions are no longer listed); per-session "quirks"; per-verdict
// "provisional" and "kernel_drops"; "summary.unsolicited_sessions" and
// "summary.provisional". Sessions of unsolicited responses left the
// "sessions" list, which changes its meaning: hence the bump.
const SchemaVersion = 2

// Report is the JSON form of a diagnosis: `ikefragctl analyze --json` and
// `ikefragctl verdicts --json` emit it.
type Report struct {
	Schema   string          `json:"schema"` // "ikefrag.report"
	Version  int             `json:"version"`
	Sessions []SessionReport `json:"sessions"`
	Peers    []PMTUEstimate  `json:"peers"`
	// Findings are verdicts about an address rather than one IKE SA
	// (UNSOLICITED_IKE_RESPONSES); their session is 0.
	Findings []Verdict `json:"findings"`
	// Warnings are about the input itself: a capture cut short, for
	// example; the report covers what came before.
	Warnings []string `json:"warnings,omitempty"`
	// TCPStreams counts the RFC 9329 streams of the captures analysed
	// (analyze fills it when the input held any; live reports do not
	// have it: the proxy hands over whole frames).
	TCPStreams *TCPStreamCounts `json:"tcp_streams,omitempty"`
	Summary    Summary          `json:"summary"`
}

// TCPStreamCounts are what decoding the RFC 9329 streams of captures
// found (diag/capture's TCPStats).
type TCPStreamCounts struct {
	Streams int `json:"streams"` // connections whose initiator sent the IKETCP prefix
	Frames  int `json:"frames"`  // frames decoded (IKE and ESP, both directions)
	// Gaps counts stream directions given up at bytes the capture lacks;
	// LostBytes the bytes of those streams seen after the loss and not
	// decoded.
	Gaps      int `json:"gaps"`
	LostBytes int `json:"lost_bytes"`
	// Truncated counts directions that ended inside a frame, BadFrames
	// those given up at a frame length below 6 (RFC 9329 §3).
	Truncated int `json:"truncated"`
	BadFrames int `json:"bad_frames"`
}

// SessionReport describes one IKE SA.
type SessionReport struct {
	ID                     int           `json:"id"`
	Client                 string        `json:"client"`
	Server                 string        `json:"server"`
	SPIi                   string        `json:"spi_i"`
	SPIr                   string        `json:"spi_r"`
	IKEVersion             int           `json:"ike_version"`
	RelayLeg               bool          `json:"relay_leg,omitempty"`     // this host's proxy toward a backend; judged on the client's session
	Transport              string        `json:"transport,omitempty"`     // "tcp": IKE over TCP (RFC 9329); "udp+tcp": it moved between the two; absent: UDP
	FallbackFrom           int           `json:"fallback_from,omitempty"` // over TCP: the session of the same client's failed attempt over UDP just before (TCP_FALLBACK)
	Start                  time.Time     `json:"start"`
	End                    time.Time     `json:"end"`
	Established            bool          `json:"established"`
	FragmentationSupported FragSupport   `json:"fragmentation_supported"`
	ProposalChosen         string        `json:"proposal_chosen,omitempty"`
	Quirks                 []string      `json:"quirks,omitempty"`        // departures from RFC 7296 that decoding tolerated
	PMTUEstimate           *PMTUEstimate `json:"pmtu_estimate,omitempty"` // toward the client
	Ladder                 []LadderRow   `json:"ladder"`
	Verdicts               []Verdict     `json:"verdicts"`
}

// FragSupport says which peers announced IKEV2_FRAGMENTATION_SUPPORTED.
type FragSupport struct {
	Initiator bool `json:"initiator"`
	Responder bool `json:"responder"`
}

// LadderRow is one IKE datagram of a session, for the ladder diagram.
type LadderRow struct {
	Offset         time.Duration `json:"offset_ns"` // since the session's first datagram
	FromClient     bool          `json:"from_client"`
	Exchange       string        `json:"exchange"`
	MessageID      uint32        `json:"message_id"`
	Response       bool          `json:"response"`
	Length         int           `json:"length"` // IKE header Length
	IPFragments    int           `json:"ip_fragments"`
	Complete       bool          `json:"complete"`
	SKFNumber      uint16        `json:"skf_number,omitempty"`
	SKFTotal       uint16        `json:"skf_total,omitempty"`
	Retransmission bool          `json:"retransmission,omitempty"`
	TCP            bool          `json:"tcp,omitempty"` // carried in an RFC 9329 frame of a TCP stream (ip_fragments is then 1)
	Copies         int           `json:"copies"`
	Frames         []int         `json:"frames,omitempty"`
}

// Summary counts sessions and verdicts.
type Summary struct {
	Sessions    int          `json:"sessions"`
	Established int          `json:"established"`
	Errors      int          `json:"errors"`
	Warnings    int          `json:"warnings"`
	Verdicts    map[Code]int `json:"verdicts"`
	// UnsolicitedSessions counts the IKE SAs folded into findings.
	UnsolicitedSessions int `json:"unsolicited_sessions,omitempty"`
	// Provisional counts verdicts not yet final (live reports only).
	Provisional int `json:"provisional,omitempty"`
}

// Report builds the report of everything seen so far.
func (e *Engine) Report(final bool) Report {
	r := Report{Schema: "ikefrag.report", Version: SchemaVersion, Sessions: []SessionReport{},
		Warnings: e.Warnings(), Summary: Summary{Verdicts: map[Code]int{}}}
	count := func(vs []Verdict) {
		for _, v := range vs {
			r.Summary.Verdicts[v.Code]++
			if v.Provisional {
				r.Summary.Provisional++
			}
			switch v.Severity {
			case Error:
				r.Summary.Errors++
			case Warning:
				r.Summary.Warnings++
			}
		}
	}
	e.judge(e.Sessions(), final, func(s *Session, vs []Verdict) {
		if s.Unsolicited() && e.settled(s, final) {
			r.Summary.UnsolicitedSessions++
			return
		}
		sr := e.sessionReport(s, vs)
		r.Sessions = append(r.Sessions, sr)
		r.Summary.Sessions++
		if sr.Established {
			r.Summary.Established++
		}
		count(sr.Verdicts)
	})
	r.Peers, r.Findings = e.Peers(), e.Findings(final)
	count(r.Findings)
	return r
}

// maxWarnings bounds the report-level warnings kept.
const maxWarnings = 16

// Warn adds a report-level warning about the input (for example, a capture
// file that breaks off at a frame).
func (e *Engine) Warn(msg string) {
	if len(e.warnings) < maxWarnings {
		e.warnings = append(e.warnings, msg)
	}
}

// Warnings returns the report-level warnings.
func (e *Engine) Warnings() []string { return append([]string(nil), e.warnings...) }

// SessionReport describes one session, judged on the evidence at hand
// (Report folds every session's evidence in first).
func (e *Engine) SessionReport(s *Session, final bool) SessionReport {
	return e.sessionReport(s, e.Evaluate(s, final))
}

func (e *Engine) sessionReport(s *Session, vs []Verdict) SessionReport {
	sr := SessionReport{
		ID: s.ID, Client: s.Initiator.String(), Server: s.Responder.String(),
		SPIi: s.SPIi.String(), SPIr: s.SPIr.String(), IKEVersion: 2, RelayLeg: s.RelayLeg, Transport: s.Transport(),
		Start: s.First, End: s.Last,
		FragmentationSupported: FragSupport{s.FragSupported.Initiator, s.FragSupported.Responder},
		Verdicts:               vs,
	}
	if s.IKEv1 {
		sr.IKEVersion = 1
	} else {
		sr.Established = s.Established()
	}
	if s.Chosen != nil {
		sr.ProposalChosen = suiteString(s.Chosen)
	}
	if p := e.fallbackFrom(s); p != nil {
		sr.FallbackFrom = p.ID
	}
	sr.Quirks = append([]string(nil), s.Quirks...)
	if p := e.peers[s.Initiator.Addr()]; p != nil {
		est := p.Estimate()
		sr.PMTUEstimate = &est
	}
	sr.Ladder = ladder(s)
	if sr.Verdicts == nil {
		sr.Verdicts = []Verdict{}
	}
	return sr
}

func ladder(s *Session) []LadderRow {
	var rows []LadderRow
	for _, x := range s.Exchanges {
		for _, ts := range [][]*Transmission{x.Requests, x.Responses} {
			for _, t := range ts {
				for _, d := range t.Datagrams {
					r := LadderRow{
						Offset:     d.Time.Sub(s.First),
						FromClient: d.Src == s.Initiator || d.Src.Addr() == s.Initiator.Addr() && d.Dst.Addr() == s.Responder.Addr(),
						Exchange:   x.Type.String(), MessageID: x.MessageID, Response: d.Header.Flags.Response(),
						Length: int(d.Header.Length), IPFragments: d.IPFrags, Complete: d.Complete,
						Retransmission: t.Retransmission, TCP: d.TCP, Copies: d.Copies, Frames: d.Frames,
					}
					if s.IKEv1 {
						r.Exchange = d.Header.Exchange.IKEv1String()
					}
					if d.SKF != nil {
						r.SKFNumber, r.SKFTotal = d.SKF.Number, d.SKF.Total
					}
					rows = append(rows, r)
				}
			}
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Offset < rows[j].Offset })
	return rows
}
