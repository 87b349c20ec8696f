package fastpath

import (
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"
)

// relay is a user-space NAT-T relay shaped like the proxy: one listening
// socket toward clients, one connected upstream socket per client flow
// toward the backend, recvmmsg/sendmmsg batches of up to 64 datagrams
// both ways. With a FastPath it maps every new flow, as the proxy does,
// and from then on sees only what the fast path leaves to it.
type relay struct {
	ln      *net.UDPConn
	lnB     *ipv4.PacketConn
	local   netip.AddrPort // the listening address
	upAddr  netip.Addr     // the proxy's backend-side address
	backend netip.AddrPort
	fp      *FastPath
	nsName  string // namespace upstream sockets are made in

	mu    sync.Mutex
	flows map[netip.AddrPort]*relayFlow
	wg    sync.WaitGroup

	// datagrams relayed in user space; ESP: first word non-zero
	espUp, espDown, otherUp, otherDown atomic.Uint64
	putErrs                            atomic.Uint64
}

type relayFlow struct {
	client netip.AddrPort
	up     *net.UDPConn
	upB    *ipv4.PacketConn
	out    []ipv4.Message
}

const relayBatch = 64

func isESP(b []byte) bool { return len(b) >= 8 && (b[0]|b[1]|b[2]|b[3]) != 0 }

func newMsgs(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
	}
	return ms
}

// startRelay opens the listening socket in namespace ns (through l.do)
// and runs the relay until the returned stop function is called.
func startRelay(l *lab, ns string, local netip.AddrPort, upAddr netip.Addr, backend netip.AddrPort, fp *FastPath) (*relay, func()) {
	r := &relay{local: local, upAddr: upAddr, backend: backend, fp: fp, nsName: l.ns(ns), flows: map[netip.AddrPort]*relayFlow{}}
	r.ln = l.listen(ns, local)
	_ = r.ln.SetReadBuffer(4 << 20)
	_ = r.ln.SetWriteBuffer(4 << 20)
	r.lnB = ipv4.NewPacketConn(r.ln)
	r.wg.Add(1)
	go r.run()
	return r, func() {
		r.ln.Close()
		r.mu.Lock()
		for _, f := range r.flows {
			f.up.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
		if fp != nil {
			for _, f := range r.flows {
				_, _ = fp.Delete(FlowKey{Client: f.client, Local: local})
			}
		}
	}
}

// run reads from clients. Its OS thread is moved into the proxy namespace
// so that the upstream sockets it creates live there.
func (r *relay) run() {
	defer r.wg.Done()
	runtime.LockOSThread()
	target, err := netns.GetFromPath("/run/netns/" + r.nsName)
	if err != nil {
		return
	}
	defer target.Close()
	if netns.Set(target) != nil {
		return
	}
	// The thread stays locked: it dies with this goroutine rather than
	// serve others from the wrong namespace.
	ms := newMsgs(relayBatch, 65536)
	var touched []*relayFlow
	for {
		n, err := r.lnB.ReadBatch(ms, 0)
		if err != nil {
			return
		}
		touched = touched[:0]
		for i := 0; i < n; i++ {
			m := &ms[i]
			src := m.Addr.(*net.UDPAddr).AddrPort()
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			f := r.flow(src)
			if f == nil {
				continue
			}
			p := m.Buffers[0][:m.N]
			if isESP(p) {
				r.espUp.Add(1)
			} else {
				r.otherUp.Add(1)
			}
			if len(f.out) == 0 {
				touched = append(touched, f)
			}
			f.out = append(f.out, ipv4.Message{Buffers: [][]byte{p}})
		}
		for _, f := range touched {
			for len(f.out) > 0 {
				k, err := f.upB.WriteBatch(f.out, 0)
				if err != nil || k == 0 {
					break
				}
				f.out = f.out[k:]
			}
			f.out = f.out[:0]
		}
	}
}

func (r *relay) flow(src netip.AddrPort) *relayFlow {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := r.flows[src]; f != nil {
		return f
	}
	up, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.upAddr, 0)), net.UDPAddrFromAddrPort(r.backend))
	if err != nil {
		return nil
	}
	_ = up.SetReadBuffer(4 << 20)
	_ = up.SetWriteBuffer(4 << 20)
	f := &relayFlow{client: src, up: up, upB: ipv4.NewPacketConn(up), out: make([]ipv4.Message, 0, relayBatch)}
	r.flows[src] = f
	if r.fp != nil {
		ua := up.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := r.fp.Put(Flow{Client: src, Local: r.local, Upstream: ua, Backend: r.backend}); err != nil {
			r.putErrs.Add(1) // stays in user space
		}
	}
	r.wg.Add(1)
	go r.fromBackend(f)
	return f
}

// fromBackend relays what the backend sends on one flow to its client.
func (r *relay) fromBackend(f *relayFlow) {
	defer r.wg.Done()
	ms := newMsgs(relayBatch, 65536)
	dst := net.UDPAddrFromAddrPort(f.client)
	for {
		n, err := f.upB.ReadBatch(ms, 0)
		if err != nil {
			return
		}
		for i := 0; i < n; i++ {
			if isESP(ms[i].Buffers[0][:ms[i].N]) {
				r.espDown.Add(1)
			} else {
				r.otherDown.Add(1)
			}
			ms[i].Buffers[0] = ms[i].Buffers[0][:ms[i].N]
			ms[i].Addr = dst
		}
		out := ms[:n]
		for len(out) > 0 {
			k, err := r.lnB.WriteBatch(out, 0)
			if err != nil || k == 0 {
				break
			}
			out = out[k:]
		}
		for i := 0; i < n; i++ {
			ms[i].Buffers[0] = ms[i].Buffers[0][:cap(ms[i].Buffers[0])]
		}
	}
}
