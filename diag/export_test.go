package diag

// RemedyCodes lists the codes of the remedy table (remedies, with the error
// notifies folded in by init), for the test that every code has a test
// needing only the repository.
func RemedyCodes() []Code {
	out := make([]Code, 0, len(remedies))
	for c := range remedies {
		out = append(out, c)
	}
	return out
}
