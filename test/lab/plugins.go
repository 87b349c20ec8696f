package lab

// The charon plugins the lab builds: strongSwan's save-keys and ikefrag-keys.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	saveKeysMu   sync.Mutex
	saveKeysPath string
	keyFeedPath  string
)

// KeyFeedPlugin returns the path of the ikefrag-keys plugin built for the
// installed charon by keys/strongswan-plugin/build.sh (cached; the first
// build takes about a minute). $IKEFRAG_LAB_KEYS_SO names a prebuilt one.
func KeyFeedPlugin(t testing.TB) string {
	t.Helper()
	p, err := keyFeedPlugin()
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return p
}

func keyFeedPlugin() (string, error) {
	saveKeysMu.Lock()
	defer saveKeysMu.Unlock()
	if keyFeedPath != "" {
		return keyFeedPath, nil
	}
	if p := os.Getenv("IKEFRAG_LAB_KEYS_SO"); p != "" {
		keyFeedPath = p
		return p, nil
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate keys/strongswan-plugin/build.sh")
	}
	script := filepath.Join(filepath.Dir(self), "..", "..", "keys", "strongswan-plugin", "build.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := runStdout(ctx, nil, script)
	if err != nil {
		return "", fmt.Errorf("ikefrag-keys plugin: %w", err)
	}
	p := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(p, '\n'); i >= 0 {
		p = p[i+1:]
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("ikefrag-keys plugin: %w", err)
	}
	keyFeedPath = p
	return p, nil
}

// SaveKeysPlugin returns the path of the save-keys plugin built for the
// installed charon, building it on first use (about two minutes; see
// strongswan-save-keys.sh). $IKEFRAG_LAB_SAVE_KEYS_SO names a prebuilt one.
func SaveKeysPlugin(t testing.TB) string {
	t.Helper()
	p, err := saveKeysPlugin()
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return p
}
