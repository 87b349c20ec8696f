package control

import (
	"net/netip"
	"time"
)

// ProxyPeer is one client of the re-fragmenting proxy, as `ikefragctl
// peers` shows it: the JSON encoding of proxy.PeerInfo, field for field (a
// test in cmd/ikefragd checks that the two encode alike).
type ProxyPeer struct {
	Client  netip.Addr  `json:"client"`
	Flows   []ProxyFlow `json:"flows"`
	Backend string      `json:"backend,omitempty"`
	PMTU    ProxyPMTU   `json:"pmtu"`
	// RouteMTU is the MTU of the host route installed toward the client
	// (route_mtu), 0 when none.
	RouteMTU int           `json:"route_mtu,omitempty"`
	LastSeen time.Time     `json:"last_seen"`
	Counters ProxyCounters `json:"counters"`
}

// ProxyFlow is one flow of a client by its two 5-tuples (UDP): client ↔
// proxy listen address, and proxy upstream address ↔ backend
// (proxy.FlowInfo).
type ProxyFlow struct {
	Client   netip.AddrPort `json:"client"`
	Local    netip.AddrPort `json:"local"`
	Upstream netip.AddrPort `json:"upstream"`
	Backend  netip.AddrPort `json:"backend"`
	NATT     bool           `json:"natt"`
	Replied  bool           `json:"replied"`
	Created  time.Time      `json:"created"`
	LastSeen time.Time      `json:"last_seen"`
	// PktsIn and PktsOut count every datagram, whichever path carried it.
	PktsIn  uint64 `json:"datagrams_in"`
	PktsOut uint64 `json:"datagrams_out"`
	// ESPIn and ESPOut are the ESP datagrams relayed in user space,
	// ESPFastPathIn and ESPFastPathOut those relayed by the ESP fast path.
	ESPIn          uint64 `json:"esp_in"`
	ESPOut         uint64 `json:"esp_out"`
	ESPFastPathIn  uint64 `json:"esp_fastpath_in"`
	ESPFastPathOut uint64 `json:"esp_fastpath_out"`
	// FastPath is "mapped", "full", "user_space", or empty when the flow
	// was never offered to the fast path.
	FastPath string `json:"fast_path,omitempty"`
	// Transport is "tcp" for an RFC 9329 client's flow, empty for UDP.
	Transport string `json:"transport,omitempty"`
	// FastPathMTU is the largest ESP datagram the mapping sends toward the
	// client, 0 when only the interface's MTU limits it.
	FastPathMTU int `json:"fast_path_mtu,omitempty"`
}

// ProxyPMTU is the proxy's path-MTU estimate toward a client and the
// evidence it rests on (proxy.PMTUInfo); evidence values are 0 when none
// or expired.
type ProxyPMTU struct {
	MTU          int       `json:"mtu"`
	Source       string    `json:"source"`
	ICMP         int       `json:"icmp,omitempty"`
	StepDown     int       `json:"step_down,omitempty"`
	Override     int       `json:"override,omitempty"`
	Fragments    int       `json:"fragments,omitempty"`
	Observer     int       `json:"observer,omitempty"`
	Unfragmented int       `json:"unfragmented,omitempty"`
	Updated      time.Time `json:"updated,omitzero"`
}

// ProxyCounters are a client's proxy counters (proxy.Counters).
type ProxyCounters struct {
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
	// totals above: relayed by the proxy's sockets, and in the kernel by
	// the ESP fast path.
	ESPIn               uint64 `json:"esp_in"`
	ESPBytesIn          uint64 `json:"esp_bytes_in"`
	ESPOut              uint64 `json:"esp_out"`
	ESPBytesOut         uint64 `json:"esp_bytes_out"`
	ESPFastPathIn       uint64 `json:"esp_fastpath_in"`
	ESPFastPathBytesIn  uint64 `json:"esp_fastpath_bytes_in"`
	ESPFastPathOut      uint64 `json:"esp_fastpath_out"`
	ESPFastPathBytesOut uint64 `json:"esp_fastpath_bytes_out"`
}

// ProxyTCP is the proxy's RFC 9329 listener (proxy.tcp) as `ikefragctl
// stats` shows it: the JSON encoding of proxy.TCPStats, field for field (a
// test in cmd/ikefragd checks that the two encode alike). Its frames are
// also counted as datagrams in the proxy's other counters.
type ProxyTCP struct {
	Listeners []string `json:"listeners"`
	// Connections are open now, NoFlow of them have not yet sent a first
	// message that opened a flow.
	Connections int    `json:"connections"`
	NoFlow      int    `json:"connections_without_flow"`
	Accepted    uint64 `json:"accepted"`
	// Refused counts connections closed at accept, by reason; Ended
	// connections ended, by reason.
	Refused map[string]uint64 `json:"refused,omitempty"`
	Ended   map[string]uint64 `json:"ended,omitempty"`
	// Frames and their payload bytes, in (client to backend) and out.
	FramesIn            uint64 `json:"frames_in"`
	BytesIn             uint64 `json:"bytes_in"`
	FramesOut           uint64 `json:"frames_out"`
	BytesOut            uint64 `json:"bytes_out"`
	ESPDropped          uint64 `json:"esp_dropped_send_buffer"`
	KeepalivesNotFramed uint64 `json:"keepalives_not_framed"`
	// Joined counts RFC 7383 fragment sets from a backend sent to the
	// client as one SK message (keyed).
	Joined uint64 `json:"skf_joined"`
	// Split counts clients' IKE messages too large for the path to their
	// backend sent to it as RFC 7383 fragments (keyed), SplitFragments the
	// fragments, SplitReplays retransmissions answered with the same ones;
	// SplitKeyPrompts the key prompts sent, SplitKeysAfterPrompt those the
	// keys followed; Unsplit such messages relayed whole, by reason.
	Split                uint64            `json:"ike_split"`
	SplitFragments       uint64            `json:"ike_split_fragments"`
	SplitReplays         uint64            `json:"ike_split_replays"`
	SplitKeyPrompts      uint64            `json:"ike_split_key_prompts"`
	SplitKeysAfterPrompt uint64            `json:"ike_split_keys_after_prompt"`
	Unsplit              map[string]uint64 `json:"ike_unsplit,omitempty"`
	// SplitCached is the number of split messages whose fragments are
	// held now for retransmissions.
	SplitCached int `json:"ike_split_cached"`
}
