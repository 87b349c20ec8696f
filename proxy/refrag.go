package proxy

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

var inputSeed = maphash.MakeSeed()

// maxInputs bounds the datagram hashes remembered per message.
const maxInputs = 512

// encryptedPayload walks the unprotected payloads of an IKEv2 message to
// its SK or SKF payload and returns the type and offset.
func encryptedPayload(msg []byte, first ike.PayloadType) (ike.PayloadType, int, bool) {
	off, t := ike.HeaderLen, first
	for i := 0; i < ike.MaxPayloads; i++ {
		switch t {
		case ike.PayloadEncrypted:
			return t, off, len(msg)-off >= 4
		case ike.PayloadEncryptedFragment:
			return t, off, len(msg)-off >= ike.SKFHeaderLen
		case ike.PayloadNone:
			return 0, 0, false
		}
		if len(msg)-off < 4 {
			return 0, 0, false
		}
		plen := int(binary.BigEndian.Uint16(msg[off+2:]))
		if plen < 4 || plen > len(msg)-off {
			return 0, 0, false
		}
		t = ike.PayloadType(msg[off])
		off += plen
	}
	return 0, 0, false
}

// skfNumbers reads Fragment Number and Total Fragments (0, 0 for SK).
func skfNumbers(msg []byte, typ ike.PayloadType, off int) (number, total uint16) {
	if typ != ike.PayloadEncryptedFragment {
		return 0, 0
	}
	return binary.BigEndian.Uint16(msg[off+4:]), binary.BigEndian.Uint16(msg[off+6:])
}

// responseFlags are the I and R flags of the response to a request with
// flags f: R set, I flipped (the other peer sends it).
func responseFlags(f ike.Flags) ike.Flags {
	return (f&ike.FlagInitiator ^ ike.FlagInitiator) | ike.FlagResponse
}

// halfOpenRefused reports an IKE_SA_INIT request that would start a new
// IKE SA for a client that has half_open_per_client half-open ones: the
// backend sees all clients from the proxy's address, so its own per-IP
// limit would let one client block them all (RFC 7296 §2.6).
func (p *Proxy) halfOpenRefused(ca netip.Addr, fr ike.Framing) bool {
	if fr.Kind != ike.KindIKE {
		return false
	}
	h, err := ike.ParseHeader(fr.IKE)
	if err != nil || !h.IsIKEv2() || h.Exchange != ike.ExchangeIKESAInit || h.Flags.Response() || !h.SPIr.IsZero() {
		return false
	}
	return p.sas.halfOpenOf(ca) >= p.s.HalfOpenPerClient && !p.sas.known(ca, h.SPIi)
}

