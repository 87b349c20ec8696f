package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// Deps.TCPFrames is handed each IKE message the RFC 9329 listener
// relays, both ways, with the connection's two endpoints; ESP is not
// handed over.
func TestTCPFramesObserved(t *testing.T) {
	var mu sync.Mutex
	var got []TCPFrame
	ikePort, nattPort := testPorts()
	be := netip.AddrFrom4([4]byte{127, 0, 0, 2})
	bePorts := [2]int{ikePort%1000 + 31000, ikePort%1000 + 35000}
	startEcho(t, 1, be, bePorts[0], bePorts[1])
	cfg := Config{Listen: []string{"127.0.0.1"}, IKEPort: ikePort, NATTPort: nattPort, FastPath: FastPathOff,
		TCP: TCPConfig{Listen: []string{"127.0.0.1:0"}}, HalfOpenPerClient: 1000, CookieThreshold: DefaultMaxClients,
		Backends: []string{fmt.Sprintf("%s:%d/%d", be, bePorts[0], bePorts[1])}}
	p := startProxy(t, cfg, Deps{TCPFrames: func(f TCPFrame) {
		f.Payload = bytes.Clone(f.Payload)
		mu.Lock()
		got = append(got, f)
		mu.Unlock()
	}})
	tc := newTCPClient(t, netip.Addr{}, p.TCPAddrs()[0])
	init := marked(ikeSAInit(0x0102030405060708, true))
	tc.send(init)
	answer := tc.recv()
	tc.send([]byte{0xc0, 1, 2, 3, 0, 0, 0, 1, 0xaa, 0xbb})
	tc.recv()
	client := tc.c.LocalAddr().(*net.TCPAddr).AddrPort()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d frames handed over, want the IKE_SA_INIT request and its answer: %+v", len(got), got)
	}
	for i, want := range []TCPFrame{
		{Client: client, Local: p.TCPAddrs()[0], FromClient: true, Payload: init},
		{Client: client, Local: p.TCPAddrs()[0], FromClient: false, Payload: answer},
	} {
		if g := got[i]; g.Client != want.Client || g.Local != want.Local || g.FromClient != want.FromClient || !bytes.Equal(g.Payload, want.Payload) {
			t.Errorf("frame %d: %+v, want %+v", i, g, want)
		}
	}
}
