package diag

import (
	"net"
	"net/netip"
	"strings"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// Kernel drop records (the observer's kfree_skb hook) as evidence. A drop
// is tied to a datagram by its addresses and IP ID (every fragment of one
// datagram shares the ID, RFC 791 / RFC 8200 §4.5) and, for an
// unfragmented IPv6 packet that has no ID, by its UDP ports.

// dropKey finds the drops of one datagram.
type dropKey struct {
	src, dst netip.Addr
	ipid     uint32
}

// maxDrops bounds the drop records kept for matching; the oldest go first.
// Drops matter for the exchange in flight: a few seconds' worth under a
// fragment flood is enough.
const maxDrops = 4096

// addDrop files a drop record.
func (e *Engine) addDrop(d *obs.Drop) {
	if isICMPTooBig(d) {
		e.icmpDrops = append(e.icmpDrops, d)
		if len(e.icmpDrops) > maxFindingDrops {
			e.icmpDrops = e.icmpDrops[1:]
		}
		return
	}
	k := dropKey{d.Src, d.Dst, d.IPID}
	e.espDrop(d)
	if sk, ok := e.bySig[k]; ok {
		// A drop that arrives after its datagram changes the session's
		// verdict: say so, so that live judging looks again.
		if s := e.sessions[sk]; s != nil {
			s.Changes++
		}
	}
	if len(e.dropOrder) >= maxDrops {
		old := e.dropOrder[0]
		e.dropOrder = e.dropOrder[1:]
		if l := e.dropIndex[old]; len(l) <= 1 {
			delete(e.dropIndex, old)
		} else {
			e.dropIndex[old] = l[1:]
		}
	}
	e.dropIndex[k] = append(e.dropIndex[k], d)
	e.dropOrder = append(e.dropOrder, k)
}

// maxFindingDrops bounds the ICMP drops kept for PMTUD_BLACKHOLE_LOCAL.
const maxFindingDrops = 256

// isICMPTooBig reports an ICMPv4 fragmentation-needed (type 3 code 4) or
// ICMPv6 packet-too-big (type 2).
func isICMPTooBig(d *obs.Drop) bool {
	return d.Proto == 1 && d.ICMPType == 3 && d.ICMPCode == 4 || d.Proto == 58 && d.ICMPType == 2
}

// noteIPID remembers which session a datagram belongs to, for drops that
// arrive after it.
func (e *Engine) noteIPID(s *Session, g *Datagram) {
	if len(e.bySig) >= maxDrops {
		clear(e.bySig)
	}
	e.bySig[dropKey{g.Src.Addr(), g.Dst.Addr(), g.IPID}] = s.key
}

// dropsOf returns the drops of a datagram.
func (e *Engine) dropsOf(g *Datagram) []*obs.Drop {
	if g.TCP {
		return nil // kernel drop records are of UDP and IP fragments
	}
	l := e.dropIndex[dropKey{g.Src.Addr(), g.Dst.Addr(), g.IPID}]
	if g.IPID != 0 || len(l) == 0 {
		return l
	}
	var out []*obs.Drop
	for _, d := range l {
		if d.SrcPort == g.Src.Port() && d.DstPort == g.Dst.Port() {
			out = append(out, d)
		}
	}
	return out
}

// dropsIn returns the citations of the drops of the transmissions'
// datagrams, at most maxCited.
func (e *Engine) dropsIn(ts []*Transmission) []string {
	if len(e.dropIndex) == 0 {
		return nil
	}
	var out []string
	datagrams(ts, func(g *Datagram) {
		for _, d := range e.dropsOf(g) {
			if len(out) < maxCited {
				out = append(out, citeDrop(d))
			}
		}
	})
	return out
}

// maxCited bounds the drops cited in one verdict.
const maxCited = 8

// citeDrop says where and why this host dropped a packet.
func citeDrop(d *obs.Drop) string {
	var b strings.Builder
	name := d.Name
	if name == "" {
		name = sprintf("reason %d", d.Reason)
	}
	b.WriteString(sprintf("dropped on this host by the kernel (%s)", name))
	if d.OtherNetns {
		b.WriteString(sprintf(" in another network namespace (inode %d)", d.Netns))
	}
	if d.Ifindex > 0 {
		b.WriteString(", interface " + ifName(d.Ifindex))
		if d.Dir != obs.DirUnknown {
			b.WriteString(" " + d.Dir.String())
		}
	}
	b.WriteString(sprintf(": %s → %s", d.Src, d.Dst))
	if d.SrcPort != 0 || d.DstPort != 0 {
		b.WriteString(sprintf(" UDP %d → %d", d.SrcPort, d.DstPort))
	}
	if d.IPID != 0 {
		b.WriteString(sprintf(", IP ID %#x", d.IPID))
	}
	if d.Fragment {
		b.WriteString(sprintf(", IP fragment at offset %d", d.FragOffset))
	}
	b.WriteString(", at " + d.Time.UTC().Format("15:04:05.000"))
	return b.String()
}

// ifName names an interface of this host's network namespace, or gives
// its index.
func ifName(i int) string {
	if ifc, err := net.InterfaceByIndex(i); err == nil {
		return sprintf("%s (index %d)", ifc.Name, i)
	}
	return sprintf("index %d", i)
}

// localICMPDrops returns PMTUD_BLACKHOLE_LOCAL findings: ICMP too-big
// messages this host dropped, one per destination (the host whose path-MTU
// discovery they would have served).
func (e *Engine) localICMPDrops() []Verdict {
	by := map[netip.Addr][]*obs.Drop{}
	var order []netip.Addr
	for _, d := range e.icmpDrops {
		if by[d.Dst] == nil {
			order = append(order, d.Dst)
		}
		by[d.Dst] = append(by[d.Dst], d)
	}
	var out []Verdict
	for _, a := range order {
		ds := by[a]
		ev := []string{}
		for i, d := range ds {
			if i == maxCited {
				break
			}
			ev = append(ev, citeDrop(d))
		}
		out = append(out, Verdict{
			Code: PMTUDBlackholeLocal, Severity: Error, Client: a.String(), Server: ds[0].Src.String(),
			Summary:  sprintf("this host dropped %d ICMP fragmentation-needed / packet-too-big message(s) toward %s: path-MTU discovery cannot work, large packets vanish (a PMTUD black hole)", len(ds), a),
			Evidence: ev, Remedy: remedies[PMTUDBlackholeLocal],
		})
	}
	return out
}
