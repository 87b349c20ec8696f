package diag

import (
	"container/list"
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

// Transmission is one send of an IKE message as observed: a single datagram,
// or for a message fragmented at the IKE layer (RFC 7383) the SKF datagrams
// sent together, starting with fragment 1.
type Transmission struct {
	Time      time.Time
	Datagrams []*Datagram
	// Retransmission is true for every send after the first of the same
	// message (RFC 7296 §2.1: a retransmission is bitwise identical).
	Retransmission bool
}

// Datagram is one IKE datagram of a transmission.
type Datagram struct {
	Time     time.Time
	Src, Dst netip.AddrPort
	Frames   []int        // capture frames of every copy (0 for live traffic)
	Sources  []obs.Source // where each copy was seen
	Header   ike.Header
	Marker   bool // carried the non-ESP marker (NAT-T port, or an RFC 9329 frame)
	// TCP is set for a message carried in an RFC 9329 frame of a TCP
	// stream: it has no IP fragments and no IP length of its own.
	TCP    bool
	UDPLen int // UDP payload length, -1 when unknown (and over TCP)
	IPLen  int // total bytes on the wire over all IP fragments (IP headers included)
	// IPFrags is the number of IP fragments (1 when not fragmented), and
	// FragLens their IP packet lengths in offset order.
	IPFrags  int
	FragLens []int
	// IPFragmented is true when the datagram was IP-fragmented, also when
	// only one of its fragments was seen (IPFrags is then 1).
	IPFragmented bool
	// IPID is the IP Identification (IPv4) or Fragment header ID (IPv6):
	// kernel drop records are tied to the datagram by it.
	IPID uint32
	// Complete is false when an IP fragment never arrived (at any observation
	// point); Missing says which bytes.
	Complete   bool
	Missing    []obs.Range
	Incomplete obs.IncompleteReason
	// SKF is set when the datagram is an RFC 7383 fragment.
	SKF *ike.EncryptedFragment
	// Message is the decoded message when the whole datagram was captured.
	Message *ike.Message
	// Malformed is set when the whole datagram was captured and is not a
	// well-formed IKEv2 message: it does not decode, or a message after
	// IKE_SA_INIT is not protected by SK or SKF (RFC 7296 §3.14, RFC 7383).
	// Such a "response" proves nothing: it may be anybody's bytes.
	Malformed bool
	// Copies counts the observations of this same datagram: one per
	// observation point, plus duplicates a capture may hold.
	Copies int
	// Decryption is set when keys were given and the datagram is SK or SKF.
	Decryption *Decryption
}

// Fragmented reports whether the datagram was IP-fragmented.
func (d *Datagram) Fragmented() bool { return d.IPFrags > 1 || d.IPFragmented }

// Exchange is one request/response pair (RFC 7296 §1.2), identified by
// Message ID and by which peer sent the request.
type Exchange struct {
	MessageID uint32
	Type      ike.ExchangeType
	// ByInitiator is true when the original initiator of the IKE SA sent the
	// request.
	ByInitiator bool
	Requests    []*Transmission
	Responses   []*Transmission
}

// Answered reports whether any response was seen.
func (x *Exchange) Answered() bool { return len(x.Responses) > 0 }

// Retransmissions counts request sends after the first.
func (x *Exchange) Retransmissions() int { return max(0, len(x.Requests)-1) }

// FirstResponse returns the time of the first response, or zero.
func (x *Exchange) FirstResponse() time.Time {
	if len(x.Responses) == 0 {
		return time.Time{}
	}
	return x.Responses[0].Time
}

// datagrams calls fn for every datagram of the given transmissions.
func datagrams(ts []*Transmission, fn func(*Datagram)) {
	for _, t := range ts {
		for _, d := range t.Datagrams {
			fn(d)
		}
	}
}

// Session is what was seen of one IKE SA (or, for IKEv1, one ISAKMP SA).
type Session struct {
	ID         int
	SPIi, SPIr ike.SPI
	IKEv1      bool
	// RelayLeg marks the proxy's own leg toward a backend (Options.RelayLeg).
	RelayLeg bool
	// Initiator and Responder are the peers' addresses as last seen (ports
	// change when NAT-T moves the SA from 500 to 4500).
	Initiator, Responder netip.AddrPort
	First, Last          time.Time
	Exchanges            []*Exchange
	// Facts from IKE_SA_INIT.
	FragSupported struct{ Initiator, Responder bool }
	Offered       *ike.SA // the initiator's last SA offer
	Chosen        *ike.Proposal
	KEGroup       ike.DHGroup
	InitNotifies  []ike.NotifyType // notifies in IKE_SA_INIT responses
	// Errors are the error notifies (RFC 7296 §3.10.1) seen in responses,
	// in the clear or, with keys, inside SK; at most maxErrors.
	Errors []ErrorNotify
	// Quirks notes departures from RFC 7296 that decoding tolerated.
	Quirks []string
	// FromInitiator and FromResponder count the datagrams each peer of the
	// SA sent, by the roles the IKE header gives (IKEv2: the I flag;
	// IKEv1: the responder cookie, see rolesV1).
	FromInitiator, FromResponder int
	// Responses counts response datagrams (IKEv2 R flag; IKEv1: a
	// responder's message).
	Responses int
	// UDPDatagrams and TCPDatagrams count its IKE datagrams by transport:
	// UDP, or RFC 9329 frames of a TCP stream (tcp.go).
	UDPDatagrams, TCPDatagrams int
	// Changes counts what was added to the session (datagrams, and kernel
	// drops tied to its datagrams); live judging re-evaluates a session
	// when it moves.
	Changes uint64
	// rolesKnown is set for IKEv1 once a message showed who initiated.
	rolesKnown bool
	// Facts only keys reveal: messages carrying AUTHENTICATION_FAILED, and
	// the CHILD SA proposal chosen in the IKE_AUTH response.
	AuthFailed  []*Datagram
	ChildChosen *ike.Proposal
	// dropped counts transmissions not kept once a limit was reached.
	dropped int
	key     sessionKey
	// prev is the key of the latest session between the same two
	// addresses when this one began (hasPrev): a client's attempt over
	// UDP before it fell back to TCP (tcp.go).
	prev    sessionKey
	hasPrev bool
	elem    *list.Element // in Engine.lru
	// seen maps a datagram signature to the datagram, for telling copies
	// from retransmissions.
	seen map[sig]*Datagram
}

// ErrorNotify is an error notify seen in a response.
type ErrorNotify struct {
	Type     ike.NotifyType
	Exchange *Exchange
	Datagram *Datagram
	// Inner is true when the notify was inside an SK payload opened with
	// keys.
	Inner bool
}

// maxErrors bounds the error notifies kept per session: a peer answering
// every retransmission with an error adds nothing after the first few.
const maxErrors = 8

// sig identifies the bytes of one datagram of one message.
type sig struct {
	tcp           bool // a send over TCP is never a copy of one over UDP
	fromInitiator bool
	response      bool
	mid           uint32
	frag          uint16
	length        uint32
	sum           uint64
}

// exchange returns the exchange for a message, creating it.
func (s *Session) exchange(h ike.Header, maxExchanges int) *Exchange {
	byInit := h.Flags.Initiator() != h.Flags.Response()
	for i := len(s.Exchanges) - 1; i >= 0; i-- {
		x := s.Exchanges[i]
		// The exchange type is part of the identity: a peer that numbers
		// IKE_AUTH 0 (broken, or a capture of two SAs under one SPI) must
		// not make it a resent IKE_SA_INIT.
		if x.MessageID == h.MessageID && x.ByInitiator == byInit && x.Type == h.Exchange {
			return x
		}
	}
	if len(s.Exchanges) >= maxExchanges {
		return nil
	}
	x := &Exchange{MessageID: h.MessageID, Type: h.Exchange, ByInitiator: byInit}
	s.Exchanges = append(s.Exchanges, x)
	return x
}

// Find returns the first exchange of type t sent by the initiator.
func (s *Session) Find(t ike.ExchangeType) *Exchange {
	for _, x := range s.Exchanges {
		if x.Type == t && x.ByInitiator {
			return x
		}
	}
	return nil
}

// Established reports whether an IKE_AUTH response was seen and the
// initiator did not keep retransmitting its request after it.
func (s *Session) Established() bool {
	x := s.Find(ike.ExchangeIKEAuth)
	if x == nil {
		// Later exchanges under these SPIs prove an SA exists even when the
		// capture started after IKE_AUTH.
		for _, y := range s.Exchanges {
			if y.Type != ike.ExchangeIKESAInit && y.Type != ike.ExchangeIKEIntermediate && wellAnswered(y) {
				return !s.IKEv1
			}
		}
		return false
	}
	return wellAnswered(x) && !responseLost(s, x) && len(s.AuthFailed) == 0
}

// wellAnswered reports whether an exchange has a response that is not
// malformed: junk under an IKE header, which anybody can send, does not
// establish an SA. (A response captured only in part still counts.)
func wellAnswered(x *Exchange) bool {
	for _, t := range x.Responses {
		for _, d := range t.Datagrams {
			if !d.Malformed {
				return true
			}
		}
	}
	return false
}

// responseLost reports whether the requester kept retransmitting after a
// response was seen, with nothing later in the session to show it arrived.
func responseLost(s *Session, x *Exchange) bool {
	// Without its request in view (observation started after it), there
	// is no retransmission to judge by.
	if !x.Answered() || len(x.Requests) == 0 || tcpAnsweredLast(x) {
		return false
	}
	first := x.FirstResponse()
	after := false
	for _, r := range x.Requests[1:] {
		if r.Time.After(first) {
			after = true
		}
	}
	if !after {
		return false
	}
	for _, y := range s.Exchanges {
		if y.MessageID > x.MessageID && y.ByInitiator == x.ByInitiator && y.Answered() {
			return false
		}
	}
	return true
}
