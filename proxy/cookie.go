package proxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// Stateless cookies at the edge (RFC 7296 §2.6). When many flows wait for
// the backend (cookie_threshold), the proxy answers an IKE_SA_INIT
// request that opens no flow with N(COOKIE) itself, keeps nothing, and
// opens a flow only for a request that carries back a cookie it made for
// that source, port and SPI: a spoofed source never sees the cookie, so
// under a spoofed flood neither the flow table nor the backend sees the
// flood. The client sends the request again with the cookie as its first
// payload and signs that message in IKE_AUTH (RFC 7296 §2.15), so the
// proxy relays it unchanged: a backend that is not asking for cookies
// ignores one it did not make, and a backend that is sends its own
// COOKIE, which the client then uses instead (§2.6).

const (
	// cookieLen is the cookie's length: one byte of secret generation
	// and 15 of HMAC-SHA-256 over the source, the proxy address and
	// SPIi (RFC 7296 §2.6 suggests "<VersionIDofSecret> | Hash(Ni | IPi |
	// SPIi | <secret>)"; the nonce adds nothing a spoofer could use).
	cookieLen = 16
	// cookieRotate is how often the secret changes; a cookie made with
	// the previous one is still taken (a client answers within a round
	// trip, retransmissions within seconds).
	cookieRotate = time.Minute

	// Amplification: the COOKIE responses may carry at most
	// maxAmplificationPct % of the bytes of the requests that asked for
	// them (a spoofed flood reflects less than it sends), with a burst of
	// cookieBurst bytes. A request repeated from the same source with the
	// same SPIi within repeatWindow (a real client retransmitting) is
	// answered even without credit: two requests then pay for one
	// response. 10 rather than the 0.15 an unauthenticated sender may get
	// in all: the backend's answers to the requests relayed before cookie
	// mode come on top (measured at 0.01-0.04 of a flood's bytes).
	maxAmplificationPct = 10
	cookieBurst         = 64 << 10
	repeatWindow        = 10 * time.Second
	// repeatSlots is the size of the direct-mapped table of recent
	// requests (source, SPIi): 16 bytes a slot.
	repeatSlots = 1 << 16
)

// cookieJar makes and checks cookies.
type cookieJar struct {
	mu      sync.Mutex // guards everything below
	gen     byte
	secrets [2][32]byte // [gen&1]
	rotated time.Time

	// credit is in hundredths of a byte (requests add
	// maxAmplificationPct per byte, responses cost 100 per byte)
	credit int64
	recent []recentReq
}

type recentReq struct {
	h  uint64
	at int64 // unix nanoseconds
}

func newCookieJar(now time.Time) *cookieJar {
	j := &cookieJar{rotated: now, credit: 100 * cookieBurst, recent: make([]recentReq, repeatSlots)}
	_, _ = rand.Read(j.secrets[0][:])
	return j
}

// mayAnswer reports whether a COOKIE response of respLen bytes may go to
// a request of reqLen bytes, h identifying its source and SPIi.
func (j *cookieJar) mayAnswer(h uint64, reqLen, respLen int, now time.Time) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.credit = min(j.credit+int64(maxAmplificationPct*reqLen), 100*cookieBurst)
	slot := &j.recent[h&(repeatSlots-1)]
	repeat := slot.h == h && now.UnixNano()-slot.at <= int64(repeatWindow)
	slot.h, slot.at = h, now.UnixNano()
	cost := int64(100 * respLen)
	if j.credit >= cost {
		j.credit -= cost
		return true
	}
	return repeat
}

func (j *cookieJar) rotate(now time.Time) {
	if now.Sub(j.rotated) < cookieRotate {
		return
	}
	j.gen++
	_, _ = rand.Read(j.secrets[j.gen&1][:])
	j.rotated = now
}

func cookieMAC(secret *[32]byte, gen byte, src, local netip.AddrPort, spiI ike.SPI) [cookieLen]byte {
	m := hmac.New(sha256.New, secret[:])
	var b [2*18 + 8]byte
	a := src.Addr().As16()
	copy(b[0:16], a[:])
	binary.BigEndian.PutUint16(b[16:], src.Port())
	a = local.Addr().As16()
	copy(b[18:34], a[:])
	binary.BigEndian.PutUint16(b[34:], local.Port())
	copy(b[36:], spiI[:])
	m.Write(b[:])
	var out [cookieLen]byte
	out[0] = gen
	copy(out[1:], m.Sum(nil))
	return out
}

