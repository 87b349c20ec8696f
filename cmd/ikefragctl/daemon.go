package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
)

// newDaemonCmds returns the subcommands that ask a running ikefragd over
// its control socket.
func newDaemonCmds() []*cobra.Command {
	return []*cobra.Command{
		daemonCmd("status", "Show the daemon's state: interfaces, configuration, sessions, verdict counts", control.MethodStatus,
			func() any { return &control.Status{} }, func(w io.Writer, v any) error { writeStatus(w, v.(*control.Status)); return nil }),
		newPeersCmd(),
		daemonCmd("sessions", "List the IKE sessions the daemon follows", control.MethodSessions,
			func() any { return &[]diag.SessionReport{} }, func(w io.Writer, v any) error { writeSessions(w, *v.(*[]diag.SessionReport)); return nil }),
		daemonCmd("verdicts", "Show live verdicts: ladder diagrams, findings and fixes (--json: the analyze --json schema)", control.MethodVerdicts,
			func() any { return &diag.Report{} }, func(w io.Writer, v any) error { writeReport(w, v.(*diag.Report)); return nil }),
		daemonCmd("stats", "Show counters: BPF classes per interface and direction, losses, engine, kernel reassembly", control.MethodStats,
			func() any { return &control.Stats{} }, func(w io.Writer, v any) error { writeStats(w, v.(*control.Stats)); return nil }),
		newEventsCmd(),
	}
}

// socketFlag adds --socket to a command.
func socketFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "socket", control.DefaultSocket, "ikefragd's control socket (control.socket)")
}

// daemonCmd builds a one-request command: fetch method's result into a
// fresh value from newResult, print it as JSON or through human.
func daemonCmd(name, short, method string, newResult func() any, human func(io.Writer, any) error) *cobra.Command {
	var socket string
	var asJSON bool
	var flt filter
	filtered := method == control.MethodSessions || method == control.MethodVerdicts
	use := name + " [--json] [--socket PATH]"
	if filtered {
		use = name + " [--peer ADDR] [--session ID] [--severity LEVEL] [--since WHEN] [--json] [--socket PATH]"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flt.parse(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), control.Timeout)
			defer cancel()
			var raw json.RawMessage
			if err := control.Call(ctx, socket, method, &raw); err != nil {
				return unreachable(err)
			}
			out := cmd.OutOrStdout()
			res := newResult()
			if err := json.Unmarshal(raw, res); err != nil {
				return fmt.Errorf("the daemon's %s answer: %w", method, err)
			}
			switch r := res.(type) {
			case *diag.Report:
				flt.report(r, time.Now())
			case *[]diag.SessionReport:
				*r = flt.sessionList(*r, time.Now())
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else if err := human(out, res); err != nil {
				return err
			}
			if r, ok := res.(*diag.Report); ok && r.Summary.Errors > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d error verdict(s)", r.Summary.Errors)}
			}
			if st, ok := res.(*control.Status); ok && !st.Healthy {
				return &exitError{code: 1, err: fmt.Errorf("the daemon is unhealthy: %s", strings.Join(st.Problems, "; "))}
			}
			return nil
		},
	}
	switch method {
	case control.MethodVerdicts:
		cmd.Long = short + `

Exit status: 0 when no verdict of severity error is live, 1 otherwise, 2 when
the daemon cannot be reached.`
	case control.MethodStatus:
		cmd.Long = short + `

Exit status: 0 when the daemon is healthy, 1 when it is unhealthy (no
interface attached, or the diagnosis engine stopped: the problems are
printed), 2 when the daemon cannot be reached.`
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	socketFlag(cmd, &socket)
	if filtered {
		addFilterFlags(cmd, &flt, "now")
	}
	return cmd
}

// unreachable maps connection failures to exit status 2 with the hint.
func unreachable(err error) error {
	if errors.Is(err, control.ErrUnreachable) {
		return &exitError{code: 2, err: err}
	}
	return err
}

