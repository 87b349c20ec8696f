package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadResult is what a generator run measured.
type loadResult struct {
	trips, lost int64
	elapsed     time.Duration
	err         error
}

// generate runs clients concurrent initiators, each from its own address
// (127.0.2.x, 127.0.3.x, ...), doing trips IKE_SA_INIT round trips one at
// a time through the proxy, over RFC 9329 streams (tcp) or to the NAT-T
// port (udp). A round trip is lost when its answer is missing or wrong
// within timeout (UDP: one try; TCP: a stream loses nothing it accepted).
func (l *tcpLab) generate(tcp bool, clients, trips int, timeout time.Duration) loadResult {
	var wg sync.WaitGroup
	var done, lost atomic.Int64
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		firstErr.CompareAndSwap(nil, &err)
	}
	start := time.Now()
	for i := 0; i < clients; i++ {
		from := netip.AddrFrom4([4]byte{127, 0, byte(2 + i/250), byte(1 + i%250)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			init := marked(ikeSAInit(uint64(0xC000+i), false))
			want := ikeAnswer(init, 1)
			var send func() error
			var recv func() ([]byte, error)
			if tcp {
				c, err := dialTCP(nil, from, l.tcp)
				if err != nil {
					fail(err)
					lost.Add(int64(trips))
					return
				}
				defer c.Close()
				if _, err := c.Write([]byte(tcpPrefix)); err != nil {
					fail(err)
					return
				}
				frame := appendTCPFrame(nil, init)
				send = func() error { _, err := c.Write(frame); return err }
				recv = func() ([]byte, error) { return readFrame(c, timeout) }
			} else {
				c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)))
				if err != nil {
					fail(err)
					lost.Add(int64(trips))
					return
				}
				defer c.Close()
				buf := make([]byte, 2048)
				send = func() error { _, err := c.WriteToUDPAddrPort(init, l.natt); return err }
				recv = func() ([]byte, error) {
					_ = c.SetReadDeadline(time.Now().Add(timeout))
					n, _, err := c.ReadFromUDPAddrPort(buf)
					return buf[:n], err
				}
			}
			for k := 0; k < trips; k++ {
				if err := send(); err != nil {
					fail(err)
					lost.Add(int64(trips - k))
					return
				}
				got, err := recv()
				if err != nil || !bytes.Equal(got, want) {
					if err == nil {
						err = fmt.Errorf("answer %x", got)
					}
					fail(err)
					lost.Add(1)
					if tcp {
						lost.Add(int64(trips - k - 1))
						return
					}
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	r := loadResult{trips: done.Load(), lost: lost.Load(), elapsed: time.Since(start)}
	if e := firstErr.Load(); e != nil {
		r.err = *e
	}
	return r
}

// 200 concurrent RFC 9329 clients, each with 50 IKE_SA_INIT round trips
// through the proxy to a UDP echo backend: none lost, every connection a
// flow of its own, memory bounded.
func TestTCPManyClients(t *testing.T) {
	const clients, trips = 200, 50
	l := startTCPLab(t, 1, TCPConfig{}, nil)
	runtime.GC()
	rss0 := rssBytes(t)
	r := l.generate(true, clients, trips, 10*time.Second)
	if r.lost != 0 || r.trips != clients*trips {
		st := l.p.Stats()
		t.Fatalf("%d round trips, %d lost (first error %v); drops %v, flow ends %v, tcp %+v", r.trips, r.lost, r.err,
			st.Total.Dropped, st.FlowEnds, st.TCP)
	}
	st := l.p.Stats()
	if st.TCP.Accepted != clients || st.TCP.FramesIn != clients*trips || st.TCP.FramesOut != clients*trips {
		t.Errorf("tcp %+v", st.TCP)
	}
	if src := l.backends[0].sources(); len(src) != clients {
		t.Errorf("backend saw %d sources, want %d (one upstream socket per connection)", len(src), clients)
	}
	runtime.GC()
	rss := rssBytes(t)
	if rss > rss0+64<<20 && !tcpRaceEnabled {
		t.Errorf("RSS grew from %d to %d MiB", rss0>>20, rss>>20)
	}
	t.Logf("%d clients × %d IKE_SA_INIT round trips in %v (%.0f/s); RSS %d → %d MiB", clients, trips, r.elapsed,
		float64(r.trips)/r.elapsed.Seconds(), rss0>>20, rss>>20)
}

// BenchmarkRoundTrips200 compares the TCP path with the UDP path in one
// run: 200 concurrent initiators doing IKE_SA_INIT round trips through
// the proxy to a UDP echo backend. It reports round trips per second for
// each (tcp_rt/s, udp_rt/s) and the UDP losses.
func BenchmarkRoundTrips200(b *testing.B) {
	const clients = 200
	l := startTCPLab(b, 1, TCPConfig{}, nil)
	trips := max(1, b.N/clients)
	b.ResetTimer()
	rt := l.generate(true, clients, trips, 5*time.Second)
	ru := l.generate(false, clients, trips, time.Second)
	b.StopTimer()
	if rt.lost != 0 {
		b.Fatalf("TCP: %d lost (%v)", rt.lost, rt.err)
	}
	b.ReportMetric(float64(rt.trips)/rt.elapsed.Seconds(), "tcp_rt/s")
	b.ReportMetric(float64(ru.trips)/ru.elapsed.Seconds(), "udp_rt/s")
	b.ReportMetric(float64(ru.lost), "udp_lost")
}
