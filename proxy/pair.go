package proxy

// A pair: two ikefragd boxes behind keepalived (VRRP) virtual addresses,
// one on the client side (the proxy's listen address) and one on the
// server side (the backend's route to the clients), with
// proxy.source: client so that the backend sees the client's own address
// whichever box relays it (docs/pair.md).
//
// The box that takes the addresses over knows nothing of the flows the
// other one carried. proxy.adopt: transparent lets it open a flow from the
// first datagram of an IKE SA or ESP SA already running: an IKEv2 message
// of an established IKE SA (both SPIs set, not IKE_SA_INIT, SK or SKF
// first; with a key source, only of an SPI pair the key source knows), or
// an ESP-in-UDP datagram on the NAT-T port. Why that is safe only with
// source: client, and what it costs:
//
//   - The adopted flow sends the backend the datagram it received, from the
//     address and port it came from: what any router on the path would
//     forward. The backend sees nothing a sender could not already send it
//     through this gateway.
//   - The backend answers such a datagram only for an SA it holds: ESP with
//     an unknown SPI or a bad ICV, or a replayed sequence number, is dropped
//     (RFC 4303 §3.4), and an IKE message of an unknown SA gets no answer
//     (RFC 7296 §2.21.4 allows a rate-limited INVALID_IKE_SPI, to the
//     sender's own address, which is where the flow sends it anyway).
//   - The flow starts pending, like a flow of an unverified IKE_SA_INIT:
//     it counts against new_flows_per_address, new_flows_per_prefix and
//     max_clients, is evicted first, and ends after unreplied_timeout
//     unless the backend answers on it. Spoofed sources, which never see
//     the backend's answers nor make it answer, cannot hold a table slot
//     longer, nor displace an established client.
//
// With source: proxy the backend would see the tunnel move to another
// address and port, which neither ESP nor IKE of an established SA
// survive without MOBIKE; adopt is refused there.

import (
	"errors"
	"sync/atomic"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/keys"
)

// Adoption modes (proxy.adopt).
const (
	AdoptOff         = "off"         // only an IKE_SA_INIT request opens a flow (and the rules of admit.go)
	AdoptTransparent = "transparent" // also the first datagram of a running SA, with source: client
)

// minESPLen is the shortest ESP datagram adopted: SPI and sequence number
// (8 bytes, RFC 4303 §2) and at least a 96-bit ICV (RFC 8221 asks for
// integrity on every ESP SA). Shorter is no ESP of an established SA.
const minESPLen = 8 + 12

// firstReservedSPI: ESP SPIs 1 to 255 are reserved (RFC 4303 §2.1) and
// never identify an SA.
const firstReservedSPI = 256

// pairCounters count the adoptions of proxy.adopt.
type pairCounters struct {
	ike, esp atomic.Uint64 // flows opened by adoption, by first datagram
	unknown  atomic.Uint64 // IKE datagrams refused: SPI pair unknown to the key source
}

// adoptable reports whether a datagram of no flow, which did not earn one
// by the rules of admit.go, may open a flow under proxy.adopt:
// transparent, and counts it when it does.
func (p *Proxy) adoptable(l *listener, payload []byte) bool {
	if p.s.Adopt != AdoptTransparent {
		return false
	}
	fr := p.classify(l, payload)
	switch fr.Kind {
	case ike.KindESP:
		if !l.natt || fr.SPI < firstReservedSPI || len(payload) < minESPLen {
			return false
		}
		p.pairCtr.esp.Add(1)
		return true
	case ike.KindIKE:
		if !isRunningSA(fr.IKE) {
			return false
		}
		if p.keys != nil {
			h, _ := ike.ParseHeader(fr.IKE)
			if _, err := p.keys.Lookup(h.SPIi, h.SPIr); errors.Is(err, keys.ErrUnknownSA) {
				p.pairCtr.unknown.Add(1)
				return false
			}
		}
		p.pairCtr.ike.Add(1)
		return true
	}
	return false
}

// isRunningSA reports a well-formed IKEv2 message of an established IKE
// SA: both SPIs non-zero, a Length equal to the datagram, an exchange
// that follows IKE_SA_INIT (RFC 7296 §3.1, RFC 9242, RFC 9370), and an
// Encrypted (SK) or Encrypted Fragment (SKF, RFC 7383) first payload.
func isRunningSA(msg []byte) bool {
	h, err := ike.ParseHeader(msg)
	if err != nil || !h.IsIKEv2() || int(h.Length) != len(msg) || h.SPIi.IsZero() || h.SPIr.IsZero() {
		return false
	}
	switch h.Exchange {
	case ike.ExchangeIKEAuth, ike.ExchangeCreateChildSA, ike.ExchangeInformational, ike.ExchangeIKEIntermediate, ike.ExchangeIKEFollowupKE:
	default:
		return false
	}
	return h.NextPayload == ike.PayloadEncrypted || h.NextPayload == ike.PayloadEncryptedFragment
}
