// Package proxy is ikefrag's fragmentation-aware UDP proxy for IKE (port
// 500) and NAT-T (port 4500, IKE behind the non-ESP marker, ESP-in-UDP and
// keepalives). Clients connect to the proxy's listen addresses as if it
// were the VPN server; the proxy relays to a backend.
//
// # Relay
//
// Each client flow (client address and port, proxy address and port) gets
// its own connected UDP socket toward its backend, so backends see every
// client flow as a distinct peer and the kernel accepts only the backend's
// datagrams on it. Datagrams are read and written in batches
// (recvmmsg/sendmmsg through golang.org/x/net/ipv4 and ipv6); replies leave
// from the address the client sent to (IP_PKTINFO for wildcard listeners).
// A new IKE SA (IKE_SA_INIT with a zero SPIr) is placed by rendezvous
// hashing of the client address and SPIi over the healthy backends; later
// messages follow the SA (by client address and SPIi, or by the SPI pair),
// ESP and keepalives follow their flow, or on a new flow the client's latest
// SA. A backend is marked down after consecutive failures (ICMP
// unreachable on its sockets, IKE_SA_INIT left unanswered) and tried again
// after a hold time. Backends on an IKE port other than 500 get the non-ESP
// marker the way strongSwan expects it there.
//
// # Path MTU per client
//
// Evidence, in order of strength: ICMP fragmentation-needed / packet-too-big
// on the client-facing sockets (IP_RECVERR), step-downs, proxy.pmtu_overrides,
// the largest IP fragment of the client's reassembled datagrams
// (IP_RECVFRAGSIZE: the client's own MTU), the diagnosis engine's estimate
// (Deps.Peer), the largest unfragmented datagram from the
// client, and proxy.pmtu_default. An override or an observation is the
// base; ICMP and step-down only lower it; every piece expires after
// proxy.pmtu_expiry. Peers shows the result and its source.
//
// # Keyed re-fragmentation (RFC 7383)
//
// Only server→client messages are touched, only SK or SKF messages, only
// on IKE SAs whose IKE_SA_INIT request and response (seen in the clear)
// both carried IKEV2_FRAGMENTATION_SUPPORTED, and only when the key source
// has the SA's keys. A message whose datagrams exceed the client's path
// MTU is verified and decrypted (every SKF fragment, reassembled per RFC
// 7383 §2.6), cut by ike/sk for the client's size with fresh random IVs,
// and the output is cached per (SPIs, Message ID, direction). The backend
// answers a retransmitted request by resending its stored datagrams; the
// proxy recognises them by their hashes and replays its cached output byte
// for byte (on fragment 1 of the burst), so the client sees a bitwise
// identical retransmission (RFC 7296 §2.1) and Total Fragments never
// changes for a message. Nothing is ever encrypted twice except for a
// step-down. A missing key is counted (key_misses) and the message relayed
// unchanged; so is a message that cannot be opened.
//
// # Responder-side IKE PMTU discovery (proxy.pmtu_step_down)
//
// RFC 7383 §2.5.2 PMTUD is an initiator's tool; a responder only resends.
// With step-down on, a client that retransmits a request (same Message ID
// and bytes, fragment 1) whose response the proxy re-fragmented gets, at
// the backend's next resend, a new cut one rung lower (1500, 1400, 1280,
// 1000, 576; never below 1280 for IPv6) with a higher Total Fragments. RFC
// 7383 §2.6 makes the receiver discard its partial set and start over.
// Peers differ: strongSwan restarts reassembly when the total grows (proven
// by the lab tests, one retransmission from 1280 to 1000); libreswan
// ignores fragments whose total changed and keeps its queue, and OpenIKED
// drops its whole queue on any change, so step-down should stay off for
// clients running those. Windows clients are untested.
//
// # Keyless
//
// Without keys (or for SAs that did not negotiate RFC 7383) datagrams are
// relayed unchanged. With proxy.route_mtu the proxy installs, through
// netlink, a host route with a locked MTU toward each client whose path MTU
// is smaller than its datagrams, in a dedicated table reached only by the
// proxy's UDP source ports: the kernel then fragments once, at the client's
// size and without DF, instead of a router dropping DF datagrams or
// fragmenting again. Routes go when the evidence expires and on exit. The
// diagnosis engine tells the operator which server setting fixes the cause
// (IKE_FRAGMENTS_EXCEED_PMTU: strongSwan charon.fragment_size, RRAS
// EnableServerFragmentation).
//
// # ESP fast path (proxy.fast_path)
//
// With fast_path auto (the default) the proxy loads ebpf/fastpath and
// attaches it to the interfaces of its routes toward the backends at
// start, and to the interface of the route toward each client when the
// first flow through it is mapped. A NAT-T flow is mapped while the
// proxy handles the backend's first reply on it, before relaying that
// reply: on a new flow it ends IKE_AUTH, so the client's ESP, and the
// server's in answer, cross the kernel only. A flow that starts with ESP
// (after a NAT rebinding) has its datagrams before that reply relayed
// here. The proxy keeps every socket and relays whatever reaches them:
// IKE, keepalives, IP fragments, and ESP above the client's route MTU
// (route_mtu; the mapping is given that MTU and updated with it). ESP is
// counted per path: esp_in and esp_out in user space, esp_fastpath_in and
// esp_fastpath_out from the program's per-flow counters, read once per
// janitor sweep and on every Stats, Peers and Flows call; both are
// included in the datagram and byte totals.
// The janitor takes a flow's last fast-path datagram as activity; a
// closing flow is unmapped before its upstream socket closes, and its
// final counters are kept. A full map leaves new flows in user space
// (logged once, counted) and they are mapped when room appears; a
// program that cannot load, or a backend or client interface without an
// Ethernet header, leaves that traffic in user space with one log line
// and a counter (Stats.FastPath).
//
// # IKE and ESP over TCP (proxy.tcp, tcp.go)
//
// Clients whose UDP is blocked, or whose fragments are dropped, can speak
// RFC 9329 to the proxy's TCP listeners: the IKETCP prefix, then frames
// with a 16-bit length. Each connection is a client flow like a UDP one
// (earned by its first message, placed by SPI affinity or rendezvous
// hash, with its own upstream UDP socket); its frames go unchanged to the
// backend's NAT-T port (IKE with the non-ESP marker, ESP as ESP-in-UDP) and
// the backend's datagrams come back framed. Keyed, an RFC 7383 fragment
// set from the backend goes onto the stream as one SK message. Prefix and
// message timeouts, idle timeout, message lengths, connections per address
// and in total, and a bounded send queue per connection limit what a
// client can make the proxy hold; each is counted (Stats.TCP).
//
// # Bounds and secrets
//
// Flows (max_clients), IKE SAs, message states, the reassembler and the
// fragment cache are all bounded. A flow is earned (admit.go): only a
// well-formed IKE_SA_INIT request, an IKEv2 message of an IKE SA the
// backend answered, or a datagram of a client with an answered flow opens
// one, from a source that can be a client (no backend, local, loopback,
// multicast, broadcast, unspecified or IPv4-mapped address; proxy.clients).
// Flows not yet established are limited per address and per prefix,
// expire in seconds and are evicted first, unanswered before half-open;
// established flows are never evicted. With proxy.adopt transparent (a
// pair behind keepalived, source: client; pair.go, docs/pair.md) the first
// ESP datagram or IKEv2 message of an SA the other box carried opens an
// unestablished flow too. Half-open IKE SAs are limited per
// client (half_open_per_client), since the backend sees one address for
// all. Backend health counts distinct clients only and is confirmed by a
// probe the backend answers statelessly (health.go). docs/proxy.md has
// the details and the backend's settings. Bad input is a counted drop. Keys stay in ike/sk and keys/, which redact them; the
// proxy logs SPIs, addresses and sizes, never key material.
package proxy
