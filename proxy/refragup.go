package proxy

// The TCP path's upstream split (keyed): a large IKE message from an RFC
// 9329 client, RFC 7383-fragmented toward its backend.
//
// Over a stream a client sends every IKE message whole, as one SK message
// (RFC 9329: IKE fragmentation should not be used over TCP), so an
// IKE_AUTH carrying certificates (3–6 KB) reaches the proxy in one frame.
// Relayed as it is, it becomes one IP-fragmented UDP datagram toward the
// backend, which a path that drops IP fragments loses: the IKE SA never
// comes up. When the proxy holds the IKE SA's keys and the backend
// announced IKEV2_FRAGMENTATION_SUPPORTED in its IKE_SA_INIT response
// (RFC 7383 §2.3), Proxy.tcpSplit opens the message with the initiator's
// (or, for a response, the sender's) keys and seals it again as SKF
// fragments (RFC 7383 §2.5) that fit the path MTU toward the backend
// (Proxy.backendMTU): each with its own fresh IV, padding and ICV, Fragment
// Number and Total Fragments, the first inner payload type in fragment 1
// only, and the header's SPIs, flags and Message ID unchanged.
//
// The cut of a message is cached (tcpServer.frag, an sk.Fragmenter keyed by
// SPIs, Message ID, flags and content), so a retransmission of the same
// message goes out as the same fragments, byte for byte: the backend sees
// an RFC 7296 §2.1 retransmission (strongSwan recognises one by its first
// fragment), Total Fragments stays fixed (RFC 7383 §2.6) and nothing is
// ever encrypted twice under the client's key with a new IV.
//
// Messages that fit the path whole, IKE_SA_INIT (no SK payload, never
// fragmentable), SKF fragments a client sends anyway and ESP go as they
// are. An oversize message that cannot be split is relayed whole and
// counted by why (TCPStats.Unsplit).
//
// The cuts leave with their IKE SA (tcpCuts): when the proxy's IKE SA
// table lets the SA go (Proxy.sweep, as the backend-to-client
// re-fragmentation state does), and when its keys are deleted from the key
// source (the keys the cuts were made with are closed: the IKE SA was
// deleted, or its keys expired), at the janitor's next tick, instead of
// lingering for the Fragmenter's 5-minute TTL. A TCP connection's end
// does not drop them: the IKE SA outlives it, and a client that connects
// again retransmits (RFC 9329 §6), which must get the same fragments.

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
)

// splitMiss says why an IKE message from a TCP client too large for the
// path toward its backend was relayed whole.
type splitMiss uint8

const (
	splitRefragmentOff splitMiss = iota // proxy.refragment is off
	splitNotNegotiated                  // the backend's IKE_SA_INIT response carried no IKEV2_FRAGMENTATION_SUPPORTED (or was not seen)
	splitNoKeys                         // no key source, or no keys for this IKE SA
	splitOpenFailed                     // the message did not verify or decrypt with the keys
	splitCutFailed                      // it cannot be cut for the path (too many fragments, keys deleted)
	numSplitMisses
)

var splitMissNames = [numSplitMisses]string{"refragment_off", "not_negotiated", "no_keys", "open_failed", "cut_failed"}

func (m splitMiss) String() string {
	if m < numSplitMisses {
		return splitMissNames[m]
	}
	return "unknown"
}

// tcpSplitCounters count the upstream split (TCPStats.Split*).
type tcpSplitCounters struct {
	split     atomic.Uint64 // messages sent as RFC 7383 fragments
	fragments atomic.Uint64 // the fragments they became (replays included)
	replays   atomic.Uint64 // retransmissions answered with the cached fragments
	// key prompts sent (promptKeys), and those the keys followed
	keyPrompts, keysAfterPrompt atomic.Uint64
	missed                      [numSplitMisses]atomic.Uint64
}

