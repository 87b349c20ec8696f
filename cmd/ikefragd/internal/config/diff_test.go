package config

import (
	"slices"
	"testing"
	"time"
)

// Changed names every changed key; those outside interfaces, metrics and
// log need a restart.
func TestChanged(t *testing.T) {
	cases := []struct {
		name             string
		edit             func(*Config)
		changed, restart []string
	}{
		{"nothing", func(*Config) {}, nil, nil},
		{"interfaces", func(c *Config) { c.Interfaces = []string{"eth0"} }, []string{"interfaces"}, nil},
		{"empty list is no list", func(c *Config) { c.Interfaces = []string{} }, nil, nil},
		{"log and metrics", func(c *Config) { c.Log.Level = "debug"; c.Metrics.Listen = "" },
			[]string{"log.level", "metrics.listen"}, nil},
		{"observe", func(c *Config) { c.Observe.TrainMapSize = 1024 },
			[]string{"observe.train_map_size"}, []string{"observe.train_map_size"}},
		{"diag and ports", func(c *Config) { c.Diag.Settle = time.Minute; c.Ports.NATT = 4501 },
			[]string{"diag.settle", "ports.natt"}, []string{"diag.settle", "ports.natt"}},
		{"proxy and keys", func(c *Config) { c.Proxy.Enabled = true; c.Keys.Socket = "/run/k.sock" },
			[]string{"keys.socket", "proxy.enabled"}, []string{"keys.socket", "proxy.enabled"}},
		{"control", func(c *Config) { c.Control.Group = "adm" }, []string{"control.group"}, []string{"control.group"}},
		{"overrides", func(c *Config) {
			c.Proxy.PMTUOverrides = []any{map[string]any{"prefix": "10.0.0.0/8", "mtu": 1280}}
		}, []string{"proxy.pmtu_overrides"}, []string{"proxy.pmtu_overrides"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := Default()
			c.edit(&b)
			changed, restart := Changed(Default(), b)
			if !slices.Equal(changed, c.changed) || !slices.Equal(restart, c.restart) {
				t.Errorf("changed %v restart %v, want %v and %v", changed, restart, c.changed, c.restart)
			}
		})
	}
}

// Files that say the same in other words change nothing; files that say
// something else change what they say.
func TestChangedBetweenFiles(t *testing.T) {
	const proxyBase = "proxy:\n  backends: [192.0.2.1]\n"
	cases := []struct {
		name    string
		a, b    string
		changed []string
	}{
		{"overrides as a map and as a list", proxyBase + "  pmtu_overrides:\n    \"198.51.100.0/24\": 1400\n",
			proxyBase + "  pmtu_overrides:\n    - {prefix: 198.51.100.0/24, mtu: 1400}\n", nil},
		{"overrides in another order", proxyBase + "  pmtu_overrides:\n    \"198.51.100.0/24\": 1400\n    \"10.0.0.0/8\": 1280\n",
			proxyBase + "  pmtu_overrides:\n    \"10.0.0.0/8\": 1280\n    \"198.51.100.0/24\": 1400\n", nil},
		{"an override's MTU", proxyBase + "  pmtu_overrides:\n    \"198.51.100.0/24\": 1400\n",
			proxyBase + "  pmtu_overrides:\n    \"198.51.100.0/24\": 1300\n", []string{"proxy.pmtu_overrides"}},
		{"a duration written otherwise", "diag:\n  settle: 60s\n", "diag:\n  settle: 1m\n", nil},
		{"a default written out", "", "ports:\n  ike: 500\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := load(t, c.a)
			if err != nil {
				t.Fatal(err)
			}
			b, err := load(t, c.b)
			if err != nil {
				t.Fatal(err)
			}
			if changed, _ := Changed(a, b); !slices.Equal(changed, c.changed) {
				t.Errorf("changed %v, want %v", changed, c.changed)
			}
		})
	}
}