// clientIKE inspects an IKE message from a client; the datagram is
// forwarded unchanged whatever it finds.
func (p *Proxy) clientIKE(f *Flow, fr ike.Framing, now time.Time) {
	msg := fr.IKE
	h, err := ike.ParseHeader(msg)
	if err != nil || !h.IsIKEv2() {
		return
	}
	if h.Flags.Response() {
		// the client's answer to a backend's IKE SA rekey completes it
		p.watchRekey(f, h, msg, true, now)
		return
	}
	ca := f.key.client.Addr()
	if h.Exchange == ike.ExchangeIKESAInit && h.SPIr.IsZero() {
		// Only a well-formed request is one the backend must answer:
		// health and IKE SA state come from nothing else.
		if !isInitRequest(msg) || !h.IsIKEv2() {
			return
		}
		m, err := ike.Decode(msg)
		if err != nil {
			return
		}
		sa := p.sas.create(saKey{ca, h.SPIi}, f.be, now)
		sa.mu.Lock()
		sa.initFlow = f
		sa.fragReq = m.HasNotify(ike.NotifyIKEv2FragmentationSupported)
		if !sa.initPending {
			sa.initPending, sa.initAt = true, now
		}
		sa.mu.Unlock()
		f.cl.mu.Lock()
		f.cl.backend = f.be
		f.cl.mu.Unlock()
		return
	}
	typ, off, ok := encryptedPayload(msg, h.NextPayload)
	if !ok {
		return
	}
	if number, _ := skfNumbers(msg, typ, off); number > 1 {
		// RFC 7383 §2.6.1: only fragment 1 of a retransmitted request
		// makes the responder resend; the others tell nothing new.
		return
	}
	sa := p.saOf(f, h.SPIi, h.SPIr, now)
	if sa == nil {
		return
	}
	p.watchRekey(f, h, msg, true, now)
	hash := maphash.Bytes(inputSeed, msg)
	sa.mu.Lock()
	retrans := sa.reqValid && sa.reqMID == h.MessageID && sa.reqHash == hash
	sa.reqMID, sa.reqHash, sa.reqValid = h.MessageID, hash, true
	sa.mu.Unlock()
	if !retrans {
		return
	}
	for _, c := range []*counters{&p.total, &f.be.ctr, &f.cl.ctr} {
		c.clientRetransmits.Add(1)
	}
	if !p.s.stepDown || !p.keyed {
		return
	}
	rk := sk.KeyOf(&h)
	rk.Flags = responseFlags(h.Flags)
	st := p.msgs.get(rk, ca, false)
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.mode != modeRecut || st.out == nil || st.dec == nil {
		return
	}
	// The response we cut was lost: the next resend of the backend gets
	// a smaller cut, one rung down (RFC 7383 §2.5.2).
	next, ok := nextRung(p.s.ladder, st.outMTU, ca.Is6())
	if !ok {
		return
	}
	st.stepDown = true
	f.cl.pmtu.mu.Lock()
	f.cl.pmtu.stepDown.setMin(next, now, p.s.PMTUExpiry)
	f.cl.pmtu.stepDowns++
	f.cl.pmtu.mu.Unlock()
	p.log.Info("proxy: client retransmitted, stepping down", "client", ca, "message_id", h.MessageID,
		"from", st.outMTU, "to", next)
}

// learnInitResponse records what an IKE_SA_INIT response says.
func (p *Proxy) learnInitResponse(f *Flow, h ike.Header, msg []byte, now time.Time) {
	sa := p.sas.get(f.key.client.Addr(), h.SPIi, ike.SPI{}, now)
	if sa == nil {
		return
	}
	// Any response answers the request (health); only one whose payloads
	// decode can complete the exchange.
	m, err := ike.Decode(msg)
	sa.mu.Lock()
	sa.initPending = false
	// A response with an SA payload completes the exchange; one without
	// (COOKIE, INVALID_KE_PAYLOAD) is followed by another request.
	complete := err == nil && m.Find(ike.PayloadSA) != nil && !h.SPIr.IsZero()
	if complete {
		sa.fragResp = m.HasNotify(ike.NotifyIKEv2FragmentationSupported)
	}
	sa.mu.Unlock()
	if !h.SPIr.IsZero() {
		p.sas.setSPIr(sa, h.SPIr)
	}
	if complete {
		p.sas.setHalfOpen(sa, now)
		p.promote(f, levelHalfOpen, now)
	}
}

// learnBeyondInit records a backend message of an IKE SA after
// IKE_SA_INIT: the IKE SA is no longer half-open and the flow is
// established.
func (p *Proxy) learnBeyondInit(f *Flow, h ike.Header, now time.Time) {
	if h.IsIKEv2() && !h.SPIr.IsZero() {
		if sa := p.saOf(f, h.SPIi, h.SPIr, now); sa != nil {
			p.sas.setAuthed(sa)
			sa.mu.Lock()
			old := sa.initFlow
			sa.initFlow = nil
			sa.mu.Unlock()
			if old != nil && old != f {
				// the client answered the IKE_SA_INIT response (the
				// backend went on with it): its first flow is the
				// client's too, and ends only when idle
				p.promote(old, levelEstablished, now)
			}
		}
	}
	p.promote(f, levelEstablished, now)
}