// tcpSplit decides what an IKE message from a TCP client becomes toward
// the backend: nil to relay payload (the marked message) unchanged, or
// the datagrams (each with the non-ESP marker) to send instead. mtu is
// the largest IP datagram the path to the backend carries.
func (p *Proxy) tcpSplit(f *Flow, payload []byte, fr ike.Framing, mtu int, now time.Time) [][]byte {
	if fr.Kind != ike.KindIKE {
		return nil
	}
	msg := fr.IKE
	be := f.backendAddr().Addr()
	if ipOverhead(be)+8+len(payload) <= mtu {
		return nil
	}
	h, err := ike.ParseHeader(msg)
	if err != nil || !h.IsIKEv2() || int(h.Length) != len(msg) || h.Exchange == ike.ExchangeIKESAInit {
		return nil
	}
	// RFC 7383 §2.5: only a message with an Encrypted payload can be
	// fragmented; one that is already SKF is the client's own cut
	if typ, _, ok := encryptedPayload(msg, h.NextPayload); !ok || typ != ike.PayloadEncrypted {
		return nil
	}
	ctr := &p.tcp.ctr.split
	miss := func(m splitMiss) [][]byte {
		ctr.missed[m].Add(1)
		return nil
	}
	if p.s.Refragment == RefragmentOff {
		return miss(splitRefragmentOff)
	}
	// RFC 7383 §2.4: SKF goes only to a backend that said it takes it
	negotiated := false
	if sa := p.saOf(f, h.SPIi, h.SPIr, now); sa != nil {
		sa.mu.Lock()
		negotiated = sa.fragResp
		sa.mu.Unlock()
	}
	if !negotiated {
		return miss(splitNotNegotiated)
	}
	if p.keys == nil {
		return miss(splitNoKeys)
	}
	ks, err := p.keys.Lookup(h.SPIi, h.SPIr)
	if errors.Is(err, keys.ErrUnknownSA) && !h.Flags.Response() {
		ks, err = p.promptKeys(f, h)
	}
	if err != nil {
		p.log.Debug("proxy: no keys to split a TCP client's message, relaying it whole", "client", f.key.client.Addr(),
			"spi_i", h.SPIi, "spi_r", h.SPIr, "message_id", h.MessageID, "err", err)
		return miss(splitNoKeys)
	}
	o, err := ks.Open(msg)
	if err != nil {
		p.log.Debug("proxy: cannot open a TCP client's message, relaying it whole", "client", f.key.client.Addr(),
			"message_id", h.MessageID, "err", err)
		return miss(splitOpenFailed)
	}
	d, err := o.Decrypted()
	if err != nil {
		return miss(splitOpenFailed)
	}
	prev, _ := p.tcp.frag.Cached(sk.KeyOf(&h))
	out, err := p.tcp.frag.Fragment(ks, d, sk.Target{MTU: mtu, IPv6: be.Is6(), Marker: true})
	if err != nil {
		p.log.Debug("proxy: cannot split a TCP client's message, relaying it whole", "client", f.key.client.Addr(),
			"message_id", h.MessageID, "mtu", mtu, "err", err)
		return miss(splitCutFailed)
	}
	p.tcp.cuts.note(h.SPIi, h.SPIr, ks, now)
	if out == prev {
		ctr.replays.Add(1)
	} else {
		ctr.split.Add(1)
		p.log.Debug("proxy: split a TCP client's message for the backend", "client", f.key.client.Addr(),
			"message_id", h.MessageID, "bytes", len(msg), "mtu", mtu, "fragments", out.Total)
	}
	ctr.fragments.Add(uint64(len(out.Datagrams)))
	return out.Datagrams
}

// Key prompting. strongSwan responders derive an IKE SA's keys only when
// the first request after IKE_SA_INIT arrives ("key derivation is done
// before the next request is processed", ike_init.c), and only then hand
// them to save-keys or the key feed: before the IKE_AUTH request, the one
// message that needs the split, reaches them there are no keys to split
// it with. A request of the IKE SA's next Message ID with an Encrypted
// payload that does not verify makes the responder derive them and drop
// the request (task_manager_v2.c: "integrity check failed", ignored; the
// lab test checks it), leaving the IKE SA as it was. The proxy sends one
// such prompt per request (never for a response, which no responder
// needs to derive keys for) and waits a moment for the keys.
const (
	// keyPromptWait bounds how long a connection's reader waits for the
	// keys after a prompt: charon's bus and the key feed or save-keys
	// table take milliseconds on one host; the client's own
	// retransmission (seconds) is tried again anyway.
	keyPromptWait = 300 * time.Millisecond
	keyPromptPoll = 10 * time.Millisecond
	// keyPromptBody is the prompt's SK payload body: zeros, as long as an
	// IV, a cipher block or two and an ICV of any IKEv2 suite, so that
	// the responder fails it on its integrity check whatever it
	// negotiated.
	keyPromptBody = 64
)

