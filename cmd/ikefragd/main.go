// Command ikefragd is the ikefrag daemon: it observes IKE traffic and IP
// fragments on the edge interfaces with eBPF, diagnoses IKE sessions live,
// and serves verdicts, path-MTU estimates and counters on a control socket
// and as Prometheus metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/cmd/internal/buildinfo"
	"github.com/ikefrag/ikefrag/cmd/internal/gendocs"

	"github.com/ikefrag/ikefrag/cmd/ikefragd/internal/config"
)

// version is the build's version (cmd/internal/buildinfo: stamped from
// git describe by the Makefile).
var version = buildinfo.Version()

// defaultConfigFile is read when --config is not given; when it does not
// exist the built-in defaults apply.
const defaultConfigFile = "/etc/ikefrag/ikefragd.yaml"

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // could not start or failed while running
	exitConfig  = 2 // the configuration is wrong
)

func main() { os.Exit(execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var file, genDocs string
	var check, features bool
	code := exitOK
	cmd := &cobra.Command{
		Use:   "ikefragd [--config FILE] [--check-config]",
		Short: "Observe IKEv2 traffic with eBPF and diagnose VPN failures live",
		Long: `ikefragd attaches eBPF programs to the edge interfaces, follows IKE
sessions and IP fragment trains, and explains failures (IP fragments dropped,
NO_PROPOSAL_CHOSEN, weak crypto, ...). ikefragctl status | peers | sessions |
verdicts | stats | events talk to it over its control socket; /metrics serves
Prometheus metrics.

Configuration: the YAML file (` + defaultConfigFile + ` unless --config
names another; built-in defaults when that file is absent), overridden by
IKEFRAG_* environment variables (IKEFRAG_PORTS_IKE=500 sets ports.ike).
SIGHUP reloads the file.

Exit status: 0 after a clean stop (or a valid --check-config), 1 when the
daemon cannot start or fails, 2 when the configuration is wrong (one line
per problem, naming the key).`,
		Args:          cobra.NoArgs,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if features {
				if err := printFeatures(stdout); err != nil {
					code = exitFailure
				}
				return nil
			}
			if genDocs != "" {
				// The package build: man page (section 8) and completions.
				if err := gendocs.Generate(cmd, "8", "ikefrag "+version, filepath.Join(genDocs, "man"), filepath.Join(genDocs, "completions")); err != nil {
					fmt.Fprintln(stderr, "ikefragd:", err)
					code = exitFailure
				}
				return nil
			}
			path := file
			if !cmd.Flags().Changed("config") {
				if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
					path = ""
				}
			}
			cfg, want, err := loadAndCheck(path)
			if err != nil {
				printProblems(stderr, path, err)
				code = exitConfig
				return nil
			}
			if check {
				// How the installed unit would run it: a proxy on port
				// 500 needs the unit's CAP_NET_BIND_SERVICE drop-in.
				if ps := checkUnit(cfg); len(ps) > 0 {
					printProblems(stderr, path, ps)
					code = exitConfig
					return nil
				}
				if missing, port := missingCaps(cfg); len(missing) > 0 {
					fmt.Fprintf(stderr, "ikefragd: warning: run like this, %v\n", capsError(missing, port))
				}
				fmt.Fprintf(stderr, "ikefragd: %s: configuration OK; observing %s\n", displayFile(path), want)
				config.Dump(stdout, cfg)
				return nil
			}
			if err := runDaemon(ctx, path, cfg, want, stderr); err != nil {
				var se *startError
				if errors.As(err, &se) && se.configErr {
					printProblems(stderr, path, se.err)
					code = exitConfig
					return nil
				}
				fmt.Fprintln(stderr, "ikefragd:", err)
				code = exitFailure
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", defaultConfigFile, "configuration file (YAML)")
	cmd.Flags().BoolVar(&check, "check-config", false, "validate the configuration against this host, print the effective configuration and exit")
	cmd.Flags().BoolVar(&features, "features", false, "probe what this kernel offers the BPF programs (tcx, fast path, drop reasons), print it as JSON and exit")
	cmd.Flags().StringVar(&genDocs, "gen-docs", "", "write the man page and shell completions under this directory and exit")
	_ = cmd.Flags().MarkHidden("gen-docs")
	cmd.SetVersionTemplate("ikefragd {{.Version}} (" + buildinfo.GoVersion() + ")\n")
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(stderr, "ikefragd:", err)
		return exitConfig
	}
	return code
}

// loadAndCheck loads a configuration and checks it against the system,
// reporting every problem of both steps at once.
func loadAndCheck(path string) (config.Config, ifaceSet, error) {
	cfg, err := config.Load(path)
	var ps config.Problems
	if err != nil && !errors.As(err, &ps) {
		return cfg, ifaceSet{}, err
	}
	want, sys := checkSystem(&cfg)
	ps = ps.Merge(sys)
	if len(ps) > 0 {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].Key < ps[j].Key })
		return cfg, want, ps
	}
	return cfg, want, nil
}

// printProblems writes one line per problem.
func printProblems(w io.Writer, path string, err error) {
	var ps config.Problems
	if !errors.As(err, &ps) {
		ps = config.Problems{{Msg: err.Error()}}
	}
	for _, p := range ps {
		fmt.Fprintf(w, "ikefragd: %s: %s\n", displayFile(path), p)
	}
}
