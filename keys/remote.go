package keys

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
)

// The key listener takes IKE SA keys from key forwarders on VPN server
// hosts (Forwarder, `ikefragctl keys forward`), over mutually
// authenticated TLS 1.3, in the key socket's line protocol. Each
// forwarder is a configured client, known by its certificate, and may
// supply keys only for IKE SAs of a VPN server (the "server" member,
// required here) is one of its backends.

// ErrCleartext refuses a key listener or forwarder without TLS off
// loopback.
var ErrCleartext = errors.New("keys would cross the network in clear")

// RemoteClient is one forwarder the key listener accepts.
type RemoteClient struct {
	// Name is matched against the certificate's subject common name and
	// DNS names, for certificates signed by RemoteConfig.ClientCAFile.
	Name string `mapstructure:"name"`
	// SHA256 pins the client's certificate by the SHA-256 of its DER
	// encoding (hex, colons allowed): it is accepted whoever signed it.
	SHA256 string `mapstructure:"sha256"`
	// Backends are the VPN server (backend) addresses it may supply keys for.
	Backends []string `mapstructure:"backends"`
}

// RemoteConfig configures the key listener.
type RemoteConfig struct {
	// Address is host:port to listen on.
	Address string
	// CertFile and KeyFile are the listener's certificate and key (PEM).
	// The key file must be private to its owner.
	CertFile, KeyFile string
	// ClientCAFile holds the CA certificates (PEM) that sign forwarders'
	// certificates; clients are then matched by Name. Without it only
	// pinned certificates (SHA256) are accepted.
	ClientCAFile string
	// Clients are the accepted forwarders.
	Clients []RemoteClient
	// Insecure listens without TLS; refused unless Address is a loopback
	// address (a forwarder on the same host, or a test). Every connection
	// then speaks for all clients' backends.
	Insecure bool
	// MaxLineLen, MaxConns and IdleTimeout as for the key socket
	// (defaults 16384, 64, 10 minutes).
	MaxLineLen  int
	MaxConns    int
	IdleTimeout time.Duration
	// Logger receives refusals (never key material).
	Logger *slog.Logger
}

// RemoteStats counts what the key listener did.
type RemoteStats struct {
	Conns       uint64 // connections accepted and authenticated
	Refused     uint64 // handshake failed, certificate not on the list, or too many connections
	Forbidden   uint64 // messages for a server the client is not configured for
	Added       uint64
	Deleted     uint64
	Unsupported uint64
	Malformed   uint64
}

type remoteClient struct {
	name     string
	pin      []byte
	backends []netip.Addr
}

// Remote is the key listener.
type Remote struct {
	cfg     RemoteConfig
	store   *Store
	ln      net.Listener
	tls     *tls.Config
	clients []remoteClient
	verify  bool // client CA configured

	conns connSet[RemoteStats]
}

// ListenRemote checks cfg, loads the certificates and listens.
func ListenRemote(store *Store, cfg RemoteConfig) (*Remote, error) {
	if cfg.MaxLineLen <= 0 {
		cfg.MaxLineLen = 16384
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Remote{cfg: cfg, store: store, conns: connSet[RemoteStats]{max: cfg.MaxConns}}
	host, _, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("keys.listen.address %q: %v", cfg.Address, err)
	}
	for i, c := range cfg.Clients {
		rc, err := parseRemoteClient(c)
		if err != nil {
			return nil, fmt.Errorf("keys.listen.clients[%d]: %w", i, err)
		}
		r.clients = append(r.clients, rc)
	}
	if cfg.Insecure {
		if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
			return nil, fmt.Errorf("keys.listen.tls off is allowed only on a loopback address, not %q: %w", cfg.Address, ErrCleartext)
		}
	} else {
		if len(r.clients) == 0 {
			return nil, errors.New("keys.listen.clients: no client configured; the listener would accept nobody")
		}
		if r.tls, err = r.serverTLS(); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("keys.listen.address: %w", err)
	}
	r.ln = ln
	return r, nil
}

// ParseRemoteClient reads a client of the configuration's compact form:
// NAME=BACKEND[,BACKEND...] for a certificate signed by the client CA
// whose common name or a DNS name is NAME, or sha256:HEX=BACKEND[,...]
// for a pinned certificate.
func ParseRemoteClient(s string) (RemoteClient, error) {
	who, list, ok := strings.Cut(s, "=")
	if !ok || who == "" || list == "" {
		return RemoteClient{}, errors.New("want NAME=BACKEND[,BACKEND...] or sha256:HEX=BACKEND[,...]")
	}
	c := RemoteClient{Backends: strings.Split(list, ",")}
	if pin, ok := strings.CutPrefix(who, "sha256:"); ok {
		c.SHA256 = pin
	} else {
		c.Name = who
	}
	_, err := parseRemoteClient(c)
	return c, err
}

