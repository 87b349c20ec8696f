// Package obs defines the observation records that flow into the diagnosis
// engine. Both sources produce them: the capture reader (diag/capture) from
// pcap and pcapng files, and the eBPF observer (ebpf/) from live interfaces.
// Keeping one record type means there is one diagnosis code path.
package obs

import (
	"net/netip"
	"time"
)

// Direction is the direction of a packet relative to the observed interface.
type Direction uint8

const (
	DirUnknown Direction = iota // captures do not say
	DirIngress
	DirEgress
)

func (d Direction) String() string {
	switch d {
	case DirIngress:
		return "ingress"
	case DirEgress:
		return "egress"
	}
	return "unknown"
}

// Source says where a record came from and where, so evidence can point back
// to it: a capture frame number, or an interface for live traffic.
type Source struct {
	Frame   int       // 1-based capture frame number; 0 for live traffic
	Ifindex int       // observed interface; 0 for captures without one
	Dir     Direction // ingress or egress on Ifindex
}

// Packet is one IP packet as seen on the wire. For a fragment, Payload holds
// the fragment's data (which for the first fragment starts with the L4 header).
type Packet struct {
	Time time.Time
	Source
	Src, Dst   netip.Addr
	Proto      uint8  // L4 protocol after any IPv6 extension headers
	IPID       uint32 // IPv4 Identification, or IPv6 Fragment header Identification
	FragOffset int    // in bytes
	MF, DF     bool   // More Fragments; Don't Fragment (IPv4 only)
	Fragment   bool   // part of a fragment train (MF set or offset non-zero)
	IPLen      int    // whole IP packet length, header included
	// SrcPort and DstPort are set for UDP packets that carry the UDP header
	// (unfragmented, or the first fragment).
	SrcPort, DstPort uint16
	// Payload is the IP payload after all IP headers (for IPv6, after the
	// Fragment header). It may be shorter than the packet if the capture
	// snapped it.
	Payload []byte
	// Snapped is true when the capture or the kernel truncated Payload.
	Snapped bool
}

// IsFirstFragment reports whether p starts a fragment train.
func (p *Packet) IsFirstFragment() bool { return p.Fragment && p.FragOffset == 0 }

// Frag describes one IP fragment of a datagram.
type Frag struct {
	Source
	Time   time.Time
	Offset int  // byte offset of the fragment's data
	Len    int  // bytes of fragment data
	MF     bool // More Fragments flag
	IPLen  int  // the fragment's whole IP packet length
}

// Range is a half-open byte range [Start, End).
type Range struct{ Start, End int }

// Datagram is one UDP datagram (or, with Proto other than UDP, one IP payload),
// whole or reassembled from IP fragments, or what is left of an incomplete
// fragment train.
type Datagram struct {
	Time      time.Time // time of the first packet seen of it
	Last      time.Time // time of the last packet seen of it
	Source              // of the packet that carried the L4 header, else of the first seen
	IPVersion uint8
	Proto     uint8
	Src, Dst  netip.AddrPort
	IPID      uint32
	DF        bool
	// Length is the UDP payload length from the UDP header, or -1 when the
	// first fragment (which carries the UDP header) never arrived.
	Length int
	// Payload holds the UDP payload bytes that are known. It is shorter than
	// Length when Truncated (snap length, live capture limit) or when the
	// train is incomplete (bytes after the first hole are left out).
	Payload   []byte
	Truncated bool
	// Frags lists the IP fragments the datagram arrived in, in offset order;
	// empty when it was not fragmented.
	Frags []Frag
	// Complete is true for an unfragmented datagram or a train whose
	// fragments cover every byte.
	Complete bool
	// Missing lists the byte ranges of the IP payload that never arrived
	// (only for incomplete trains). End is -1 when the last fragment is missing.
	Missing []Range
	// Incomplete says why an incomplete train was given up: the reassembly
	// timeout ran out (the fragments were lost), the tracker evicted it to
	// stay within its limits, or the input ended (a capture cut short).
	Incomplete IncompleteReason
	// TotalLen is the reassembled IP payload length when the last fragment was
	// seen, else -1.
	TotalLen int
}

// IncompleteReason says why an incomplete fragment train was reported.
type IncompleteReason uint8

const (
	NotIncomplete   IncompleteReason = iota
	TrainTimeout                     // not complete within the reassembly timeout
	TrainEvicted                     // dropped by the tracker to stay within its limits
	TrainEndOfInput                  // still open when the capture ended
)

func (r IncompleteReason) String() string {
	switch r {
	case TrainTimeout:
		return "timeout"
	case TrainEvicted:
		return "evicted"
	case TrainEndOfInput:
		return "end of input"
	}
	return ""
}

// Fragmented reports whether the datagram arrived in more than one IP packet.
func (d *Datagram) Fragmented() bool { return len(d.Frags) > 0 }

// ICMPTooBig is an ICMPv4 "fragmentation needed" or ICMPv6 "packet too big"
// message: evidence for a path MTU.
type ICMPTooBig struct {
	Time time.Time
	Source
	From netip.Addr // the router that sent it
	To   netip.Addr // where it was sent (the original packet's source)
	MTU  int
	// The original packet's addresses, protocol and (if present) UDP ports.
	OrigSrc, OrigDst         netip.Addr
	OrigProto                uint8
	OrigSrcPort, OrigDstPort uint16
}

// Drop is a packet the kernel freed with a drop reason (live only: the eBPF
// observer's kfree_skb hook). Only IP fragments and packets of the IKE and
// NAT-T ports are reported.
type Drop struct {
	Time time.Time
	Source
	Reason   uint32 // enum skb_drop_reason value
	Name     string // its name, e.g. "NETFILTER_DROP", when known
	Src, Dst netip.Addr
	Proto    uint8
	// Ports are set when the dropped packet carried a UDP header.
	SrcPort, DstPort uint16
	IPID             uint32
	Fragment         bool
	FragOffset       int
	// ICMPType and ICMPCode are set for a dropped ICMP or ICMPv6 message
	// (Proto 1 or 58): a dropped fragmentation-needed / packet-too-big is
	// a local path-MTU discovery black hole.
	ICMPType, ICMPCode uint8
	// Netns is the inode of the network namespace of the device the
	// packet was on (0: unknown). OtherNetns is set when that is none of
	// the namespaces whose interfaces are observed (reported only when the
	// observer is told to report every namespace).
	Netns      uint32
	OtherNetns bool
}

// Record is one element of the observation stream: exactly one field is set.
type Record struct {
	Datagram *Datagram
	TooBig   *ICMPTooBig
	Drop     *Drop
}
