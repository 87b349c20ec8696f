package keys

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
)

// SaveKeysTable is the file strongSwan's save-keys plugin appends IKEv2
// keys to, inside its wireshark_keys directory.
const SaveKeysTable = "ikev2_decryption_table"

// ErrMalformedLine is matched by ParseSaveKeysLine errors for lines that
// are not a save-keys IKEv2 line.
var ErrMalformedLine = errors.New("malformed key line")

// SaveKeysLine is one parsed line of an ikev2_decryption_table.
type SaveKeysLine struct {
	SPIi, SPIr ike.SPI
	// Keys carries the suite and the four keys. For a suite the engine
	// cannot use (Supported false) the keys are left empty.
	Keys      sk.Keys
	Encr      string // the encryption name as written, e.g. "AES-CBC-256 [RFC3602]"
	Integ     string // the integrity name as written
	Supported bool
}

// ParseSaveKeysLine parses `SPIi,SPIr,SK_ei,SK_er,"<enc>",SK_ai,SK_ar,"<integ>"`
// (Wireshark's IKEv2 decryption table format, which strongSwan's save-keys
// writes). Every algorithm name Wireshark's table defines is recognised;
// those the engine has no cipher for give Supported == false. The key
// bytes are new slices; line is not retained (the caller may wipe it).
func ParseSaveKeysLine(line []byte) (*SaveKeysLine, error) {
	line = bytes.TrimRight(line, "\r\n \t")
	f := bytes.Split(line, []byte{','})
	if len(f) != 8 {
		return nil, fmt.Errorf("%w: %d comma-separated fields, want 8", ErrMalformedLine, len(f))
	}
	var l SaveKeysLine
	var err error
	if l.SPIi, err = parseSPI(f[0]); err != nil {
		return nil, fmt.Errorf("%w: SPIi: %v", ErrMalformedLine, err)
	}
	if l.SPIr, err = parseSPI(f[1]); err != nil {
		return nil, fmt.Errorf("%w: SPIr: %v", ErrMalformedLine, err)
	}
	enc, ok1 := unquote(f[4])
	integ, ok2 := unquote(f[7])
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: algorithm names must be quoted", ErrMalformedLine)
	}
	l.Encr, l.Integ = enc, integ
	suite, supported, err := SuiteFromWireshark(enc, integ)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedLine, err)
	}
	l.Keys.Suite, l.Supported = suite, supported
	if !supported {
		return &l, nil
	}
	for i, dst := range []*sk.Key{&l.Keys.SK_ei, &l.Keys.SK_er, &l.Keys.SK_ai, &l.Keys.SK_ar} {
		src := f[[]int{2, 3, 5, 6}[i]]
		k := make(sk.Key, hex.DecodedLen(len(src)))
		if _, err := hex.Decode(k, src); err != nil {
			k.Zero()
			l.Keys.Zero()
			return nil, fmt.Errorf("%w: %s is not hex", ErrMalformedLine, []string{"SK_ei", "SK_er", "SK_ai", "SK_ar"}[i])
		}
		*dst = k
	}
	if err := l.Keys.Validate(); err != nil {
		l.Keys.Zero()
		return nil, fmt.Errorf("%w: %v", ErrMalformedLine, err)
	}
	return &l, nil
}

func parseSPI(b []byte) (ike.SPI, error) {
	var s ike.SPI
	b = bytes.TrimPrefix(bytes.TrimPrefix(b, []byte("0x")), []byte("0X"))
	if len(b) != 16 {
		return s, fmt.Errorf("%d hex digits, want 16", len(b))
	}
	if _, err := hex.Decode(s[:], b); err != nil {
		return s, errors.New("not hex")
	}
	return s, nil
}

func unquote(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	return string(b[1 : len(b)-1]), true
}

