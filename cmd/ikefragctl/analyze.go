package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

func newAnalyzeCmd() *cobra.Command {
	var asJSON bool
	var keyPath string
	ports := ike.DefaultPorts
	cmd := &cobra.Command{
		Use:   "analyze [--json] FILE...",
		Short: "Diagnose IKE sessions in capture files: ladder diagrams, verdicts and fixes",
		Long: `analyze reads pcap or pcapng files, rebuilds the IKE sessions they hold and
says, per session, what went wrong and what to change: IP fragments dropped
(Windows error 809), IKE fragmentation not negotiated or too large for the
path, NO_PROPOSAL_CHOSEN (error 800), weak crypto, and more.

Exit status: 0 when no verdict of severity error was found, 1 otherwise,
2 for bad input. --json prints the versioned report schema (diag.Report).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opt := diag.Options{Ports: ports}
			if keyPath != "" {
				src, err := loadKeys(keyPath)
				if err != nil {
					return badInput("%v", err)
				}
				opt.Keys = src
			}
			e := diag.New(opt)
			for _, f := range args {
				if err := feed(e, f); err != nil {
					return badInput("%v", err)
				}
			}
			rep := e.Report(true)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				writeReport(out, &rep)
			}
			if rep.Summary.Errors > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d error verdict(s)", rep.Summary.Errors)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the JSON report")
	cmd.Flags().StringVar(&keyPath, "keys", "", "strongSwan save-keys table (ikev2_decryption_table, or its directory): look inside SK and SKF messages")
	cmd.Flags().Uint16Var(&ports.IKE, "ike-port", ike.DefaultPorts.IKE, "UDP port of IKE")
	cmd.Flags().Uint16Var(&ports.NATT, "natt-port", ike.DefaultPorts.NATT, "UDP port of NAT-T")
	return cmd
}

// feed reads one capture into the engine. A file that breaks off at a
// frame (a capture cut short mid-packet) is analysed up to the cut, with a
// report-level warning naming the frame; a file that is not a capture at
// all is bad input.
func feed(e *diag.Engine, path string) error {
	err := readCapture(path, func(rec obs.Record) error { e.Add(rec); return nil })
	var fe *capture.FileError
	if errors.As(err, &fe) && fe.Frame > 0 {
		e.Warn(fmt.Sprintf("%s: the capture breaks off at frame %d (%v); frames 1 to %d were analysed", path, fe.Frame, fe.Err, fe.Frame-1))
		return nil
	}
	return err
}

// readCapture calls fn for every record of a capture file, in order.
func readCapture(path string, fn func(obs.Record) error) error {
	r, err := capture.Open(path, capture.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	for rec, err := range r.All() {
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

// writeReport prints ladder diagrams, verdicts and a summary line.
func writeReport(w io.Writer, r *diag.Report) {
	for i := range r.Sessions {
		s := &r.Sessions[i]
		v := "IKEv2"
		if s.IKEVersion == 1 {
			v = "IKEv1"
		}
		fmt.Fprintf(w, "session %d  %s  client %s  server %s  SPIs %s/%s\n", s.ID, v, s.Client, s.Server, s.SPIi, s.SPIr)
		if s.IKEVersion == 2 {
			fmt.Fprintf(w, "  fragmentation supported: initiator %s, responder %s", yesNo(s.FragmentationSupported.Initiator), yesNo(s.FragmentationSupported.Responder))
			if s.ProposalChosen != "" {
				fmt.Fprintf(w, "; proposal %s", s.ProposalChosen)
			}
			fmt.Fprintln(w)
		}
		for _, q := range s.Quirks {
			fmt.Fprintf(w, "  quirk: %s\n", q)
		}
		writeLadder(w, s)
		for _, vd := range s.Verdicts {
			fmt.Fprintf(w, "  %s %s", strings.ToUpper(string(vd.Severity)), vd.Code)
			if vd.Direction != "" {
				fmt.Fprintf(w, " (%s)", strings.ReplaceAll(vd.Direction, "_", " "))
			}
			if vd.Provisional {
				fmt.Fprint(w, " [provisional]")
			}
			fmt.Fprintf(w, ": %s\n", vd.Summary)
			for _, e := range vd.Evidence {
				fmt.Fprintf(w, "      evidence: %s\n", e)
			}
			for _, m := range vd.Remedy {
				fmt.Fprintf(w, "      fix: %s\n", m)
			}
		}
		fmt.Fprintln(w)
	}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "%s %s: %s\n", strings.ToUpper(string(f.Severity)), f.Code, f.Summary)
		for _, e := range f.Evidence {
			fmt.Fprintf(w, "      evidence: %s\n", e)
		}
		for _, m := range f.Remedy {
			fmt.Fprintf(w, "      fix: %s\n", m)
		}
		fmt.Fprintln(w)
	}
	for _, m := range r.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", m)
	}
	codes := make([]string, 0, len(r.Summary.Verdicts))
	for c, n := range r.Summary.Verdicts {
		codes = append(codes, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(codes)
	fmt.Fprintf(w, "%d session(s), %d established, %d error(s), %d warning(s)", r.Summary.Sessions, r.Summary.Established, r.Summary.Errors, r.Summary.Warnings)
	if len(codes) > 0 {
		fmt.Fprintf(w, ": %s", strings.Join(codes, " "))
	}
	fmt.Fprintln(w)
}

// writeLadder draws one row per datagram: the client on the left, the
// server on the right.
func writeLadder(w io.Writer, s *diag.SessionReport) {
	const width = 44
	fmt.Fprintf(w, "  %10s  %-8s%s%8s\n", "t", "client", strings.Repeat(" ", width-8), "server")
	for _, r := range s.Ladder {
		label := fmt.Sprintf(" %s %s #%d %dB", r.Exchange, reqResp(r.Response), r.MessageID, r.Length)
		if r.SKFTotal > 0 {
			label += fmt.Sprintf(" SKF %d/%d", r.SKFNumber, r.SKFTotal)
		}
		if r.IPFragments > 1 {
			label += fmt.Sprintf(" [%d IP frags]", r.IPFragments)
		}
		if !r.Complete {
			label += " INCOMPLETE"
		}
		if len(label) > width-4 {
			label = label[:width-4]
		}
		arrow := label + strings.Repeat("-", width-2-len(label))
		if r.FromClient {
			arrow = "|-" + arrow + ">|"
		} else {
			arrow = "|<" + arrow + "-|"
		}
		marks := ""
		if r.Retransmission {
			marks += " retransmission"
		}
		if r.Copies > 1 {
			marks += fmt.Sprintf(" x%d copies", r.Copies)
		}
		fmt.Fprintf(w, "  %9.3fs  %s%s\n", r.Offset.Seconds(), arrow, marks)
	}
}

func reqResp(resp bool) string {
	if resp {
		return "resp"
	}
	return "req"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
