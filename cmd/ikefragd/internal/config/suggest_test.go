package config

import "testing"

func TestEditDistance(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"ports.natt", "ports.natt", 0},
		{"ports.nat", "ports.natt", 1},      // a letter left out
		{"metric", "metrics", 1},            // a section
		{"pmtu_defualt", "pmtu_default", 2}, // two letters swapped: two edits
		{"kitten", "sitting", 3},
		{"abc", "xyz", 3},
	}
	for _, c := range cases {
		if got := editDistance(c.a, c.b); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := editDistance(c.b, c.a); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d (not symmetric)", c.b, c.a, got, c.want)
		}
	}
}

// Keys and sections within two edits are suggested, the nearest first,
// ties broken alphabetically; nothing further away is.
func TestSuggest(t *testing.T) {
	cases := map[string]string{
		"ports.nat":          " (did you mean ports.natt?)",
		"observe.drop":       " (did you mean observe.drops?)",
		"metric":             " (did you mean metrics?)",
		"proxy.pmtu_defualt": " (did you mean proxy.pmtu_default?)",
		"log.levle":          " (did you mean log.level?)",
		"keys.sockets":       " (did you mean keys.socket?)",
		"bogus":              "",
		"observe.ring_size":  "",
	}
	for key, want := range cases {
		if got := suggest(key); got != want {
			t.Errorf("suggest(%q) = %q, want %q", key, got, want)
		}
	}
}
