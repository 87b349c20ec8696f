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
	numDropReasons
)

var dropNames = [numDropReasons]string{"table_full", "truncated", "invalid", "no_backend", "send_error",
	"reassembly_hold", "retransmit_suppressed", "flow_closed"}

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
}

func (c *counters) snapshot() Counters {
	s := Counters{
		DatagramsIn: c.pktsIn.Load(), BytesIn: c.bytesIn.Load(),
		DatagramsOut: c.pktsOut.Load(), BytesOut: c.bytesOut.Load(),
		Refragmented: c.refragmented.Load(), FragmentsEmitted: c.fragments.Load(),
		Replays: c.replays.Load(), KeyMisses: c.keyMisses.Load(), NotNegotiated: c.notNegotiated.Load(),
		Oversize: c.oversize.Load(), StepDowns: c.stepDowns.Load(), ClientRetransmits: c.clientRetransmits.Load(),
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
}