// SuiteFromWireshark maps the encryption and integrity names of a
// Wireshark IKEv2 decryption table line to a suite. supported is false
// for names that are valid but have no cipher in the engine (NULL, DES,
// AES-CTR, AES-CCM, HMAC-MD5, HMAC_SHA2_256_96, ...); an error means a
// name is not one the format defines.
func SuiteFromWireshark(enc, integ string) (s sk.Suite, supported bool, err error) {
	name := strings.TrimSpace(enc)
	if i := strings.Index(name, " ["); i >= 0 {
		name = name[:i]
	}
	switch {
	case name == "3DES":
		s = sk.Suite{Encr: sk.Encr3DES, KeyBits: 192}
	case name == "DES":
		s = sk.Suite{Encr: sk.EncrDES, KeyBits: 64}
	case name == "NULL":
		s = sk.Suite{Encr: sk.EncrNull}
	case strings.HasPrefix(name, "AES-CBC-"):
		s = sk.Suite{Encr: sk.EncrAESCBC}
		s.KeyBits, err = aesBits(name[len("AES-CBC-"):])
	case strings.HasPrefix(name, "AES-CTR-"):
		s = sk.Suite{Encr: sk.EncrAESCTR}
		s.KeyBits, err = aesBits(name[len("AES-CTR-"):])
	case strings.HasPrefix(name, "AES-GCM-"), strings.HasPrefix(name, "AES-CCM-"):
		// "AES-GCM-256 with 16 octet ICV"
		var bits, icv int
		var rest string
		if n, _ := fmt.Sscanf(name[len("AES-GCM-"):], "%d with %d octet %s", &bits, &icv, &rest); n != 3 || rest != "ICV" {
			return s, false, fmt.Errorf("unknown encryption %q", enc)
		}
		ids := map[int]sk.EncrID{8: sk.EncrAESGCM8, 12: sk.EncrAESGCM12, 16: sk.EncrAESGCM16}
		if name[4:7] == "CCM" {
			ids = map[int]sk.EncrID{8: sk.EncrAESCCM8, 12: sk.EncrAESCCM12, 16: sk.EncrAESCCM16}
		}
		id, ok := ids[icv]
		if !ok {
			return s, false, fmt.Errorf("unknown encryption %q", enc)
		}
		s = sk.Suite{Encr: id}
		s.KeyBits, err = aesBits(strconv.Itoa(bits))
	default:
		return s, false, fmt.Errorf("unknown encryption %q", enc)
	}
	if err != nil {
		return s, false, fmt.Errorf("encryption %q: %v", enc, err)
	}
	iname := strings.TrimSpace(integ)
	if i := strings.Index(iname, " ["); i >= 0 {
		iname = iname[:i]
	}
	ids := map[string]sk.AuthID{
		"NONE":              sk.AuthNone,
		"HMAC_MD5_96":       sk.AuthHMACMD5_96,
		"HMAC_SHA1_96":      sk.AuthHMACSHA1_96,
		"HMAC_MD5_128":      sk.AuthHMACMD5_128,
		"HMAC_SHA1_160":     sk.AuthHMACSHA1_160,
		"HMAC_SHA2_256_128": sk.AuthHMACSHA2_256_128,
		"HMAC_SHA2_384_192": sk.AuthHMACSHA2_384_192,
		"HMAC_SHA2_512_256": sk.AuthHMACSHA2_512_256,
		"HMAC_SHA2_256_96":  sk.AuthHMACSHA2_256_96,
	}
	a, ok := ids[iname]
	if !ok {
		return s, false, fmt.Errorf("unknown integrity %q", integ)
	}
	s.Integ = a
	return s, s.Supported(), nil
}

func aesBits(s string) (int, error) {
	switch s {
	case "128", "192", "256":
		n, _ := strconv.Atoi(s)
		return n, nil
	}
	return 0, fmt.Errorf("key length %q", s)
}