// promptKeys sends the backend a key prompt for the message with header h
// (once per message) and waits up to keyPromptWait for its keys.
func (p *Proxy) promptKeys(f *Flow, h ike.Header) (*sk.SA, error) {
	c := f.ln.tcp
	k := sk.KeyOf(&h)
	if c == nil || (c.prompted && c.promptedKey == k) {
		return nil, keys.ErrUnknownSA
	}
	c.prompted, c.promptedKey = true, k
	ph := h
	ph.NextPayload = ike.PayloadEncrypted
	ph.Length = uint32(ike.HeaderLen + 4 + keyPromptBody)
	prompt := make([]byte, ike.NonESPMarkerLen, ike.NonESPMarkerLen+int(ph.Length))
	prompt = ph.AppendTo(prompt)
	// SK generic header: no first inner payload type can be told
	prompt = append(prompt, 0, 0, byte((4+keyPromptBody)>>8), byte(4+keyPromptBody))
	prompt = append(prompt, make([]byte, keyPromptBody)...)
	p.tcp.ctr.split.keyPrompts.Add(1)
	p.sendUp(f, []message{{Buffers: [][]byte{prompt}}})
	deadline := time.Now().Add(keyPromptWait)
	for {
		ks, err := p.keys.Lookup(h.SPIi, h.SPIr)
		if !errors.Is(err, keys.ErrUnknownSA) || time.Now().After(deadline) {
			if err == nil {
				p.tcp.ctr.split.keysAfterPrompt.Add(1)
			}
			return ks, err
		}
		time.Sleep(keyPromptPoll)
	}
}

// backendMTU is the largest IP datagram the path from the proxy to the
// flow's backend carries: the kernel's path MTU for the flow's connected
// upstream socket (IP_MTU, IPV6_MTU: the route's mtu or the link's, or a
// smaller one learnt from ICMP fragmentation needed / packet too big),
// capped by proxy.tcp.backend_mtu when set, and never below the family's
// minimum (576, 1280). Without an answer from the kernel the cap, or
// pmtu_default, stands in.
func (p *Proxy) backendMTU(f *Flow) int {
	a := f.backendAddr().Addr()
	mtu := 0
	if f.up != nil {
		mtu = f.up.pathMTU()
	}
	if c := p.s.TCP.BackendMTU; c > 0 && (mtu == 0 || c < mtu) {
		mtu = c
	}
	if mtu == 0 {
		mtu = p.s.PMTUDefault
	}
	floor := minMTU4
	if a.Is6() {
		floor = minMTU6
	}
	return max(mtu, floor)
}

// pathMTU asks the kernel for the path MTU of a connected socket; 0 when
// it has none to give.
func (s *udpSock) pathMTU() int {
	if s == nil || s.raw == nil {
		return 0
	}
	lvl, opt := unix.SOL_IP, unix.IP_MTU
	if s.is6 {
		lvl, opt = unix.SOL_IPV6, unix.IPV6_MTU
	}
	mtu := 0
	err := s.raw.Control(func(fd uintptr) {
		v, err := unix.GetsockoptInt(int(fd), lvl, opt)
		if err == nil {
			mtu = v
		}
	})
	if err != nil || mtu <= 0 {
		return 0
	}
	return mtu
}

