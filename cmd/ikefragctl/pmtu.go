package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/cmd/ikefragctl/internal/pmtuprobe"
)

// IKE sizes on a path, derived from its MTU.
// pmtuStep is one probe of the path: pmtuprobe.Step with the JSON keys
// every ikefragctl output uses (snake_case).
type pmtuStep struct {
	Size   int    `json:"size"`   // IP packet size sent
	Result string `json:"result"` // "reply", "too big (MTU n)", "no answer", ...
}

type pmtuReport struct {
	Dst       string     `json:"dst"`
	Interface string     `json:"interface"`
	IfMTU     int        `json:"interface_mtu"`
	PathMTU   int        `json:"path_mtu"`
	TooBig    int        `json:"icmp_too_big_mtu,omitempty"`
	BlackHole bool       `json:"black_hole,omitempty"`
	Steps     []pmtuStep `json:"steps"`
	// MaxIKE500 and MaxIKE4500 are the largest IKE messages that cross
	// unfragmented on port 500 and on 4500 (after the non-ESP marker).
	MaxIKE500  int      `json:"max_ike_500"`
	MaxIKE4500 int      `json:"max_ike_4500"`
	Advice     []string `json:"advice"`
}

func newPMTUCmd() *cobra.Command {
	var asJSON bool
	var p pmtuprobe.Probe
	var authSize int
	cmd := &cobra.Command{
		Use:   "pmtu [--json] HOST",
		Short: "Measure the path MTU toward a host and say what it means for IKE",
		Long: `pmtu sends ICMP echo requests that must not be fragmented (DF), sized by
binary search between 68 (IPv4) or 1280 (IPv6) and the outgoing interface's
MTU, and honours ICMP "fragmentation needed" / "packet too big" answers from
routers. It then says whether an IKE_AUTH of a given size crosses whole and
which IKE fragment size to configure. Needs CAP_NET_RAW.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dst, err := resolve(args[0])
			if err != nil {
				return badInput("%v", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			res, err := pmtuprobe.Run(ctx, dst, p)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			rep := interpretPMTU(res, authSize)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			writePMTU(cmd.OutOrStdout(), &rep)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().DurationVar(&p.Timeout, "timeout", time.Second, "wait per probe")
	cmd.Flags().IntVar(&p.Tries, "tries", 2, "probes per size before silence counts as too big")
	cmd.Flags().IntVar(&p.Min, "min", 0, "search floor (default 68 for IPv4, 1280 for IPv6)")
	cmd.Flags().IntVar(&p.Max, "max", 0, "search ceiling (default the interface MTU)")
	cmd.Flags().IntVar(&authSize, "ike-auth-size", 5000, "IKE_AUTH message size to judge (bytes; certificate chains make 2-6 KB)")
	return cmd
}

func resolve(host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("cannot resolve %q: %v", host, err)
	}
	a, _ := netip.AddrFromSlice(ips[0])
	return a.Unmap(), nil
}

func interpretPMTU(r *pmtuprobe.Result, authSize int) pmtuReport {
	ipHdr := 20
	if r.Dst.Is6() {
		ipHdr = 40
	}
	rep := pmtuReport{Dst: r.Dst.String(), Interface: r.Iface, IfMTU: r.IfMTU, PathMTU: r.MTU, TooBig: r.TooBig,
		BlackHole: r.BlackHole, Steps: make([]pmtuStep, 0, len(r.Steps))}
	for _, st := range r.Steps {
		rep.Steps = append(rep.Steps, pmtuStep{Size: st.Size, Result: st.Result})
	}
	rep.MaxIKE500 = r.MTU - ipHdr - 8
	rep.MaxIKE4500 = rep.MaxIKE500 - 4
	if authSize <= rep.MaxIKE4500 {
		rep.Advice = append(rep.Advice, fmt.Sprintf("an IKE_AUTH of %d bytes crosses this path unfragmented", authSize))
	} else {
		n := (authSize + rep.MaxIKE4500 - 1) / rep.MaxIKE4500
		rep.Advice = append(rep.Advice, fmt.Sprintf("an IKE_AUTH of %d bytes does not fit: on UDP 4500 it leaves in about %d IP fragments, which firewalls and NAT devices often drop (Windows error 809); use IKE fragmentation (RFC 7383)", authSize, n))
	}
	rep.Advice = append(rep.Advice, fmt.Sprintf(`strongSwan: "charon { fragment_size = %d }" (the whole IP datagram of each IKE fragment) keeps IKE fragments within this path`, r.MTU))
	floor := 576
	if r.Dst.Is6() {
		floor = 1280
	}
	if r.MTU < floor {
		rep.Advice = append(rep.Advice, fmt.Sprintf("the path is below %d bytes: Windows sizes its IKE fragments to %d and they will be IP-fragmented here", floor, floor))
	} else {
		rep.Advice = append(rep.Advice, fmt.Sprintf("Windows' fixed IKE fragment size (%d) fits this path", floor))
	}
	if r.BlackHole {
		rep.Advice = append(rep.Advice, "some sizes got no answer and no ICMP error: an ICMP black hole on the path (DF-marked IKE datagrams larger than the path vanish); let ICMP fragmentation-needed / packet-too-big through")
	}
	return rep
}

func writePMTU(w io.Writer, r *pmtuReport) {
	fmt.Fprintf(w, "path MTU to %s: %d bytes (interface %s, MTU %d)\n", r.Dst, r.PathMTU, r.Interface, r.IfMTU)
	for _, s := range r.Steps {
		fmt.Fprintf(w, "  probe %5d bytes: %s\n", s.Size, s.Result)
	}
	fmt.Fprintf(w, "largest unfragmented IKE message: %d bytes on UDP 500, %d on UDP 4500\n", r.MaxIKE500, r.MaxIKE4500)
	for _, a := range r.Advice {
		fmt.Fprintf(w, "- %s\n", a)
	}
}
