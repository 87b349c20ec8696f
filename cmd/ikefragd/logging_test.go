package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/cmd/ikefragd/internal/config"
)

// A reload switches level and format; loggers derived before the switch
// follow it with their attributes.
func TestLogSwitch(t *testing.T) {
	var buf bytes.Buffer
	log, sw := newLogger(config.Log{Level: "info", Format: "text"}, &buf)
	sub := log.With("component", "diag").WithGroup("g")
	sub.Debug("hidden")
	sub.Info("as text", "k", 1)
	sw.apply(config.Log{Level: "debug", Format: "json"}, &buf)
	sub.Debug("as json", "k", 2)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines:\n%s", buf.String())
	}
	if !strings.Contains(lines[0], "component=diag") || !strings.Contains(lines[0], "g.k=1") {
		t.Errorf("text line %q", lines[0])
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatalf("json line %q: %v", lines[1], err)
	}
	if m["component"] != "diag" || m["msg"] != "as json" || m["g"].(map[string]any)["k"] != float64(2) {
		t.Errorf("json line %v", m)
	}
}

// auto picks the journal only when stderr is the stream systemd connected
// (JOURNAL_STREAM names its device and inode) and the journal answers.
func TestAutoFormat(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", "")
	if connectedToJournal(f) {
		t.Errorf("connected without JOURNAL_STREAM")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !connectedToJournal(f) {
		t.Errorf("not connected with a matching JOURNAL_STREAM")
	}
	t.Setenv("JOURNAL_STREAM", "1:2")
	if connectedToJournal(f) || resolveFormat("auto", f) != "text" || resolveFormat("auto", &bytes.Buffer{}) != "text" {
		t.Errorf("a foreign JOURNAL_STREAM picked the journal")
	}
}

func TestJournalFields(t *testing.T) {
	for in, want := range map[string]string{
		"code": "CODE", "session-id": "SESSION_ID", "_secret": "SECRET", "9lives": "F9LIVES",
		"message": "IKEFRAG_MESSAGE", "priority": "IKEFRAG_PRIORITY", "": "F",
	} {
		if got := journalField(in); got != want {
			t.Errorf("journalField(%q) = %q, want %q", in, got, want)
		}
	}
	vars := map[string]string{}
	addJournalAttr(vars, "", slog.Group("verdict", slog.String("code", "OK"), slog.Int("session", 3)))
	addJournalAttr(vars, "", slog.Any("evidence", []string{"a", "b"}))
	addJournalAttr(vars, "", slog.Any("err", fmt.Errorf("boom")))
	want := map[string]string{"VERDICT_CODE": "OK", "VERDICT_SESSION": "3", "EVIDENCE": "a\nb", "ERR": "boom"}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, vars[k], v, vars)
		}
	}
}
