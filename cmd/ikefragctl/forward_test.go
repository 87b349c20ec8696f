package main

import (
	"path/filepath"
	"testing"
)

// keys forward refuses, with exit 2 and before it listens, what would send
// keys in clear across the network or has nowhere to send them.
func TestForwardRefusesBadInput(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "keys.sock")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"clear text to a remote target", []string{"--insecure", "--to", "192.0.2.1:4501"}},
		{"no target", []string{"--insecure"}},
		{"TLS without certificates", []string{"--to", "127.0.0.1:4501"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code := execute(append([]string{"keys", "forward", "--socket", sock}, c.args...)); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
		})
	}
}
