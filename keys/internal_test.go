package keys

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A peer that is neither root nor this user is refused.
func TestKeySocketPeerUID(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	path := filepath.Join(dir, "k.sock")
	s, err := ListenSocket(NewStore(StoreConfig{}), SocketConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	// with PeerUIDs only the listed uids (charon's) are served
	listedPath := filepath.Join(dir, "listed.sock")
	listed, err := ListenSocket(NewStore(StoreConfig{}), SocketConfig{Path: listedPath, PeerUIDs: []int{4242}})
	if err != nil {
		t.Fatal(err)
	}
	real := peerUIDOf
	t.Cleanup(func() { peerUIDOf = real })
	var uid atomic.Int64
	peerUIDOf = func(c *net.UnixConn) (int, error) {
		u, e := real(c)
		if e != nil || u != os.Geteuid() {
			t.Errorf("peer credentials of our own connection: %d %v", u, e)
		}
		return int(uid.Load()), nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx)
	go listed.Serve(ctx)
	try := func(path string) bool {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(`{"spi_i":"0000000000000001","spi_r":"0000000000000002","delete":true}` + "\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.Contains(line, `"ok":true`)
	}
	uid.Store(4242)
	if try(path) {
		t.Fatal("uid 4242 served")
	}
	uid.Store(int64(os.Geteuid()))
	if !try(path) {
		t.Fatal("own uid refused")
	}
	if st := s.Stats(); st.Refused != 1 || st.Conns != 1 {
		t.Fatalf("%+v", st)
	}
	// root and this daemon's own uid are refused unless listed
	uid.Store(4242)
	if !try(listedPath) {
		t.Fatal("listed uid 4242 refused")
	}
	uid.Store(0)
	if try(listedPath) {
		t.Fatal("root served although not listed")
	}
	uid.Store(int64(os.Geteuid()))
	if try(listedPath) {
		t.Fatal("own uid served although not listed")
	}
	if st := listed.Stats(); st.Refused != 2 || st.Conns != 1 {
		t.Fatalf("%+v", st)
	}
}

// FuzzSaveKeysLine: no line panics the parser, and what it accepts is
// consistent.
func FuzzSaveKeysLine(f *testing.F) {
	f.Add([]byte(`0d9231365d81f170,5465b4ff8a07696d,991926fdf2ddc7d4d26ae14ea10d643b7534b920b1dbc518fe86d4ca085cf9a6,c76219c23bf4a041ce3116f30fbb7eb63d9a78ff2438a8a6ab21b9d9998d5102,"AES-CBC-256 [RFC3602]",0ec654e763b621f3b6c7cf4527d02c2b4b42113cd2038c9f418c78ceac27418e,dd7ec1f0934bfe1be79a1d41dec02ffc6e2b69a566fd374dd32333d9cbc7ffc3,"HMAC_SHA2_256_128 [RFC4868]"`))
	f.Add([]byte(`682ffbd9534525b7,b6fa52aceb65e221,8a6c983e7ab2e4a3b0bb4019c20e99fb134686c0,24db145fc32cda417d48a43691f9d3a60a471585,"AES-GCM-128 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"`))
	f.Add([]byte(`0000000000000001,0000000000000002,,,"AES-CCM-256 with 8 octet ICV [RFC5282]",,,"NONE [RFC4306]"`))
	f.Fuzz(func(t *testing.T, line []byte) {
		l, err := ParseSaveKeysLine(line)
		if err != nil {
			return
		}
		if l.Supported {
			if err := l.Keys.Validate(); err != nil {
				t.Fatalf("accepted keys that do not validate: %v", err)
			}
		}
	})
}

// FuzzSocketMessage: no object panics the key socket's handler.
func FuzzSocketMessage(f *testing.F) {
	f.Add([]byte(`{"spi_i":"0d9231365d81f170","spi_r":"5465b4ff8a07696d","encr":"AES_GCM_16","key_bits":256,"sk_ei":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223","sk_er":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223","sk_ai":"","sk_ar":"","delete":false}`))
	f.Add([]byte(`{"spi_i":"0d9231365d81f170","spi_r":"5465b4ff8a07696d","delete":true}`))
	f.Add([]byte(`{"spi_i":"0d9231365d81f170","spi_r":"5465b4ff8a07696d","old_spi_i":"0000000000000001","old_spi_r":"0000000000000002"}`))
	f.Add([]byte(`{"spi_i":"0d9231365d81f170","spi_r":"5465b4ff8a07696d","encr":12,"key_bits":128,"integ":2,"sk_ei":"00","sk_er":"00","sk_ai":"00","sk_ar":"00"}`))
	f.Add([]byte(`{"spi_i":"0x0d9231365d81f170","spi_r":"5465b4ff8a07696d","encr":12,"key_bits":128,"integ":"HMAC_SHA1_96","sk_ei":"00","sk_er":"00","sk_ai":"00","sk_ar":"00"}`))
	s := &Socket{cfg: SocketConfig{}, store: NewStore(StoreConfig{})}
	f.Fuzz(func(t *testing.T, line []byte) {
		_ = s.handle(line, nil)
	})
}

// closingListener hands out one connection that the kernel accepted but
// only after the set was closed: the interleaving of an Accept returning
// while Close runs, made certain.
type closingListener struct {
	net.Listener
	cs   *connSet[SocketStats]
	late net.Conn
}

func (l *closingListener) Accept() (net.Conn, error) {
	if c := l.late; c != nil {
		l.late = nil
		l.cs.close(l.Listener)
		return c, nil
	}
	return l.Listener.Accept()
}

// A connection accepted as the set closes is closed, neither served nor
// counted, and serve returns at once: tracked after close's sweep it
// would stay open, and keep serve from returning, until its idle
// timeout.
func TestKeyConnsAcceptedAtClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	late, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cs := &connSet[SocketStats]{max: 4}
	var handled, refused atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- cs.serve(context.Background(), &closingListener{Listener: ln, cs: cs, late: late},
			func(c net.Conn, _ string) { refused.Add(1); c.Close() },
			func(_ context.Context, c net.Conn) { handled.Add(1); c.Read(make([]byte, 1)) })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after close")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection accepted at close left open: %v", err)
	}
	if handled.Load() != 0 || refused.Load() != 0 || len(cs.conns) != 0 {
		t.Fatalf("handled %d refused %d tracked %d, want none", handled.Load(), refused.Load(), len(cs.conns))
	}
}
