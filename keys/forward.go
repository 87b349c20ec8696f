package keys

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The key forwarder runs on a VPN server host. The IKE daemon's key
// plugin writes to its Unix socket (the key socket's protocol); it keeps
// the keys of every live IKE SA in memory and sends each message, over
// TLS 1.3 with its client certificate, to the key listener of every
// configured proxy (both boxes of a pair). A proxy that comes back (a
// restart, a network failure) is sent the live SAs again first.
//
//	plugin ── unix ──▶ Forwarder.serveLocal ─▶ live set ─▶ queue per target ─▶ TLS ─▶ Remote (ikefragd)

// ForwarderConfig configures a Forwarder.
type ForwarderConfig struct {
	// Socket is the Unix socket the plugin connects to; its directory
	// must be private to the forwarder's user (as the key socket's).
	Socket string
	// AllowUID may connect besides root and the forwarder's own user
	// (charon's uid when charon runs unprivileged); -1: nobody else.
	AllowUID int
	// Targets are the proxies' key listeners, host:port.
	Targets []string
	// CertFile and KeyFile are the forwarder's client certificate and
	// key; CAFile verifies the listeners' certificates; ServerName, when
	// set, is the name their certificates must carry (default: the
	// target's host).
	CertFile, KeyFile, CAFile, ServerName string
	// Insecure sends without TLS, to loopback targets only.
	Insecure bool
	// MaxSAs bounds the live set (default 65536): beyond it new SAs are
	// refused to the plugin and counted.
	MaxSAs int
	// QueueLen bounds each target's queue of messages (default 4096);
	// overflowing it drops the queue and sends the live set again.
	QueueLen int
	Logger   *slog.Logger
}

// ForwarderStats counts what a Forwarder did.
type ForwarderStats struct {
	Received uint64 // messages from the plugin
	Refused  uint64 // plugin messages refused (no SPI pair, live set full)
	Live     int    // IKE SAs whose keys are held
	Targets  []TargetStats
}

// TargetStats are one proxy's counters.
type TargetStats struct {
	Address    string
	Connected  bool
	Connects   uint64 // connections made
	Sent       uint64 // messages written
	Acked      uint64 // {"ok":true} replies
	Errors     uint64 // {"ok":false} replies (logged without keys)
	Resends    uint64 // live-set resends (after a connect or an overflow)
	Overflowed uint64 // messages dropped from a full queue
}

type spiPair struct{ i, r string }

// Forwarder is a running key forwarder.
type Forwarder struct {
	cfg ForwarderConfig
	ln  *net.UnixListener
	tls *tls.Config

	mu       sync.Mutex         // guards live, links and the targets' queues' order
	live     map[spiPair][]byte // the keys message of each live IKE SA
	links    map[spiPair][]byte // rekey links sent on their own (old_spi_*, no keys)
	received atomic.Uint64
	refused  atomic.Uint64

	targets []*target
	wg      sync.WaitGroup
}

type target struct {
	addr   string
	q      chan []byte
	resync atomic.Bool
	st     struct {
		connected                                          atomic.Bool
		connects, sent, acked, errors, resends, overflowed atomic.Uint64
	}
}

// NewForwarder checks cfg, loads the certificates and creates the Unix
// socket.
func NewForwarder(cfg ForwarderConfig) (*Forwarder, error) {
	if cfg.MaxSAs <= 0 {
		cfg.MaxSAs = 65536
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Targets) == 0 {
		return nil, errors.New("key forwarder: no target (--to HOST:PORT)")
	}
	f := &Forwarder{cfg: cfg, live: map[spiPair][]byte{}, links: map[spiPair][]byte{}}
	for _, t := range cfg.Targets {
		host, _, err := net.SplitHostPort(t)
		if err != nil {
			return nil, fmt.Errorf("key forwarder: target %q: %v", t, err)
		}
		if cfg.Insecure {
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("key forwarder: without TLS only loopback targets are allowed, not %q: %w", t, ErrCleartext)
			}
		}
		f.targets = append(f.targets, &target{addr: t, q: make(chan []byte, cfg.QueueLen)})
	}
	if !cfg.Insecure {
		if cfg.CertFile == "" || cfg.KeyFile == "" || cfg.CAFile == "" {
			return nil, errors.New("key forwarder: --cert, --key and --ca are required (or --insecure to a loopback target)")
		}
		if err := CheckPrivate(cfg.KeyFile); err != nil {
			return nil, fmt.Errorf("key forwarder: --key: %w", err)
		}
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("key forwarder: certificate: %w", err)
		}
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("key forwarder: --ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("key forwarder: --ca %s: no PEM certificate in it", cfg.CAFile)
		}
		f.tls = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: cfg.ServerName,
			// Always this certificate: crypto/tls would otherwise send
			// none when the listener names CAs that did not sign it (a
			// pinned, self-signed certificate).
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	}
	// the same checks as the daemon's key socket: private directory,
	// mode 0600, a stale socket of ours replaced
	s, err := ListenSocket(nil, SocketConfig{Path: cfg.Socket})
	if err != nil {
		return nil, fmt.Errorf("key forwarder: %w", err)
	}
	f.ln = s.ln
	return f, nil
}

