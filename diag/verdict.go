package diag

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// Code is a stable verdict code.
type Code string

// The verdict codes. They are part of the JSON schema: never rename one.
const (
	FragmentsDropped           Code = "FRAGMENTS_DROPPED"
	FragmentationNotNegotiated Code = "FRAGMENTATION_NOT_NEGOTIATED"
	IKEFragmentsExceedPMTU     Code = "IKE_FRAGMENTS_EXCEED_PMTU"
	NoProposalChosen           Code = "NO_PROPOSAL_CHOSEN"
	InvalidKEPayload           Code = "INVALID_KE_PAYLOAD"
	WeakCrypto                 Code = "WEAK_CRYPTO"
	AuthenticationFailed       Code = "AUTHENTICATION_FAILED"
	UnansweredSAInit           Code = "UNANSWERED_SA_INIT"
	UnansweredIKEAuth          Code = "UNANSWERED_IKE_AUTH"
	IKEv1                      Code = "IKEV1"
	OK                         Code = "OK"
	// UnansweredIKEv1: an IKEv1 initiator retransmitted and no answer came.
	UnansweredIKEv1 Code = "UNANSWERED_IKEV1"
	// IKEAuthNotSeen: IKE_SA_INIT completed and no IKE_AUTH request came
	// past the observation point.
	IKEAuthNotSeen Code = "IKE_AUTH_NOT_SEEN"
	// UnsolicitedResponses: IKE responses toward an address that sent no
	// request (reflection, scanning, or a capture of one direction); one
	// report-level finding per target address.
	UnsolicitedResponses Code = "UNSOLICITED_IKE_RESPONSES"
	// PMTUDBlackholeLocal: this host's kernel dropped an ICMP
	// fragmentation-needed / packet-too-big message.
	PMTUDBlackholeLocal Code = "PMTUD_BLACKHOLE_LOCAL"
	// ESPFragmentsDropped: after the tunnel came up, ESP datagrams are
	// IP-fragmented and the fragments lost.
	ESPFragmentsDropped Code = "ESP_FRAGMENTS_DROPPED"
	// ESPExceedsPMTU: an ICMP too-big quotes the tunnel's ESP.
	ESPExceedsPMTU Code = "ESP_EXCEEDS_PMTU"
	// TCPFallback: IKE over UDP between two peers failed and the client
	// fell back to TCP (RFC 9329), where the IKE SA was established.
	TCPFallback Code = "TCP_FALLBACK"
)

// Error notify verdicts: the code is the notify's IANA name (RFC 7296
// §3.10.1 and later RFCs); errorNotifies in remedy.go says what each means.
const (
	UnsupportedCriticalPayload Code = "UNSUPPORTED_CRITICAL_PAYLOAD"
	InvalidIKESPI              Code = "INVALID_IKE_SPI"
	InvalidMajorVersion        Code = "INVALID_MAJOR_VERSION"
	InvalidSyntax              Code = "INVALID_SYNTAX"
	InvalidMessageID           Code = "INVALID_MESSAGE_ID"
	InvalidSPI                 Code = "INVALID_SPI"
	SinglePairRequired         Code = "SINGLE_PAIR_REQUIRED"
	NoAdditionalSAs            Code = "NO_ADDITIONAL_SAS"
	InternalAddressFailure     Code = "INTERNAL_ADDRESS_FAILURE"
	FailedCPRequired           Code = "FAILED_CP_REQUIRED"
	TSUnacceptable             Code = "TS_UNACCEPTABLE"
	InvalidSelectors           Code = "INVALID_SELECTORS"
	UnacceptableAddresses      Code = "UNACCEPTABLE_ADDRESSES"
	UnexpectedNATDetected      Code = "UNEXPECTED_NAT_DETECTED"
	TemporaryFailure           Code = "TEMPORARY_FAILURE"
	ChildSANotFound            Code = "CHILD_SA_NOT_FOUND"
)

// Severity of a verdict.
type Severity string

const (
	Info    Severity = "info"
	Warning Severity = "warning"
	Error   Severity = "error"
)

// Direction in which something is lost: toward the responder of the IKE SA
// (the server) or toward the initiator (the client).
const (
	TowardServer = "toward_server"
	TowardClient = "toward_client"
)

