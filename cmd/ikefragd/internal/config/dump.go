package config

import (
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Dump prints the effective configuration as YAML that Load reads back as
// the same configuration. It holds paths and addresses only: key material
// never appears in the configuration.
func Dump(w io.Writer, c Config) {
	fmt.Fprintln(w, "# effective configuration: file, then IKEFRAG_* environment, then defaults")
	// Built from the decoding keys, so the dump reads back as the same
	// configuration.
	doc := map[string]any{}
	for k, v := range Flatten(c) {
		m := doc
		parts := strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		fmt.Fprintln(w, "# cannot print:", err)
		return
	}
	_, _ = w.Write(b)
}
