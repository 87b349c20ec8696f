package diag

// IKEv1 sessions: the engine takes their roles from the header and counts
// each side's messages; it decodes nothing more of IKEv1.

// rolesV1 takes the roles of an IKEv1 SA from the header, never from who
// was seen first: the initiator's first message carries a zero responder
// cookie (RFC 2408 §3.1); a message with a responder cookie whose first
// payload is SA under Message ID 0 is the responder's answer to it (Main
// and Aggressive Mode message 2).
func rolesV1(s *Session, g *Datagram) {
	h := g.Header
	switch {
	case h.SPIr.IsZero():
		s.Initiator, s.Responder, s.rolesKnown = g.Src, g.Dst, true
	case !s.rolesKnown && h.MessageID == 0 && h.NextPayload == 1:
		s.Initiator, s.Responder, s.rolesKnown = g.Dst, g.Src, true
	}
	if g.Src.Addr() == s.Initiator.Addr() && g.Dst.Addr() == s.Responder.Addr() {
		s.FromInitiator++
	} else {
		s.FromResponder++
		s.Responses++
	}
}
