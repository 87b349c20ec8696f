package proxy

import (
	"sync/atomic"

	"github.com/ikefrag/ikefrag/ike/sk"
)

// DropReason says why the proxy did not forward a datagram.
type DropReason uint8

const (
	DropTableFull  DropReason = iota // MaxClients flows exist
	DropTruncated                    // larger than the receive buffer
	DropInvalid                      // NAT-T payload neither IKE, ESP nor keepalive
	DropNoBackend                    // no backend could be reached (socket error)
	DropSendError                    // sendmmsg failed
	DropReassembly                   // held back while a fragment set is incomplete (not a loss)
	DropSuppressed                   // a backend retransmission already answered from the cache
	DropClosed                       // the flow was closing

	// Datagrams that would have opened a flow and did not (admit.go).
	DropUnsolicited       // neither a well-formed IKE_SA_INIT request nor of a known flow, IKE SA or client
	DropSourceBackend     // the source is a backend
	DropSourceLocal       // the source is an address of this host
	DropSourceLoopback    // the source is a loopback address (and the destination is not)
	DropSourceMulticast   // the source is multicast
	DropSourceBroadcast   // the source is a broadcast address
	DropSourceUnspecified // the source is 0.0.0.0 or ::
	DropSourceMapped      // an IPv6 source that is IPv4-mapped (::ffff:a.b.c.d)
	DropClientDenied      // the source is in proxy.clients.deny
	DropClientNotAllowed  // the source is in no prefix of proxy.clients.allow
	DropAddressLimit      // the address has new_flows_per_address flows not yet established
	DropPrefixLimit       // its prefix has new_flows_per_prefix flows not yet established
	DropHalfOpenLimit     // an IKE_SA_INIT of a new IKE SA from a client with half_open_per_client half-open IKE SAs
	DropCookieSent        // an IKE_SA_INIT without the proxy's cookie in cookie mode, answered with N(COOKIE) (not a loss)
	DropCookieLimited     // the same, not answered: the COOKIE responses' share of the request bytes is used up
	DropTCPKeyClash       // a UDP datagram and a TCP connection (tcp.go) from the same address and port to the same address and port
	DropTCPSendBuffer     // ESP toward a TCP client whose send_buffer is full
	numDropReasons
)

var dropNames = [numDropReasons]string{"table_full", "truncated", "invalid", "no_backend", "send_error",
	"reassembly_hold", "retransmit_suppressed", "flow_closed",
	"unsolicited", "source_backend", "source_local", "source_loopback", "source_multicast", "source_broadcast",
	"source_unspecified", "source_v4mapped", "client_denied", "client_not_allowed", "address_limit", "prefix_limit",
	"half_open_limit", "cookie_sent", "cookie_limited", "tcp_key_clash", "tcp_send_buffer"}

// FlowEnd says why a flow ended.
type FlowEnd uint8

const (
	EndIdle              FlowEnd = iota // no datagram for idle_timeout
	EndUnanswered                       // unanswered (or COOKIE / INVALID_KE_PAYLOAD only) for unreplied_timeout
	EndHalfOpen                         // IKE_SA_INIT answered, nothing more for half_open_timeout
	EndEvictedUnanswered                // room made for a new flow: the oldest unanswered flow
	EndEvictedHalfOpen                  // room made for a new flow: the oldest half-open flow (no unanswered one left)
	EndTCPClosed                        // its TCP connection ended (tcp.go; TCPStats says why)
	numFlowEnds
)

var flowEndNames = [numFlowEnds]string{"idle", "unanswered", "half_open", "evicted_unanswered", "evicted_half_open", "tcp_closed"}

func (e FlowEnd) String() string {
	if e < numFlowEnds {
		return flowEndNames[e]
	}
	return "unknown"
}

func (d DropReason) String() string {
	if d < numDropReasons {
		return dropNames[d]
	}
	return "unknown"
}

// counters are kept per backend and per client, and in total.
type counters struct {
	pktsIn, bytesIn   atomic.Uint64 // client → backend
	pktsOut, bytesOut atomic.Uint64 // backend → client (what was sent to the client)
	refragmented      atomic.Uint64 // IKE messages re-cut into SKF fragments
	fragments         atomic.Uint64 // SKF datagrams emitted by cuts (first cuts and step-downs)
	replays           atomic.Uint64 // cached outputs replayed for a backend retransmission
	keyMisses         atomic.Uint64 // re-fragmentation needed, keys not available
	notNegotiated     atomic.Uint64 // re-fragmentation needed, RFC 7383 not negotiated by both peers
	oversize          atomic.Uint64 // datagrams relayed unchanged although larger than the client's PMTU
	stepDowns         atomic.Uint64 // responses cut again smaller after a client retransmission
	clientRetransmits atomic.Uint64 // client requests seen again (same message ID and bytes)
	drops             [numDropReasons]atomic.Uint64

	// ESP-in-UDP, also counted in pkts and bytes above: relayed in user
	// space, and relayed by the fast path (added from its counters).
	espIn, espBytesIn, espOut, espBytesOut atomic.Uint64
	fpIn, fpBytesIn, fpOut, fpBytesOut     atomic.Uint64
}