// backendIKE decides what an IKE datagram from a backend becomes for the
// client: relay it (relay true), or send out instead (nothing while a
// fragment set is incomplete or a resend is already answered).
func (p *Proxy) backendIKE(f *Flow, payload []byte, fr ike.Framing, now time.Time) (out [][]byte, relay bool) {
	msg := fr.IKE
	h, err := ike.ParseHeader(msg)
	if err == nil && h.IsIKEv1() && int(h.Length) == len(msg) {
		// ISAKMP has no response flag: any message from the backend
		// means it talks to this client
		p.promote(f, levelEstablished, now)
	}
	if err != nil || !h.IsIKEv2() || int(h.Length) != len(msg) {
		return nil, true
	}
	if h.Exchange == ike.ExchangeIKESAInit {
		if h.Flags.Response() {
			p.learnInitResponse(f, h, msg, now)
		}
		return nil, true
	}
	p.learnBeyondInit(f, h, now)
	p.watchRekey(f, h, msg, false, now)
	typ, off, ok := encryptedPayload(msg, h.NextPayload)
	if !ok {
		return nil, true
	}
	number, total := skfNumbers(msg, typ, off)
	if typ == ike.PayloadEncryptedFragment && (number == 0 || total == 0 || number > total) {
		return nil, true
	}
	ca := f.key.client.Addr()
	size := ipOverhead(ca) + 8 + len(payload)
	p.askObserver(f.cl)
	info := f.cl.pmtu.estimate(p.s, ca, now)
	mtu := info.MTU
	key := sk.KeyOf(&h)
	st := p.msgs.get(key, ca, false)
	if st == nil {
		if typ == ike.PayloadEncrypted && size <= mtu {
			return nil, true
		}
		// SKF sets get a state even when they fit, so that a later cut
		// of the same message knows a set went out unchanged.
		st = p.msgs.get(key, ca, true)
	}
	st.mu.Lock()
	defer st.mu.Unlock()

	switch st.mode {
	case 0:
		if size <= mtu {
			st.mode, st.relayed = modeRelay, total
			return nil, true
		}
		if !p.canCut(f, h, now) {
			st.mode, st.relayed = modeRelay, total
			p.relayOversize(f, now, mtu)
			return nil, true
		}
		st.mode, st.origTotal = modeRecut, total
	case modeRelay:
		if size <= mtu {
			return nil, true
		}
		// The estimate dropped since the first datagram of this message
		// went out unchanged (ICMP, step-down): cut it, with a Total
		// Fragments above the relayed set's so the client restarts.
		if !p.canCut(f, h, now) {
			p.relayOversize(f, now, mtu)
			return nil, true
		}
		st.mode, st.origTotal = modeRecut, total
		clear(st.inputs)
	}

	sa, err := p.keys.Lookup(h.SPIi, h.SPIr)
	if err != nil {
		p.count(f, func(c *counters) { c.keyMisses.Add(1) })
		return p.fallback(f, st, nil, total, now, mtu), true
	}
	hash := maphash.Bytes(inputSeed, msg)
	if n, seen := st.inputs[hash]; seen {
		return p.resend(f, st, sa, n, f.natt, now), false
	}
	if len(st.inputs) < maxInputs {
		st.inputs[hash] = number
	}
	res := p.reasm.Add(sa, msg)
	switch res.Status {
	case sk.StatusStored:
		if len(st.raw) < int(total) {
			st.raw = append(st.raw, append([]byte(nil), payload...))
		}
		p.drop(f, DropReassembly, 1)
		return nil, false
	case sk.StatusRetransmit:
		return p.resend(f, st, sa, number, f.natt, now), false
	case sk.StatusDropped:
		if res.Drop == sk.DropDuplicate {
			p.drop(f, DropSuppressed, 1)
			return nil, false
		}
		// Not ours to judge (bad keys, a corrupt datagram): relay it
		// and what was held, and stop cutting this message.
		p.log.Debug("proxy: cannot open backend message, relaying", "client", ca, "reason", res.Drop)
		return p.fallback(f, st, payload, total, now, mtu), false
	}
	t := sk.Target{MTU: mtu, IPv6: ca.Is6(), Marker: f.natt}
	o, err := p.frag.Fragment(sa, res.Message, t)
	for i := 0; err == nil && st.relayed > 0 && o.Total <= int(st.relayed) && i < 4; i++ {
		o, err = p.frag.StepDown(sa, res.Message, t)
	}
	if err != nil {
		p.log.Debug("proxy: cannot cut message, relaying", "client", ca, "err", err)
		return p.fallback(f, st, payload, total, now, mtu), false
	}
	if p.s.stepDown {
		st.dec = res.Message
		p.msgs.account(st, len(res.Message.Payloads)+len(res.Message.Unprotected))
	}
	st.out, st.outMTU, st.raw = o, mtu, nil
	p.count(f, func(c *counters) {
		c.refragmented.Add(1)
		c.fragments.Add(uint64(len(o.Datagrams)))
	})
	return o.Datagrams, false
}

