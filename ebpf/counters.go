package ebpf

// CounterID names one counter of a (interface, direction) pair. The values
// below counterBPF mirror enum counter_id in bpf/counters.h; the rest are
// kept by user space.
type CounterID int

const (
	CounterIKEv2 CounterID = iota
	CounterIKEv1
	CounterESPInUDP
	CounterKeepalive
	CounterOtherUDP // on the IKE/NAT-T ports but neither IKE, ESP nor a keepalive
	CounterFragFirst
	CounterFragMiddle
	CounterFragLast
	CounterTrainsStarted
	CounterTrainsCompleted
	CounterDupFrags     // a fragment seen twice in one train
	CounterOverlapFrags // a fragment partly overlapping another
	CounterLateFrags    // a fragment after its train completed
	CounterListFull     // fragments beyond the per-train record list
	CounterLargeIKE     // IKE messages longer than Options.LargeIKE
	CounterLRUInsertFail
	CounterRingbufFail
	CounterMalformed // bogus lengths, truncated headers
	CounterICMPTooBig
	CounterExtHdrLimit // IPv6 extension chain longer than the walk
	// Kept by user space: trains the sweep reported (or, for non-IKE
	// trains, dropped silently) as incomplete.
	CounterTrainsIncomplete
	NumCounters
)

// counterBPF is the number of counters the BPF programs keep.
const counterBPF = CounterTrainsIncomplete

var counterNames = [...]string{
	"ikev2", "ikev1", "esp_in_udp", "keepalive", "other_udp",
	"frag_first", "frag_middle", "frag_last",
	"trains_started", "trains_completed", "dup_frags", "overlap_frags",
	"late_frags", "frag_list_full", "large_ike", "lru_insert_fail",
	"ringbuf_fail", "malformed", "icmp_too_big", "ext_hdr_limit",
	"trains_incomplete",
}

func (c CounterID) String() string {
	if c >= 0 && int(c) < len(counterNames) {
		return counterNames[c]
	}
	return "unknown"
}

// Counter is a packet count and the IP bytes of those packets. Counters of
// events that are not packets (trains, failures) leave Bytes at zero.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// DirCounters holds every counter of one direction on one interface.
type DirCounters [NumCounters]Counter

// IfaceCounters are the counters of one attached interface.
type IfaceCounters struct {
	Ifindex int
	Name    string
	Ingress DirCounters
	Egress  DirCounters
}

// Snapshot is a consistent-enough copy of all counters (per-CPU values are
// summed; they are read one CPU after another, not atomically).
type Snapshot struct {
	Interfaces []IfaceCounters
	// TrainsLive is the number of entries in the train map at the last
	// sweep; TrainsEvicted the trains the LRU map dropped to make room
	// (started, minus those the sweep removed, minus those still live).
	TrainsLive    uint64
	TrainsEvicted uint64
	// Drop reporter: records sent, ring-buffer reservation failures, and
	// packets whose headers could not be read. DropsEnabled is false when
	// the kfree_skb program could not be loaded.
	DropsEnabled    bool
	DropsReported   uint64
	DropsRingbuf    uint64
	DropsUnreadable uint64
	// DropsOtherNetns counts drops in network namespaces none of the
	// observed interfaces is in, left out (Options.AllNamespaces keeps
	// them, marked).
	DropsOtherNetns uint64
	// User space: records not delivered because the Records channel was
	// full, first-fragment payloads discarded because too many trains were
	// pending, and ring-buffer records that failed to decode.
	RecordsDropped uint64
	PendingEvicted uint64
	DecodeErrors   uint64
}