// make returns the cookie for a request.
func (j *cookieJar) make(src, local netip.AddrPort, spiI ike.SPI, now time.Time) [cookieLen]byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.rotate(now)
	return cookieMAC(&j.secrets[j.gen&1], j.gen, src, local, spiI)
}

// valid reports whether c is a cookie this proxy made for the request
// with the current or the previous secret.
func (j *cookieJar) valid(c []byte, src, local netip.AddrPort, spiI ike.SPI) bool {
	if len(c) != cookieLen {
		return false
	}
	j.mu.Lock()
	gen := j.gen
	var secret [32]byte
	ok := c[0] == gen || c[0] == gen-1
	if ok {
		secret = j.secrets[c[0]&1]
	}
	j.mu.Unlock()
	if !ok {
		return false
	}
	want := cookieMAC(&secret, c[0], src, local, spiI)
	return hmac.Equal(c, want[:])
}

// firstCookie returns the data of an N(COOKIE) that is the first payload
// of an IKE_SA_INIT request, where RFC 7296 §2.6 puts it.
func firstCookie(msg []byte) ([]byte, bool) {
	if len(msg) < ike.HeaderLen+8 || ike.PayloadType(msg[16]) != ike.PayloadNotify {
		return nil, false
	}
	p := msg[ike.HeaderLen:]
	plen := int(binary.BigEndian.Uint16(p[2:4]))
	if plen < 8 || plen > len(p) || p[5] != 0 || ike.NotifyType(binary.BigEndian.Uint16(p[6:8])) != ike.NotifyCookie {
		return nil, false
	}
	return p[8:plen], true
}

// cookieResponse is the IKE_SA_INIT response carrying only N(COOKIE)
// (RFC 7296 §1.2, §2.6): the request's SPIi, a zero SPIr, Message ID 0.
func cookieResponse(spiI ike.SPI, c [cookieLen]byte) []byte {
	h := ike.Header{SPIi: spiI, NextPayload: ike.PayloadNotify, MajorVersion: 2, Exchange: ike.ExchangeIKESAInit,
		Flags: ike.FlagResponse, Length: ike.HeaderLen + 8 + cookieLen}
	b := h.AppendTo(make([]byte, 0, h.Length))
	b = append(b, 0, 0, 0, 8+cookieLen, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(ike.NotifyCookie))
	return append(b, c[:]...)
}

// cookieGate decides, in cookie mode, about an IKE_SA_INIT request that
// opens a flow: it passes with a valid cookie of this proxy (verified:
// the client has the proxy's answers); without one it gets a COOKIE
// response and no flow. Outside cookie mode everything passes.
func (p *Proxy) cookieGate(l *listener, src, local netip.AddrPort, msg []byte, marker bool, now time.Time) (pass, verified bool) {
	if p.flows.unestablished() < p.s.CookieThreshold {
		return true, false
	}
	h, err := ike.ParseHeader(msg)
	if err != nil || !h.IsIKEv2() {
		return true, false // IKEv1: no cookies of this kind
	}
	if c, ok := firstCookie(msg); ok && p.cookies.valid(c, src, local, h.SPIi) {
		p.cookieCtr.verified.Add(1)
		return true, true
	}
	resp := cookieResponse(h.SPIi, p.cookies.make(src, local, h.SPIi, now))
	if marker {
		resp = append(make([]byte, ike.NonESPMarkerLen), resp...)
	}
	a := src.Addr().As16()
	rh := hashBytes(hashBytes(0xc00c1e, a[:]), append(h.SPIi[:], byte(src.Port()>>8), byte(src.Port())))
	if !p.cookies.mayAnswer(rh, len(msg), len(resp), now) {
		p.total.drops[DropCookieLimited].Add(1)
		return false, false
	}
	var oob []byte
	if l.wildcard {
		oob = srcCmsg(local.Addr())
	}
	if _, _, err := l.sock.c.WriteMsgUDPAddrPort(resp, oob, src); err == nil {
		p.cookieCtr.sent.Add(1)
	}
	p.total.drops[DropCookieSent].Add(1)
	return false, false
}
