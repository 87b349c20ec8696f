package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/cmd/internal/buildinfo"
	"github.com/ikefrag/ikefrag/cmd/internal/control"
)

// newVersionCmd prints this client's version and, when a daemon answers
// on the socket, the daemon's (from its status).
func newVersionCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "version [--socket PATH]",
		Short: "Show the versions of ikefragctl and of the running ikefragd",
		Long: `Show the versions of ikefragctl and of the running ikefragd (asked over
the control socket). With no daemon reachable only the client's version is
shown, with the reason on standard error.

Exit status: 0 (also when no daemon answers).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "client  ikefragctl %s (%s)\n", buildinfo.Version(), buildinfo.GoVersion())
			ctx, cancel := context.WithTimeout(cmd.Context(), control.Timeout)
			defer cancel()
			var st control.Status
			if err := control.Call(ctx, socket, control.MethodStatus, &st); err != nil {
				if errors.Is(err, control.ErrUnreachable) {
					fmt.Fprintf(cmd.ErrOrStderr(), "daemon  not reachable: %v\n", err)
					return nil
				}
				return err
			}
			gv := st.GoVersion
			if gv == "" {
				gv = "Go release not reported"
			}
			fmt.Fprintf(out, "daemon  ikefragd %s (%s), pid %d\n", st.Version, gv, st.PID)
			return nil
		},
	}
	socketFlag(cmd, &socket)
	return cmd
}
