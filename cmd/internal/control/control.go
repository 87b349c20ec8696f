// Package control is the protocol between ikefragd and ikefragctl: a Unix
// stream socket carrying one JSON object per line.
//
// A client writes a Request line and reads one Response line per request;
// several requests may share a connection. The "events" method with
// follow set answers with a stream of Response lines, one per Event, until
// the client closes the connection.
//
//	→ {"method":"status"}
//	← {"version":1,"ok":true,"result":{...}}
//	← {"version":1,"ok":false,"error":"unknown method \"x\""}
//
// Methods and their results: status (Status), peers ([]diag.PMTUEstimate),
// proxy-peers ([]ProxyPeer), sessions ([]diag.SessionReport), verdicts
// (diag.Report, the schema of `ikefragctl analyze --json`), stats (Stats,
// with the proxy's TCP listener as ProxyTCP),
// events ([]Event, or a stream of Event with follow).
//
// The wire types are this package's, so that ikefragctl links neither the
// BPF loader nor the proxy; the daemon's tests check that what the proxy
// and the observer give encodes as these types.
package control

import (
	"time"

	"github.com/ikefrag/ikefrag/diag"
)

// Version is the protocol version in every response. It changes only when
// a field is removed or changes meaning.
const Version = 1

// DefaultSocket is where ikefragd listens and ikefragctl looks unless told
// otherwise (control.socket, --socket).
const DefaultSocket = "/run/ikefrag/control.sock"

// MaxLine bounds one request line; requests are tiny.
const MaxLine = 4096

// The methods.
const (
	MethodStatus = "status"
	MethodPeers  = "peers"
	// MethodProxyPeers returns the proxy's per-client state ([]ProxyPeer).
	MethodProxyPeers = "proxy-peers"
	MethodSessions   = "sessions"
	MethodVerdicts   = "verdicts"
	MethodStats      = "stats"
	MethodEvents     = "events"
)

// Request is one line from the client.
type Request struct {
	Method string `json:"method"`
	// Follow (events only) keeps the connection open and streams new
	// events after the recent ones.
	Follow bool `json:"follow,omitempty"`
}

// Response is one line from the daemon. Result holds the method's result
// type, encoded as JSON.
type Response struct {
	Version int    `json:"version"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Result  any    `json:"result,omitempty"`
}

// Status is the daemon's state at a glance.
type Status struct {
	// Version is the daemon's build (git describe), GoVersion the Go
	// release it was built with.
	Version   string    `json:"version"`
	GoVersion string    `json:"go_version,omitempty"`
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	// Healthy is false when a part of the daemon stopped working;
	// Problems says which.
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems,omitempty"`
	// Degraded says what works with reduced fidelity while healthy (the
	// diagnosis forgetting state to stay within diag.max_memory).
	Degraded []string `json:"degraded,omitempty"`

	Config ConfigStatus `json:"config"`

	Interfaces   []Interface `json:"interfaces"`
	AttachMode   string      `json:"attach_mode"`
	DropsEnabled bool        `json:"drops_enabled"`

	Sessions int `json:"sessions"`
	Peers    int `json:"peers"`
	// Verdicts counts verdicts by code since the daemon started, each
	// counted once per session.
	Verdicts map[diag.Code]int `json:"verdicts"`
	// Records is the number of observations the diagnosis engine took in.
	Records uint64 `json:"records"`

	Metrics string `json:"metrics,omitempty"` // listen address, "" when off
	Proxy   string `json:"proxy"`             // "disabled", or the proxy's state
	Keys    Keys   `json:"keys"`
	Kernel  Kernel `json:"kernel"`
}

// Kernel is what the running kernel gives the daemon. A feature is "yes",
// or "no: " and why.
type Kernel struct {
	Release       string `json:"release"`
	Attach        string `json:"attach"`         // "tcx", or "tc (why not tcx)"
	ObserverBuild string `json:"observer_build"` // "default", or "compat (why)"
	FastPath      string `json:"fast_path"`
	DropReasons   string `json:"drop_reasons"`
}

// ConfigStatus describes the running configuration.
type ConfigStatus struct {
	File           string    `json:"file"`
	Loaded         time.Time `json:"loaded"`
	Reloads        uint64    `json:"reloads"`
	ReloadFailures uint64    `json:"reload_failures"`
	LastError      string    `json:"last_error,omitempty"`
	// RestartPending lists keys whose new value in the file takes effect
	// only after a restart.
	RestartPending []string `json:"restart_pending,omitempty"`
}

// Interface is one interface the configuration asks for, or one the daemon
// attached.
type Interface struct {
	Name    string `json:"name"`
	Ifindex int    `json:"ifindex,omitempty"`
	// State is "attached", "absent" (configured, not present), "error",
	// "pattern" (Name is a pattern) or "default" (interfaces: default;
	// Follows names the default route's link now).
	State   string `json:"state"`
	Follows string `json:"follows,omitempty"`
	Mode    string `json:"mode,omitempty"` // tcx or tc when attached
	MTU     int    `json:"mtu,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Keys describes the key sources (never keys).
type Keys struct {
	SaveKeys string `json:"save_keys,omitempty"` // table path when configured
	Socket   string `json:"socket,omitempty"`    // key socket path when configured
	SAs      int    `json:"sas"`                 // IKE SAs with keys held
}

// Counter is a packet count and the IP bytes of those packets.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes,omitempty"`
}

