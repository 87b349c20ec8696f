package ike

import (
	"fmt"
	"strconv"
	"strings"
)

// String renders the header like strongSwan's logs do:
// "IKE_AUTH request 1 I SPIi=… SPIr=…".
func (h *Header) String() string {
	if h.MajorVersion != 2 {
		return fmt.Sprintf("IKEv%d.%d %s message ID %#x flags %#02x SPIi=%s SPIr=%s",
			h.MajorVersion, h.MinorVersion, h.Exchange.IKEv1String(), h.MessageID, uint8(h.Flags), h.SPIi, h.SPIr)
	}
	dir := "request"
	if h.Flags.Response() {
		dir = "response"
	}
	return fmt.Sprintf("%s %s %d %s SPIi=%s SPIr=%s", h.Exchange, dir, h.MessageID, h.Flags, h.SPIi, h.SPIr)
}

// IsIKEv1 reports whether b (an IKE message, after any non-ESP marker)
// starts with an IKEv1 (ISAKMP) header: major version 1 in byte 17.
func IsIKEv1(b []byte) bool { return len(b) >= HeaderLen && b[17]>>4 == 1 }

// Notifies returns the bodies of the message's Notify payloads, in order.
func (m *Message) Notifies() []*Notify {
	var out []*Notify
	for i := range m.Payloads {
		if n, ok := m.Payloads[i].Body.(*Notify); ok {
			out = append(out, n)
		}
	}
	return out
}

// Notify returns the first Notify payload of type t, or nil.
func (m *Message) Notify(t NotifyType) *Notify {
	for i := range m.Payloads {
		if n, ok := m.Payloads[i].Body.(*Notify); ok && n.Type == t {
			return n
		}
	}
	return nil
}

// HasNotify reports whether the message carries a Notify payload of type t
// in the clear.
func (m *Message) HasNotify(t NotifyType) bool { return m.Notify(t) != nil }

// PayloadTypes lists the types of the message's payloads in order (the
// cleartext chain; SK or SKF ends it).
func (m *Message) PayloadTypes() []PayloadType {
	out := make([]PayloadType, len(m.Payloads))
	for i := range m.Payloads {
		out[i] = m.Payloads[i].Type
	}
	return out
}

// SA returns the body of the message's first SA payload, or nil.
func (m *Message) SA() *SA {
	if p := m.Find(PayloadSA); p != nil {
		sa, _ := p.Body.(*SA)
		return sa
	}
	return nil
}

// KE returns the body of the message's first KE payload, or nil.
func (m *Message) KE() *KE {
	if p := m.Find(PayloadKE); p != nil {
		ke, _ := p.Body.(*KE)
		return ke
	}
	return nil
}

// VendorIDs returns the bodies of the message's Vendor ID payloads.
func (m *Message) VendorIDs() []*VendorID {
	var out []*VendorID
	for i := range m.Payloads {
		if v, ok := m.Payloads[i].Body.(*VendorID); ok {
			out = append(out, v)
		}
	}
	return out
}

// Fragment returns the SKF body when the message is an IKE fragment.
func (m *Message) Fragment() *EncryptedFragment {
	if n := len(m.Payloads); n > 0 {
		f, _ := m.Payloads[n-1].Body.(*EncryptedFragment)
		return f
	}
	return nil
}

// String renders the payload for a one-line summary: its abbreviation,
// with the notify type, KE group or fragment numbers where they matter.
func (p *Payload) String() string {
	switch b := p.Body.(type) {
	case *Notify:
		return b.String()
	case *KE:
		return "KE(" + b.Group.String() + ")"
	case *EncryptedFragment:
		return "SKF(" + strconv.Itoa(int(b.Number)) + "/" + strconv.Itoa(int(b.Total)) + ")"
	case *Encrypted:
		return "SK{" + b.NextPayload.String() + "…}"
	case *Delete:
		return "D(" + b.Protocol.String() + ")"
	}
	return p.Type.String()
}

// Summary renders the message in one line, e.g.
// "IKE_SA_INIT request 0 [ SA KE(MODP_2048) Nonce N(NAT_DETECTION_SOURCE_IP) ]".
func (m *Message) Summary() string {
	var sb strings.Builder
	sb.WriteString(ExchangeName(m.Header))
	if m.MajorVersion != 2 {
		fmt.Fprintf(&sb, " (IKEv%d) message ID %#x", m.MajorVersion, m.MessageID)
		return sb.String()
	}
	if m.Flags.Response() {
		sb.WriteString(" response ")
	} else {
		sb.WriteString(" request ")
	}
	sb.WriteString(strconv.FormatUint(uint64(m.MessageID), 10))
	sb.WriteString(" [")
	for i := range m.Payloads {
		sb.WriteByte(' ')
		sb.WriteString(m.Payloads[i].String())
	}
	sb.WriteString(" ]")
	return sb.String()
}
