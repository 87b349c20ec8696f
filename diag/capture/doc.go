// Package capture is the offline observation source: it reads pcap and
// pcapng files and produces the records of package obs, the same ones the
// eBPF observer produces from live interfaces.
//
// Three layers, each usable alone:
//
//   - DecodeFrame decodes one frame (Ethernet with 802.1Q/802.1ad tags,
//     Linux cooked v1 and v2, raw IP, BSD loopback) into a Packet: IPv4 with
//     its fragment fields, IPv6 after a bounded extension header walk, UDP
//     ports when the packet carries the UDP header. Malformed frames come
//     back as a Reason, never as a panic.
//   - Defragmenter reassembles IPv4 and IPv6 fragment trains of any
//     protocol, keyed by capture interface and direction as well as by the
//     RFC 791 / RFC 8200 fields, and turns every packet into an
//     obs.Datagram: whole, reassembled, or what is left of a train that
//     never completed.
//   - Reader (Open, Next) runs both over a file and yields obs.Records in
//     capture order, with ICMP "too big" messages as obs.ICMPTooBig.
//
// Datagram fields beyond what obs documents: for protocols other than UDP,
// Payload is the IP payload after any IPv6 extension headers and Length its
// length when known (-1 otherwise). For pcapng files Source.Ifindex is the
// pcapng interface ID + 1 unless the link layer (Linux cooked v2) carries
// the kernel's ifindex; Source.Dir comes from the cooked header's packet
// type or the pcapng flags word.
package capture
