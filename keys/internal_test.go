package keys

import (
	"bufio"
	"context"
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
	try := func() bool {
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
	if try() {
		t.Fatal("uid 4242 served")
	}
	uid.Store(int64(os.Geteuid()))
	if !try() {
		t.Fatal("own uid refused")
	}
	if st := s.Stats(); st.Refused != 1 || st.Conns != 1 {
		t.Fatalf("%+v", st)
	}
	// with PeerUIDs only the listed uids (charon's) are served: root and
	// this daemon's own uid are refused unless listed
	s.mu.Lock()
	s.cfg.PeerUIDs = []int{4242}
	s.mu.Unlock()
	uid.Store(4242)
	if !try() {
		t.Fatal("listed uid 4242 refused")
	}
	uid.Store(0)
	if try() {
		t.Fatal("root served although not listed")
	}
	if st := s.Stats(); st.Refused != 2 || st.Conns != 2 {
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
	s := &Socket{cfg: SocketConfig{}, store: NewStore(StoreConfig{}), conns: map[net.Conn]struct{}{}}
	f.Fuzz(func(t *testing.T, line []byte) {
		_ = s.handle(line, nil)
	})
}
