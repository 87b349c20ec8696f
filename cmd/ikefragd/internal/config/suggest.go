package config

import (
	"fmt"
	"strings"
)

// suggestDistance is the edit distance under which a known key is offered
// for a misspelt one: two slips (ports.nat, observe.drop) are suggested,
// while a word that merely shares a section is not.
const suggestDistance = 3

// suggest names the known key closest to a misspelt one, as
// " (did you mean KEY?)", or "" when none is close.
func suggest(key string) string {
	best, bestD := "", suggestDistance
	for k := range Flatten(Default()) {
		// Sections are candidates too: "metric" is "metrics".
		for cand := k; cand != ""; {
			if d := editDistance(cand, key); d < bestD || d == bestD && cand < best {
				best, bestD = cand, d
			}
			i := strings.LastIndexByte(cand, '.')
			if i < 0 {
				break
			}
			cand = cand[:i]
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