// SaveKeysConfig configures a SaveKeys follower.
type SaveKeysConfig struct {
	// Path is the ikev2_decryption_table file, or the save-keys
	// wireshark_keys directory that holds it.
	Path string
	// PollInterval is how often the file is checked even without a
	// change notification. Default 1 s.
	PollInterval time.Duration
	// MaxLineLen bounds one line; longer ones are skipped and counted.
	// Default 4096 (a line with 64-byte keys is under 400 bytes).
	MaxLineLen int
	// Logger receives one line per skipped line, refused file or re-read
	// (never key material). Default: discard.
	Logger *slog.Logger
}

// SaveKeysStats counts what a follower read.
type SaveKeysStats struct {
	Lines       uint64 // complete lines read
	Loaded      uint64 // lines whose keys went into the store
	Unsupported uint64 // lines with a suite the engine cannot use
	Malformed   uint64 // lines skipped as malformed (never fatal)
	Rereads     uint64 // times the file was read again from the start (truncated, replaced)
	Refused     uint64 // checks that refused the file for its owner or mode
}

// SaveKeys follows strongSwan's save-keys output: it reads the table, puts
// every line's keys into a Store (the last line for an SPI pair wins), and
// keeps reading as charon appends. A file that is truncated or replaced is
// read again from the start. Malformed lines are skipped and counted.
type SaveKeys struct {
	cfg   SaveKeysConfig
	store *Store
	file  string // the table's path
	dir   string // the directory to watch

	mu      sync.Mutex
	f       *os.File
	dev     uint64
	ino     uint64
	off     int64
	partial []byte // an incomplete last line, waiting for its newline
	skip    bool   // discarding an over-long line up to its newline
	st      SaveKeysStats
	lastErr string
}

// NewSaveKeys checks the path's owner and mode, reads what is there and
// registers with the store so that a lookup miss reads new lines first.
// The table may not exist yet (charon creates it at the first IKE SA); a
// configured directory must exist.
func NewSaveKeys(store *Store, cfg SaveKeysConfig) (*SaveKeys, error) {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.MaxLineLen <= 0 {
		cfg.MaxLineLen = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &SaveKeys{cfg: cfg, store: store, file: cfg.Path, dir: filepath.Dir(cfg.Path)}
	fi, err := os.Lstat(cfg.Path)
	switch {
	case err == nil && fi.IsDir():
		if err := checkInfo(cfg.Path, fi); err != nil {
			return nil, err
		}
		s.file, s.dir = filepath.Join(cfg.Path, SaveKeysTable), cfg.Path
	case err == nil:
		if err := checkInfo(cfg.Path, fi); err != nil {
			return nil, err
		}
	case errors.Is(err, os.ErrNotExist):
		if _, derr := os.Stat(s.dir); derr != nil {
			return nil, fmt.Errorf("save-keys table %s: %w", cfg.Path, derr)
		}
	default:
		return nil, err
	}
	if err := s.Sync(); err != nil {
		return nil, err
	}
	store.AddRefresher(func() { _ = s.Sync() })
	return s, nil
}

// Sync reads whatever was appended since the last call, re-reading the
// file from the start when it was truncated or replaced. It returns an
// error only for a file it refuses (owner, mode) or cannot read; a missing
// file is not an error.
func (s *SaveKeys) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Lstat(s.file)
	if errors.Is(err, os.ErrNotExist) {
		// Keys already loaded stay until they expire.
		s.closeLocked()
		return nil
	}
	if err != nil {
		return s.fail(err)
	}
	if err := checkInfo(s.file, fi); err != nil {
		s.st.Refused++
		s.closeLocked()
		return s.fail(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if s.f != nil && (st.Dev != s.dev || st.Ino != s.ino || fi.Size() < s.off) {
		s.st.Rereads++
		s.cfg.Logger.Info("save-keys table replaced or truncated; reading it again", "path", s.file)
		s.closeLocked()
	}
	if s.f == nil {
		f, err := os.OpenFile(s.file, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return s.fail(err)
		}
		// Check the opened file too: the path may have changed under us.
		ofi, err := f.Stat()
		if err == nil {
			err = checkInfo(s.file, ofi)
		}
		if err != nil {
			f.Close()
			s.st.Refused++
			return s.fail(err)
		}
		ost := ofi.Sys().(*syscall.Stat_t)
		s.f, s.dev, s.ino, s.off = f, ost.Dev, ost.Ino, 0
	}
	return s.readLocked()
}

func (s *SaveKeys) fail(err error) error {
	if msg := err.Error(); msg != s.lastErr {
		s.lastErr = msg
		s.cfg.Logger.Error("save-keys table", "err", err)
	}
	return err
}

func (s *SaveKeys) closeLocked() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	clear(s.partial)
	s.partial, s.skip, s.off = s.partial[:0], false, 0
}

func (s *SaveKeys) readLocked() error {
	buf := make([]byte, 32*1024)
	defer clear(buf)
	for {
		n, err := s.f.ReadAt(buf, s.off)
		if n > 0 {
			s.off += int64(n)
			s.consume(buf[:n])
		}
		if err == io.EOF || (err == nil && n == 0) {
			return nil
		}
		if err != nil {
			return s.fail(err)
		}
	}
}

// consume splits b into lines, keeping an incomplete tail for later.
func (s *SaveKeys) consume(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if s.skip {
				return
			}
			if len(s.partial)+len(b) > s.cfg.MaxLineLen {
				s.dropPartial()
				return
			}
			s.partial = append(s.partial, b...)
			return
		}
		chunk := b[:i]
		b = b[i+1:]
		if s.skip {
			s.skip = false
			continue
		}
		line := chunk
		if len(s.partial) > 0 {
			if len(s.partial)+len(chunk) > s.cfg.MaxLineLen {
				s.dropPartial()
				s.skip = false
				continue
			}
			s.partial = append(s.partial, chunk...)
			line = s.partial
		}
		s.line(line)
		clear(s.partial)
		s.partial = s.partial[:0]
	}
}

