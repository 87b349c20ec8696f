package deptest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestArchitectureRoute: every hop of docs/architecture.md names a file
// and a function in it that exist, so the document follows the code.
func TestArchitectureRoute(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| \\d+ \\| `([^`]+)` \\| `([A-Za-z_][A-Za-z0-9_]*)` \\|")
	hops := 0
	for _, line := range strings.Split(string(doc), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		hops++
		file, fn := m[1], m[2]
		src, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Errorf("docs/architecture.md names %s: %v", file, err)
			continue
		}
		def := regexp.MustCompile(`(?m)^\S.*\b` + fn + `\(`) // C: a definition starts a line
		if strings.HasSuffix(file, ".go") {
			def = regexp.MustCompile(`(?m)^func (\([^)]*\) )?` + fn + `\(`)
		}
		if !def.Match(src) {
			t.Errorf("docs/architecture.md: %s has no function %s", file, fn)
		}
	}
	if hops < 10 {
		t.Fatalf("found %d hops in docs/architecture.md; the tables did not parse", hops)
	}
}
