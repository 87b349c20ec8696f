package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/capture"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
)

func newAnalyzeCmd() *cobra.Command {
	var asJSON bool
	var keyPath string
	var flt filter
	ports := ike.DefaultPorts
	cmd := &cobra.Command{
		Use:   "analyze [--json] [--keys TABLE] [--peer ADDR] [--session ID] [--severity LEVEL] [--since WHEN] FILE...",
		Short: "Diagnose IKE sessions in capture files: ladder diagrams, verdicts and fixes",
		Long: `analyze reads pcap or pcapng files, rebuilds the IKE sessions they hold and
says, per session, what went wrong and what to change: IP fragments dropped
(Windows error 809), IKE fragmentation not negotiated or too large for the
path, NO_PROPOSAL_CHOSEN (error 800), weak crypto, and more.

IKE and ESP over TCP (RFC 9329: streams that open with "IKETCP") are
reassembled and decoded; their sessions are marked TCP, and a client that
falls back from UDP to TCP is shown (TCP_FALLBACK).

FILE "-" reads the capture from standard input (pcap or pcapng, gzip
too): tcpdump -U -w - ... | ikefragctl analyze -

--peer, --session, --severity and --since narrow the report (a relative
--since counts back from the capture's last packet); the summary and the
exit status follow what is shown.

Exit status: 0 when no verdict of severity error was found, 1 otherwise,
2 for bad input. --json prints the versioned report schema (diag.Report).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := flt.parse(); err != nil {
				return err
			}
			if n := countStdin(args); n > 1 {
				return badInput("\"-\" (standard input) is given %d times", n)
			}
			opt := diag.Options{Ports: ports}
			if keyPath != "" {
				src, err := loadKeys(keyPath)
				if err != nil {
					return badInput("%v", err)
				}
				opt.Keys = src
			}
			e := diag.New(opt)
			var tcp diag.TCPStreamCounts
			for _, f := range args {
				st, err := feed(e, f, cmd.InOrStdin())
				if err != nil {
					return badInput("%v", err)
				}
				tcp.Streams += st.Streams
				tcp.Frames += st.Frames
				tcp.Gaps += st.Gaps
				tcp.LostBytes += st.LostBytes
				tcp.Truncated += st.Truncated
				tcp.BadFrames += st.BadFrames
			}
			rep := e.Report(true)
			if tcp != (diag.TCPStreamCounts{}) {
				rep.TCPStreams = &tcp
			}
			flt.report(&rep, captureEnd(&rep))
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
	addFilterFlags(cmd, &flt, "the capture's last packet")
	return cmd
}

// stdinName is the file name that means standard input.
const stdinName = "-"

func countStdin(args []string) int {
	n := 0
	for _, a := range args {
		if a == stdinName {
			n++
		}
	}
	return n
}

// feed reads one capture ("-": standard input) into the engine and
// returns what decoding its RFC 9329 streams found. A file that breaks off
// at a frame (a capture cut short mid-packet) is analysed up to the cut,
// with a report-level warning naming the frame; a file that is not a
// capture at all is bad input. Stream bytes that could not be decoded
// (the capture lacks bytes before them) are a warning too.
func feed(e *diag.Engine, path string, stdin io.Reader) (capture.TCPStats, error) {
	st, err := readCapture(path, stdin, func(rec obs.Record) error { e.Add(rec); return nil })
	if st.LostBytes > 0 {
		e.Warn(fmt.Sprintf("%s: %d byte(s) of RFC 9329 (IKE over TCP) streams could not be decoded: the capture lacks bytes before them or holds a bad frame length (%d stream direction(s) given up)",
			path, st.LostBytes, st.Gaps+st.BadFrames))
	}
	var fe *capture.FileError
	if errors.As(err, &fe) && fe.Frame > 0 {
		e.Warn(fmt.Sprintf("%s: the capture breaks off at frame %d (%v); frames 1 to %d were analysed", path, fe.Frame, fe.Err, fe.Frame-1))
		return st, nil
	}
	return st, err
}

// readCapture calls fn for every record of a capture file ("-": stdin),
// in order, with RFC 9329 streams decoded into their frames (records of
// Proto 6, capture.EncapReader), and returns the stream decoder's
// counters.
func readCapture(path string, stdin io.Reader, fn func(obs.Record) error) (capture.TCPStats, error) {
	var cr *capture.Reader
	var err error
	if path == stdinName {
		cr, err = capture.NewReader(stdin, "standard input", capture.Options{})
	} else {
		cr, err = capture.Open(path, capture.Options{})
	}
	if err != nil {
		return capture.TCPStats{}, err
	}
	r := capture.NewEncapReader(cr, capture.TCPOptions{})
	defer r.Close()
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return r.TCPStats(), nil
		}
		if err != nil {
			return r.TCPStats(), err
		}
		if err := fn(rec); err != nil {
			return r.TCPStats(), err
		}
	}
}

// writeReport prints ladder diagrams, verdicts and a summary line.
func writeReport(w io.Writer, r *diag.Report) {
	for i := range r.Sessions {
		s := &r.Sessions[i]
		v := "IKEv2"
		if s.IKEVersion == 1 {
			v = "IKEv1"
		}
		switch s.Transport {
		case diag.TransportTCP:
			v += " over TCP (RFC 9329)"
		case diag.TransportUDPTCP:
			v += " over UDP and TCP (RFC 9329)"
		}
		if s.FallbackFrom != 0 {
			v += fmt.Sprintf(", after session %d over UDP failed", s.FallbackFrom)
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
	if t := r.TCPStreams; t != nil {
		fmt.Fprintf(w, "RFC 9329 TCP streams: %d stream(s), %d frame(s), %d byte(s) lost in %d gap(s), %d bad frame length(s), %d ended inside a frame\n",
			t.Streams, t.Frames, t.LostBytes, t.Gaps, t.BadFrames, t.Truncated)
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

// ladderMinWidth is the width of the ladder between the two | columns
// when every label fits; a longer label widens the whole ladder (labels
// are never cut: the fact at their end, "[2 IP frags]", "INCOMPLETE", is
// often the one that matters).
const ladderMinWidth = 44

// ladderLabel is the text on one ladder arrow.
func ladderLabel(r *diag.LadderRow) string {
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
	if r.TCP {
		label += " [TCP]"
	}
	return label
}

// writeLadder draws one row per datagram: the client on the left, the
// server on the right.
func writeLadder(w io.Writer, s *diag.SessionReport) {
	width := ladderMinWidth
	labels := make([]string, len(s.Ladder))
	for i := range s.Ladder {
		labels[i] = ladderLabel(&s.Ladder[i])
		// "|-" label at least one "-" ">|"
		width = max(width, len(labels[i])+5)
	}
	fmt.Fprintf(w, "  %10s  %-8s%s%8s\n", "t", "client", strings.Repeat(" ", width-8), "server")
	for i, r := range s.Ladder {
		if i > 0 && r.TCP != s.Ladder[i-1].TCP {
			// the IKE SA moved between transports (RFC 9329)
			from, to := "UDP", "TCP (RFC 9329)"
			if !r.TCP {
				from, to = "TCP (RFC 9329)", "UDP"
			}
			fmt.Fprintf(w, "  %10s  %s\n", "", center(" "+from+" → "+to+" ", width+2))
		}
		label := labels[i]
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

// center puts s in the middle of a line of '~' width characters wide
// (runes, as the ladder is drawn).
func center(s string, width int) string {
	n := width - utf8.RuneCountInString(s)
	if n < 2 {
		return s
	}
	return strings.Repeat("~", n/2) + s + strings.Repeat("~", n-n/2)
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
