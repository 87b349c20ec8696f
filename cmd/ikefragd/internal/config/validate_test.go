package config

import (
	"strings"
	"testing"
	"time"
)

// Each bad value is one problem on its key; the defaults around it stay
// valid.
func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		key  string
		msg  string // substring
	}{
		{"empty interface", func(c *Config) { c.Interfaces = []string{""} }, "interfaces[0]", "empty interface name"},
		{"interface with a colon", func(c *Config) { c.Interfaces = []string{"eth0:1"} }, "interfaces[0]", "is not an interface name"},
		{"too many interfaces", func(c *Config) { c.Interfaces = []string{"a", "b"}; c.Observe.MaxInterfaces = 1 },
			"interfaces", "2 interfaces listed but observe.max_interfaces is 1"},
		{"port zero", func(c *Config) { c.Ports.NATT = 0 }, "ports.natt", "0 is not a UDP port"},
		{"train map", func(c *Config) { c.Observe.TrainMapSize = 0 }, "observe.train_map_size", "0 is outside 1-4194304"},
		{"fragment timeout short", func(c *Config) { c.Observe.FragmentTimeout = 50 * time.Millisecond },
			"observe.fragment_timeout", "50ms is outside 100ms-10m"},
		{"fragment timeout long", func(c *Config) { c.Observe.FragmentTimeout = time.Hour }, "observe.fragment_timeout", "outside 100ms-10m"},
		{"capture bytes", func(c *Config) { c.Observe.CaptureBytes = 63 }, "observe.capture_bytes", "63 is outside 64-"},
		{"large IKE", func(c *Config) { c.Observe.LargeIKE = 0 }, "observe.large_ike", "0 is outside 1-65535"},
		{"ring buffer too big", func(c *Config) { c.Observe.RingBufferSize = 1 << 31 }, "observe.ring_buffer_size", "is not a power of two between"},
		{"record queue", func(c *Config) { c.Observe.RecordQueue = 0 }, "observe.record_queue", "0 is outside 1-1048576"},
		{"settle", func(c *Config) { c.Diag.Settle = 500 * time.Millisecond }, "diag.settle", "500ms is outside 1s-1h"},
		{"idle", func(c *Config) { c.Diag.Idle = 25 * time.Hour }, "diag.idle", "25h0m0s is outside 1m-24h"},
		{"max sessions", func(c *Config) { c.Diag.MaxSessions = 0 }, "diag.max_sessions", "0 is outside 1-1000000"},
		{"max memory", func(c *Config) { c.Diag.MaxMemory = 1024 }, "diag.max_memory", "1024 is outside 1048576-"},
		{"verdict log rate", func(c *Config) { c.Diag.VerdictLogRate = 0 }, "diag.verdict_log_rate", "0 is outside 1-100000"},
		{"metrics port zero", func(c *Config) { c.Metrics.Listen = "127.0.0.1:0" }, "metrics.listen", "is not an IP address and port"},
		{"control socket empty", func(c *Config) { c.Control.Socket = "" }, "control.socket", "is empty; an absolute path is needed"},
		{"control group unknown", func(c *Config) { c.Control.Group = "ikfd-no-such-group" }, "control.group", `"ikfd-no-such-group": no such group`},
		{"key table relative", func(c *Config) { c.Keys.StrongswanTable = "table" }, "keys.strongswan_table", `"table" is not an absolute path`},
		{"proxy checked when enabled", func(c *Config) { c.Proxy.Enabled = true }, "proxy.backends", "no backend"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Default()
			c.edit(&cfg)
			ps := cfg.Validate()
			if len(ps) != 1 || ps[0].Key != c.key || !strings.Contains(ps[0].Msg, c.msg) {
				t.Errorf("problems %q, want one on %s containing %q", ps, c.key, c.msg)
			}
		})
	}
}

// The proxy's joined errors become one problem per key, each message's
// leading key taken as the problem's.
func TestProxyProblems(t *testing.T) {
	c := Default()
	c.Proxy.Backends = []string{"vpn.example"}
	c.Proxy.Refragment = "always"
	ps := proxyProblems(c.Proxy.Validate())
	keys := map[string]bool{}
	for _, p := range ps {
		keys[p.Key] = true
		if strings.HasPrefix(p.Msg, p.Key) || strings.HasPrefix(p.Msg, ":") {
			t.Errorf("%q: the key is left in the message", p)
		}
	}
	if len(ps) != 2 || !keys["proxy.backends"] || !keys["proxy.refragment"] {
		t.Errorf("problems %q", ps)
	}
	if proxyProblems(nil) != nil {
		t.Error("no error gives problems")
	}
}