// Verdict is one finding about one session.
type Verdict struct {
	Code      Code     `json:"code"`
	Severity  Severity `json:"severity"`
	Direction string   `json:"direction,omitempty"`
	Session   int      `json:"session"`
	Client    string   `json:"client"`
	Server    string   `json:"server"`
	Exchange  string   `json:"exchange,omitempty"`
	MessageID *uint32  `json:"message_id,omitempty"`
	Summary   string   `json:"summary"`
	Evidence  []string `json:"evidence"`
	Frames    []int    `json:"frames,omitempty"`
	Remedy    []string `json:"remedy,omitempty"`
	// Provisional is true for a verdict drawn from retransmissions before
	// the session settled: it may still change (a late response). It is
	// final once the session has been quiet for Options.Settle.
	Provisional bool `json:"provisional,omitempty"`
	// KernelDrops cites packets of this verdict that this host's kernel
	// dropped (live only).
	KernelDrops []string `json:"kernel_drops,omitempty"`
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }

// Verdicts evaluates every session. final says the observation is over (the
// end of a capture): unanswered requests are then judged even if recent.
func (e *Engine) Verdicts(final bool) []Verdict {
	var out []Verdict
	e.judge(e.Sessions(), final, func(_ *Session, vs []Verdict) { out = append(out, vs...) })
	return append(out, e.Findings(final)...)
}

// judge is the one path from sessions to verdicts, for a capture (Verdicts,
// Report) and for live use (Judge). First what every session in ss proves
// is folded into the peers' evidence (settle) and ESP sends waiting for an
// answer are judged by the clock; then each session is evaluated against
// that evidence, in order of ID, and handed to each. Evaluation reads the
// shared evidence and never writes it, and folding takes maxima and
// minima, so no verdict depends on the order in which sessions are judged.
func (e *Engine) judge(ss []*Session, final bool, each func(*Session, []Verdict)) {
	for _, s := range ss {
		e.settle(s, e.settled(s, final))
	}
	e.expireESPAll()
	for _, s := range ss {
		each(s, e.Evaluate(s, final))
	}
}

// settled reports whether a session is judged as a whole: the observation
// is over, or the session has been quiet for Options.Settle.
func (e *Engine) settled(s *Session, final bool) bool {
	return final || e.now.Sub(s.Last) >= e.opt.Settle
}

// Evaluate returns the verdicts for one session from the evidence at hand.
// It changes nothing: what sessions prove about their peers is folded in
// before (judge), so that Verdicts, Report and Judge see the same evidence.
func (e *Engine) Evaluate(s *Session, final bool) []Verdict {
	if s.RelayLeg || s.Unsolicited() {
		// Unsolicited responses are judged per target address
		// (Findings), not per session.
		return nil
	}
	ev := evaluator{e: e, s: s, settled: e.settled(s, final)}
	return ev.run()
}

type evaluator struct {
	e       *Engine
	s       *Session
	settled bool
	out     []Verdict
}

func (v *evaluator) add(code Code, sev Severity, dir string, x *Exchange, summary string, evidence []string, frames []int) *Verdict {
	vd := Verdict{
		Code: code, Severity: sev, Direction: dir, Session: v.s.ID,
		Client: v.s.Initiator.String(), Server: v.s.Responder.String(),
		Summary: summary, Evidence: evidence, Frames: frames,
		Remedy: remedies[code],
	}
	if vd.Evidence == nil {
		vd.Evidence = []string{}
	}
	if x != nil {
		vd.Exchange = x.Type.String()
		mid := x.MessageID
		vd.MessageID = &mid
	}
	v.out = append(v.out, vd)
	return &v.out[len(v.out)-1]
}

func (v *evaluator) run() []Verdict {
	s := v.s
	if s.IKEv1 {
		v.add(IKEv1, Info, "", nil, "IKEv1 (ISAKMP) in use; ikefrag diagnoses IKEv2 only",
			[]string{sprintf("%d IKEv1 message(s) between %s and %s", v.countDatagrams(), s.Initiator, s.Responder)}, v.frames(s.Exchanges...))
		v.silentV1()
		return v.out
	}
	v.saInit()
	v.authNotSeen()
	for _, x := range s.Exchanges {
		if x.ByInitiator && (x.Type == ike.ExchangeIKEAuth || x.Type == ike.ExchangeIKEIntermediate) {
			v.auth(x)
		}
	}
	v.authFailed()
	v.errorNotifies()
	v.childCrypto()
	v.tcpFallback()
	if s.Established() && !v.hasError() {
		ev := []string{}
		if c := s.Chosen; c != nil {
			ev = append(ev, "IKE SA proposal: "+suiteString(c))
		}
		if x := s.Find(ike.ExchangeIKEAuth); x != nil {
			ev = append(ev, "IKE_AUTH answered: "+v.sendsString(x.Requests)+" → "+v.sendsString(x.Responses))
		}
		v.add(OK, Info, "", s.Find(ike.ExchangeIKEAuth), "IKE SA established", ev, nil)
	}
	// After OK: ESP trouble does not unmake the IKE SA.
	v.esp()
	return v.out
}

