package config

import "testing"

// Has matches the key itself and keys under it (a section, a list).
func TestProblemsHas(t *testing.T) {
	ps := Problems{{Key: "ports.ike"}, {Key: "interfaces"}, {Key: "proxy"}}
	cases := map[string]bool{
		"ports.ike":            true,
		"ports.natt":           false,
		"ports":                false,
		"interfaces[2]":        true,
		"interfaces_x":         false,
		"proxy.backends":       true,
		"proxy.pmtu_overrides": true,
		"proxyx":               false,
	}
	for key, want := range cases {
		if got := ps.Has(key); got != want {
			t.Errorf("Has(%q) = %v, want %v", key, got, want)
		}
	}
}

// Merge keeps one problem per key, the first found.
func TestProblemsMerge(t *testing.T) {
	cases := []struct {
		name      string
		a, b      Problems
		wantLines string
	}{
		{"into nothing", nil, Problems{{Key: "a", Msg: "1"}}, "a: 1"},
		{"same key", Problems{{Key: "a", Msg: "1"}}, Problems{{Key: "a", Msg: "2"}}, "a: 1"},
		{"under a key", Problems{{Key: "proxy", Msg: "1"}}, Problems{{Key: "proxy.backends", Msg: "2"}}, "proxy: 1"},
		{"other keys", Problems{{Key: "a", Msg: "1"}}, Problems{{Key: "b", Msg: "2"}}, "a: 1\nb: 2"},
		{"twice in the new ones", nil, Problems{{Key: "a", Msg: "1"}, {Key: "a", Msg: "2"}}, "a: 1"},
		{"no key", nil, Problems{{Msg: "file unreadable"}}, "file unreadable"},
	}
	for _, c := range cases {
		if got := c.a.Merge(c.b).Error(); got != c.wantLines {
			t.Errorf("%s: %q, want %q", c.name, got, c.wantLines)
		}
	}
}
