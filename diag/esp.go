package diag

import (
	"encoding/binary"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

// ESP after the tunnel is up. ESP is not kept packet by packet: per
// direction between two peers the engine keeps a few counters and the
// recent datagrams still waiting for traffic back. What it looks for is the
// post-connect path-MTU black hole: inner packets that make ESP (or
// ESP-in-UDP, RFC 3948) datagrams larger than the path, which the sender
// IP-fragments and something on the path drops. Evidence, strongest first:
// a local kernel drop of their fragments, an ICMP too-big quoting them,
// fragment trains that never completed, and fragmented datagrams never
// followed by traffic back while unfragmented ones were.

// espKey is one direction of ESP between two addresses.
type espKey struct{ src, dst netip.Addr }

// espSent is a datagram waiting to see traffic back.
type espSent struct {
	at         time.Time
	size       int
	fragmented bool
	frames     []int
}

// espFlow is what one direction of ESP showed.
type espFlow struct {
	src, dst netip.AddrPort
	udp      bool // ESP-in-UDP (NAT-T port)
	spi      uint32
	v6       bool
	first    time.Time
	last     time.Time
	lastID   uint32 // IP ID of the last datagram, to tell copies
	n        int    // datagrams
	// Fragmented datagrams: how many, how many were followed by traffic
	// back, how many were not, how many trains never completed (or came
	// without their first fragment).
	frag, fragAnswered, fragUnanswered, incomplete int
	// Unfragmented datagrams followed by traffic back, and the largest.
	unfragAnswered, largestAnswered int
	// largestUnfrag is the largest unfragmented datagram seen.
	largestUnfrag int
	// firstFrag is the largest first-fragment IP length: the sender's own
	// link MTU as its stack saw it.
	firstFrag int
	// tooBig is the smallest MTU an ICMP too-big quoting this direction's
	// ESP reported, from whom and how often.
	tooBig, tooBigSeen int
	tooBigFrom         netip.Addr
	pending            []espSent
	drops              []string // kernel drops of its fragments, cited
	frames             []int    // frames of lost datagrams, for the verdict
}

// espReplyWindow: a datagram is taken as answered when traffic comes back
// the other way within this time. A request/response pair inside the
// tunnel (ping, a TCP segment and its ACK) takes one round trip; a
// second is generous for a path whose MTU is the problem, not its delay.
const espReplyWindow = time.Second

// maxESPPending bounds the datagrams of one direction waiting for traffic
// back; older ones are judged unanswered early, which only ever adds to
// the unanswered count of a flow that is not answering anyway.
const maxESPPending = 64

// addESP takes one ESP or ESP-in-UDP datagram.
func (e *Engine) addESP(d *obs.Datagram, udp bool, spi uint32) {
	e.stats.ESP++
	k := espKey{d.Src.Addr(), d.Dst.Addr()}
	f := e.esp[k]
	if f == nil {
		if len(e.esp) >= e.opt.MaxSessions {
			return
		}
		f = &espFlow{src: d.Src, dst: d.Dst, udp: udp, spi: spi, v6: d.IPVersion == 6, first: d.Time}
		e.esp[k] = f
	}
	// The same datagram seen again at once (a router capturing on both
	// interfaces) is a copy, not another datagram.
	if d.IPID != 0 && d.IPID == f.lastID && d.Time.Sub(f.last) <= e.opt.CopyWindow && !d.Time.Before(f.last) {
		e.stats.Copies++
		return
	}
	f.lastID = d.IPID
	f.n++
	f.last = d.Time
	if udp {
		f.udp = true
	}
	if spi != 0 {
		f.spi = spi
	}
	// Traffic this way answers the other direction's latest datagram.
	if r := e.esp[espKey{k.dst, k.src}]; r != nil {
		e.answerESP(r, d.Time)
	}
	e.expireESP(f, d.Time)
	changed := false
	s := espSent{at: d.Time}
	if d.Frame != 0 {
		s.frames = []int{d.Frame}
	}
	if len(d.Frags) > 0 {
		s.fragmented = true
		f.frag++
		changed = true
		for _, fr := range d.Frags {
			s.size += fr.IPLen
		}
		if d.Frags[0].Offset == 0 && d.Complete {
			f.firstFrag = max(f.firstFrag, d.Frags[0].IPLen)
		}
		if !d.Complete && d.Incomplete != obs.TrainEndOfInput {
			f.incomplete++
			f.addFrames(s.frames)
		}
		if len(e.espByID) >= maxDrops {
			clear(e.espByID)
		}
		e.espByID[dropKey{d.Src.Addr(), d.Dst.Addr(), d.IPID}] = f
		for _, dr := range e.dropIndex[dropKey{d.Src.Addr(), d.Dst.Addr(), d.IPID}] {
			f.addDrop(dr)
		}
	} else {
		s.size = d.Length + 8 + ipHeaderLen(d)
		if !udp {
			s.size = len(d.Payload) + ipHeaderLen(d)
		}
		f.largestUnfrag = max(f.largestUnfrag, s.size)
	}
	if len(f.pending) >= maxESPPending {
		e.judgeESP(f, f.pending[0], false)
		f.pending = f.pending[1:]
	}
	f.pending = append(f.pending, s)
	if changed {
		e.touchESP(k)
	}
}

func (f *espFlow) addFrames(fr []int) {
	if len(f.frames) < 64 {
		f.frames = append(f.frames, fr...)
	}
}

func (f *espFlow) addDrop(d *obs.Drop) {
	if len(f.drops) < maxCited {
		f.drops = append(f.drops, citeDrop(d))
	}
}

// answerESP marks the latest datagram of f sent before t, within the reply
// window, as answered.
func (e *Engine) answerESP(f *espFlow, t time.Time) {
	for i := len(f.pending) - 1; i >= 0; i-- {
		p := f.pending[i]
		if p.at.After(t) {
			continue
		}
		if t.Sub(p.at) <= espReplyWindow {
			e.judgeESP(f, p, true)
			f.pending = append(f.pending[:i], f.pending[i+1:]...)
		}
		return
	}
}

// expireESP judges the datagrams that waited longer than the reply window
// by time now.
// expireESPAll judges, by the engine's clock, the ESP sends of every flow
// still waiting for traffic back.
func (e *Engine) expireESPAll() {
	for _, f := range e.esp {
		e.expireESP(f, e.now)
	}
}

func (e *Engine) expireESP(f *espFlow, now time.Time) {
	n := 0
	for _, p := range f.pending {
		if now.Sub(p.at) <= espReplyWindow {
			break
		}
		e.judgeESP(f, p, false)
		n++
	}
	if n > 0 {
		f.pending = append(f.pending[:0], f.pending[n:]...)
	}
}

func (e *Engine) judgeESP(f *espFlow, p espSent, answered bool) {
	switch {
	case p.fragmented && answered:
		f.fragAnswered++
	case p.fragmented:
		f.fragUnanswered++
		f.addFrames(p.frames)
		e.touchESP(espKey{f.src.Addr(), f.dst.Addr()})
	case answered:
		f.unfragAnswered++
		f.largestAnswered = max(f.largestAnswered, p.size)
	}
}

// touchESP marks the IKE session between the flow's peers changed, so
// live judging looks at it again.
func (e *Engine) touchESP(k espKey) {
	if s := e.pairLatest[pairOf(k.src, k.dst)]; s != nil {
		s.Changes++
	}
}

// espDrop files a kernel drop of an ESP fragment. Live, the observer
// hands ESP to no one (it only counts it), so a drop is often the only
// record of an ESP datagram: a dropped IP fragment of ESP, or of UDP on
// the NAT-T port, between the peers of an IKE SA in view, and not part of
// an IKE datagram, is taken as the tunnel's.
func (e *Engine) espDrop(d *obs.Drop) {
	k := dropKey{d.Src, d.Dst, d.IPID}
	f := e.espByID[k]
	if f == nil {
		if _, ike := e.bySig[k]; !d.Fragment || ike || e.pairLatest[pairOf(d.Src, d.Dst)] == nil {
			return
		}
		natt := d.SrcPort == e.opt.Ports.NATT || d.DstPort == e.opt.Ports.NATT
		if d.Proto != protoESP && !(d.Proto == protoUDP && (natt || d.FragOffset > 0)) {
			return
		}
		if d.Proto == protoUDP && d.FragOffset > 0 && e.esp[espKey{d.Src, d.Dst}] == nil && !e.nattBetween(d.Src, d.Dst) {
			// A non-first fragment carries no port: count it only between
			// peers whose IKE SA moved to the NAT-T port (where
			// kernel-libipsec and NAT-T put ESP).
			return
		}
		f = e.esp[espKey{d.Src, d.Dst}]
		if f == nil {
			if len(e.esp) >= e.opt.MaxSessions {
				return
			}
			f = &espFlow{udp: d.Proto == protoUDP, v6: d.Src.Is6(), first: d.Time,
				src: netip.AddrPortFrom(d.Src, d.SrcPort), dst: netip.AddrPortFrom(d.Dst, d.DstPort)}
			if d.Proto == protoUDP && d.SrcPort == 0 {
				f.src, f.dst = netip.AddrPortFrom(d.Src, e.opt.Ports.NATT), netip.AddrPortFrom(d.Dst, e.opt.Ports.NATT)
			}
			e.esp[espKey{d.Src, d.Dst}] = f
		}
		if len(e.espByID) >= maxDrops {
			clear(e.espByID)
		}
		e.espByID[k] = f
		f.n++
		f.frag++
		f.last = d.Time
	}
	f.addDrop(d)
	if d.FragOffset > 0 {
		// The first fragment carried FragOffset bytes of data: its IP
		// length is the sender's own path MTU (rounded down to 8 bytes).
		hdr := 20
		if d.Src.Is6() {
			hdr = 48 // IPv6 header and Fragment header
		}
		if n := d.FragOffset + hdr; f.firstFrag == 0 || n < f.firstFrag {
			f.firstFrag = n
		}
	}
	e.touchESP(espKey{d.Src, d.Dst})
}

// nattBetween reports whether the latest IKE SA between a and b runs on
// the NAT-T port.
func (e *Engine) nattBetween(a, b netip.Addr) bool {
	s := e.pairLatest[pairOf(a, b)]
	return s != nil && (s.Initiator.Port() == e.opt.Ports.NATT || s.Responder.Port() == e.opt.Ports.NATT)
}

// espTooBig files an ICMP too-big message quoting ESP or ESP-in-UDP.
func (e *Engine) espTooBig(t *obs.ICMPTooBig) {
	if t.OrigProto != protoESP && !(t.OrigProto == protoUDP && (t.OrigSrcPort == e.opt.Ports.NATT || t.OrigDstPort == e.opt.Ports.NATT)) {
		return
	}
	f := e.esp[espKey{t.OrigSrc, t.OrigDst}]
	if f == nil || t.MTU <= 0 {
		return
	}
	f.tooBigSeen++
	if f.tooBig == 0 || t.MTU < f.tooBig {
		f.tooBig, f.tooBigFrom = t.MTU, t.From
	}
	e.touchESP(espKey{t.OrigSrc, t.OrigDst})
}

// pairOf orders two addresses, to key the latest IKE session between them.
func pairOf(a, b netip.Addr) [2]netip.Addr {
	if b.Less(a) {
		a, b = b, a
	}
	return [2]netip.Addr{a, b}
}

// espSPI reads the SPI of an ESP payload (RFC 4303 §2.1), 0 when short.
func espSPI(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// espOverhead is the per-packet cost of ESP for one SA.
type espOverhead struct {
	iv, icv, block int
	what           string
}

// overheadOf derives the ESP overhead from the CHILD SA's proposal when the
// keys revealed it, else assumes AES-CBC with HMAC-SHA-256-128, the
// costlier of the common suites (AES-GCM costs 20 bytes less).
func overheadOf(c *ike.Proposal) espOverhead {
	o := espOverhead{iv: 16, icv: 16, block: 16, what: "CHILD SA cipher not known (no keys): assumed AES-CBC with HMAC-SHA-256-128 (IV 16, ICV 16, 16-byte blocks); AES-GCM would allow 20 bytes more"}
	if c == nil {
		return o
	}
	t := c.Find(ike.TransformENCR)
	if t == nil {
		return o
	}
	switch ike.EncrID(t.ID) {
	case ike.EncrAESCBC, ike.EncrCamelliaCBC:
		o = espOverhead{iv: 16, block: 16}
	case ike.Encr3DES, ike.EncrDES, ike.EncrBlowfish, ike.EncrCAST:
		o = espOverhead{iv: 8, block: 8}
	case ike.EncrAESGCM16, ike.EncrAESCCM16, ike.EncrChaCha20Poly1305, ike.EncrNullAuthAESGMAC:
		o = espOverhead{iv: 8, icv: 16, block: 4}
	case ike.EncrAESGCM12, ike.EncrAESCCM12:
		o = espOverhead{iv: 8, icv: 12, block: 4}
	case ike.EncrAESGCM8, ike.EncrAESCCM8:
		o = espOverhead{iv: 8, icv: 8, block: 4}
	case ike.EncrAESCTR, ike.EncrCamelliaCTR:
		o = espOverhead{iv: 8, block: 4}
	default:
		o.what = "CHILD SA cipher " + t.String() + " not sized here: assumed AES-CBC with HMAC-SHA-256-128"
		return o
	}
	if i := c.Find(ike.TransformINTEG); i != nil {
		switch ike.IntegID(i.ID) {
		case ike.IntegHMACMD5_96, ike.IntegHMACSHA1_96, ike.IntegAESXCBC96, ike.IntegAESCMAC96:
			o.icv = 12
		case ike.IntegHMACSHA2_256128, ike.IntegAES128GMAC, ike.IntegAES192GMAC, ike.IntegAES256GMAC:
			o.icv = 16
		case ike.IntegHMACSHA2_384192:
			o.icv = 24
		case ike.IntegHMACSHA2_512256:
			o.icv = 32
		}
	}
	o.what = sprintf("CHILD SA %s: IV %d, ICV %d, %d-byte blocks", suiteString(c), o.iv, o.icv, o.block)
	return o
}

// tunnelMTU returns the largest inner packet that fits a path MTU pmtu in
// one ESP datagram (RFC 4303 §2: SPI and sequence number 8 bytes, IV,
// payload padded with the 2-byte trailer to the block size, ICV), with the
// outer IP header and, for ESP-in-UDP (RFC 3948), 8 bytes of UDP.
func tunnelMTU(pmtu int, v6, udp bool, o espOverhead) int {
	outer := 20
	if v6 {
		outer = 40
	}
	if udp {
		outer += 8
	}
	room := pmtu - outer - 8 - o.iv - o.icv
	if room <= 0 {
		return 0
	}
	return room/o.block*o.block - 2
}

// espVerdicts judges the ESP between the session's peers.
func (v *evaluator) esp() {
	s := v.s
	if s.IKEv1 || v.e.pairLatest[pairOf(s.Initiator.Addr(), s.Responder.Addr())] != s {
		return
	}
	for _, dir := range []struct {
		k   espKey
		dir string
	}{{espKey{s.Initiator.Addr(), s.Responder.Addr()}, TowardServer}, {espKey{s.Responder.Addr(), s.Initiator.Addr()}, TowardClient}} {
		f := v.e.esp[dir.k]
		if f == nil {
			continue
		}
		v.espFlow(f, dir.dir)
	}
}

// espFindings judges ESP between peers with no IKE session in view (a
// capture taken long after the tunnel came up): report-level findings,
// without a direction (the roles are unknown without IKE), sorted by
// addresses.
func (e *Engine) espFindings() []Verdict {
	var keys []espKey
	for k := range e.esp {
		if e.pairLatest[pairOf(k.src, k.dst)] == nil {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].src != keys[j].src {
			return keys[i].src.Less(keys[j].src)
		}
		return keys[i].dst.Less(keys[j].dst)
	})
	var out []Verdict
	for _, k := range keys {
		f := e.esp[k]
		e.expireESP(f, e.now)
		v := evaluator{e: e, s: &Session{Initiator: f.src, Responder: f.dst}, settled: true}
		v.espFlow(f, "")
		for i := range v.out {
			v.out[i].Evidence = append(v.out[i].Evidence, "no IKE exchange between these peers was seen: roles unknown; client is the sender, server the receiver here")
		}
		out = append(out, v.out...)
	}
	return out
}

func (v *evaluator) espFlow(f *espFlow, dir string) {
	kind := "ESP"
	if f.udp {
		kind = "ESP-in-UDP"
	}
	desc := sprintf("%s from %s to %s (SPI %#08x)", kind, f.src, f.dst, f.spi)
	if f.spi == 0 {
		desc = sprintf("%s from %s to %s (SPI not seen)", kind, f.src, f.dst)
	}
	if f.tooBig > 0 {
		ev := []string{
			sprintf("%d ICMP fragmentation-needed / packet-too-big message(s) from %s quote %s: the path carries %d bytes", f.tooBigSeen, f.tooBigFrom, desc, f.tooBig),
			sprintf("largest unfragmented datagram seen: %d bytes", f.largestUnfrag),
		}
		vd := v.add(ESPExceedsPMTU, Error, dir, nil,
			sprintf("%s datagrams exceed the path MTU of %d bytes after the tunnel came up: large inner packets do not get through", kind, f.tooBig), ev, f.frames)
		vd.Remedy = v.espRemedy(f, f.tooBig, &vd.Evidence)
		vd.KernelDrops = f.drops
		return
	}
	lostTrains := f.incomplete > 0 || len(f.drops) > 0
	silent := f.fragUnanswered >= 2 && f.fragAnswered == 0 && f.unfragAnswered > 0
	if f.frag == 0 || !lostTrains && !silent {
		return
	}
	ev := []string{sprintf("%d of %d %s datagram(s) were IP-fragmented", f.frag, f.n, desc)}
	if f.incomplete > 0 {
		ev = append(ev, sprintf("%d fragment train(s) never completed", f.incomplete))
	}
	if silent {
		ev = append(ev, sprintf("%d fragmented datagram(s) were never followed by traffic back within %s, while %d unfragmented one(s) were (the largest %d bytes)", f.fragUnanswered, espReplyWindow, f.unfragAnswered, f.largestAnswered))
	}
	vd := v.add(ESPFragmentsDropped, Error, dir, nil,
		sprintf("after the tunnel came up, %s datagrams too large for the path are IP-fragmented and the fragments are lost: large inner packets vanish (pages that do not load, RDP that hangs)", kind), ev, f.frames)
	pmtu := f.firstFrag
	switch {
	case pmtu > 0:
		vd.Evidence = append(vd.Evidence, sprintf("the sender's first IP fragments were %d bytes: its own path MTU, taken as the limit", pmtu))
	case f.largestAnswered > 0:
		pmtu = f.largestAnswered
		vd.Evidence = append(vd.Evidence, sprintf("largest unfragmented datagram that got traffic back: %d bytes, taken as the limit", pmtu))
	default:
		pmtu = 1280
		vd.Evidence = append(vd.Evidence, "no size known to pass: sized for 1280 bytes, the IPv6 minimum")
	}
	vd.Remedy = v.espRemedy(f, pmtu, &vd.Evidence)
	vd.KernelDrops = f.drops
}

// espRemedy sizes the tunnel MTU and TCP MSS for a path MTU.
func (v *evaluator) espRemedy(f *espFlow, pmtu int, ev *[]string) []string {
	o := overheadOf(v.s.ChildChosen)
	mtu := tunnelMTU(pmtu, f.v6, f.udp, o)
	if mtu <= 0 {
		return nil
	}
	mss4, mss6 := mtu-40, mtu-60
	udp := "no UDP encapsulation"
	if f.udp {
		udp = "UDP encapsulation 8"
	}
	outer := 20
	if f.v6 {
		outer = 40
	}
	*ev = append(*ev, sprintf("tunnel MTU %d = path MTU %d - outer IP %d - %s - ESP header 8 - IV %d - ICV %d, rounded down to the %d-byte block less the 2-byte trailer (%s); TCP MSS %d over IPv4, %d over IPv6",
		mtu, pmtu, outer, udp, o.iv, o.icv, o.block, o.what, mss4, mss6))
	return espRemedies(mtu, mss4, mss6)
}

// tcpMSSNote joins the MSS figures for display.
func tcpMSSNote(mss4, mss6 int) string {
	return strings.Join([]string{sprintf("%d (IPv4)", mss4), sprintf("%d (IPv6)", mss6)}, " / ")
}