// tooBigFor returns the evidence of an ICMP too-big message about the path
// to a, when a datagram of ts was larger than the MTU it reported; "" when
// there is none.
func (v *evaluator) tooBigFor(a netip.Addr, ts []*Transmission) string {
	p := v.e.peers[a]
	if p == nil || p.TooBig == 0 {
		return ""
	}
	if l := largest(ts); l > p.TooBig {
		return sprintf("%d ICMP too-big message(s) from %s report an MTU of %d toward %s; the request went out in %d-byte packets", p.TooBigSeen, p.TooBigFrom, p.TooBig, a, l)
	}
	return ""
}

// mark sets the provisional flag and the kernel drop citations on the
// verdicts added since index n.
func (v *evaluator) mark(n int, provisional bool, drops []string) {
	for i := n; i < len(v.out); i++ {
		v.out[i].Provisional = provisional
		if v.out[i].Code != FragmentationNotNegotiated {
			v.out[i].KernelDrops = drops
		}
	}
}

func (v *evaluator) hasError() bool {
	for _, x := range v.out {
		if x.Severity == Error {
			return true
		}
	}
	return false
}

func (v *evaluator) countDatagrams() int {
	n := 0
	for _, x := range v.s.Exchanges {
		datagrams(x.Requests, func(*Datagram) { n++ })
		datagrams(x.Responses, func(*Datagram) { n++ })
	}
	return n
}

func (v *evaluator) frames(xs ...*Exchange) []int {
	var f []int
	for _, x := range xs {
		add := func(d *Datagram) {
			if len(f) < 64 {
				f = append(f, d.Frames...)
			}
		}
		datagrams(x.Requests, add)
		datagrams(x.Responses, add)
	}
	return f
}

// auth judges an IKE_AUTH (or IKE_INTERMEDIATE) exchange: the messages that
// carry certificates and outgrow the path.
func (v *evaluator) auth(x *Exchange) {
	s := v.s
	if anyTCP(x.Requests, x.Responses) {
		v.authTCP(x)
		return
	}
	name := x.Type.String()
	negotiated := s.FragSupported.Initiator && s.FragSupported.Responder
	if !x.Answered() {
		// A local drop of the request's fragments is decisive at once;
		// retransmissions give a provisional verdict from the second copy
		// on, final when the session settles.
		drops := v.e.dropsIn(x.Requests)
		if len(drops) == 0 && x.Retransmissions() == 0 && (!v.settled || !anyIncomplete(x.Requests)) {
			return
		}
		// An ICMP too-big about the path to the responder, smaller than
		// a request sent, is decisive too.
		tooBig := v.tooBigFor(s.Responder.Addr(), x.Requests)
		n := len(v.out)
		defer func() {
			v.mark(n, !v.settled && len(drops) == 0 && tooBig == "", drops)
			if tooBig != "" {
				for i := n; i < len(v.out); i++ {
					v.out[i].Evidence = append(v.out[i].Evidence, tooBig)
				}
			}
		}()
		switch {
		case anySKF(x.Requests) && anyFragmented(x.Requests):
			v.add(IKEFragmentsExceedPMTU, Error, TowardServer, x,
				sprintf("the initiator's IKE fragments of %s are larger than the path to the responder and were IP-fragmented again; no response", name),
				[]string{v.sendsString(x.Requests), "no response"}, v.frames(x)).Remedy = v.fragSizeFor(s.Responder.Addr())
		case anyFragmented(x.Requests) || anyIncomplete(x.Requests):
			ev := []string{v.sendsString(x.Requests), "no response: the IP fragments do not reach the responder (Windows error 809)"}
			ev = append(ev, v.fragFacts(negotiated)...)
			ev = append(ev, v.orphanFacts(s.Initiator.Addr(), s.Responder.Addr())...)
			v.add(FragmentsDropped, Error, TowardServer, x,
				sprintf("%s request was IP-fragmented and never answered: fragments are dropped on the way to the responder", name), ev, v.frames(x))
			v.notNegotiated(x)
		default:
			v.add(UnansweredIKEAuth, Error, TowardServer, x,
				sprintf("%s request fits the path but was retransmitted and never answered", name),
				[]string{v.sendsString(x.Requests), "no response", "likely causes, in order: the response is lost on the way back (for example IKE or IP fragments larger than the client's path); the responder drops the request (authentication, certificate or configuration error in its log)"}, v.frames(x))
		}
		return
	}
	if !responseLost(s, x) {
		return
	}
	drops := v.e.dropsIn(x.Responses)
	n := len(v.out)
	defer func() { v.mark(n, !v.settled && len(drops) == 0, drops) }()
	// The responder answered, yet the initiator kept retransmitting: the
	// response does not arrive.
	ev := []string{v.sendsString(x.Requests), "responses: " + v.sendsString(x.Responses), "the initiator retransmitted after the response was sent: the response does not arrive"}
	limit, lost := v.pathLimit(s.Initiator.Addr())
	switch {
	case anySKF(x.Responses) && anyFragmented(x.Responses):
		v.add(IKEFragmentsExceedPMTU, Error, TowardClient, x,
			sprintf("the responder's IKE fragments of %s exceed the client's path MTU and are IP-fragmented again", name),
			ev, v.frames(x)).Remedy = v.fragSizeFor(s.Initiator.Addr())
	case anySKF(x.Responses) && limit > 0 && largest(x.Responses) > limit:
		// Sent whole with DF, larger than the path: a router refused them
		// (ICMP too big) or dropped them silently, rather than fragmenting
		// them.
		if lost > 0 {
			ev = append(ev, sprintf("the largest IKE fragment datagram is %d bytes; %d-byte datagrams toward the client went unanswered while smaller ones were answered", largest(x.Responses), lost))
		} else {
			ev = append(ev, sprintf("the largest IKE fragment datagram is %d bytes; the path toward the client carries %d", largest(x.Responses), limit))
		}
		v.add(IKEFragmentsExceedPMTU, Error, TowardClient, x,
			sprintf("the responder's IKE fragments of %s exceed the client's path MTU", name),
			ev, v.frames(x)).Remedy = v.fragSizeFor(s.Initiator.Addr())
	case anyFragmented(x.Responses):
		ev = append(ev, v.fragFacts(negotiated)...)
		vd := v.add(FragmentsDropped, Error, TowardClient, x,
			sprintf("%s response was IP-fragmented and dropped on the way to the client", name), ev, v.frames(x))
		if negotiated && !anySKF(x.Responses) {
			vd.Evidence = append(vd.Evidence, "both peers announced IKEV2_FRAGMENTATION_SUPPORTED, yet the responder sent the response whole (strongSwan \"fragmentation = accept\" never fragments)")
		}
		v.notNegotiated(x)
	default:
		v.add(UnansweredIKEAuth, Error, TowardClient, x,
			sprintf("%s response was sent but the initiator kept retransmitting: it does not reach the client", name), ev, v.frames(x))
	}
}

