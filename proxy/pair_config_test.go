package proxy_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/viper"

	"github.com/ikefrag/ikefrag/proxy"
)

const (
	pairYAML          = "../configs/keepalived/ikefrag-pair.yaml"
	keepalivedExample = "../configs/keepalived/keepalived.conf"
)

// The shipped pair configuration is one the proxy accepts, read as the
// daemon reads it, and asks for what docs/pair.md says a pair needs.
func TestPairExampleConfig(t *testing.T) {
	v := viper.New()
	v.SetConfigFile(pairYAML)
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Proxy proxy.Config     `mapstructure:"proxy"`
		Keys  proxy.KeysConfig `mapstructure:"keys"`
	}
	if err := v.UnmarshalExact(&cfg); err != nil {
		t.Fatalf("%s: %v", pairYAML, err)
	}
	if err := cfg.Proxy.Validate(); err != nil {
		t.Fatalf("%s: %v", pairYAML, err)
	}
	p := cfg.Proxy
	if p.Source != proxy.SourceClient || !p.Freebind || p.Adopt != proxy.AdoptTransparent || cfg.Keys.StrongswanTable == "" {
		t.Errorf("%s: a pair needs source client, freebind, adopt transparent and a key source: %+v %+v", pairYAML, p, cfg.Keys)
	}
}

// keepalived's own check (-t) finds nothing wrong with the example but
// the interfaces this host lacks.
func TestKeepalivedExample(t *testing.T) {
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		t.Skip("keepalived not installed")
	}
	// exit status 5 (configuration errors) also for interfaces missing
	out, err := exec.Command(bin, "--config-test", "--log-console", "--use-file", keepalivedExample).CombinedOutput()
	interfacesOnly := true
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" || strings.Contains(line, "doesn't exist") || strings.Contains(line, "Non-existent interface") {
			continue
		}
		interfacesOnly = false
		t.Errorf("keepalived -t: %s", line)
	}
	if err != nil && !interfacesOnly {
		t.Errorf("keepalived -t: %v", err)
	}
}
