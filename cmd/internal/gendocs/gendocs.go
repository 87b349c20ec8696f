// Package gendocs writes the man pages and shell completions of a cobra
// command tree. The package build (make deb) runs each binary's hidden
// generator, so the pages and completions always match the flags of the
// binaries they ship with.
package gendocs

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Generate writes man pages of the given section into manDir (one per
// command: name.section, name-sub.section) and bash, zsh and fish
// completions into complDir (bash/NAME, zsh/_NAME, fish/NAME.fish).
func Generate(root *cobra.Command, section, source, manDir, complDir string) error {
	if manDir != "" {
		if err := os.MkdirAll(manDir, 0o755); err != nil {
			return err
		}
		hdr := &doc.GenManHeader{Section: section, Source: source, Manual: "ikefrag"}
		root.DisableAutoGenTag = true
		if err := doc.GenManTree(root, hdr, manDir); err != nil {
			return fmt.Errorf("man pages: %w", err)
		}
	}
	if complDir == "" {
		return nil
	}
	name := root.Name()
	for _, c := range []struct {
		dir, file string
		gen       func(string) error
	}{
		{"bash", name, func(p string) error { return root.GenBashCompletionFileV2(p, true) }},
		{"zsh", "_" + name, root.GenZshCompletionFile},
		{"fish", name + ".fish", func(p string) error { return root.GenFishCompletionFile(p, true) }},
	} {
		d := filepath.Join(complDir, c.dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := c.gen(filepath.Join(d, c.file)); err != nil {
			return fmt.Errorf("%s completion: %w", c.dir, err)
		}
	}
	return nil
}