// silentV1 judges an IKEv1 initiator that kept sending and got no answer:
// the IKEv1 counterpart of UNANSWERED_SA_INIT.
func (v *evaluator) silentV1() {
	s := v.s
	if !v.settled || !s.rolesKnown || s.FromResponder > 0 || s.FromInitiator == 0 {
		return
	}
	sends, retrans := 0, 0
	var first, last time.Time
	for _, x := range s.Exchanges {
		for _, t := range x.Requests {
			sends++
			if t.Retransmission {
				retrans++
			}
			if first.IsZero() || t.Time.Before(first) {
				first = t.Time
			}
			if t.Time.After(last) {
				last = t.Time
			}
		}
	}
	if retrans == 0 {
		return
	}
	v.add(UnansweredIKEv1, Error, TowardServer, nil,
		sprintf("IKEv1 initiator sent %d time(s) over %s and the responder never answered", sends, last.Sub(first).Round(10*time.Millisecond)),
		[]string{sprintf("%d IKEv1 message(s) from %s to %s, %d of them retransmissions; none from %s", sends, s.Initiator, s.Responder, retrans, s.Responder)},
		v.frames(s.Exchanges...))
}

// authNotSeen judges a session whose IKE_SA_INIT completed and whose
// IKE_AUTH request never came into view. Fragment trains from the
// initiator that lack their first fragment are that request, its first
// fragment lost before this point: FRAGMENTS_DROPPED. Otherwise the
// request was lost upstream or never sent: IKE_AUTH_NOT_SEEN.
func (v *evaluator) authNotSeen() {
	s := v.s
	x := s.Find(ike.ExchangeIKESAInit)
	if !v.settled || x == nil || s.Chosen == nil || len(x.Requests) == 0 || len(x.Responses) == 0 {
		return
	}
	for _, y := range s.Exchanges {
		if y.Type != ike.ExchangeIKESAInit {
			return
		}
	}
	resp := x.Responses[len(x.Responses)-1].Time
	for _, t := range x.Responses {
		if t.Time.After(resp) {
			resp = t.Time
		}
	}
	o := v.e.orphans[[2]netip.Addr{s.Initiator.Addr(), s.Responder.Addr()}]
	// Fragment trains are UDP: they are not the IKE_AUTH of an IKE SA
	// that began over TCP.
	if o != nil && !o.Last.Before(resp) && !anyTCP(x.Requests) {
		ev := []string{"IKE_SA_INIT answered: " + v.sendsString(x.Responses), "no IKE_AUTH request seen"}
		ev = append(ev, v.orphanFacts(s.Initiator.Addr(), s.Responder.Addr())...)
		ev = append(ev, "those trains are the IKE_AUTH request: its first IP fragment (with the UDP and IKE headers) was lost before this observation point, and the responder cannot reassemble it (Windows error 809)")
		ev = append(ev, v.fragFacts(false)...)
		v.add(FragmentsDropped, Error, TowardServer, x,
			"IKE_AUTH request was IP-fragmented and its first fragments never arrived: fragments are dropped on the way to the responder", ev, v.frames(x))
		v.notNegotiated(x)
		return
	}
	// Observation must have gone on long enough for an IKE_AUTH to show:
	// initiators send it within milliseconds of the response.
	if v.e.now.Sub(resp) < authGrace {
		return
	}
	v.add(IKEAuthNotSeen, Warning, TowardServer, x,
		"IKE_SA_INIT completed but no IKE_AUTH request was seen: it was lost before this observation point, or the initiator gave up",
		[]string{"IKE_SA_INIT answered: " + v.sendsString(x.Responses), sprintf("nothing more from the initiator in the %s observed after the response", v.e.now.Sub(resp).Round(time.Second))}, v.frames(x))
}

