package keys_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/keys"
)

// connListener is one of the two key listeners as TestKeyConnsLimitAndShutdown
// drives it.
type connListener struct {
	serve func(context.Context) error
	raw   func() (net.Conn, error) // a bare connection: no handshake
	open  func() (net.Conn, error) // a client the listener serves
	stats func() (conns, refused uint64)
}

// TestKeyConnsLimitAndShutdown: both key listeners, the Unix key socket
// and the TLS key listener, refuse a connection over MaxConns and count
// it, serve again once a connection has ended, and when their context
// ends close the connections still open and return.
func TestKeyConnsLimitAndShutdown(t *testing.T) {
	const deleteLine = `{"spi_i":"0000000000000001","spi_r":"0000000000000002","server":"10.0.0.5","delete":true}`
	for _, tc := range []struct {
		name  string
		start func(t *testing.T, maxConns int) connListener
	}{
		{"socket", startSocketConns},
		{"tls listener", startRemoteConns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const maxConns = 2
			l := tc.start(t, maxConns)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- l.serve(ctx) }()

			// served: a key message is answered
			served := func() (net.Conn, *bufio.Reader) {
				t.Helper()
				c, err := l.open()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				r := bufio.NewReader(c)
				if m := send(t, c, r, deleteLine); m["ok"] != true {
					t.Fatalf("not served: %v", m)
				}
				return c, r
			}
			// refused: closed at once, before a byte
			refused := func() bool {
				c, err := l.raw()
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(make([]byte, 1))
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return false
				}
				if n != 0 || err == nil {
					t.Fatalf("a connection over the limit was answered: %d %v", n, err)
				}
				return true
			}

			first, _ := served()
			c2, r2 := served()
			if !refused() {
				t.Fatalf("connection %d of at most %d not closed", maxConns+1, maxConns)
			}
			if conns, ref := l.stats(); conns != maxConns || ref != 1 {
				t.Fatalf("conns %d refused %d, want %d and 1", conns, ref, maxConns)
			}
			// a connection that ends frees its place (the listener sees
			// the close a moment later: until then, more refusals)
			first.Close()
			eventually(t, "a place freed by a closed connection", func() bool {
				c, err := l.open()
				if err != nil {
					return false
				}
				defer c.Close()
				c.Write([]byte(deleteLine + "\n"))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				return strings.Contains(line, `"ok":true`)
			})
			if conns, _ := l.stats(); conns != maxConns+1 {
				t.Fatalf("conns %d, want %d", conns, maxConns+1)
			}

			// shutdown: Serve returns, the open connection is closed
			if m := send(t, c2, r2, deleteLine); m["ok"] != true {
				t.Fatalf("open connection no longer served: %v", m)
			}
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return within 10 s of its context's end")
			}
			c2.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := r2.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("connection left open at shutdown: %v %v", n, err)
			}
		})
	}
}

func startSocketConns(t *testing.T, maxConns int) connListener {
	path := filepath.Join(privateDir(t), "k.sock")
	s, err := keys.ListenSocket(keys.NewStore(keys.StoreConfig{}), keys.SocketConfig{Path: path, MaxConns: maxConns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	dial := func() (net.Conn, error) { return net.Dial("unix", path) }
	return connListener{serve: s.Serve, raw: dial, open: dial, stats: func() (uint64, uint64) {
		st := s.Stats()
		return st.Conns, st.Refused
	}}
}

func startRemoteConns(t *testing.T, maxConns int) connListener {
	p := newPKI(t)
	srvCert, srvKey, _ := p.pair("gw", false, net.ParseIP("127.0.0.1"))
	cliCert, cliKey, _ := p.pair("vpn1", false)
	ca := filepath.Join(p.dir, "ca.pem")
	r, err := keys.ListenRemote(keys.NewStore(keys.StoreConfig{}), keys.RemoteConfig{Address: "127.0.0.1:0",
		CertFile: srvCert, KeyFile: srvKey, ClientCAFile: ca, MaxConns: maxConns,
		Clients: []keys.RemoteClient{{Name: "vpn1", Backends: []string{"10.0.0.5"}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cert, err := tls.LoadX509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool}
	addr := r.Addr().String()
	return connListener{
		serve: r.Serve,
		raw:   func() (net.Conn, error) { return net.Dial("tcp", addr) },
		open: func() (net.Conn, error) {
			d := &net.Dialer{Timeout: 5 * time.Second}
			return tls.DialWithDialer(d, "tcp", addr, cfg)
		},
		stats: func() (uint64, uint64) {
			st := r.Stats()
			return st.Conns, st.Refused
		},
	}
}