func parseRemoteClient(c RemoteClient) (remoteClient, error) {
	rc := remoteClient{name: c.Name}
	if c.SHA256 != "" {
		pin, err := hex.DecodeString(strings.ReplaceAll(c.SHA256, ":", ""))
		if err != nil || len(pin) != sha256.Size {
			return rc, fmt.Errorf("sha256 %q: want the 64 hex digits of a certificate's SHA-256", c.SHA256)
		}
		rc.pin = pin
	}
	if c.Name == "" && rc.pin == nil {
		return rc, errors.New("a client needs a name (with client_ca) or a sha256 pin")
	}
	if len(c.Backends) == 0 {
		return rc, fmt.Errorf("client %q: backends is empty: it could supply no key", c.Name)
	}
	for _, b := range c.Backends {
		a, err := netip.ParseAddr(b)
		if err != nil {
			return rc, fmt.Errorf("client %q: backend %q is not an IP address", c.Name, b)
		}
		rc.backends = append(rc.backends, a.Unmap())
	}
	return rc, nil
}

func (r *Remote) serverTLS() (*tls.Config, error) {
	if err := CheckPrivate(r.cfg.KeyFile); err != nil {
		return nil, fmt.Errorf("keys.listen.key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("keys.listen.cert/key: %w", err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
	}
	if r.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(r.cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("keys.listen.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("keys.listen.client_ca %s: no PEM certificate in it", r.cfg.ClientCAFile)
		}
		r.verify = true
		// Verified in identify: a pinned certificate needs no CA.
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error { return nil }
		c.ClientCAs = pool
	}
	// A client not on the list fails the handshake itself, so that the
	// forwarder is told with a TLS alert (bad_certificate) rather than a
	// bare close after a handshake that looked complete to it.
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if rc, why := r.identify(cs); rc == nil {
			return errors.New(why)
		}
		return nil
	}
	return c, nil
}

// Addr is the listening address (useful with port 0).
func (r *Remote) Addr() net.Addr { return r.ln.Addr() }

// Serve accepts connections until ctx is done or Close is called.
func (r *Remote) Serve(ctx context.Context) error {
	return r.conns.serve(ctx, r.ln, r.refuse, r.serve)
}

func (r *Remote) refuse(c net.Conn, why string) {
	r.conns.count(func(st *RemoteStats) { st.Refused++ })
	r.cfg.Logger.Warn("key listener: connection refused", "peer", c.RemoteAddr().String(), "reason", why)
	c.Close()
}

// Stats returns the counters.
func (r *Remote) Stats() RemoteStats { return r.conns.stats() }

func (r *Remote) serve(ctx context.Context, c net.Conn) {
	var backends []netip.Addr
	name := "insecure"
	if r.tls != nil {
		tc := tls.Server(c, r.tls)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			r.refuse(c, "TLS handshake: "+err.Error())
			return
		}
		rc, why := r.identify(tc.ConnectionState())
		if rc == nil {
			r.refuse(tc, why)
			return
		}
		name, backends, c = rc.name, rc.backends, tc
	} else {
		for _, rc := range r.clients {
			backends = append(backends, rc.backends...)
		}
	}
	r.conns.count(func(st *RemoteStats) { st.Conns++ })
	r.cfg.Logger.Info("key listener: forwarder connected", "client", name, "peer", c.RemoteAddr().String())
	var allow func(netip.Addr) error
	if r.tls != nil || len(backends) > 0 {
		allow = func(a netip.Addr) error {
			if slices.Contains(backends, a) {
				return nil
			}
			return fmt.Errorf("client %q may not supply keys for server %s", name, a)
		}
	}
	serveLines(c, r.cfg.MaxLineLen, r.cfg.IdleTimeout, func(line []byte) error {
		res, _, err := applyLine(r.store, line, "key listener "+name, allow)
		r.conns.count(func(st *RemoteStats) {
			switch {
			case errors.Is(err, errForbidden):
				st.Forbidden++
			case err != nil:
				st.Malformed++
			case res == lineAdded:
				st.Added++
			case res == lineDeleted:
				st.Deleted++
			case res == lineUnsupported:
				st.Unsupported++
			}
		})
		if err != nil {
			r.cfg.Logger.Warn("key listener: message refused", "client", name, "err", err)
		}
		return err
	}, func() { r.conns.count(func(st *RemoteStats) { st.Malformed++ }) })
}

// identify finds the configured client of a TLS peer: by pinned
// certificate, else by name on a certificate the client CA verifies.
func (r *Remote) identify(cs tls.ConnectionState) (*remoteClient, string) {
	if len(cs.PeerCertificates) == 0 {
		return nil, "no client certificate"
	}
	leaf := cs.PeerCertificates[0]
	sum := sha256.Sum256(leaf.Raw)
	for i := range r.clients {
		if p := r.clients[i].pin; p != nil && string(p) == string(sum[:]) {
			return &r.clients[i], ""
		}
	}
	if !r.verify {
		return nil, fmt.Sprintf("certificate %q (sha256 %x) is not pinned by any client", leaf.Subject.CommonName, sum)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.tls.ClientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Sprintf("certificate %q: %v", leaf.Subject.CommonName, err)
	}
	for i := range r.clients {
		n := r.clients[i].name
		if n != "" && r.clients[i].pin == nil && (leaf.Subject.CommonName == n || slices.Contains(leaf.DNSNames, n)) {
			return &r.clients[i], ""
		}
	}
	return nil, fmt.Sprintf("certificate %q is not on the client list", leaf.Subject.CommonName)
}

// Close stops accepting and closes every connection.
func (r *Remote) Close() error { return r.conns.close(r.ln) }
