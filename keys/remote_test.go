package keys_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/keys"
)

// pki is a throwaway CA with the certificates of one test, written as
// private PEM files in a private directory.
type pki struct {
	t   *testing.T
	dir string
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{t: t, dir: privateDir(t)}
	p.ca, p.key = p.issue("test CA", nil, nil, true, nil)
	p.write("ca.pem", "CERTIFICATE", p.ca.Raw)
	return p
}

// issue makes a certificate for cn, signed by parent (self-signed when
// nil), for servers (with ips) or clients.
func (p *pki) issue(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, ips []net.IP) (*x509.Certificate, *ecdsa.PrivateKey) {
	p.t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		IPAddresses: ips,
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		p.t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

func (p *pki) write(name, typ string, der []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// pair writes a certificate and key for cn (signed by the CA unless
// self) and returns the two paths and the certificate's SHA-256.
func (p *pki) pair(cn string, self bool, ips ...net.IP) (cert, key, sum string) {
	p.t.Helper()
	var c *x509.Certificate
	var k *ecdsa.PrivateKey
	if self {
		c, k = p.issue(cn, nil, nil, false, ips)
	} else {
		c, k = p.issue(cn, p.ca, p.key, false, ips)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		p.t.Fatal(err)
	}
	s := sha256.Sum256(c.Raw)
	return p.write(cn+".pem", "CERTIFICATE", c.Raw), p.write(cn+".key", "EC PRIVATE KEY", kd), hex.EncodeToString(s[:])
}

// keyLine is a key message for spiI/spiR with the VPN server's address.
func keyLine(spiI, spiR ike.SPI, server string, fill byte) string {
	k := strings.Repeat(fmt.Sprintf("%02x", fill), 36)
	return fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","server":"%s","encr":"AES_GCM_16","key_bits":256,"sk_ei":"%s","sk_er":"%s"}`,
		spiI, spiR, server, k, k)
}

type listener struct {
	r     *keys.Remote
	store *keys.Store
	stop  func()
}

func startRemote(t *testing.T, cfg keys.RemoteConfig) *listener {
	t.Helper()
	store := keys.NewStore(keys.StoreConfig{})
	r, err := keys.ListenRemote(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Serve(ctx); close(done) }()
	l := &listener{r: r, store: store, stop: func() { cancel(); <-done }}
	t.Cleanup(l.stop)
	return l
}

func startForwarder(t *testing.T, cfg keys.ForwarderConfig) *keys.Forwarder {
	t.Helper()
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(privateDir(t), "fwd.sock")
	}
	f, err := keys.NewForwarder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 10 s", what)
}

func has(s *keys.Store, spiI, spiR ike.SPI) bool {
	_, err := s.Lookup(spiI, spiR)
	return err == nil
}

var (
	spiE = ike.SPI{0xee, 1, 2, 3, 4, 5, 6, 7}
	spiF = ike.SPI{0xff, 1, 2, 3, 4, 5, 6, 7}
)

// TestKeyListenerOverTLS: a forwarder with a listed certificate reaches
// two key listeners (the two boxes of a pair) over TLS 1.3; both get the
// keys of SAs of its backend, neither gets the keys of
// another server; a listener that restarts is sent the live SAs
// again; a delete reaches both.
func TestKeyListenerOverTLS(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey, _ := p.pair("gw", false, net.ParseIP("127.0.0.1"))
	cliCert, cliKey, _ := p.pair("vpn1", false)
	lcfg := keys.RemoteConfig{Address: "127.0.0.1:0", CertFile: srvCert, KeyFile: srvKey, ClientCAFile: filepath.Join(p.dir, "ca.pem"),
		Clients: []keys.RemoteClient{{Name: "vpn1", Backends: []string{"10.0.0.5"}}}}
	a, b := startRemote(t, lcfg), startRemote(t, lcfg)
	f := startForwarder(t, keys.ForwarderConfig{Targets: []string{a.r.Addr().String(), b.r.Addr().String()},
		CertFile: cliCert, KeyFile: cliKey, CAFile: filepath.Join(p.dir, "ca.pem")})

	c, r := dialSocket(t, f.Path())
	if m := send(t, c, r, keyLine(spiA, spiB, "10.0.0.5", 7)); m["ok"] != true {
		t.Fatalf("forwarder refused a key message: %v", m)
	}
	if m := send(t, c, r, keyLine(spiE, spiF, "10.0.0.6", 8)); m["ok"] != true {
		t.Fatalf("forwarder refused a key message: %v", m)
	}
	for _, l := range []*listener{a, b} {
		eventually(t, "keys at both listeners", func() bool { return has(l.store, spiA, spiB) })
		eventually(t, "the foreign server refused", func() bool { return l.r.Stats().Forbidden >= 1 })
		if has(l.store, spiE, spiF) {
			t.Error("keys for a server the client is not configured for were installed")
		}
	}

	// the first listener restarts on the same port with an empty store
	addr := a.r.Addr().String()
	a.stop()
	lcfg.Address = addr
	a2 := startRemote(t, lcfg)
	eventually(t, "live SA resent after the listener's restart", func() bool { return has(a2.store, spiA, spiB) })

	if m := send(t, c, r, fmt.Sprintf(`{"spi_i":"%s","spi_r":"%s","server":"10.0.0.5","delete":true}`, spiA, spiB)); m["ok"] != true {
		t.Fatalf("delete refused: %v", m)
	}
	for _, l := range []*listener{a2, b} {
		eventually(t, "delete at both listeners", func() bool { return !has(l.store, spiA, spiB) })
	}
	st := f.Stats()
	if st.Live != 1 || st.Received != 3 {
		// spiE/spiF stays live at the forwarder: only the proxies judge it
		t.Errorf("forwarder stats %+v, want 1 live SA of 3 messages", st)
	}
}

