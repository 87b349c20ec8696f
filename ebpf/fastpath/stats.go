package fastpath

// PassReason says why the program left a datagram to the stack (and so to
// the proxy's sockets or the kernel's own handling). The values mirror
// enum fp_stat in bpf/fastpath.h, where 0 counts redirects.
type PassReason int

const (
	PassNotIP       PassReason = iota + 1 // not IPv4/IPv6 on untagged Ethernet to this host
	PassNotUDP                            // another IP protocol
	PassFragment                          // an IP fragment
	PassIPOptions                         // IPv4 options or IPv6 extension headers
	PassMalformed                         // truncated, or inconsistent lengths
	PassUnmapped                          // UDP of no mapped flow
	PassIKE                               // mapped flow, non-ESP marker (IKE)
	PassKeepalive                         // mapped flow, NAT-T keepalive
	PassShort                             // mapped flow, payload shorter than an ESP header
	PassWrongIface                        // mapped flow, arrived on another interface than its route
	PassTooBig                            // larger than the egress interface's MTU
	PassGSO                               // an aggregated (GRO/GSO) packet
	PassNoDevice                          // the egress interface no longer exists
	PassZeroCsum6                         // UDP over IPv6 with a zero checksum
	PassRewriteFail                       // the packet could not be made writable
	numPass
)

// statDropped is the slot after the pass reasons: datagrams dropped after
// a rewrite had begun (it cannot fail once the first write succeeded, so
// this stays zero).
const (
	statRedirect = 0
	statDropped  = int(numPass)
	numStats     = statDropped + 1
)

var passNames = [numPass]string{"", "not_ip", "not_udp", "fragment", "ip_options", "malformed", "unmapped",
	"ike", "keepalive", "short", "wrong_interface", "too_big", "gso", "no_device", "zero_checksum_ipv6",
	"rewrite_failed"}

func (r PassReason) String() string {
	if r > 0 && r < numPass {
		return passNames[r]
	}
	return "unknown"
}

// PassReasons lists every reason, in order.
func PassReasons() []PassReason {
	out := make([]PassReason, 0, numPass-1)
	for r := PassReason(1); r < numPass; r++ {
		out = append(out, r)
	}
	return out
}

// Stats are the fast path's own counters.
type Stats struct {
	Flows    int // flows mapped now
	MaxFlows int
	// Redirected counts datagrams rewritten and handed to the next hop.
	Redirected uint64
	// Passed counts datagrams left to the stack, by reason.
	Passed map[PassReason]uint64
	// Dropped counts datagrams dropped after their rewrite had begun.
	Dropped uint64
	// MapFull counts Put calls refused for lack of room; those flows stay
	// in the user-space relay.
	MapFull uint64
	// PutErrors counts Put calls refused for any other reason (a flow the
	// fast path cannot carry, no route, a conflicting mapping).
	PutErrors uint64
	// Expired counts mappings removed by Expire.
	Expired uint64
	// AttachFailures counts Attach calls that failed.
	AttachFailures uint64
	// LoadFailures counts New calls in this process that failed.
	LoadFailures uint64
}
