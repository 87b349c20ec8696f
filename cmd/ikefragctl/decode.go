package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/diag/obs"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/keys"
)

// decodeLine is one line of `ikefragctl decode`: an IKE message, or an ESP,
// keepalive or undecodable datagram on the IKE ports, labelled as such.
type decodeLine struct {
	File      string    `json:"file,omitempty"`
	Frame     int       `json:"frame"`
	Time      time.Time `json:"time"`
	Src       string    `json:"src"`
	Dst       string    `json:"dst"`
	Ifindex   int       `json:"ifindex,omitempty"`
	Direction string    `json:"direction,omitempty"` // ingress or egress, when the capture says
	Kind      string    `json:"kind"`                // IKEv2, IKEv1, ESP, keepalive, invalid, IKE? (header not captured)
	Marker    bool      `json:"non_esp_marker,omitempty"`
	TCP       bool      `json:"tcp,omitempty"` // an RFC 9329 frame of a TCP stream
	Exchange  string    `json:"exchange,omitempty"`
	Flags     string    `json:"flags,omitempty"`
	Initiator bool      `json:"initiator,omitempty"`
	Response  bool      `json:"response,omitempty"`
	MessageID *uint32   `json:"message_id,omitempty"`
	SPIi      string    `json:"spi_i,omitempty"`
	SPIr      string    `json:"spi_r,omitempty"`
	Length    int       `json:"length,omitempty"` // IKE header Length
	Payloads  []string  `json:"payloads,omitempty"`
	Notifies  []string  `json:"notifies,omitempty"`
	SKF       *skfInfo  `json:"skf,omitempty"`
	ESPSPI    string    `json:"esp_spi,omitempty"`
	// IPFragments is the number of IP fragments the datagram arrived in (1
	// when it was not fragmented).
	IPFragments int    `json:"ip_fragments"`
	Incomplete  bool   `json:"incomplete,omitempty"`
	Error       string `json:"error,omitempty"`
	// Inner is set with --keys for SK and SKF messages.
	Inner *innerInfo `json:"inner,omitempty"`
}

type skfInfo struct {
	Number uint16 `json:"number"`
	Total  uint16 `json:"total"`
}

