package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// load writes yamlText to a file and loads it.
func load(t *testing.T, yamlText string) (Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ikefragd.yaml")
	if err := os.WriteFile(p, []byte(yamlText), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

// A valid base: lo exists in every network namespace.
const base = "interfaces: [lo]\n"

// Every bad value is one problem naming its key, all reported at once; the
// host is not looked at (the daemon's --check-config adds that).
func TestLoadProblems(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // one problem each, by substring
	}{
		{"unknown key", base + "observe:\n  ring_size: 4096\n", []string{"observe.ring_size: unknown key"}},
		{"unknown top-level key", base + "proxies: {enabled: true}\n", []string{"proxies: unknown key"}},
		{"unknown empty section", base + "metric: {}\n", []string{"metric: unknown key (did you mean metrics?)"}},
		{"unknown null key", base + "observe:\n  drop:\n", []string{"observe.drop: unknown key (did you mean observe.drops?)"}},
		{"misspelt key", base + "ports:\n  nat: 4500\n", []string{"ports.nat: unknown key (did you mean ports.natt?)"}},
		{"far from any key", base + "zzzzzzzzzz: 1\n", []string{"zzzzzzzzzz: unknown key"}},
		{"bad port", base + "ports:\n  ike: 70000\n", []string{"ports.ike: 70000 is not a UDP port (1-65535)"}},
		{"port as bool", base + "ports:\n  natt: true\n", []string{"ports.natt: true is not a number"}},
		{"port as fraction", base + "ports:\n  natt: 4500.5\n", []string{"ports.natt: 4500.5 is not a whole number"}},
		{"same ports", base + "ports:\n  ike: 4500\n", []string{"ports.natt: 4500 is also ports.ike"}},
		{"bad interface name", "interfaces: [lo, \"a/b\"]\n", []string{`interfaces[1]: "a/b" is not an interface name`}},
		{"long interface name", "interfaces: [abcdefghijklmnop]\n", []string{`interfaces[0]: "abcdefghijklmnop" is longer than an interface name can be (15 bytes)`}},
		{"interface twice", "interfaces: [lo, lo]\n", []string{`interfaces[1]: "lo" is listed twice`}},
		{"bad pattern", "interfaces: [lo, \"eth[\"]\n", []string{`interfaces[1]: "eth[" is not a valid pattern`}},
		{"relative key path", base + "keys:\n  socket: keys.sock\n", []string{`keys.socket: "keys.sock" is not an absolute path`}},
		{"key socket is the control socket", base + "keys:\n  socket: /run/ikefrag/control.sock\n", []string{`keys.socket: "/run/ikefrag/control.sock" is also control.socket`}},
		{"duration without unit", base + "diag:\n  settle: 5\n", []string{"diag.settle: 5 has no unit"}},
		{"duration as text", base + "diag:\n  settle: soon\n", []string{`diag.settle: "soon" is not a duration`}},
		{"idle shorter than settle", base + "diag:\n  settle: 20m\n  idle: 10m\n", []string{"diag.idle: 10m0s must be longer than diag.settle"}},
		{"attach mode", base + "observe:\n  attach_mode: xdp\n", []string{`observe.attach_mode: "xdp" is not auto, tcx or tc`}},
		{"ring buffer", base + "observe:\n  ring_buffer_size: 1000000\n", []string{"observe.ring_buffer_size: 1000000 is not a power of two"}},
		{"capture bytes", base + "observe:\n  capture_bytes: abc\n", []string{`observe.capture_bytes: "abc" is not a whole number`}},
		{"drops as number", base + "observe:\n  drops: 1\n", []string{"observe.drops: 1 is not true or false"}},
		{"string as number", base + "log:\n  level: 3\n", []string{"log.level: 3 is not a string (quote it)"}},
		{"section as value", base + "ports: 500\n", []string{"ports: expected a map"}},
		{"metrics address", base + "metrics:\n  listen: localhost\n", []string{`metrics.listen: "localhost" is not an IP address and port`}},
		{"log level", base + "log:\n  level: loud\n", []string{`log.level: "loud" is not debug, info, warn or error`}},
		{"log format", base + "log:\n  format: xml\n", []string{`log.format: "xml" is not auto, text, json or journal`}},
		{"proxy without backends", base + "proxy:\n  enabled: true\n", []string{"proxy.backends"}},
		{"proxy values", base + "proxy:\n  refragment: always\n  backends: [vpn.example]\n  pmtu_step_down: [1200, 1300]\n  pmtu_overrides: [{prefix: 10.0.0.0/33, mtu: 1400}]\n",
			[]string{`proxy.refragment: "always": want auto or off`, `proxy.backends: "vpn.example"`,
				"proxy.pmtu_step_down[1]: 1300", `proxy.pmtu_overrides: "10.0.0.0/33"`}},
		{"proxy unknown key", base + "proxy:\n  pmtu_defualt: 1400\n", []string{"proxy.pmtu_defualt: unknown key (did you mean proxy.pmtu_default?)"}},
		{"not YAML", "interfaces: [lo\n", []string{"is not valid YAML"}},
		{"several problems at once", "interfaces: [lo]\nports:\n  ike: 0\nbogus: 1\n",
			[]string{"bogus: unknown key", "ports.ike: 0 is not a UDP port"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := load(t, c.yaml)
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error %v (%T), want Problems", err, err)
			}
			if len(ps) != len(c.want) {
				t.Errorf("%d problems, want %d:\n%v", len(ps), len(c.want), ps)
			}
			for _, w := range c.want {
				if !strings.Contains(ps.Error(), w) {
					t.Errorf("problems lack %q:\n%v", w, ps)
				}
			}
		})
	}
}

