package diag

// The facts a verdict cites: sizes, fragments, path limits, suites.

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

func reqResp(resp bool) string {
	if resp {
		return "response"
	}
	return "request"
}

// notNegotiated adds FRAGMENTATION_NOT_NEGOTIATED when the initiator offered
// RFC 7383 and the responder did not take it up.
func (v *evaluator) notNegotiated(x *Exchange) {
	s := v.s
	if s.FragSupported.Initiator && !s.FragSupported.Responder {
		v.add(FragmentationNotNegotiated, Error, "", x,
			"the initiator offered IKE fragmentation (RFC 7383) and the responder did not, so the large message went out IP-fragmented",
			[]string{"IKE_SA_INIT request carried IKEV2_FRAGMENTATION_SUPPORTED; the response did not"}, nil)
	}
}

func (v *evaluator) fragFacts(negotiated bool) []string {
	s := v.s
	switch {
	case negotiated:
		return []string{"IKE fragmentation was negotiated by both peers"}
	case s.FragSupported.Initiator:
		return []string{"the initiator offered IKE fragmentation; the responder did not"}
	case s.Find(ike.ExchangeIKESAInit) != nil:
		return []string{"neither peer announced IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT"}
	}
	return nil
}

// orphanFacts reports fragment trains from a to b whose first fragment
// never arrived: their headers are unknown, but they corroborate loss.
func (v *evaluator) orphanFacts(a, b netip.Addr) []string {
	o := v.e.orphans[[2]netip.Addr{a, b}]
	if o == nil {
		return nil
	}
	return []string{sprintf("%d fragment train(s) from %s to %s (%d bytes) arrived without their first fragment", o.Count, a, b, o.Bytes)}
}

// fragSizeFor returns the fragment-size remedy sized for the path to peer.
func (v *evaluator) fragSizeFor(peer netip.Addr) []string {
	mtu := 0
	if p := v.e.peers[peer]; p != nil {
		mtu = p.Estimate().MTU
	}
	return fragSizeRemedy(mtu)
}

// pathLimit is the largest size the path toward a peer may carry, when
// evidence says larger ones do not pass: the MTU of an ICMP too-big
// message, or one less than the passive upper bound (returned as lost). 0
// when nothing bounds the path from above: the lower bound alone says
// nothing about larger sizes.
func (v *evaluator) pathLimit(a netip.Addr) (limit, lost int) {
	p := v.e.peers[a]
	if p == nil {
		return 0, 0
	}
	if p.TooBig > 0 {
		return p.TooBig, 0
	}
	if u := p.Estimate().Upper; u > 0 {
		return u - 1, u
	}
	return 0, 0
}

// largest returns the largest IP packet of the transmissions' datagrams.
func largest(ts []*Transmission) int {
	n := 0
	datagrams(ts, func(d *Datagram) {
		for _, l := range d.FragLens {
			n = max(n, l)
		}
	})
	return n
}

func lastResponse(x *Exchange) *Datagram {
	for i := len(x.Responses) - 1; i >= 0; i-- {
		if d := x.Responses[i].Datagrams[0]; d.Message != nil {
			return d
		}
	}
	return nil
}

func anyFragmented(ts []*Transmission) bool {
	f := false
	datagrams(ts, func(d *Datagram) { f = f || d.Fragmented() })
	return f
}

// anyIncomplete reports datagrams whose fragments were lost: a train the
// capture merely cut short proves nothing.
func anyIncomplete(ts []*Transmission) bool {
	f := false
	datagrams(ts, func(d *Datagram) { f = f || !d.Complete && d.Incomplete != obs.TrainEndOfInput })
	return f
}

func anySKF(ts []*Transmission) bool {
	f := false
	datagrams(ts, func(d *Datagram) { f = f || d.SKF != nil || d.Header.NextPayload == ike.PayloadEncryptedFragment })
	return f
}

// sendsString summarises the sends of one message: count, sizes, IP
// fragments and timing.
func (v *evaluator) sendsString(ts []*Transmission) string {
	if len(ts) == 0 {
		return "none"
	}
	d := ts[0].Datagrams[0]
	var b strings.Builder
	dir := "request"
	if d.Header.Flags.Response() {
		dir = "response"
	}
	fmt.Fprintf(&b, "%s %s (Message ID %d) of %d bytes", d.Header.Exchange, dir, d.Header.MessageID, messageLen(ts[0]))
	if n := len(ts[0].Datagrams); n > 1 || d.SKF != nil {
		fmt.Fprintf(&b, " in %d IKE fragments", n)
		if d.SKF != nil {
			fmt.Fprintf(&b, " (of %d)", d.SKF.Total)
		}
	}
	ipf := 0
	datagrams(ts[:1], func(d *Datagram) { ipf += d.IPFrags })
	if ipf > len(ts[0].Datagrams) {
		fmt.Fprintf(&b, ", %d IP fragments (%s)", ipf, fragLens(ts[0]))
	}
	if len(ts) > 1 {
		fmt.Fprintf(&b, ", sent %d times over %s", len(ts), ts[len(ts)-1].Time.Sub(ts[0].Time).Round(10*time.Millisecond))
	}
	missing := 0
	datagrams(ts, func(d *Datagram) {
		if !d.Complete {
			missing++
		}
	})
	if missing > 0 {
		fmt.Fprintf(&b, ", %d datagram(s) with IP fragments missing", missing)
	}
	tcp := 0
	for _, t := range ts {
		if t.Datagrams[0].TCP {
			tcp++
		}
	}
	switch {
	case tcp == len(ts):
		b.WriteString(", over TCP (RFC 9329)")
	case tcp > 0:
		fmt.Fprintf(&b, ", %d of the sends over TCP (RFC 9329)", tcp)
	}
	return b.String()
}

func messageLen(t *Transmission) int {
	n := 0
	for _, d := range t.Datagrams {
		n += int(d.Header.Length)
	}
	return n
}

func fragLens(t *Transmission) string {
	var parts []string
	for _, d := range t.Datagrams {
		if !d.Fragmented() {
			continue
		}
		var l []string
		for _, n := range d.FragLens {
			l = append(l, fmt.Sprint(n))
		}
		parts = append(parts, strings.Join(l, "+"))
		if len(parts) == 3 && len(t.Datagrams) > 3 {
			parts = append(parts, "…")
			break
		}
	}
	return strings.Join(parts, ", ") + " bytes"
}

// suiteString renders a proposal as its transforms' names.
func suiteString(p *ike.Proposal) string {
	parts := make([]string, 0, len(p.Transforms))
	for i := range p.Transforms {
		parts = append(parts, p.Transforms[i].String())
	}
	return strings.Join(parts, "/")
}