// Counters is a snapshot of counters.
type Counters struct {
	DatagramsIn       uint64            `json:"datagrams_in"`
	BytesIn           uint64            `json:"bytes_in"`
	DatagramsOut      uint64            `json:"datagrams_out"`
	BytesOut          uint64            `json:"bytes_out"`
	Refragmented      uint64            `json:"refragmented"`
	FragmentsEmitted  uint64            `json:"fragments_emitted"`
	Replays           uint64            `json:"replays"`
	KeyMisses         uint64            `json:"key_misses"`
	NotNegotiated     uint64            `json:"not_negotiated"`
	Oversize          uint64            `json:"oversize_relayed"`
	StepDowns         uint64            `json:"step_downs"`
	ClientRetransmits uint64            `json:"client_retransmits"`
	Dropped           map[string]uint64 `json:"dropped,omitempty"`
	// ESP-in-UDP datagrams and their UDP payload bytes, included in the
	// totals above: relayed by the proxy's sockets (ESPIn, ESPOut), and
	// relayed in the kernel by the ESP fast path (ESPFastPath*, read back
	// once per janitor period and on every Stats or Peers call).
	ESPIn               uint64 `json:"esp_in"`
	ESPBytesIn          uint64 `json:"esp_bytes_in"`
	ESPOut              uint64 `json:"esp_out"`
	ESPBytesOut         uint64 `json:"esp_bytes_out"`
	ESPFastPathIn       uint64 `json:"esp_fastpath_in"`
	ESPFastPathBytesIn  uint64 `json:"esp_fastpath_bytes_in"`
	ESPFastPathOut      uint64 `json:"esp_fastpath_out"`
	ESPFastPathBytesOut uint64 `json:"esp_fastpath_bytes_out"`
}

func (c *counters) snapshot() Counters {
	s := Counters{
		DatagramsIn: c.pktsIn.Load(), BytesIn: c.bytesIn.Load(),
		DatagramsOut: c.pktsOut.Load(), BytesOut: c.bytesOut.Load(),
		Refragmented: c.refragmented.Load(), FragmentsEmitted: c.fragments.Load(),
		Replays: c.replays.Load(), KeyMisses: c.keyMisses.Load(), NotNegotiated: c.notNegotiated.Load(),
		Oversize: c.oversize.Load(), StepDowns: c.stepDowns.Load(), ClientRetransmits: c.clientRetransmits.Load(),
		ESPIn: c.espIn.Load(), ESPBytesIn: c.espBytesIn.Load(), ESPOut: c.espOut.Load(), ESPBytesOut: c.espBytesOut.Load(),
		ESPFastPathIn: c.fpIn.Load(), ESPFastPathBytesIn: c.fpBytesIn.Load(),
		ESPFastPathOut: c.fpOut.Load(), ESPFastPathBytesOut: c.fpBytesOut.Load(),
	}
	for i := range c.drops {
		if n := c.drops[i].Load(); n != 0 {
			if s.Dropped == nil {
				s.Dropped = map[string]uint64{}
			}
			s.Dropped[DropReason(i).String()] = n
		}
	}
	return s
}

// BackendStats describes one backend.
type BackendStats struct {
	Name      string   `json:"name"`
	IKE       string   `json:"ike"`
	NATT      string   `json:"natt"`
	Up        bool     `json:"up"`
	Failures  int      `json:"failures"`
	LastError string   `json:"last_error,omitempty"`
	Flows     int64    `json:"flows"`
	Counters  Counters `json:"counters"`
	// Doubt is the number of distinct client addresses whose well-formed
	// IKE_SA_INIT went unanswered since the backend last answered.
	Doubt int `json:"doubt,omitempty"`
}