// Good values of every form decode to what they say.
func TestLoadValues(t *testing.T) {
	cases := []struct {
		name, yaml string
		ok         func(Config) bool
	}{
		{"nothing is the defaults", "", func(c Config) bool { return reflect.DeepEqual(Flatten(c), Flatten(Default())) }},
		{"duration", base + "diag:\n  settle: 90s\n", func(c Config) bool { return c.Diag.Settle == 90*time.Second }},
		{"zero duration without unit", base + "observe:\n  fragment_timeout: 0\n", func(c Config) bool { return c.Observe.FragmentTimeout == 0 }},
		{"upper-case key", base + "PORTS:\n  IKE: 501\n", func(c Config) bool { return c.Ports.IKE == 501 }},
		{"empty list is no list", "interfaces: []\n", func(c Config) bool { return len(c.Interfaces) == 0 }},
		{"null keeps the default", base + "metrics:\n  listen:\n", func(c Config) bool { return c.Metrics.Listen == Default().Metrics.Listen }},
		{"proxy section", base + "proxy:\n  backends: [192.0.2.10]\n  idle_timeout: 2m\n",
			func(c Config) bool { return c.Proxy.IdleTimeout == 2*time.Minute && len(c.Proxy.Backends) == 1 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := load(t, c.yaml)
			if err != nil {
				t.Fatal(err)
			}
			if !c.ok(got) {
				t.Errorf("%+v", got)
			}
		})
	}
}

// A file that cannot be read is one problem naming the file.
func TestLoadUnreadable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := Load(p)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || !strings.Contains(ps[0].Msg, "reading "+p) {
		t.Errorf("%v", err)
	}
}

// proxy.pmtu_overrides has one form after loading, whichever way the file
// writes it: the list of {prefix, mtu} maps, longest prefix first.
func TestPMTUOverridesCanonical(t *testing.T) {
	want := []any{
		map[string]any{"prefix": "198.51.100.0/24", "mtu": 1400},
		map[string]any{"prefix": "10.0.0.0/8", "mtu": 1280},
	}
	for _, ov := range []string{
		"  pmtu_overrides:\n    \"10.0.0.0/8\": 1280\n    \"198.51.100.0/24\": 1400\n",
		"  pmtu_overrides:\n    - {prefix: 10.0.0.0/8, mtu: 1280}\n    - {prefix: 198.51.100.0/24, mtu: 1400}\n",
		"  pmtu_overrides:\n    - 198.51.100.0/24=1400\n    - 10.0.0.0/8=1280\n    - 10.0.0.0/8=1280\n",
		"  pmtu_overrides:\n    - {prefix: 198.51.100.7/24, mtu: 1400}\n    - {prefix: \"::ffff:10.0.0.0/104\", mtu: 1280}\n",
	} {
		c, err := load(t, "proxy:\n  backends: [192.0.2.1]\n"+ov)
		if err != nil {
			t.Fatalf("%q: %v", ov, err)
		}
		if !reflect.DeepEqual(c.Proxy.PMTUOverrides, want) {
			t.Errorf("%q: loaded as %#v", ov, c.Proxy.PMTUOverrides)
		}
	}
	c, err := load(t, base)
	if err != nil || c.Proxy.PMTUOverrides != nil {
		t.Errorf("no overrides: %#v, %v", c.Proxy.PMTUOverrides, err)
	}
}