// authGrace is how long after an IKE_SA_INIT response the observation
// must go on before a missing IKE_AUTH counts: far more than an initiator
// takes to send it (milliseconds), less than its first retransmission
// timer would matter.
const authGrace = 2 * time.Second

// errorNotifies turns error notifies in responses into verdicts named after
// the notify.
func (v *evaluator) errorNotifies() {
	s := v.s
	for _, en := range s.Errors {
		x, d := en.Exchange, en.Datagram
		switch {
		case x.Type == ike.ExchangeIKESAInit && (en.Type == ike.NotifyNoProposalChosen || en.Type == ike.NotifyInvalidKEPayload):
			continue // saInit judges these with the offer in hand
		case en.Type == ike.NotifyAuthenticationFailed && len(s.AuthFailed) > 0:
			continue // authFailed reports it
		}
		info, known := errorNotifies[en.Type]
		sev := Error
		if known {
			sev = info.sev
		} else {
			info.means = "an error notify this product has no description for"
		}
		who, peer := "the responder", s.Responder
		if !x.ByInitiator {
			who, peer = "the initiator", s.Initiator
		}
		where := "in the clear"
		if en.Inner {
			where = "inside the encrypted payload (read with the IKE SA's keys)"
		}
		v.add(Code(en.Type.String()), sev, "", x,
			sprintf("%s answered %s with %s: %s", who, x.Type, en.Type, info.means),
			[]string{sprintf("%s response (Message ID %d) from %s (%s) carries %s (notify type %d) %s", x.Type, x.MessageID, peer, who, en.Type, uint16(en.Type), where)},
			d.Frames)
	}
}

// authFailed reports AUTHENTICATION_FAILED seen inside decrypted messages.
func (v *evaluator) authFailed() {
	if len(v.s.AuthFailed) == 0 {
		return
	}
	d := v.s.AuthFailed[0]
	by, dir := "the responder rejected the initiator's authentication", TowardClient
	if !d.Header.Flags.Response() && d.Header.Flags.Initiator() {
		by, dir = "the initiator rejected the responder's authentication", TowardServer
	}
	x := v.s.Find(d.Header.Exchange)
	v.add(AuthenticationFailed, Error, dir, x, "IKE authentication failed: "+by,
		[]string{sprintf("%s %s (Message ID %d) carries AUTHENTICATION_FAILED inside its encrypted payload", d.Header.Exchange, reqResp(d.Header.Flags.Response()), d.Header.MessageID)}, d.Frames)
}

// childCrypto rates the CHILD SA proposal chosen in IKE_AUTH (keys only).
func (v *evaluator) childCrypto() {
	c := v.s.ChildChosen
	if c == nil {
		return
	}
	if sv := c.Strength(); sv.Strength == ike.Weak {
		ev := append([]string{"negotiated CHILD SA proposal: " + suiteString(c)}, weakReasons(sv)...)
		v.add(WeakCrypto, Warning, "", v.s.Find(ike.ExchangeIKEAuth), "negotiated CHILD SA crypto is below the baseline", ev, nil)
	}
}