func (s *SaveKeys) dropPartial() {
	clear(s.partial)
	s.partial = s.partial[:0]
	s.skip = true
	s.st.Malformed++
	s.cfg.Logger.Warn("save-keys table: over-long line skipped", "path", s.file, "max", s.cfg.MaxLineLen)
}

func (s *SaveKeys) line(line []byte) {
	t := bytes.TrimSpace(line)
	if len(t) == 0 || t[0] == '#' {
		return
	}
	s.st.Lines++
	l, err := ParseSaveKeysLine(t)
	if err != nil {
		s.st.Malformed++
		s.cfg.Logger.Warn("save-keys table: line skipped", "path", s.file, "line", s.st.Lines, "err", err)
		return
	}
	origin := "save-keys " + s.file
	if !l.Supported {
		s.st.Unsupported++
		s.store.PutUnsupported(l.SPIi, l.SPIr, l.Encr+" / "+l.Integ, origin)
		return
	}
	if err := s.store.Put(l.SPIi, l.SPIr, &l.Keys, origin); err != nil {
		s.st.Malformed++
		s.cfg.Logger.Warn("save-keys table: keys refused", "path", s.file, "line", s.st.Lines, "err", err)
		return
	}
	s.st.Loaded++
}

// Run follows the table until ctx is done: it reads on every change
// notification for the directory and at least every PollInterval (so it
// works where inotify does not). It returns ctx.Err().
func (s *SaveKeys) Run(ctx context.Context) error {
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err == nil {
		defer w.Close()
		if err := w.Add(s.dir); err == nil {
			events = w.Events
		} else {
			s.cfg.Logger.Info("save-keys table: no change notification, polling", "dir", s.dir, "err", err)
		}
	}
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	defer func() {
		s.mu.Lock()
		s.closeLocked()
		s.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if filepath.Clean(ev.Name) == filepath.Clean(s.file) {
				_ = s.Sync()
			}
		case <-t.C:
			_ = s.Sync()
		}
	}
}

// Stats returns the counters.
func (s *SaveKeys) Stats() SaveKeysStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}