// Run serves the plugin and the targets until ctx is done; it then wipes
// every key it holds.
func (f *Forwarder) Run(ctx context.Context) error {
	for _, t := range f.targets {
		f.wg.Add(1)
		go f.runTarget(ctx, t)
	}
	stop := context.AfterFunc(ctx, func() { f.ln.Close() })
	defer stop()
	var conns sync.WaitGroup
	for {
		c, err := f.ln.AcceptUnix()
		if err != nil {
			break
		}
		if uid, err := peerUIDOf(c); err != nil || (uid != 0 && uid != os.Geteuid() && uid != f.cfg.AllowUID) {
			f.cfg.Logger.Warn("key forwarder: plugin connection refused", "uid", uid, "err", err)
			c.Close()
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			defer c.Close()
			serveLines(c, 16384, 24*time.Hour, f.fromPlugin, func() { f.refused.Add(1) })
		}()
	}
	conns.Wait()
	f.wg.Wait()
	f.mu.Lock()
	for k, v := range f.live {
		clear(v)
		delete(f.live, k)
	}
	clear(f.links)
	f.mu.Unlock()
	for _, t := range f.targets {
		drain(t.q)
	}
	return nil
}

func drain(q chan []byte) {
	for {
		select {
		case m := <-q:
			clear(m)
		default:
			return
		}
	}
}

// fromPlugin takes one message: it updates the live set and queues the
// message for every target. Only the SPIs and the delete flag are read
// here; the proxies check the rest and their refusals are counted.
func (f *Forwarder) fromPlugin(line []byte) error {
	if len(trimSpace(line)) == 0 {
		return nil
	}
	f.received.Add(1)
	var head struct {
		SPIi   string          `json:"spi_i"`
		SPIr   string          `json:"spi_r"`
		Delete bool            `json:"delete"`
		Encr   json.RawMessage `json:"encr"`
	}
	if err := json.Unmarshal(line, &head); err != nil || head.SPIi == "" || head.SPIr == "" {
		f.refused.Add(1)
		return errors.New(`not a key message: "spi_i" and "spi_r" are required`)
	}
	k := spiPair{head.SPIi, head.SPIr}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case head.Delete:
		if old, ok := f.live[k]; ok {
			clear(old)
			delete(f.live, k)
		}
		delete(f.links, k)
	case len(head.Encr) == 0:
		// a rekey link without keys: kept beside the SA's keys, not
		// instead of them
		if len(f.links) >= f.cfg.MaxSAs {
			f.refused.Add(1)
			return fmt.Errorf("live set full (%d rekey links)", f.cfg.MaxSAs)
		}
		f.links[k] = append([]byte(nil), line...)
	default:
		old, ok := f.live[k]
		if !ok && len(f.live) >= f.cfg.MaxSAs {
			f.refused.Add(1)
			return fmt.Errorf("live set full (%d IKE SAs)", f.cfg.MaxSAs)
		}
		clear(old)
		f.live[k] = append([]byte(nil), line...)
	}
	for _, t := range f.targets {
		m := append(make([]byte, 0, len(line)+1), line...)
		select {
		case t.q <- m:
		default:
			// the live set goes again: nothing is lost but this copy
			clear(m)
			t.st.overflowed.Add(1)
			t.resync.Store(true)
		}
	}
	return nil
}

// snapshot copies the live set (under f.mu, so no queued message is
// older than it and missing from it).
func (f *Forwarder) snapshot() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]byte, 0, len(f.live)+len(f.links))
	for _, v := range f.live {
		out = append(out, append([]byte(nil), v...))
	}
	// links after keys: the proxy links SAs whose keys it then has
	for _, v := range f.links {
		out = append(out, append([]byte(nil), v...))
	}
	return out
}

