package lab

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// KeyType selects the lab PKI's key algorithm and size.
type KeyType string

const (
	// RSA4096 is the default: the large certificates of the field, which
	// push IKE_AUTH past 5 KB with both intermediates.
	RSA4096 KeyType = "rsa4096"
	// RSA2048 keeps IKE_AUTH above 1500 bytes but generates fast.
	RSA2048 KeyType = "rsa2048"
	// ECDSA256 gives small certificates (IKE_AUTH fits one packet).
	ECDSA256 KeyType = "ecdsa256"
)

// PKI is a cached certificate hierarchy:
//
//	root ─┬─ cli-ca1 ─ cli-ca2 ─ cli (cli.lab.example)
//	      └─ srv-ca1 ─ srv-ca2 ─ srv (srv.lab.example)
//
// Each peer trusts only root and carries its own two intermediates, so both
// send three certificates in IKE_AUTH. With shared intermediates strongSwan
// would see them in the peer's CERTREQ and send the end-entity certificate
// alone.
type PKI struct {
	Dir  string
	Type KeyType
}

// pkiVersion names the cache layout; bump it when the hierarchy changes.
const pkiVersion = "pki-v1"

// Cert is the PEM certificate file of an entity (root, cli-ca1, cli, …).
func (p *PKI) Cert(name string) string { return filepath.Join(p.Dir, name+".crt") }

// Key is the PEM private key file of an entity (mode 0600).
func (p *PKI) Key(name string) string { return filepath.Join(p.Dir, name+".key") }

// ID is the IKE identity of a peer role ("cli" or "srv").
func ID(role Role) string { return string(role) + ".lab.example" }

type entity struct {
	name, issuer, dn string
	args             []string
}

const dnBase = "C=ZZ, O=ikefrag test lab, "

var hierarchy = []entity{
	{"root", "", dnBase + "CN=ikefrag lab root", nil},
	{"cli-ca1", "root", dnBase + "OU=client chain, CN=ikefrag lab client CA 1", []string{"--ca", "--pathlen", "1", "--lifetime", "1825"}},
	{"cli-ca2", "cli-ca1", dnBase + "OU=client chain, CN=ikefrag lab client CA 2", []string{"--ca", "--pathlen", "0", "--lifetime", "1825"}},
	{"cli", "cli-ca2", dnBase + "OU=clients, CN=cli.lab.example", []string{"--san", "cli.lab.example", "--flag", "clientAuth", "--lifetime", "730"}},
	{"srv-ca1", "root", dnBase + "OU=server chain, CN=ikefrag lab server CA 1", []string{"--ca", "--pathlen", "1", "--lifetime", "1825"}},
	{"srv-ca2", "srv-ca1", dnBase + "OU=server chain, CN=ikefrag lab server CA 2", []string{"--ca", "--pathlen", "0", "--lifetime", "1825"}},
	{"srv", "srv-ca2", dnBase + "OU=gateways, CN=srv.lab.example", []string{"--san", "srv.lab.example", "--flag", "serverAuth", "--flag", "ikeIntermediate", "--lifetime", "730"}},
}

// pkiConf limits pki to plugins that work here; Debian's default list also
// tries the TPM and prints errors.
const pkiConf = "pki {\n\tload = random nonce openssl pem pkcs1 pkcs8 x509 pubkey sha1 sha2\n}\n"

var pkiMu sync.Mutex

// LoadPKI returns the cached hierarchy of the given type, generating it on
// first use (RSA-4096 takes tens of seconds) or when a certificate is
// within 30 days of expiry. Concurrent test processes share one generation
// through a lock file.
func LoadPKI(t testing.TB, kt KeyType) *PKI {
	t.Helper()
	p, err := loadPKI(kt)
	if err != nil {
		t.Fatalf("lab: pki: %v", err)
	}
	return p
}

