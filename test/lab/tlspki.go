package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSPKI is a throwaway certificate authority for the TLS between a key
// forwarder and a proxy's key listener (keys.listen): ECDSA P-256, made in
// a few milliseconds per certificate, valid for an hour. Every file is
// PEM, mode 0600, in a directory of mode 0700.
type TLSPKI struct {
	// Dir holds the files.
	Dir string
	// CA is the CA certificate's file.
	CA string

	t   testing.TB
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

// NewTLSPKI creates the CA in dir (created, mode 0700).
func NewTLSPKI(t testing.TB, dir string) *TLSPKI {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("lab: tls pki: %v", err)
	}
	p := &TLSPKI{Dir: dir, t: t}
	p.ca, p.key = p.issue("ikefrag lab key CA", true, nil)
	p.CA = p.write("ca.pem", "CERTIFICATE", p.ca.Raw)
	return p
}

// Issue makes a certificate signed by the CA whose common name and DNS
// name are name, with ips as IP address names (a listener's addresses),
// usable for client and server authentication. It returns the files of
// the certificate and of its key.
func (p *TLSPKI) Issue(name string, ips ...netip.Addr) (cert, key string) {
	p.t.Helper()
	c, k := p.issue(name, false, ips)
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		p.t.Fatalf("lab: tls pki: %v", err)
	}
	return p.write(name+".pem", "CERTIFICATE", c.Raw), p.write(name+".key", "EC PRIVATE KEY", der)
}

func (p *TLSPKI) issue(cn string, isCA bool, ips []netip.Addr) (*x509.Certificate, *ecdsa.PrivateKey) {
	p.t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatalf("lab: tls pki: %v", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		p.t.Fatalf("lab: tls pki: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"ikefrag test lab"}, CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	for _, a := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
	}
	parent, parentKey := p.ca, p.key
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, parentKey = tmpl, k
	} else {
		tmpl.DNSNames = []string{cn}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		p.t.Fatalf("lab: tls pki: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatalf("lab: tls pki: %v", err)
	}
	return c, k
}

func (p *TLSPKI) write(name, typ string, der []byte) string {
	p.t.Helper()
	path := filepath.Join(p.Dir, name)
	if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatalf("lab: tls pki: %v", err)
	}
	return path
}
