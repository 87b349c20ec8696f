package keys

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// SocketConfig configures the key socket.
type SocketConfig struct {
	// Path of the Unix socket. Its directory must be owned by the daemon's
	// user and closed to group and others (mode 0700).
	Path string
	// MaxLineLen bounds one JSON object. Default 16384.
	MaxLineLen int
	// MaxConns bounds concurrent connections. Default 16.
	MaxConns int
	// IdleTimeout closes a connection that sends nothing for this long.
	// Default 10 minutes.
	IdleTimeout time.Duration
	// PeerUIDs are the uids allowed to connect (charon's, e.g. 0 for a
	// charon running as root). Empty: root and this daemon's own uid.
	PeerUIDs []int
	// Logger receives refusals and skipped messages (never key material).
	Logger *slog.Logger
	// OnKeys, when set, is called after an SA's keys are installed, with
	// the time the writer says they were derived (member "t"; zero when
	// absent): delivery latency for metrics and benchmarks.
	OnKeys func(spiI, spiR ike.SPI, derived time.Time)
	// OnTiming, when set, is called with the stages of each SA's key
	// delivery once the reply to its keys is written (benchmarks).
	OnTiming func(KeyTiming)
}

// SocketStats counts what the key socket did.
type SocketStats struct {
	Conns       uint64 // connections accepted
	Refused     uint64 // connections refused: peer not this user or root, or too many
	Added       uint64 // SAs whose keys were installed
	Deleted     uint64 // delete messages
	Rekeys      uint64 // rekey links (old_spi_i, old_spi_r)
	Unsupported uint64 // SAs announced with a suite the engine cannot use
	Malformed   uint64 // objects skipped (bad JSON, unknown field, bad value, over-long)
}

// Socket accepts IKE SA keys from IKE daemons other than strongSwan, one
// JSON object per line (schema in the package documentation), and puts
// them into a Store.
type Socket struct {
	cfg   SocketConfig
	store *Store
	ln    *net.UnixListener
	conns connSet[SocketStats]
}