// TestKeyListenerRefuses: certificates not on the list, a pinned
// certificate, and the no-TLS rule.
func TestKeyListenerRefuses(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey, _ := p.pair("gw", false, net.ParseIP("127.0.0.1"))
	rogueCert, rogueKey, _ := p.pair("rogue", false)
	pinCert, pinKey, pinSum := p.pair("pinned", true)
	ca := filepath.Join(p.dir, "ca.pem")
	l := startRemote(t, keys.RemoteConfig{Address: "127.0.0.1:0", CertFile: srvCert, KeyFile: srvKey, ClientCAFile: ca,
		Clients: []keys.RemoteClient{
			{Name: "vpn1", Backends: []string{"10.0.0.5"}},
			{SHA256: pinSum, Backends: []string{"10.0.0.7"}},
		}})

	// signed by the CA, but not a configured client
	started := time.Now()
	rogue := startForwarder(t, keys.ForwarderConfig{Targets: []string{l.r.Addr().String()}, CertFile: rogueCert, KeyFile: rogueKey, CAFile: ca})
	eventually(t, "unlisted certificate refused and counted", func() bool { return l.r.Stats().Refused >= 1 })
	if st := l.r.Stats(); st.Conns != 0 {
		t.Errorf("an unlisted forwarder was accepted: %+v", st)
	}
	// Refused, it backs off as from a target that is down: tries at 0
	// and after at least 0.125, 0.25, 0.5 and 1 s (half of 0.25 s
	// doubling, the jitter's least), so at most 5 in its first 3 s,
	// where retrying at the first step forever would make a dozen or more.
	time.Sleep(time.Until(started.Add(3 * time.Second)))
	if n := l.r.Stats().Refused; n > 6 {
		t.Errorf("a refused forwarder did not back off: %d connections refused in 3 s", n)
	}
	if st := rogue.Stats().Targets[0]; st.Acked != 0 {
		t.Errorf("a refused forwarder's messages were acknowledged: %+v", st)
	}

	// self-signed, pinned by its SHA-256
	f := startForwarder(t, keys.ForwarderConfig{Targets: []string{l.r.Addr().String()}, CertFile: pinCert, KeyFile: pinKey, CAFile: ca})
	c, r := dialSocket(t, f.Path())
	send(t, c, r, keyLine(spiA, spiB, "10.0.0.7", 9))
	eventually(t, "pinned forwarder's keys", func() bool { return has(l.store, spiA, spiB) })

	// no TLS: loopback only
	if _, err := keys.ListenRemote(keys.NewStore(keys.StoreConfig{}), keys.RemoteConfig{Address: "0.0.0.0:0", Insecure: true}); !errors.Is(err, keys.ErrCleartext) {
		t.Errorf("a clear-text key listener on 0.0.0.0 was allowed: %v", err)
	}
	if _, err := keys.NewForwarder(keys.ForwarderConfig{Socket: filepath.Join(privateDir(t), "s"), Targets: []string{"192.0.2.1:4501"}, Insecure: true}); !errors.Is(err, keys.ErrCleartext) {
		t.Errorf("a clear-text forwarder to a remote target was allowed: %v", err)
	}
	// a listener with TLS needs clients
	if _, err := keys.ListenRemote(keys.NewStore(keys.StoreConfig{}), keys.RemoteConfig{Address: "127.0.0.1:0", CertFile: srvCert, KeyFile: srvKey}); err == nil {
		t.Error("a key listener without clients was allowed")
	}
	// the listener's key file must be private
	if err := os.Chmod(srvKey, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.ListenRemote(keys.NewStore(keys.StoreConfig{}), keys.RemoteConfig{Address: "127.0.0.1:0", CertFile: srvCert, KeyFile: srvKey,
		Clients: []keys.RemoteClient{{SHA256: pinSum, Backends: []string{"10.0.0.7"}}}}); !errors.Is(err, keys.ErrInsecure) {
		t.Errorf("a world-readable listener key was accepted: %v", err)
	}
}

// TestKeyListenerInsecureLoopback: without TLS on loopback, the server
// is still checked against the clients' backends.
func TestKeyListenerInsecureLoopback(t *testing.T) {
	l := startRemote(t, keys.RemoteConfig{Address: "127.0.0.1:0", Insecure: true,
		Clients: []keys.RemoteClient{{Name: "local", Backends: []string{"10.0.0.5"}}}})
	f := startForwarder(t, keys.ForwarderConfig{Targets: []string{l.r.Addr().String()}, Insecure: true})
	c, r := dialSocket(t, f.Path())
	send(t, c, r, keyLine(spiA, spiB, "10.0.0.5", 1))
	send(t, c, r, keyLine(spiE, spiF, "10.0.0.9", 2))
	eventually(t, "keys over loopback", func() bool { return has(l.store, spiA, spiB) && l.r.Stats().Forbidden >= 1 })
	if has(l.store, spiE, spiF) {
		t.Error("foreign server accepted")
	}
}