// tcpSplitUp sends a TCP client's frame toward its backend: the split
// datagrams when tcpSplit cuts it, the frame as it is otherwise.
func (p *Proxy) tcpSplitUp(f *Flow, payload []byte, fr ike.Framing, ms []message, now time.Time) {
	// (the kernel is asked for the path MTU only for an IKE frame larger
	// than the smallest IPv4 path MTU; smaller ones fit any path)
	if fr.Kind == ike.KindIKE && ipOverhead(f.backendAddr().Addr())+8+len(payload) > minMTU4 {
		if out := p.tcpSplit(f, payload, fr, p.backendMTU(f), now); out != nil {
			split := make([]message, len(out))
			for i, d := range out {
				split[i].Buffers = [][]byte{d}
			}
			p.sendUp(f, split)
			return
		}
	}
	ms[0].Buffers[0] = payload
	p.sendUp(f, ms)
	ms[0].Buffers[0] = nil
}

// tcpCuts remembers the IKE SAs whose messages tcpServer.frag holds cuts
// of, and the keys each was last cut with, so that the cuts can be dropped
// with the IKE SA.
type tcpCuts struct {
	// mu guards m; it is taken alone, never while holding the
	// Fragmenter's or the key store's lock (Forget and Has are called
	// after it is released)
	mu sync.Mutex
	m  map[[2]ike.SPI]tcpCut
}

type tcpCut struct {
	keys *sk.SA    // closed once the key source deleted them
	last time.Time // the last cut or replay
}

// maxTCPCutSAs bounds tcpCuts: the Fragmenter caches at most this many
// messages, so no more IKE SAs than that can have cuts. An SA not noted
// for want of room loses its cuts to the Fragmenter's TTL.
const maxTCPCutSAs = sk.DefaultFragmenterMaxEntries

// note records that a message of the IKE SA (spiI, spiR) was cut (or
// replayed) with keys ks.
func (c *tcpCuts) note(spiI, spiR ike.SPI, ks *sk.SA, now time.Time) {
	k := [2]ike.SPI{spiI, spiR}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[2]ike.SPI]tcpCut{}
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= maxTCPCutSAs {
		return
	}
	c.m[k] = tcpCut{keys: ks, last: now}
}

// forget drops the record of the IKE SA (spiI, spiR), reporting whether
// there was one.
func (c *tcpCuts) forget(spiI, spiR ike.SPI) bool {
	k := [2]ike.SPI{spiI, spiR}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[k]
	delete(c.m, k)
	return ok
}

// keysGone returns the IKE SAs whose cut keys were deleted (closed, and
// held no more by the key source when it can say: has, nil when it
// cannot; keys replaced under the same SPIs keep the cuts), and forgets
// them and the records older than ttl, whose cuts the Fragmenter lets go
// by itself (a record of replaced keys, kept, goes then too).
func (c *tcpCuts) keysGone(now time.Time, ttl time.Duration, has func(spiI, spiR ike.SPI) bool) [][2]ike.SPI {
	var closed [][2]ike.SPI
	c.mu.Lock()
	for k, v := range c.m {
		switch {
		case now.Sub(v.last) > ttl:
			delete(c.m, k)
		case v.keys.Closed():
			closed = append(closed, k)
		}
	}
	c.mu.Unlock()
	gone := closed[:0]
	for _, k := range closed {
		if has == nil || !has(k[0], k[1]) {
			gone = append(gone, k)
		}
	}
	c.mu.Lock()
	for _, k := range gone {
		delete(c.m, k)
	}
	c.mu.Unlock()
	return gone
}

// forgetTCPCuts drops the cached cuts of an IKE SA the proxy let go.
func (p *Proxy) forgetTCPCuts(spiI, spiR ike.SPI) {
	if p.tcp == nil {
		return
	}
	p.tcp.cuts.forget(spiI, spiR)
	p.tcp.frag.Forget(spiI, spiR)
}

// sweepTCPCuts drops the cached cuts of IKE SAs whose keys the key source
// deleted (Proxy.sweep, once a second), and returns how many IKE SAs'.
func (p *Proxy) sweepTCPCuts(now time.Time) int {
	if p.tcp == nil {
		return 0
	}
	var has func(spiI, spiR ike.SPI) bool
	if h, ok := p.keys.(interface{ Has(spiI, spiR ike.SPI) bool }); ok {
		has = h.Has
	}
	gone := p.tcp.cuts.keysGone(now, sk.DefaultFragmenterTTL, has)
	for _, k := range gone {
		p.tcp.frag.Forget(k[0], k[1])
	}
	return len(gone)
}
