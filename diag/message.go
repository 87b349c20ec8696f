package diag

// What the engine reads from one IKE message once it is filed under its
// exchange (engine.go place): the error notifies of a response, the
// decrypted contents of SK and SKF datagrams when keys are at hand, the
// facts an IKE_SA_INIT carries, and whether a message is a resend of one
// already seen (sameLength).

import (
	"github.com/ikefrag/ikefrag/ike"
)

// noteErrors records the error notifies of a response.
func noteErrors(s *Session, x *Exchange, g *Datagram, ps []ike.Payload, inner bool) {
	for i := range ps {
		n, ok := ps[i].Body.(*ike.Notify)
		if !ok || !n.Type.IsError() {
			continue
		}
		dup := false
		for _, o := range s.Errors {
			dup = dup || o.Type == n.Type && o.Exchange == x
		}
		if !dup && len(s.Errors) < maxErrors {
			s.Errors = append(s.Errors, ErrorNotify{Type: n.Type, Exchange: x, Datagram: g, Inner: inner})
		}
	}
}

// open decrypts a new SK or SKF datagram when keys are at hand.
func (e *Engine) open(s *Session, x *Exchange, g *Datagram, raw []byte) {
	if e.dec == nil || g.Message == nil {
		return
	}
	if g.Message.Find(ike.PayloadEncrypted) == nil && g.SKF == nil {
		return
	}
	d := e.dec.Open(g.Header, raw)
	g.Decryption = &d
	if d.Inner == nil {
		return
	}
	if innerNotify(d.Inner, ike.NotifyAuthenticationFailed) != nil {
		s.AuthFailed = append(s.AuthFailed, g)
	}
	if g.Header.Flags.Response() {
		noteErrors(s, x, g, d.Inner, true)
	}
	if x.Type == ike.ExchangeIKEAuth && g.Header.Flags.Response() {
		for i := range d.Inner {
			if sa, ok := d.Inner[i].Body.(*ike.SA); ok {
				if c, err := sa.Chosen(); err == nil {
					s.ChildChosen = c
				}
			}
		}
	}
}

// sameLength reports whether g's IKE length (its header's Length field) is
// that of the first datagram of a transmission already in list, under one
// Message ID and exchange type: a resend whose bytes differ but whose size
// does not, such as the message encrypted again with a fresh IV or cut
// again into fragments of the same size. A message re-cut into smaller
// fragments (RFC 7383 §2.5.2) has a shorter first fragment than the
// earlier cut, and does not match it. IKEv1 and IKE_SA_INIT count only identical bytes (the caller's signature
// match): an IKEv1 message of the same length may be the other peer's, and
// an IKE_SA_INIT request with a COOKIE or another KE group is a new message
// (RFC 7296 §1.2, §2.6), not a retransmission.
func sameLength(x *Exchange, list []*Transmission, g *Datagram) bool {
	if g.Header.IsIKEv1() || x.Type == ike.ExchangeIKESAInit {
		return false
	}
	for _, t := range list {
		if t.Datagrams[0].Header.Length == g.Header.Length {
			return true
		}
	}
	return false
}

// learn records facts from IKE_SA_INIT messages.
func (e *Engine) learn(s *Session, x *Exchange, g *Datagram) {
	m := g.Message
	if m == nil || x.Type != ike.ExchangeIKESAInit {
		return
	}
	frag := m.HasNotify(ike.NotifyIKEv2FragmentationSupported)
	if !g.Header.Flags.Response() {
		s.FragSupported.Initiator = frag
		if p := m.Find(ike.PayloadSA); p != nil {
			s.Offered, _ = p.Body.(*ike.SA)
		}
		if p := m.Find(ike.PayloadKE); p != nil {
			if ke, ok := p.Body.(*ike.KE); ok {
				s.KEGroup = ke.Group
			}
		}
		return
	}
	s.FragSupported.Responder = frag
	for _, n := range m.Notifies() {
		s.InitNotifies = append(s.InitNotifies, n.Type)
	}
	if p := m.Find(ike.PayloadSA); p != nil {
		if sa, ok := p.Body.(*ike.SA); ok {
			if c, err := sa.Chosen(); err == nil {
				s.Chosen = c
			}
		}
	}
}