// canCut reports whether the proxy may re-fragment a message of this IKE
// SA, counting why not.
func (p *Proxy) canCut(f *Flow, h ike.Header, now time.Time) bool {
	if p.s.Refragment == RefragmentOff {
		return false
	}
	sa := p.saOf(f, h.SPIi, h.SPIr, now)
	negotiated := false
	if sa != nil {
		sa.mu.Lock()
		negotiated = sa.negotiated()
		sa.mu.Unlock()
	}
	if !negotiated {
		// RFC 7383 §2.4: never send SKF to a peer that did not agree
		p.count(f, func(c *counters) { c.notNegotiated.Add(1) })
		return false
	}
	if p.keys == nil {
		p.count(f, func(c *counters) { c.keyMisses.Add(1) })
		return false
	}
	return true
}

// resend answers a backend retransmission: the cached cut, byte for byte,
// or a smaller cut when the client retransmitted meanwhile (step-down).
// Only fragment 1 (or the SK message) triggers it; the rest of the burst
// is already answered.
func (p *Proxy) resend(f *Flow, st *msgState, sa *sk.SA, number uint16, marker bool, now time.Time) [][]byte {
	if st.out == nil || number > 1 {
		p.drop(f, DropSuppressed, 1)
		return nil
	}
	if st.stepDown && st.dec != nil {
		st.stepDown = false
		ca := f.key.client.Addr()
		mtu := f.cl.pmtu.estimate(p.s, ca, now).MTU
		o, err := p.frag.StepDown(sa, st.dec, sk.Target{MTU: mtu, IPv6: ca.Is6(), Marker: marker})
		if err == nil {
			p.log.Info("proxy: re-cut after client retransmission", "client", ca, "mtu", mtu,
				"total_before", st.out.Total, "total_after", o.Total)
			st.out, st.outMTU = o, mtu
			p.count(f, func(c *counters) {
				c.stepDowns.Add(1)
				c.fragments.Add(uint64(len(o.Datagrams)))
			})
			return o.Datagrams
		}
		p.log.Debug("proxy: step-down failed, replaying", "client", ca, "err", err)
	}
	p.count(f, func(c *counters) { c.replays.Add(1) })
	return st.out.Datagrams
}

// fallback stops cutting a message and relays what was held back plus
// extra (a fragment of a set of total).
func (p *Proxy) fallback(f *Flow, st *msgState, extra []byte, total uint16, now time.Time, mtu int) [][]byte {
	st.mode = modeRelay
	// a later cut of this message must outnumber what went out unchanged
	st.relayed = max(st.relayed, total)
	out := st.raw
	st.raw = nil
	if extra != nil {
		out = append(out, extra)
	}
	p.relayOversize(f, now, mtu)
	return out
}

// relayOversize counts a datagram relayed although it exceeds the
// client's path MTU and, with route_mtu, makes the kernel fragment it
// once at that size.
func (p *Proxy) relayOversize(f *Flow, now time.Time, mtu int) {
	p.count(f, func(c *counters) { c.oversize.Add(1) })
	if p.routes != nil {
		p.route(f.cl, mtu)
	}
}

func (p *Proxy) count(f *Flow, fn func(*counters)) {
	fn(&p.total)
	fn(&f.be.ctr)
	fn(&f.cl.ctr)
}
