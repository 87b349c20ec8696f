// Package fastpath relays ESP-in-UDP of the proxy's NAT-T flows in the
// kernel. The proxy maps a client flow to its upstream flow with Put; a
// tc/tcx ingress program on the proxy's interfaces then rewrites mapped
// ESP datagrams the way the proxy's sockets would send them (addresses and
// ports, with incrementally fixed checksums) and redirects them to the next
// hop with bpf_redirect_neigh. IKE messages, keepalives, IP fragments and
// everything unmapped go on to the proxy's sockets unchanged: the fast path
// can only take work away from the user-space relay, never change what it
// would have done.
//
// Per-direction packet, byte and last-seen counters are read back with
// Counters and All. When the programs cannot load, New fails; a nil
// *FastPath is valid and refuses every Put with ErrDisabled, so callers
// keep one code path. Every method is safe for concurrent use. See
// docs/esp-fastpath.md for the contract with the proxy.
package fastpath