func newDecodeCmd() *cobra.Command {
	var asJSON bool
	var keyPath string
	var ports = ike.DefaultPorts
	cmd := &cobra.Command{
		Use:   "decode [--json] FILE...",
		Short: "List the IKE messages in pcap or pcapng files, one line each",
		Long: `decode lists every IKE message in the capture files in capture order: time,
addresses, IKE version, exchange, I/R, Message ID, length, payloads, notifies,
SKF fragment number when the message is fragmented at the IKE layer
(RFC 7383), and the number of IP fragments the datagram arrived in. ESP-in-UDP,
NAT-T keepalives and IKEv1 are labelled as such.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			var src keys.Source
			if keyPath != "" {
				var err error
				if src, err = loadKeys(keyPath); err != nil {
					return badInput("%v", err)
				}
			}
			for _, f := range args {
				err := decodeFile(f, cmd.InOrStdin(), ports, src, func(l *decodeLine) error {
					if asJSON {
						if len(args) > 1 {
							l.File = f
						}
						return enc.Encode(l)
					}
					_, err := fmt.Fprintln(out, l.text())
					if err == nil && l.Inner != nil {
						_, err = fmt.Fprintln(out, l.Inner.text())
					}
					return err
				})
				if err != nil {
					return badInput("%v", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	cmd.Flags().StringVar(&keyPath, "keys", "", "strongSwan save-keys table (ikev2_decryption_table, or its directory): decrypt SK and SKF messages")
	cmd.Flags().Uint16Var(&ports.IKE, "ike-port", ike.DefaultPorts.IKE, "UDP port of IKE")
	cmd.Flags().Uint16Var(&ports.NATT, "natt-port", ike.DefaultPorts.NATT, "UDP port of NAT-T (IKE after a non-ESP marker, and ESP-in-UDP)")
	return cmd
}

// decodeFile reads one capture and calls emit for every datagram on the IKE
// ports and every plain ESP datagram.
func decodeFile(path string, stdin io.Reader, ports ike.Ports, src keys.Source, emit func(*decodeLine) error) error {
	var dec *diag.Decryptor
	var now time.Time
	if src != nil {
		dec = diag.NewDecryptor(src, func() time.Time { return now })
	}
	_, err := readCapture(path, stdin, func(rec obs.Record) error {
		d := rec.Datagram
		if d == nil {
			return nil
		}
		if d.Time.After(now) {
			now = d.Time
		}
		l := describe(d, ports)
		if l == nil {
			return nil
		}
		if dec != nil && l.Kind == "IKEv2" && l.Error == "" && (l.SKF != nil || slices.Contains(l.Payloads, "SK")) {
			fr := ports.Classify(d.Src.Port(), d.Dst.Port(), d.Payload)
			if d.Proto == protoTCP {
				fr = ike.ClassifyNATT(d.Payload)
			}
			if h, err := ike.ParseHeader(fr.IKE); err == nil {
				l.Inner = describeInner(dec.Open(h, fr.IKE))
			}
		}
		return emit(l)
	})
	return err
}

const protoTCP, protoUDP, protoESP = 6, 17, 50

// describe turns a datagram into a decode line, or nil when it is not on the
// IKE ports and not ESP.
func describe(d *obs.Datagram, ports ike.Ports) *decodeLine {
	l := &decodeLine{
		Frame:       d.Frame,
		Time:        d.Time.UTC(),
		Src:         d.Src.String(),
		Dst:         d.Dst.String(),
		IPFragments: max(1, len(d.Frags)),
		Incomplete:  !d.Complete,
		Ifindex:     d.Ifindex,
	}
	if d.Dir != obs.DirUnknown {
		l.Direction = d.Dir.String()
	}
	switch {
	case d.Proto == protoESP:
		l.Kind = "ESP"
		l.Src, l.Dst = d.Src.Addr().String(), d.Dst.Addr().String()
		if len(d.Payload) >= 4 {
			l.ESPSPI = fmt.Sprintf("%#08x", uint32(d.Payload[0])<<24|uint32(d.Payload[1])<<16|uint32(d.Payload[2])<<8|uint32(d.Payload[3]))
		}
		return l
	case d.Proto == protoTCP:
		// an RFC 9329 frame (capture.EncapReader): what a datagram on
		// the NAT-T port carries, whatever the TCP ports
		l.TCP = true
		return describeNATT(l, ike.ClassifyNATT(d.Payload), d)
	case d.Proto != protoUDP:
		return nil
	case d.Length < 0:
		// The first fragment, which holds the UDP header, never arrived: the
		// ports are unknown, so say so rather than guess.
		l.Kind = "IKE?"
		l.Src, l.Dst = d.Src.Addr().String(), d.Dst.Addr().String()
		l.Error = "first IP fragment missing: UDP header not captured"
		return l
	case !ports.Carries(d.Src.Port(), d.Dst.Port()):
		return nil
	}
	return describeNATT(l, ports.Classify(d.Src.Port(), d.Dst.Port(), d.Payload), d)
}

// describeNATT fills a decode line from what a datagram (or an RFC 9329
// frame) carries.
func describeNATT(l *decodeLine, fr ike.Framing, d *obs.Datagram) *decodeLine {
	switch fr.Kind {
	case ike.KindESP:
		l.Kind = "ESP"
		l.ESPSPI = fmt.Sprintf("%#08x", fr.SPI)
		return l
	case ike.KindKeepalive:
		l.Kind = "keepalive"
		return l
	case ike.KindInvalid:
		l.Kind = "invalid"
		l.Error = fr.Reason
		return l
	}
	l.Marker = fr.Marker
	describeIKE(l, fr.IKE, d.Complete && !d.Truncated)
	return l
}

// describeIKE fills the IKE fields from the message bytes. whole says whether
// b is the entire message; when it is not, only the header is decoded.
func describeIKE(l *decodeLine, b []byte, whole bool) {
	h, err := ike.ParseHeader(b)
	if err != nil {
		l.Kind = "invalid"
		l.Error = err.Error()
		return
	}
	switch {
	case h.IsIKEv2():
		l.Kind = "IKEv2"
	case h.IsIKEv1():
		l.Kind = "IKEv1"
	default:
		l.Kind = "invalid"
		l.Error = fmt.Sprintf("IKE major version %d", h.MajorVersion)
		return
	}
	l.Exchange = ike.ExchangeName(h)
	l.Flags = h.Flags.String()
	l.Initiator, l.Response = h.Flags.Initiator(), h.Flags.Response()
	mid := h.MessageID
	l.MessageID = &mid
	l.SPIi, l.SPIr = h.SPIi.String(), h.SPIr.String()
	l.Length = int(h.Length)
	if !whole || h.IsIKEv1() {
		if !whole {
			l.Error = fmt.Sprintf("only %d of %d bytes captured", len(b), h.Length)
		}
		return
	}
	m, err := ike.Decode(b)
	if err != nil {
		l.Error = err.Error()
		return
	}
	for i := range m.Payloads {
		p := &m.Payloads[i]
		l.Payloads = append(l.Payloads, p.Type.String())
		if f, ok := p.Body.(*ike.EncryptedFragment); ok {
			l.SKF = &skfInfo{Number: f.Number, Total: f.Total}
		}
	}
	for _, n := range m.Notifies() {
		l.Notifies = append(l.Notifies, n.Type.String())
	}
}

func (l *decodeLine) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%5d %s", l.Frame, l.Time.Format("2006-01-02T15:04:05.000000Z"))
	if l.Ifindex != 0 {
		fmt.Fprintf(&b, " if%d", l.Ifindex)
		if l.Direction != "" {
			fmt.Fprintf(&b, "/%s", l.Direction[:2])
		}
	}
	fmt.Fprintf(&b, " %s -> %s %s", l.Src, l.Dst, l.Kind)
	if l.TCP {
		b.WriteString("/TCP")
	}
	switch l.Kind {
	case "ESP":
		fmt.Fprintf(&b, " spi=%s", l.ESPSPI)
	case "IKEv2", "IKEv1":
		dir := "req"
		if l.Response {
			dir = "resp"
		}
		fmt.Fprintf(&b, " %s %s %s mid=%d len=%d spi=%s/%s", l.Exchange, l.Flags, dir, *l.MessageID, l.Length, l.SPIi, l.SPIr)
		if len(l.Payloads) > 0 {
			fmt.Fprintf(&b, " [%s]", strings.Join(l.Payloads, " "))
		}
		if len(l.Notifies) > 0 {
			fmt.Fprintf(&b, " notify=%s", strings.Join(l.Notifies, ","))
		}
		if l.SKF != nil {
			fmt.Fprintf(&b, " SKF %d/%d", l.SKF.Number, l.SKF.Total)
		}
	}
	if l.IPFragments > 1 || l.Incomplete {
		fmt.Fprintf(&b, " ipfrags=%d", l.IPFragments)
		if l.Incomplete {
			b.WriteString(" incomplete")
		}
	}
	if l.Error != "" {
		fmt.Fprintf(&b, " (%s)", l.Error)
	}
	return b.String()
}