func loadPKI(kt KeyType) (*PKI, error) {
	if kt == "" {
		kt = RSA4096
	}
	if _, _, err := keyArgs(kt); err != nil {
		return nil, err
	}
	base := filepath.Join(CacheDir(), pkiVersion)
	p := &PKI{Dir: filepath.Join(base, string(kt)), Type: kt}
	pkiMu.Lock()
	defer pkiMu.Unlock()
	if p.valid() == nil {
		return p, nil
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(base, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	if p.valid() == nil { // another process generated it meanwhile
		return p, nil
	}
	tmp, err := os.MkdirTemp(base, ".new-"+string(kt)+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := generatePKI(tmp, kt); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, p.Dir); err != nil {
		return nil, err
	}
	return p, p.valid()
}

func keyArgs(kt KeyType) (genType string, size int, err error) {
	switch kt {
	case RSA4096:
		return "rsa", 4096, nil
	case RSA2048:
		return "rsa", 2048, nil
	case ECDSA256:
		return "ecdsa", 256, nil
	}
	return "", 0, fmt.Errorf("unknown key type %q", kt)
}

// valid checks that every file is present, keys are private and no
// certificate expires within 30 days.
func (p *PKI) valid() error {
	for _, e := range hierarchy {
		st, err := os.Stat(p.Key(e.name))
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("%s: mode %v", p.Key(e.name), st.Mode().Perm())
		}
		b, err := os.ReadFile(p.Cert(e.name))
		if err != nil {
			return err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return fmt.Errorf("%s: no PEM block", p.Cert(e.name))
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Cert(e.name), err)
		}
		if time.Until(c.NotAfter) < 30*24*time.Hour {
			return fmt.Errorf("%s expires %v", p.Cert(e.name), c.NotAfter)
		}
	}
	return nil
}

func generatePKI(dir string, kt KeyType) error {
	genType, size, err := keyArgs(kt)
	if err != nil {
		return err
	}
	conf := filepath.Join(dir, "pki.conf")
	if err := writeFile(conf, []byte(pkiConf), 0o644); err != nil {
		return err
	}
	env := []string{"STRONGSWAN_CONF=" + conf}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pki := func(args ...string) ([]byte, error) {
		out, err := runStdout(ctx, env, "pki", args...)
		if err == nil && len(out) == 0 {
			err = fmt.Errorf("pki %v: no output", args)
		}
		return out, err
	}

	// Key generation dominates; two at a time uses both cores of a small
	// machine without starving everything else.
	var wg sync.WaitGroup
	errs := make(chan error, len(hierarchy))
	sem := make(chan struct{}, 2)
	for _, e := range hierarchy {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			key, err := pki("--gen", "--type", genType, "--size", strconv.Itoa(size), "--outform", "pem")
			if err == nil {
				err = writeFile(filepath.Join(dir, name+".key"), key, 0o600)
			}
			if err != nil {
				errs <- err
			}
		}(e.name)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}

	for _, e := range hierarchy {
		var cert []byte
		if e.issuer == "" {
			cert, err = pki("--self", "--ca", "--lifetime", "3650", "--in", filepath.Join(dir, e.name+".key"),
				"--type", "priv", "--dn", e.dn, "--outform", "pem")
		} else {
			args := []string{"--issue", "--cacert", filepath.Join(dir, e.issuer+".crt"),
				"--cakey", filepath.Join(dir, e.issuer+".key"), "--type", "priv",
				"--in", filepath.Join(dir, e.name+".key"), "--dn", e.dn}
			args = append(args, e.args...)
			cert, err = pki(append(args, "--outform", "pem")...)
		}
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, e.name+".crt"), cert, 0o644); err != nil {
			return err
		}
	}
	return os.Chmod(dir, 0o700)
}

// runStdout runs a command and returns its standard output alone (pki
// writes keys and certificates there); stderr goes into the error.
func runStdout(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := execCommand(ctx, env, name, args...)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %v: %w: %s", name, args, err, stderr.String())
	}
	return out, nil
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