// ListenSocket creates the socket with mode 0600 after checking its
// directory; a stale socket of ours at the path is replaced, anything else
// there is refused.
func ListenSocket(store *Store, cfg SocketConfig) (*Socket, error) {
	if cfg.MaxLineLen <= 0 {
		cfg.MaxLineLen = 16384
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Dir(cfg.Path)
	if err := CheckPrivate(dir); err != nil {
		return nil, fmt.Errorf("key socket directory: %w", err)
	}
	if fi, err := os.Lstat(cfg.Path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%w: key socket path %s exists and is not a socket; remove it", ErrInsecure, cfg.Path)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
			return nil, fmt.Errorf("%w: key socket path %s exists and belongs to another user; remove it", ErrInsecure, cfg.Path)
		}
		if err := os.Remove(cfg.Path); err != nil {
			return nil, fmt.Errorf("removing stale key socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	// The directory is private, so nobody else could connect between bind
	// and this chmod; peer credentials are checked on every connection too.
	if err := os.Chmod(cfg.Path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := CheckPrivate(cfg.Path); err != nil {
		ln.Close()
		return nil, err
	}
	return &Socket{cfg: cfg, store: store, ln: ln, conns: connSet[SocketStats]{max: cfg.MaxConns}}, nil
}

// Path returns the socket path.
func (s *Socket) Path() string { return s.cfg.Path }

// Serve accepts connections until ctx is done or Close is called.
func (s *Socket) Serve(ctx context.Context) error {
	return s.conns.serve(ctx, s.ln, s.refuse, s.serveConn)
}

func (s *Socket) refuse(c net.Conn, why string) {
	s.conns.count(func(st *SocketStats) { st.Refused++ })
	s.cfg.Logger.Warn("key socket: connection refused", "reason", why)
	c.Close()
}

// admit says why the peer of c may not write keys ("" when it may): it
// is checked by its uid (SO_PEERCRED), against PeerUIDs, else against
// root and this daemon's own uid.
func (s *Socket) admit(c net.Conn) string {
	uc, _ := c.(*net.UnixConn) // s.ln is a Unix listener
	uid, err := peerUIDOf(uc)
	switch {
	case err != nil:
		return "cannot read peer credentials: " + err.Error()
	case len(s.cfg.PeerUIDs) > 0:
		if !slices.Contains(s.cfg.PeerUIDs, uid) {
			return fmt.Sprintf("peer uid %d is not one of the allowed uids %v", uid, s.cfg.PeerUIDs)
		}
	case uid != 0 && uid != os.Geteuid():
		return fmt.Sprintf("peer uid %d is neither root nor this daemon's uid %d", uid, os.Geteuid())
	}
	return ""
}

// peerUIDOf reads the connecting process's uid; tests replace it.
var peerUIDOf = peerUID

func peerUID(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return int(cred.Uid), nil
}

// Close stops accepting, closes every connection and removes the socket.
func (s *Socket) Close() error { return s.conns.close(s.ln) }

// Stats returns the counters.
func (s *Socket) Stats() SocketStats { return s.conns.stats() }

// serveConn serves one connection of the set. Its peer is checked here,
// as the key listener does its TLS handshake on the connection's
// goroutine: a refused peer holds a place under MaxConns only until the
// check, and is counted and logged as before.
func (s *Socket) serveConn(_ context.Context, c net.Conn) {
	if why := s.admit(c); why != "" {
		s.refuse(c, why)
		return
	}
	s.conns.count(func(st *SocketStats) { st.Conns++ })
	rw, tc := c, (*timedConn)(nil)
	if s.cfg.OnTiming != nil {
		tc = &timedConn{Conn: c, on: s.cfg.OnTiming}
		rw = tc
	}
	serveLines(rw, s.cfg.MaxLineLen, s.cfg.IdleTimeout, func(line []byte) error {
		err := s.handle(line, tc)
		if err != nil {
			s.cfg.Logger.Warn("key socket: message skipped", "err", err)
		}
		return err
	}, func() { s.conns.count(func(st *SocketStats) { st.Malformed++ }) })
}

// serveLines runs the key protocol on one connection: a line in, handle,
// a reply line out. The line buffer is fixed (the scanner never replaces
// it) and wiped after each line and at the end. tooLong is called once
// for a line over maxLine, which ends the connection.
func serveLines(c net.Conn, maxLine int, idle time.Duration, handle func([]byte) error, tooLong func()) {
	buf := make([]byte, maxLine)
	defer clear(buf)
	sc := bufio.NewScanner(c)
	sc.Buffer(buf, len(buf))
	w := bufio.NewWriter(c)
	reply := func(err error) bool {
		if err == nil {
			w.WriteString(`{"ok":true}` + "\n")
		} else {
			b, _ := json.Marshal(map[string]any{"ok": false, "error": err.Error()})
			w.Write(append(b, '\n'))
		}
		return w.Flush() == nil
	}
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		if !sc.Scan() {
			if errors.Is(sc.Err(), bufio.ErrTooLong) {
				tooLong()
				reply(fmt.Errorf("line longer than %d bytes; connection closed", maxLine))
			}
			return
		}
		line := sc.Bytes()
		err := handle(line)
		clear(line)
		if !reply(err) {
			return
		}
	}
}

// handle applies one JSON object from the Unix socket; tc, when timing,
// gets the stages of a line that installed keys.
func (s *Socket) handle(line []byte, tc *timedConn) error {
	var read time.Time
	if tc != nil {
		read = time.Now()
	}
	res, info, err := applyLine(s.store, line, "key socket", nil)
	if err == nil && res == lineAdded && tc != nil {
		tc.pending = KeyTiming{SPIi: info.spiI, SPIr: info.spiR, Derived: info.derived, Queued: info.queued,
			Written: info.written, SenderWait: info.runqueue, Read: read, Installed: time.Now()}
		tc.has = true
	}
	if err == nil && res == lineAdded && s.cfg.OnKeys != nil {
		s.cfg.OnKeys(info.spiI, info.spiR, info.derived)
	}
	s.conns.count(func(st *SocketStats) {
		if info.rekey {
			st.Rekeys++
		}
		switch {
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
	return err
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func jsonSPI(raw map[string]json.RawMessage, name string) (ike.SPI, error) {
	v, ok := raw[name]
	if !ok {
		return ike.SPI{}, fmt.Errorf("%q is missing", name)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return ike.SPI{}, fmt.Errorf("%q must be a string of 16 hex digits", name)
	}
	spi, err := parseSPI([]byte(s))
	if err != nil {
		return spi, fmt.Errorf("%q: %v", name, err)
	}
	return spi, nil
}

// jsonInteg reads an integrity transform: a name, or its IANA number as a
// JSON number or string (0 or "" for AEAD suites).
func jsonInteg(v json.RawMessage) (sk.AuthID, error) {
	if len(v) == 0 {
		return sk.AuthNone, nil
	}
	var name string
	if err := json.Unmarshal(v, &name); err != nil {
		var n uint16
		if err := json.Unmarshal(v, &n); err != nil {
			return 0, errors.New(`"integ" must be a transform name or number`)
		}
		return sk.AuthID(n), nil
	}
	if n, err := strconv.ParseUint(name, 10, 16); err == nil {
		return sk.AuthID(n), nil
	}
	id, ok := sk.ParseAuth(name)
	if !ok {
		return 0, fmt.Errorf("unknown integrity transform %q", name)
	}
	return id, nil
}

func jsonEncr(v json.RawMessage) (sk.EncrID, error) {
	if len(v) == 0 {
		return 0, errors.New(`"encr" is missing`)
	}
	var name string
	if err := json.Unmarshal(v, &name); err != nil {
		var n uint16
		if err := json.Unmarshal(v, &n); err != nil {
			return 0, errors.New(`"encr" must be a transform name or number`)
		}
		return sk.EncrID(n), nil
	}
	if n, err := strconv.ParseUint(name, 10, 16); err == nil {
		return sk.EncrID(n), nil
	}
	id, ok := sk.ParseEncr(name)
	if !ok {
		return 0, fmt.Errorf("unknown encryption transform %q", name)
	}
	return id, nil
}

// jsonKey decodes a hex string member without making an immutable copy of
// the secret: the raw bytes are decoded in place (and wiped by handle).
func jsonKey(v json.RawMessage) (sk.Key, error) {
	if len(v) == 0 || string(v) == `""` || string(v) == "null" {
		return nil, nil
	}
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, errors.New("must be a hex string")
	}
	h := v[1 : len(v)-1]
	if len(h) >= 2 && h[0] == '0' && (h[1] == 'x' || h[1] == 'X') {
		h = h[2:]
	}
	k := make(sk.Key, hex.DecodedLen(len(h)))
	if _, err := hex.Decode(k, h); err != nil {
		k.Zero()
		return nil, errors.New("not hex")
	}
	return k, nil
}