// IfaceStats are the BPF counters of one attached interface, by class
// (ikev2, frag_first, trains_incomplete, ...).
type IfaceStats struct {
	Name    string             `json:"name"`
	Ifindex int                `json:"ifindex"`
	Mode    string             `json:"mode"`
	Ingress map[string]Counter `json:"ingress"`
	Egress  map[string]Counter `json:"egress"`
}

// Stats is every counter the daemon keeps.
type Stats struct {
	// Classes names the BPF counter classes in the observer's order (the
	// order of its counter ids), the keys of IfaceStats.Ingress and
	// Egress: a client prints them in this order without knowing them.
	Classes    []string     `json:"classes"`
	Interfaces []IfaceStats `json:"interfaces"`
	// Observer: train map and losses between the kernel and the engine.
	Observer ObserverStats `json:"observer"`
	// Records the engine took in, by kind.
	Records RecordStats `json:"records"`
	Engine  EngineStats `json:"engine"`
	// Kernel holds the IP fragmentation and reassembly counters of the
	// daemon's network namespace: family → counter name → value.
	Kernel map[string]map[string]uint64 `json:"kernel"`
	// ProxyTCP is the proxy's RFC 9329 listener; absent without one.
	ProxyTCP *ProxyTCP `json:"proxy_tcp,omitempty"`
}

// ObserverStats mirror ebpf.Snapshot's global counters.
type ObserverStats struct {
	TrainsLive      uint64 `json:"trains_live"`
	TrainsEvicted   uint64 `json:"trains_evicted"`
	DropsEnabled    bool   `json:"drops_enabled"`
	DropsReported   uint64 `json:"drops_reported"`
	DropsRingbuf    uint64 `json:"drops_ringbuf_fail"`
	DropsUnreadable uint64 `json:"drops_unreadable"`
	RecordsDropped  uint64 `json:"records_dropped"`
	PendingEvicted  uint64 `json:"pending_evicted"`
	DecodeErrors    uint64 `json:"decode_errors"`
}

// RecordStats count observations by kind: from the eBPF observer
// (Datagrams, TooBig, Drops), and IKE messages the proxy relayed over RFC
// 9329 streams (TCPFrames), TCPFramesDropped of them not taken in because
// the engine was behind (the ikefrag_records_total kinds).
type RecordStats struct {
	Datagrams        uint64 `json:"datagrams"`
	TooBig           uint64 `json:"too_big"`
	Drops            uint64 `json:"drops"`
	TCPFrames        uint64 `json:"tcp_frames"`
	TCPFramesDropped uint64 `json:"tcp_frames_dropped"`
}

// EngineStats mirror diag.Stats, field for field (a test in cmd/ikefragd
// checks that every diag.Stats field arrives here), and SessionsExpired.
type EngineStats struct {
	Datagrams   uint64 `json:"datagrams"`
	ESP         uint64 `json:"esp"`
	Keepalives  uint64 `json:"keepalives"`
	Copies      uint64 `json:"copies"`
	Retransmits uint64 `json:"retransmits"`
	Undecodable uint64 `json:"undecodable"`
	// TCPFrames are RFC 9329 frames (IKE over TCP) the engine took in.
	TCPFrames uint64 `json:"tcp_frames"`
	Orphans   uint64 `json:"orphans"`
	TooBig    uint64 `json:"too_big"`
	Drops     uint64 `json:"drops"`
	Evicted   uint64 `json:"evicted"`
	// Quirks are IKE messages decoded despite a departure from RFC 7296.
	Quirks          uint64 `json:"quirks"`
	LimitedDropped  uint64 `json:"limited_dropped"`
	SessionsExpired uint64 `json:"sessions_expired"`
}

// Event kinds.
const (
	EventVerdict   = "verdict"
	EventInterface = "interface"
	EventConfig    = "config"
	EventDaemon    = "daemon"
	// EventLost tells a follower that it read too slowly and Lost events
	// were skipped.
	EventLost = "lost"
)

// Event is something the daemon reports as it happens: a verdict (once per
// session), an interface attached or released, a configuration reload.
type Event struct {
	Seq     uint64        `json:"seq"`
	Time    time.Time     `json:"time"`
	Kind    string        `json:"kind"`
	Message string        `json:"message"`
	Verdict *diag.Verdict `json:"verdict,omitempty"`
	// Interface events.
	Interface string `json:"interface,omitempty"`
	Ifindex   int    `json:"ifindex,omitempty"`
	// Error is set for failed attachments and reloads.
	Error string `json:"error,omitempty"`
	Lost  uint64 `json:"lost,omitempty"`
}
