// Command ikefragctl is the operator's command-line tool: it reads captures
// (decode, analyze) and talks to a running ikefragd.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/cmd/internal/buildinfo"
	"github.com/ikefrag/ikefrag/cmd/internal/gendocs"
)

// exitError carries an exit status through cobra: 1 for findings, 2 for bad
// input or usage.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func badInput(format string, a ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, a...)}
}

func main() { os.Exit(execute(os.Args[1:])) }

func execute(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "ikefragctl:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 2
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "ikefragctl",
		Short:         "Inspect IKEv2 traffic and talk to ikefragd",
		Version:       buildinfo.Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("ikefragctl {{.Version}} (" + buildinfo.GoVersion() + ")\n")
	root.AddCommand(newDecodeCmd(), newAnalyzeCmd(), newPMTUCmd(), newVersionCmd(), newKeysCmd())
	root.AddCommand(newDaemonCmds()...)
	root.AddCommand(newGenDocsCmd(root))
	return root
}

// newGenDocsCmd is hidden: the package build runs it to write the man
// pages (section 1) and the bash, zsh and fish completions.
func newGenDocsCmd(root *cobra.Command) *cobra.Command {
	var man, compl string
	cmd := &cobra.Command{
		Use:    "gen-docs --man DIR --completions DIR",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return gendocs.Generate(root, "1", "ikefrag "+buildinfo.Version(), man, compl)
		},
	}
	cmd.Flags().StringVar(&man, "man", "", "directory for the man pages")
	cmd.Flags().StringVar(&compl, "completions", "", "directory for the completions (bash/, zsh/, fish/)")
	return cmd
}