func newEventsCmd() *cobra.Command {
	var socket string
	var asJSON, follow bool
	var flt filter
	cmd := &cobra.Command{
		Use:   "events [--follow] [--peer ADDR] [--session ID] [--severity LEVEL] [--since WHEN] [--json] [--socket PATH]",
		Short: "Show recent events (verdicts once per session, interfaces, reloads); --follow streams new ones",
		Long: `Show recent events (verdicts once per session, interfaces, reloads); --follow
streams new ones. --peer, --session and --severity keep only verdict events
that match; --since drops events raised before then.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flt.parse(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			emit := func(e control.Event) error {
				if !flt.event(&e, time.Now()) {
					return nil
				}
				if asJSON {
					return json.NewEncoder(out).Encode(e)
				}
				writeEvent(out, &e)
				return nil
			}
			if !follow {
				ctx, cancel := context.WithTimeout(cmd.Context(), control.Timeout)
				defer cancel()
				var evs []control.Event
				if err := control.Call(ctx, socket, control.MethodEvents, &evs); err != nil {
					return unreachable(err)
				}
				for _, e := range evs {
					if err := emit(e); err != nil {
						return err
					}
				}
				return nil
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err := control.Follow(ctx, socket, emit)
			if err != nil && ctx.Err() == nil {
				return unreachable(err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they happen")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	socketFlag(cmd, &socket)
	addFilterFlags(cmd, &flt, "now")
	return cmd
}

func writeEvent(w io.Writer, e *control.Event) {
	ts := e.Time.Local().Format("2006-01-02 15:04:05")
	switch {
	case e.Verdict != nil:
		v := e.Verdict
		dir := ""
		if v.Direction != "" {
			dir = " (" + strings.ReplaceAll(v.Direction, "_", " ") + ")"
		}
		mark := ""
		if v.Provisional {
			mark = " [provisional]"
		}
		fmt.Fprintf(w, "%s  verdict    %s %s%s%s  session %d  %s → %s: %s\n", ts, strings.ToUpper(string(v.Severity)), v.Code, dir, mark, v.Session, v.Client, v.Server, v.Summary)
	case e.Kind == control.EventLost:
		fmt.Fprintf(w, "%s  lost       %d event(s): %s\n", ts, e.Lost, e.Message)
	default:
		subject := ""
		if e.Interface != "" {
			subject = e.Interface + ": "
		}
		msg := subject + e.Message
		if e.Error != "" {
			msg += ": " + e.Error
		}
		fmt.Fprintf(w, "%s  %-9s  %s\n", ts, e.Kind, msg)
	}
}

func writeStatus(w io.Writer, s *control.Status) {
	health := "healthy"
	if len(s.Degraded) > 0 {
		health = "healthy, DEGRADED: " + strings.Join(s.Degraded, "; ")
	}
	if !s.Healthy {
		health = "UNHEALTHY: " + strings.Join(s.Problems, "; ")
	}
	fmt.Fprintf(w, "ikefragd %s  pid %d  up %s  %s\n", s.Version, s.PID, time.Since(s.Started).Round(time.Second), health)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := s.Config
	fmt.Fprintf(tw, "config\t%s (loaded %s; %d reload(s), %d refused)\n", c.File, c.Loaded.Local().Format("2006-01-02 15:04:05"), c.Reloads, c.ReloadFailures)
	if c.LastError != "" {
		fmt.Fprintf(tw, "\tlast reload refused: %s\n", strings.ReplaceAll(c.LastError, "\n", "; "))
	}
	if len(c.RestartPending) > 0 {
		fmt.Fprintf(tw, "\tchanged, waiting for a restart: %s\n", strings.Join(c.RestartPending, ", "))
	}
	var ifs []string
	for _, i := range s.Interfaces {
		switch i.State {
		case "attached":
			ifs = append(ifs, fmt.Sprintf("%s (%s, mtu %d)", i.Name, i.Mode, i.MTU))
		case "pattern":
			ifs = append(ifs, i.Name+" (pattern)")
		case "default":
			ifs = append(ifs, "default (the default route's: "+i.Follows+")")
		case "error":
			ifs = append(ifs, fmt.Sprintf("%s (ERROR: %s)", i.Name, i.Error))
		default:
			ifs = append(ifs, i.Name+" ("+i.State+")")
		}
	}
	fmt.Fprintf(tw, "interfaces\t%s\n", strings.Join(ifs, "  "))
	if k := s.Kernel; k.Release != "" {
		fmt.Fprintf(tw, "kernel\t%s: attach %s; observer build %s; fast path %s; drop reasons %s\n",
			k.Release, k.Attach, k.ObserverBuild, k.FastPath, k.DropReasons)
	}
	drops := "kernel drop reasons reported"
	if !s.DropsEnabled {
		drops = "kernel drop reasons not available"
	}
	fmt.Fprintf(tw, "observer\t%s attach; %s\n", s.AttachMode, drops)
	fmt.Fprintf(tw, "sessions\t%d  (peers %d, observations %d)\n", s.Sessions, s.Peers, s.Records)
	fmt.Fprintf(tw, "verdicts\t%s\n", codeCounts(s.Verdicts))
	if s.Metrics != "" {
		fmt.Fprintf(tw, "metrics\thttp://%s/metrics\n", s.Metrics)
	} else {
		fmt.Fprintf(tw, "metrics\toff\n")
	}
	fmt.Fprintf(tw, "proxy\t%s\n", s.Proxy)
	if s.Keys.SaveKeys != "" || s.Keys.Socket != "" {
		var src []string
		if s.Keys.SaveKeys != "" {
			src = append(src, "save-keys "+s.Keys.SaveKeys)
		}
		if s.Keys.Socket != "" {
			src = append(src, "socket "+s.Keys.Socket)
		}
		fmt.Fprintf(tw, "keys\t%d IKE SA(s) from %s\n", s.Keys.SAs, strings.Join(src, ", "))
	}
	tw.Flush()
}

func codeCounts(m map[diag.Code]int) string {
	if len(m) == 0 {
		return "none yet"
	}
	var parts []string
	for c, n := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// peersResult is `ikefragctl peers --json`: the path-MTU estimates the
// observer's evidence gives, and the proxy's clients when it runs.
type peersResult struct {
	Observed []diag.PMTUEstimate `json:"observed"`
	Proxy    []control.ProxyPeer `json:"proxy"`
}

func newPeersCmd() *cobra.Command {
	var socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "peers [--json] [--socket PATH]",
		Short: "Show path-MTU estimates per peer with their evidence, and the proxy's clients",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), control.Timeout)
			defer cancel()
			res := peersResult{Observed: []diag.PMTUEstimate{}, Proxy: []control.ProxyPeer{}}
			if err := control.Call(ctx, socket, control.MethodPeers, &res.Observed); err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := control.Call(ctx, socket, control.MethodProxyPeers, &res.Proxy); err != nil {
				return &exitError{code: 2, err: err}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			writePeers(out, res.Observed)
			if len(res.Proxy) > 0 {
				fmt.Fprintln(out)
				writeProxyPeers(out, res.Proxy)
			}
			return nil
		},
	}
	socketFlag(cmd, &socket)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeProxyPeers(w io.Writer, peers []control.ProxyPeer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY CLIENT\tBACKEND\tPATH MTU\tSOURCE\tROUTE MTU\tFLOWS\tIN\tOUT\tESP USER IN/OUT\tESP FAST PATH IN/OUT\tRE-FRAGMENTED\tFRAGMENTS\tREPLAYS\tKEY MISSES\tSTEP-DOWNS")
	for _, p := range peers {
		c := p.Counters
		flows := fmt.Sprint(len(p.Flows))
		tcp := 0
		for _, f := range p.Flows {
			if f.Transport == "tcp" {
				tcp++
			}
		}
		if tcp > 0 {
			// RFC 9329 flows (proxy.tcp)
			flows += fmt.Sprintf(" (%d tcp)", tcp)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d/%d\t%d/%d\t%d\t%d\t%d\t%d\t%d\n", p.Client, p.Backend, orDash(p.PMTU.MTU), p.PMTU.Source,
			orDash(p.RouteMTU), flows, c.DatagramsIn, c.DatagramsOut, c.ESPIn, c.ESPOut, c.ESPFastPathIn, c.ESPFastPathOut,
			c.Refragmented, c.FragmentsEmitted, c.Replays, c.KeyMisses, c.StepDowns)
	}
	tw.Flush()
}

func writePeers(w io.Writer, peers []diag.PMTUEstimate) {
	if len(peers) == 0 {
		fmt.Fprintln(w, "no peers yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tMTU\tKNOWN TO PASS\tKNOWN NOT TO PASS\tEVIDENCE")
	for _, p := range peers {
		ev := strings.Join(p.Evidence, "; ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Peer, orDash(p.MTU), orDash(p.Lower), orDash(p.Upper), ev)
	}
	tw.Flush()
}

func orDash(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func writeSessions(w io.Writer, ss []diag.SessionReport) {
	if len(ss) == 0 {
		fmt.Fprintln(w, "no sessions")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCLIENT\tSERVER\tSPIs\tIKE\tESTABLISHED\tLAST SEEN\tVERDICTS")
	for _, s := range ss {
		var codes []string
		for _, v := range s.Verdicts {
			codes = append(codes, string(v.Code))
		}
		est := yesNo(s.Established)
		if s.IKEVersion == 1 {
			est = "-"
		}
		v := fmt.Sprintf("v%d", s.IKEVersion)
		if s.Transport != "" {
			// over TCP (RFC 9329): "v2/tcp", "v2/udp+tcp"
			v += "/" + s.Transport
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s/%s\t%s\t%s\t%s ago\t%s\n", s.ID, s.Client, s.Server, s.SPIi, s.SPIr, v,
			est, time.Since(s.End).Round(time.Second), strings.Join(codes, " "))
	}
	tw.Flush()
}

// statsClasses is the order to print an interface's counter classes in:
// the daemon's (control.Stats.Classes), else by name.
func statsClasses(s *control.Stats, ifc *control.IfaceStats) []string {
	if len(s.Classes) > 0 {
		return s.Classes
	}
	var out []string
	for c := range ifc.Ingress {
		out = append(out, c)
	}
	for c := range ifc.Egress {
		if _, ok := ifc.Ingress[c]; !ok {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

func writeStats(w io.Writer, s *control.Stats) {
	for _, ifc := range s.Interfaces {
		fmt.Fprintf(w, "%s (ifindex %d, %s)\n", ifc.Name, ifc.Ifindex, ifc.Mode)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "class\tingress packets\tingress bytes\tegress packets\tegress bytes\t")
		for _, class := range statsClasses(s, &ifc) {
			in, eg := ifc.Ingress[class], ifc.Egress[class]
			if in.Packets == 0 && eg.Packets == 0 {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t\n", class, in.Packets, bytesOrBlank(in.Bytes), eg.Packets, bytesOrBlank(eg.Bytes))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	o := s.Observer
	fmt.Fprintf(w, "observer: %d train(s) live, %d evicted; lost: %d record(s) (queue full), %d first fragment(s), %d undecodable\n",
		o.TrainsLive, o.TrainsEvicted, o.RecordsDropped, o.PendingEvicted, o.DecodeErrors)
	if o.DropsEnabled {
		fmt.Fprintf(w, "kernel drops reported: %d (ring buffer full %d, unreadable %d)\n", o.DropsReported, o.DropsRingbuf, o.DropsUnreadable)
	}
	e := s.Engine
	fmt.Fprintf(w, "engine: %d IKE datagram(s), %d retransmission(s), %d copies, %d ESP, %d keepalive(s), %d undecodable, %d orphan train(s), %d ICMP too-big, %d drop(s); sessions evicted %d, expired %d\n",
		e.Datagrams, e.Retransmits, e.Copies, e.ESP, e.Keepalives, e.Undecodable, e.Orphans, e.TooBig, e.Drops, e.Evicted, e.SessionsExpired)
	if r := s.Records; e.TCPFrames > 0 || r.TCPFrames > 0 || r.TCPFramesDropped > 0 {
		// IKE over RFC 9329 streams, handed over by the proxy
		fmt.Fprintf(w, "engine over TCP (RFC 9329): %d frame(s) taken in, %d not (the engine was behind)\n", e.TCPFrames, r.TCPFramesDropped)
	}
	if t := s.ProxyTCP; t != nil {
		writeProxyTCP(w, t)
	}
	fams := make([]string, 0, len(s.Kernel))
	for f := range s.Kernel {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	for _, f := range fams {
		names := make([]string, 0, len(s.Kernel[f]))
		for n := range s.Kernel[f] {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s=%d", n, s.Kernel[f][n])
		}
		fmt.Fprintf(w, "kernel %s: %s\n", f, strings.Join(parts, " "))
	}
}

// writeProxyTCP prints the proxy's RFC 9329 listener counters.
func writeProxyTCP(w io.Writer, t *control.ProxyTCP) {
	fmt.Fprintf(w, "proxy tcp (RFC 9329) on %s: %d connection(s) (%d without flow), %d accepted; refused %s; ended %s\n",
		strings.Join(t.Listeners, " "), t.Connections, t.NoFlow, t.Accepted, countsOrNone(t.Refused), countsOrNone(t.Ended))
	fmt.Fprintf(w, "proxy tcp frames: in %d (%d bytes), out %d (%d bytes); ESP dropped (send_buffer) %d, keepalives not framed %d; RFC 7383 sets joined %d\n",
		t.FramesIn, t.BytesIn, t.FramesOut, t.BytesOut, t.ESPDropped, t.KeepalivesNotFramed, t.Joined)
	fmt.Fprintf(w, "proxy tcp split (RFC 7383 toward the backend): %d message(s) into %d fragment(s), %d replay(s), %d held for retransmissions; %d key prompt(s), %d answered with keys; relayed whole %s\n",
		t.Split, t.SplitFragments, t.SplitReplays, t.SplitCached, t.SplitKeyPrompts, t.SplitKeysAfterPrompt, countsOrNone(t.Unsplit))
}

// countsOrNone prints counts by reason, sorted: "a=1 b=2", or "none".
func countsOrNone(m map[string]uint64) string {
	var parts []string
	for k, n := range m {
		if n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// bytesOrBlank prints a byte count; "-" where none is counted (fragment
// train and anomaly counters count packets only).
func bytesOrBlank(b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%d", b)
}
