package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/cmd/ikefragd/internal/config"
)

// logSwitch is the daemon's slog.Handler: a reload may change the level and
// the format, so the real handler sits behind an atomic pointer, and the
// attributes and groups of derived loggers are replayed onto whichever
// handler is current.
type logSwitch struct {
	root  *logRoot
	ops   []logOp
	cache atomic.Pointer[cachedHandler]
}

type logRoot struct {
	level slog.LevelVar
	cur   atomic.Pointer[handlerGen]
}

type handlerGen struct {
	h   slog.Handler
	gen uint64
}

type cachedHandler struct {
	gen uint64
	h   slog.Handler
}

type logOp struct {
	group string
	attrs []slog.Attr
}

var logGen atomic.Uint64

// newLogger returns the daemon's logger, writing to w in the configured
// format.
func newLogger(cfg config.Log, w io.Writer) (*slog.Logger, *logSwitch) {
	s := &logSwitch{root: &logRoot{}}
	s.apply(cfg, w)
	return slog.New(s), s
}

// apply switches level and format.
func (s *logSwitch) apply(cfg config.Log, w io.Writer) {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(cfg.Level))
	s.root.level.Set(lv)
	opts := &slog.HandlerOptions{Level: &s.root.level}
	var h slog.Handler
	switch resolveFormat(cfg.Format, w) {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "journal":
		h = &journalHandler{level: &s.root.level, fallback: slog.NewTextHandler(w, opts)}
	default:
		h = slog.NewTextHandler(w, opts)
	}
	s.root.cur.Store(&handlerGen{h: h, gen: logGen.Add(1)})
}

// resolveFormat turns "auto" into journal when stderr is connected to the
// journal (systemd sets JOURNAL_STREAM to its device and inode), else text.
func resolveFormat(format string, w io.Writer) string {
	if format != "auto" {
		return format
	}
	if f, ok := w.(*os.File); ok && connectedToJournal(f) && journal.Enabled() {
		return "journal"
	}
	return "text"
}

func connectedToJournal(f *os.File) bool {
	v := os.Getenv("JOURNAL_STREAM")
	if v == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return v == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func (s *logSwitch) current() slog.Handler {
	g := s.root.cur.Load()
	if c := s.cache.Load(); c != nil && c.gen == g.gen {
		return c.h
	}
	h := g.h
	for _, op := range s.ops {
		if op.group != "" {
			h = h.WithGroup(op.group)
		} else {
			h = h.WithAttrs(op.attrs)
		}
	}
	s.cache.Store(&cachedHandler{gen: g.gen, h: h})
	return h
}

func (s *logSwitch) Enabled(_ context.Context, l slog.Level) bool {
	return l >= s.root.level.Level()
}

func (s *logSwitch) Handle(ctx context.Context, r slog.Record) error {
	return s.current().Handle(ctx, r)
}

func (s *logSwitch) WithAttrs(as []slog.Attr) slog.Handler {
	return &logSwitch{root: s.root, ops: append(append([]logOp{}, s.ops...), logOp{attrs: as})}
}

func (s *logSwitch) WithGroup(name string) slog.Handler {
	if name == "" {
		return s
	}
	return &logSwitch{root: s.root, ops: append(append([]logOp{}, s.ops...), logOp{group: name})}
}

// journalHandler sends each record to the journal with its attributes as
// journal fields (CODE=FRAGMENTS_DROPPED, INTERFACE=eth0, ...), so that
// `journalctl -u ikefragd CODE=FRAGMENTS_DROPPED` selects verdicts.
type journalHandler struct {
	level    *slog.LevelVar
	prefix   string // field-name prefix from groups
	attrs    map[string]string
	fallback slog.Handler
	mu       sync.Mutex
	failed   bool
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	vars := make(map[string]string, len(h.attrs)+r.NumAttrs()+2)
	for k, v := range h.attrs {
		vars[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		addJournalAttr(vars, h.prefix, a)
		return true
	})
	vars["SYSLOG_IDENTIFIER"] = "ikefragd"
	err := journal.Send(r.Message, journalPriority(r.Level), vars)
	if err != nil {
		// The journal went away: say it once, then keep logging to stderr.
		h.mu.Lock()
		first := !h.failed
		h.failed = true
		h.mu.Unlock()
		if first {
			fmt.Fprintf(os.Stderr, "ikefragd: the journal refused a message (%v); logging as text\n", err)
		}
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := &journalHandler{level: h.level, prefix: h.prefix, attrs: map[string]string{}, fallback: h.fallback.WithAttrs(as)}
	for k, v := range h.attrs {
		n.attrs[k] = v
	}
	for _, a := range as {
		addJournalAttr(n.attrs, h.prefix, a)
	}
	return n
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &journalHandler{level: h.level, prefix: h.prefix + journalField(name) + "_", attrs: h.attrs, fallback: h.fallback.WithGroup(name)}
}

func addJournalAttr(vars map[string]string, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += journalField(a.Key) + "_"
		}
		for _, g := range a.Value.Group() {
			addJournalAttr(vars, p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	var v string
	switch x := a.Value.Any().(type) {
	case []string:
		v = strings.Join(x, "\n")
	case error:
		v = x.Error()
	default:
		v = a.Value.String()
	}
	vars[prefix+journalField(a.Key)] = v
}

// journalField makes a journal field name: upper case letters, digits and
// underscores, not starting with an underscore (those are trusted fields).
func journalField(k string) string {
	b := []byte(strings.ToUpper(k))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	s := strings.TrimLeft(string(b), "_")
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		s = "F" + s
	}
	switch s {
	case "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC":
		s = "IKEFRAG_" + s
	}
	return s
}

func journalPriority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}
