package config

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const documented = "../../../../configs/ikefragd.yaml"

// The documented file is the defaults, key for key: loading it gives
// Default, and every key carries a comment.
func TestDocumentedFileIsTheDefaults(t *testing.T) {
	c, err := Load(documented)
	if err != nil {
		t.Fatal(err)
	}
	if def := Default(); !reflect.DeepEqual(Flatten(c), Flatten(def)) {
		t.Errorf("configs/ikefragd.yaml differs from Default:\nfile     %v\ndefaults %v", Flatten(c), Flatten(def))
	}
	b, err := os.ReadFile(documented)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := k.Value
			if prefix != "" {
				key = prefix + "." + key
			}
			if v.Kind == yaml.MappingNode {
				walk(key, v)
				continue
			}
			seen[key] = true
			if strings.TrimSpace(k.HeadComment) == "" {
				t.Errorf("%s has no comment in %s", key, documented)
			}
		}
	}
	walk("", root.Content[0])
	for k := range Flatten(Default()) {
		if !seen[k] {
			t.Errorf("%s is not in %s", k, documented)
		}
	}
}

// The defaults are valid: a host with no file runs on them.
func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if ps := c.Validate(); len(ps) != 0 {
		t.Errorf("Default() has problems:\n%v", ps)
	}
}

// IKEFRAG_* variables override the file, each parsed for its key's type.
func TestEnvironmentOverrides(t *testing.T) {
	cases := []struct {
		env, value string
		ok         func(Config) bool
	}{
		{"IKEFRAG_PORTS_IKE", "4501", func(c Config) bool { return c.Ports.IKE == 4501 }},
		{"IKEFRAG_LOG_LEVEL", "debug", func(c Config) bool { return c.Log.Level == "debug" }},
		{"IKEFRAG_INTERFACES", "lo", func(c Config) bool { return reflect.DeepEqual(c.Interfaces, []string{"lo"}) }},
		{"IKEFRAG_OBSERVE_DROPS", "false", func(c Config) bool { return !c.Observe.Drops }},
		{"IKEFRAG_DIAG_SETTLE", "5s", func(c Config) bool { return c.Diag.Settle.Seconds() == 5 }},
		{"IKEFRAG_PROXY_BACKENDS", "192.0.2.1, 192.0.2.2", func(c Config) bool {
			return reflect.DeepEqual(c.Proxy.Backends, []string{"192.0.2.1", "192.0.2.2"})
		}},
	}
	// All at once, as a unit file's Environment= lines give them.
	for _, tc := range cases {
		t.Setenv(tc.env, tc.value)
	}
	c, err := Load(documented)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if !tc.ok(c) {
			t.Errorf("%s=%s not applied: %+v", tc.env, tc.value, c)
		}
	}
}

// A bad environment value is a problem that names the variable.
func TestEnvironmentProblemNamesTheVariable(t *testing.T) {
	cases := []struct{ env, value, want string }{
		{"IKEFRAG_PORTS_NATT", "many", `ports.natt: "many" is not a whole number (set by IKEFRAG_PORTS_NATT)`},
		{"IKEFRAG_OBSERVE_DROPS", "maybe", `observe.drops: "maybe" is not true or false (set by IKEFRAG_OBSERVE_DROPS)`},
		{"IKEFRAG_DIAG_IDLE", "soon", `diag.idle: "soon" is not a duration (like 30s, 10m, 1h) (set by IKEFRAG_DIAG_IDLE)`},
		{"IKEFRAG_LOG_LEVEL", "loud", `log.level: "loud" is not debug, info, warn or error (set by IKEFRAG_LOG_LEVEL)`},
	}
	for _, tc := range cases {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			_, err := Load("")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	for key, want := range map[string]string{
		"ports.ike":             "IKEFRAG_PORTS_IKE",
		"interfaces":            "IKEFRAG_INTERFACES",
		"proxy.pmtu_step_down":  "IKEFRAG_PROXY_PMTU_STEP_DOWN",
		"keys.strongswan_table": "IKEFRAG_KEYS_STRONGSWAN_TABLE",
	} {
		if got := EnvName(key); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", key, got, want)
		}
	}
}
