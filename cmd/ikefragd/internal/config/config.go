// Package config is ikefragd's configuration: its types and defaults
// (this file), loading a YAML file with IKEFRAG_* environment overrides
// (load.go), strict decoding with did-you-mean for unknown keys
// (strict.go, suggest.go), validation (validate.go), and which keys a
// reload changed (diff.go). It does not look at the host: the daemon
// checks interfaces and key files itself.
//
// configs/ikefragd.yaml documents every key and equals Default (a test
// checks it).
package config

import (
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ebpf"
	"github.com/ikefrag/ikefrag/proxy"
)

// Config is ikefragd's configuration. configs/ikefragd.yaml documents every
// key; Default holds the defaults.
type Config struct {
	// Interfaces to observe: exact names, which must exist at start, or
	// shell patterns (ppp*), attached whenever a matching link appears.
	// "default" (or empty): the interface of the default route, followed
	// as the route moves.
	Interfaces []string `mapstructure:"interfaces"`
	Ports      Ports    `mapstructure:"ports"`
	Observe    Observe  `mapstructure:"observe"`
	Diag       Diag     `mapstructure:"diag"`
	Metrics    Metrics  `mapstructure:"metrics"`
	Control    Control  `mapstructure:"control"`
	Log        Log      `mapstructure:"log"`
	// Proxy is the proxy package's own configuration type: its keys,
	// defaults and validation are the proxy's.
	Proxy proxy.Config `mapstructure:"proxy"`
	Keys  Keys         `mapstructure:"keys"`
}

// Ports are the UDP ports the observer reads as IKE (RFC 7296 section 2)
// and as NAT-T (RFC 3948).
type Ports struct {
	IKE  int `mapstructure:"ike"`
	NATT int `mapstructure:"natt"`
}

// Observe shapes the BPF observer: its programs, maps and ring buffer.
type Observe struct {
	AttachMode      string        `mapstructure:"attach_mode"`
	TrainMapSize    int           `mapstructure:"train_map_size"`
	FragmentTimeout time.Duration `mapstructure:"fragment_timeout"`
	CaptureBytes    int           `mapstructure:"capture_bytes"`
	LargeIKE        int           `mapstructure:"large_ike"`
	RingBufferSize  int           `mapstructure:"ring_buffer_size"`
	MaxInterfaces   int           `mapstructure:"max_interfaces"`
	RecordQueue     int           `mapstructure:"record_queue"`
	Drops           bool          `mapstructure:"drops"`
	DropsAllNetns   bool          `mapstructure:"drops_all_namespaces"`
}

// Diag shapes the diagnosis engine.
type Diag struct {
	Settle      time.Duration `mapstructure:"settle"`
	Idle        time.Duration `mapstructure:"idle"`
	MaxSessions int           `mapstructure:"max_sessions"`
	MaxMemory   int           `mapstructure:"max_memory"`
	// VerdictLogRate bounds verdict log lines per second (a flood of
	// failing sessions must not flood the journal); every verdict still
	// reaches metrics and events.
	VerdictLogRate int `mapstructure:"verdict_log_rate"`
}

// Metrics is the Prometheus listener; an empty Listen turns it off.
type Metrics struct {
	Listen string `mapstructure:"listen"`
}

// Control is the socket ikefragctl talks to.
type Control struct {
	Socket string `mapstructure:"socket"`
	Group  string `mapstructure:"group"`
}

// Log is the daemon's log output.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// Keys names where IKE keys come from; both are paths, never key material.
type Keys struct {
	StrongswanTable string     `mapstructure:"strongswan_table"`
	Socket          string     `mapstructure:"socket"`
	SocketPeerUIDs  []int      `mapstructure:"socket_peer_uids"`
	Listen          KeysListen `mapstructure:"listen"`
}

// KeysListen is keys.listen: the TLS key listener for key forwarders on
// VPN server hosts (keys.Remote, docs/key-forwarder.md).
type KeysListen struct {
	Address  string   `mapstructure:"address"`
	Cert     string   `mapstructure:"cert"`
	Key      string   `mapstructure:"key"`
	ClientCA string   `mapstructure:"client_ca"`
	TLS      bool     `mapstructure:"tls"`
	Clients  []string `mapstructure:"clients"`
}

// Default is the one place the defaults live; the documented file and
// `ikefragd --check-config` agree with it (a test checks the file).
func Default() Config {
	return Config{
		Ports: Ports{IKE: 500, NATT: 4500},
		Observe: Observe{
			AttachMode:     string(ebpf.AttachAuto),
			TrainMapSize:   8192,
			CaptureBytes:   1500,
			LargeIKE:       1280,
			RingBufferSize: 1 << 20,
			MaxInterfaces:  16,
			RecordQueue:    4096,
			Drops:          true,
		},
		Diag: Diag{
			Settle:         diag.DefaultOptions.Settle,
			Idle:           diag.DefaultOptions.Idle,
			MaxSessions:    diag.DefaultOptions.MaxSessions,
			MaxMemory:      diag.DefaultMaxMemory,
			VerdictLogRate: 20,
		},
		Metrics: Metrics{Listen: "127.0.0.1:9717"},
		Control: Control{Socket: control.DefaultSocket},
		Log:     Log{Level: "info", Format: "auto"},
		Keys:    Keys{Listen: KeysListen{TLS: true}},
		Proxy: proxy.Config{
			Refragment:       proxy.RefragmentAuto,
			FastPath:         proxy.FastPathAuto,
			PMTUDefault:      proxy.DefaultPMTU,
			PMTUStepDown:     false,
			IKEPort:          500,
			NATTPort:         4500,
			IdleTimeout:      proxy.DefaultIdleTimeout,
			UnrepliedTimeout: proxy.DefaultUnrepliedTimeout,
			MaxClients:       proxy.DefaultMaxClients,

			HalfOpenTimeout:     proxy.DefaultHalfOpenTimeout,
			HalfOpenPerClient:   proxy.DefaultHalfOpenPerClient,
			NewFlowsPerAddress:  proxy.DefaultNewFlowsPerAddress,
			NewFlowsPerPrefix:   proxy.DefaultNewFlowsPerPrefix,
			ClientPrefixV4:      proxy.DefaultClientPrefixV4,
			ClientPrefixV6:      proxy.DefaultClientPrefixV6,
			HealthProbe:         proxy.HealthProbeAuto,
			Source:              proxy.SourceProxy,
			TransparentTable:    proxy.DefaultTransparentTable,
			TransparentPriority: proxy.DefaultTransparentPriority,
			PMTUExpiry:          proxy.DefaultPMTUExpiry,
			RouteTable:          proxy.DefaultRouteTable,
			RoutePriority:       proxy.DefaultRoutePriority,
			Batch:               proxy.DefaultBatch,
			HealthFailures:      proxy.DefaultHealthFailures,
			HealthHold:          proxy.DefaultHealthHold,
		},
	}
}
