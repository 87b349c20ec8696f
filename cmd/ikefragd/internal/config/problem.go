package config

import "strings"

// Problem is one thing wrong with a configuration, tied to its key.
type Problem struct {
	Key string
	Msg string
}

func (p Problem) String() string {
	if p.Key == "" {
		return p.Msg
	}
	return p.Key + ": " + p.Msg
}

// Problems is the error of a configuration that failed to load: one line
// per problem, each naming its key.
type Problems []Problem

// Has reports whether a problem was found with key or a key under it.
func (ps Problems) Has(key string) bool {
	for _, p := range ps {
		if p.Key == key || strings.HasPrefix(key, p.Key+".") || strings.HasPrefix(key, p.Key+"[") {
			return true
		}
	}
	return false
}

// Merge appends the problems of more whose keys have none yet: a key that
// failed one step is reported once, for its first failure.
func (ps Problems) Merge(more Problems) Problems {
	for _, p := range more {
		if !ps.Has(p.Key) {
			ps = append(ps, p)
		}
	}
	return ps
}

func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, "\n")
}