// Stats is a snapshot of the proxy.
type Stats struct {
	Flows       int                 `json:"flows"`
	Clients     int                 `json:"clients"`
	IKESAs      int                 `json:"ike_sas"`
	Routes      int                 `json:"routes"`
	Total       Counters            `json:"total"`
	Backends    []BackendStats      `json:"backends"`
	Reassembler sk.ReassemblerStats `json:"reassembler"`
	Fragmenter  sk.FragmenterStats  `json:"fragmenter"`
	ICMPErrors  uint64              `json:"icmp_errors"`
	Keyed       bool                `json:"keyed"`
	Refragment  string              `json:"refragment"`
	Listeners   []string            `json:"listeners"`
	FastPath    FastPathStats       `json:"fast_path"`
	// FlowEnds counts the flows ended, by FlowEnd (close at shutdown
	// not included).
	FlowEnds map[string]uint64 `json:"flow_ends,omitempty"`
	// Unestablished is the number of flows the backend has not answered
	// beyond IKE_SA_INIT; HalfOpenSAs the IKE SAs whose IKE_SA_INIT was
	// answered and IKE_AUTH not yet (within half_open_timeout).
	Unestablished int `json:"flows_unestablished"`
	HalfOpenSAs   int `json:"half_open_ike_sas"`
	// Probes counts the active health probes (IKE_SA_INIT of major
	// version 3) sent and answered.
	Probes         uint64 `json:"health_probes"`
	ProbesAnswered uint64 `json:"health_probes_answered"`
	// Adopted and AdoptSkipped count the flows of the state file
	// re-opened at start, and those left out (listener or backend gone,
	// port taken).
	Adopted      uint64 `json:"flows_adopted,omitempty"`
	AdoptSkipped uint64 `json:"flows_adopt_skipped,omitempty"`
	// CookiesSent counts the proxy's own COOKIE responses (cookie mode),
	// CookiesVerified the requests that came back with a valid one.
	CookiesSent     uint64 `json:"cookies_sent"`
	CookiesVerified uint64 `json:"cookies_verified"`
	// Pair is what a proxy of a pair reports (proxy.freebind, proxy.adopt).
	Pair PairStats `json:"pair"`
	// TCP describes the RFC 9329 listener (proxy.tcp); nil without one.
	TCP *TCPStats `json:"tcp,omitempty"`
}

// PairStats describe the proxy as one box of a pair (docs/pair.md).
type PairStats struct {
	// Adopt is proxy.adopt.
	Adopt string `json:"adopt"`
	// VIPs are the specific listen addresses and whether this host holds
	// them (with proxy.freebind; empty otherwise).
	VIPs []VIPInfo `json:"virtual_addresses,omitempty"`
	// AdoptedIKE and AdoptedESP count the datagrams of SAs this proxy had
	// no flow for that proxy.adopt admitted (an IKE message of a running
	// IKE SA, an ESP datagram); AdoptUnknownSA the IKE ones refused
	// because the key source did not know their SPI pair.
	AdoptedIKE     uint64 `json:"adopted_ike"`
	AdoptedESP     uint64 `json:"adopted_esp"`
	AdoptUnknownSA uint64 `json:"adopt_unknown_sa"`
}

// FastPathStats describe the ESP fast path (proxy.fast_path).
type FastPathStats struct {
	// Mode is the configured proxy.fast_path: auto or off.
	Mode string `json:"mode"`
	// Active: the program is loaded and attached for at least one backend.
	Active bool `json:"active"`
	// Reason says why it is not active, or what failed last.
	Reason string `json:"reason,omitempty"`
	// Interfaces it is attached to, with the attach mode (tcx or tc).
	Interfaces map[string]string `json:"interfaces,omitempty"`
	// Flows are mapped now, of at most MaxFlows.
	Flows    int `json:"flows"`
	MaxFlows int `json:"max_flows"`
	// Redirected counts the datagrams the program relayed, Passed those
	// it left to the stack by reason, Dropped those lost half way (zero).
	Redirected uint64            `json:"redirected"`
	Passed     map[string]uint64 `json:"passed,omitempty"`
	Dropped    uint64            `json:"dropped"`
	// MapFull counts flows refused for lack of room, PutErrors flows
	// refused for another reason; Unmapped counts the NAT-T flows that
	// stayed in user space when offered (those two, and interfaces or
	// routes the program cannot use).
	MapFull   uint64 `json:"map_full"`
	PutErrors uint64 `json:"put_errors"`
	Unmapped  uint64 `json:"flows_unmapped"`
	// AttachFailures counts interfaces the program could not be attached
	// to; LoadFailures counts failed loads of the program in this process.
	AttachFailures uint64 `json:"attach_failures"`
	LoadFailures   uint64 `json:"load_failures"`
}