func (f *Forwarder) runTarget(ctx context.Context, t *target) {
	defer f.wg.Done()
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		start, replies := time.Now(), t.replies()
		connected, err := f.session(ctx, t)
		t.st.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		// Under TLS 1.3 the client's handshake is over before the
		// listener has judged its certificate: a forwarder the listener
		// refuses is "connected" until the listener's alert or close.
		// Only a target that answered, or kept the connection a while,
		// accepted it; anything else backs off as a failure does.
		if connected && (t.replies() > replies || time.Since(start) >= acceptedAfter) {
			// it worked until now: the next try comes quickly
			backoff = 250 * time.Millisecond
		}
		f.cfg.Logger.Warn("key forwarder: target unavailable; retrying", "target", t.addr, "err", err, "in", backoff)
		// jitter: a pair of proxies restarting together is not hit in step
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// acceptedAfter is how long a connection without any reply must last to
// count as accepted by the target (an idle feed sends nothing, so there
// is nothing to answer); a listener refusing the certificate closes it
// within a round trip.
const acceptedAfter = 5 * time.Second

// replies counts the target's answers, accepting or refusing a message:
// either way the listener took the connection.
func (t *target) replies() uint64 { return t.st.acked.Load() + t.st.errors.Load() }

// session is one connection to a target: the live set first, then the
// queue, until an error. connected says whether it got that far.
func (f *Forwarder) session(ctx context.Context, t *target) (connected bool, err error) {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return false, err
	}
	c := raw
	if f.tls != nil {
		cfg := f.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(t.addr)
		}
		tc := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return false, fmt.Errorf("TLS: %w", err)
		}
		c = tc
	}
	connected = true
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	t.st.connects.Add(1)
	t.st.connected.Store(true)
	f.cfg.Logger.Info("key forwarder: connected", "target", t.addr)
	done := make(chan error, 1)
	go func() { done <- t.readReplies(c, f.cfg.Logger) }()
	w := bufio.NewWriter(c)
	write := func(m []byte) error {
		defer clear(m)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(m); err != nil {
			return err
		}
		if err := w.WriteByte('\n'); err != nil {
			return err
		}
		t.st.sent.Add(1)
		return nil
	}
	t.resync.Store(true) // a new connection starts with the live set
	for {
		if t.resync.Swap(false) {
			t.st.resends.Add(1)
			snap := f.snapshot()
			for i, m := range snap {
				if err := write(m); err != nil {
					for _, r := range snap[i+1:] {
						clear(r)
					}
					return true, err
				}
			}
			if err := w.Flush(); err != nil {
				return true, err
			}
		}
		select {
		case <-ctx.Done():
			return true, nil
		case err := <-done:
			return true, err
		case m := <-t.q:
			if err := write(m); err != nil {
				return true, err
			}
			// batch what is queued already, then flush
			for n := len(t.q); n > 0; n-- {
				if err := write(<-t.q); err != nil {
					return true, err
				}
			}
			if err := w.Flush(); err != nil {
				return true, err
			}
		}
	}
}

func (t *target) readReplies(c net.Conn, log *slog.Logger) error {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), 4096)
	for sc.Scan() {
		var r struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if r.OK {
			t.st.acked.Add(1)
			continue
		}
		t.st.errors.Add(1)
		// the listener's reasons never quote key material
		log.Warn("key forwarder: target refused a message", "target", t.addr, "error", r.Error)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("connection closed by the target")
}

// Stats returns the counters.
func (f *Forwarder) Stats() ForwarderStats {
	f.mu.Lock()
	live := len(f.live)
	f.mu.Unlock()
	s := ForwarderStats{Received: f.received.Load(), Refused: f.refused.Load(), Live: live}
	for _, t := range f.targets {
		s.Targets = append(s.Targets, TargetStats{Address: t.addr, Connected: t.st.connected.Load(),
			Connects: t.st.connects.Load(), Sent: t.st.sent.Load(), Acked: t.st.acked.Load(), Errors: t.st.errors.Load(),
			Resends: t.st.resends.Load(), Overflowed: t.st.overflowed.Load()})
	}
	return s
}

// Path returns the plugin-facing socket's path.
func (f *Forwarder) Path() string { return f.ln.Addr().String() }
