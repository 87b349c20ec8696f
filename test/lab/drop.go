package lab

// The router's fragment drops (nftables) and their counters.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// Drop comments name the nftables rules; DropCounters finds them by these.
const (
	cmtV4First    = "ipv4 first fragments"
	cmtV4NonFirst = "ipv4 non-first fragments"
	cmtV6First    = "ipv6 first fragments"
	cmtV6NonFirst = "ipv6 non-first fragments"
)

// dropRuleset renders the nftables script for a mode. Priority -500 puts the
// chain before nf_defrag (-400), so conntrack could never reassemble first.
// Replacing the table in one transaction keeps a mode change atomic.
func dropRuleset(mode DropMode) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	switch mode {
	case DropNone:
		return b.String(), nil
	case DropAll, DropNonFirst:
	default:
		return "", fmt.Errorf("lab: unknown drop mode %q", mode)
	}
	fmt.Fprintf(&b, "table inet %s {\n\tchain fragdrop {\n", nftTable)
	b.WriteString("\t\ttype filter hook prerouting priority -500; policy accept;\n")
	fmt.Fprintf(&b, "\t\tip frag-off & 0x1fff != 0 counter drop comment %q\n", cmtV4NonFirst)
	fmt.Fprintf(&b, "\t\tfrag frag-off != 0 counter drop comment %q\n", cmtV6NonFirst)
	if mode == DropAll {
		fmt.Fprintf(&b, "\t\tip frag-off & 0x2000 != 0 counter drop comment %q\n", cmtV4First)
		fmt.Fprintf(&b, "\t\tfrag more-fragments 1 counter drop comment %q\n", cmtV6First)
	}
	b.WriteString("\t}\n}\n")
	return b.String(), nil
}

func (l *Lab) dropNode() *Node {
	if l.topo.DropAt == "gw" {
		return l.Gw
	}
	return l.Mid
}

// SetDrop replaces the fragment filter on the drop router (counters restart
// from zero).
func (l *Lab) SetDrop(mode DropMode) error {
	script, err := dropRuleset(mode)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := runIn(context.Background(), nil, script, "ip", "netns", "exec", l.dropNode().Name, "nft", "-f", "-"); err != nil {
		return err
	}
	l.drop = mode
	return nil
}

// DropCounts are packets dropped by the fragment filter, per rule.
type DropCounts struct {
	V4First, V4NonFirst, V6First, V6NonFirst uint64
}

// Total is the sum of all counters.
func (c DropCounts) Total() uint64 { return c.V4First + c.V4NonFirst + c.V6First + c.V6NonFirst }

// DropCounters reads the fragment filter's counters; all zero without a
// filter.
func (l *Lab) DropCounters() (DropCounts, error) {
	var c DropCounts
	l.mu.Lock()
	mode := l.drop
	l.mu.Unlock()
	if mode == DropNone {
		return c, nil
	}
	out, err := l.dropNode().Run(context.Background(), "nft", "-j", "list", "table", "inet", nftTable)
	if err != nil {
		return c, err
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Comment string                       `json:"comment"`
				Expr    []map[string]json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return c, fmt.Errorf("lab: nft json: %w", err)
	}
	for _, o := range doc.Nftables {
		if o.Rule == nil {
			continue
		}
		var packets uint64
		for _, e := range o.Rule.Expr {
			if raw, ok := e["counter"]; ok {
				var ctr struct {
					Packets uint64 `json:"packets"`
				}
				if err := json.Unmarshal(raw, &ctr); err != nil {
					return c, err
				}
				packets = ctr.Packets
			}
		}
		switch o.Rule.Comment {
		case cmtV4First:
			c.V4First = packets
		case cmtV4NonFirst:
			c.V4NonFirst = packets
		case cmtV6First:
			c.V6First = packets
		case cmtV6NonFirst:
			c.V6NonFirst = packets
		}
	}
	return c, nil
}
