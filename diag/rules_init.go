package diag

// The IKE_SA_INIT rules: no answer, NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD
// and weak proposals.

import (
	"strings"

	"github.com/ikefrag/ikefrag/ike"
)

func (v *evaluator) saInit() {
	s := v.s
	x := s.Find(ike.ExchangeIKESAInit)
	if x == nil {
		return
	}
	last := lastResponse(x)
	if last == nil {
		drops := v.e.dropsIn(x.Requests)
		if !v.settled && x.Retransmissions() == 0 && len(drops) == 0 || v.initAnsweredOutOfView() {
			return
		}
		n := len(v.out)
		defer func() { v.mark(n, !v.settled && len(drops) == 0, drops) }()
		if anyFragmented(x.Requests) {
			v.add(FragmentsDropped, Error, TowardServer, x,
				"IKE_SA_INIT request was IP-fragmented and never answered (it cannot be fragmented at the IKE layer)",
				[]string{v.sendsString(x.Requests), "no response"}, v.frames(x)).Remedy =
				[]string{pathAllowFragments, `Initiator: offer a smaller key exchange in IKE_SA_INIT (one KE group; post-quantum KEs belong in IKE_INTERMEDIATE, RFC 9242)`}
			return
		}
		vd := v.add(UnansweredSAInit, Error, TowardServer, x, "IKE_SA_INIT was never answered",
			[]string{v.sendsString(x.Requests), "no response seen"}, v.frames(x))
		if anyTCP(x.Requests) {
			vd.Remedy = remediesTCP[UnansweredSAInit]
		}
		return
	}
	if n := last.Message.Notify(ike.NotifyNoProposalChosen); n != nil {
		ev := []string{"the responder answered NO_PROPOSAL_CHOSEN"}
		if s.Offered != nil {
			for i := range s.Offered.Proposals {
				p := &s.Offered.Proposals[i]
				ev = append(ev, sprintf("offered proposal %d: %s", p.Number, suiteString(p)))
			}
		}
		v.add(NoProposalChosen, Error, "", x, "no proposal acceptable to the responder (Windows error 800 with Always On VPN)", ev, v.frames(x)).Remedy = noProposalRemedy(s.Offered)
	}
	if n, d := invalidKE(x); n != nil {
		g, _ := n.AcceptedGroup()
		sev, retry := Warning, "no retry with that group was seen"
		switch {
		case v.retriedInSession(d, g):
			// RFC 7296 §1.2: the retry may keep the initiator's SPI
			// (strongSwan does), so it lands in this same session.
			sev, retry = Info, "the initiator retried with that group under the same SPI and was answered: one extra round trip"
		case v.retrySucceeded(g):
			sev, retry = Info, "the initiator retried with that group and was answered"
		}
		ev := []string{sprintf("initiator sent KE group %s; responder asked for %s", v.sentKE(d), g), retry}
		v.add(InvalidKEPayload, sev, "", x, sprintf("responder wants DH group %s", g), ev, v.frames(x))
	}
	if c := s.Chosen; c != nil {
		sv := c.Strength()
		if sv.Strength == ike.Weak || sv.Strength == ike.Unknown {
			ev := append([]string{"negotiated IKE SA proposal: " + suiteString(c)}, weakReasons(sv)...)
			v.add(WeakCrypto, Warning, "", x, "negotiated IKE crypto is below the baseline AES-128 / SHA-256 / DH 14", ev, v.frames(x))
		}
	}
}

func weakReasons(sv ike.Verdict) []string {
	var out []string
	for _, r := range sv.Reasons {
		l := strings.ToLower(r)
		if strings.Contains(l, "weak") || strings.Contains(l, "deprecated") || strings.Contains(l, "broken") || strings.Contains(l, "no ") {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		out = sv.Reasons
	}
	return out
}

// initAnsweredOutOfView reports whether the IKE_SA_INIT response, though
// not seen, arrived: the initiator sent a later exchange under the
// responder's SPI, which it learns only from that response.
func (v *evaluator) initAnsweredOutOfView() bool {
	for _, y := range v.s.Exchanges {
		if y.Type == ike.ExchangeIKESAInit {
			continue
		}
		for _, t := range y.Requests {
			if d := t.Datagrams[0]; d.Header.Flags.Initiator() && !d.Header.SPIr.IsZero() {
				return true
			}
		}
	}
	return false
}

// invalidKE returns the first INVALID_KE_PAYLOAD notify of an IKE_SA_INIT
// exchange's responses and the datagram that carried it.
func invalidKE(x *Exchange) (*ike.Notify, *Datagram) {
	for _, t := range x.Responses {
		if d := t.Datagrams[0]; d.Message != nil {
			if n := d.Message.Notify(ike.NotifyInvalidKEPayload); n != nil {
				return n, d
			}
		}
	}
	return nil, nil
}

// sentKE returns the KE group of the request answered by INVALID_KE_PAYLOAD
// d: the latest request before it.
func (v *evaluator) sentKE(d *Datagram) ike.DHGroup {
	x := v.s.Find(ike.ExchangeIKESAInit)
	if t := lastBefore(x.Requests, d.Time); t != nil {
		if m := t.Datagrams[0].Message; m != nil {
			if p := m.Find(ike.PayloadKE); p != nil {
				if ke, ok := p.Body.(*ike.KE); ok {
					return ke.Group
				}
			}
		}
	}
	return v.s.KEGroup
}

// retriedInSession reports whether, after INVALID_KE_PAYLOAD d, the same
// session got an IKE_SA_INIT response choosing group g.
func (v *evaluator) retriedInSession(d *Datagram, g ike.DHGroup) bool {
	c := v.s.Chosen
	if c == nil {
		return false
	}
	t := c.Find(ike.TransformDH)
	return t != nil && ike.DHGroup(t.ID) == g
}

// retrySucceeded reports whether another session between the same peers got
// an IKE_SA_INIT answer choosing group g.
func (v *evaluator) retrySucceeded(g ike.DHGroup) bool {
	for _, o := range v.e.sessions {
		if o == v.s || o.Initiator.Addr() != v.s.Initiator.Addr() || o.Responder.Addr() != v.s.Responder.Addr() {
			continue
		}
		if o.Chosen != nil {
			if t := o.Chosen.Find(ike.TransformDH); t != nil && ike.DHGroup(t.ID) == g {
				return true
			}
		}
	}
	return false
}
