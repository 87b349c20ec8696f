package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.yaml.in/yaml/v3"

	"github.com/ikefrag/ikefrag/cmd/ikefragd/internal/config"
)

// check runs `ikefragd --check-config` in-process on a YAML text and returns
// the exit status and what it printed.
func check(t *testing.T, yamlText string) (int, string, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ikefragd.yaml")
	if err := os.WriteFile(p, []byte(yamlText), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := execute(context.Background(), []string{"--check-config", "--config", p}, &out, &errOut)
	return code, out.String(), errOut.String()
}

// A valid base: lo exists in every network namespace.
const base = "interfaces: [lo]\n"

func TestBadConfigurationsExit2NamingTheKey(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "ikev2_decryption_table")
	if err := os.WriteFile(secret, []byte{}, 0o644); err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, yaml string
		want       []string // substrings of stderr, one line each
	}{
		{"unknown key", base + "observe:\n  ring_size: 4096\n", []string{"observe.ring_size: unknown key"}},
		{"unknown top-level key", base + "proxies: {enabled: true}\n", []string{"proxies: unknown key"}},
		{"unknown empty section", base + "metric: {}\n", []string{"metric: unknown key (did you mean metrics"}},
		{"unknown null key", base + "observe:\n  drop:\n", []string{"observe.drop: unknown key (did you mean observe.drops?)"}},
		{"misspelt key", base + "ports:\n  nat: 4500\n", []string{"ports.nat: unknown key (did you mean ports.natt?)"}},
		{"bad port", base + "ports:\n  ike: 70000\n", []string{"ports.ike: 70000 is not a UDP port (1-65535)"}},
		{"port as bool", base + "ports:\n  natt: true\n", []string{"ports.natt: true is not a number"}},
		{"same ports", base + "ports:\n  ike: 4500\n", []string{"ports.natt: 4500 is also ports.ike"}},
		{"absent interface", "interfaces: [lo, ikfd-absent0]\n", []string{`interfaces[1]: "ikfd-absent0": no such interface`}},
		{"bad interface name", "interfaces: [lo, \"a/b\"]\n", []string{`interfaces[1]: "a/b" is not an interface name`}},
		{"bad pattern", "interfaces: [lo, \"eth[\"]\n", []string{`interfaces[1]: "eth[" is not a valid pattern`}},
		{"world-readable key file", base + "keys:\n  strongswan_table: " + secret + "\n",
			[]string{`keys.strongswan_table: "` + secret + `" refused: insecure key path: key file ` + secret + ` has mode 0644`}},
		{"key socket in an open directory", base + "keys:\n  socket: " + sockDir + "/keys.sock\n",
			[]string{`keys.socket: "` + sockDir + `/keys.sock" refused: its directory: insecure key path: key directory ` + sockDir + ` has mode 0755`}},
		{"relative key path", base + "keys:\n  socket: keys.sock\n", []string{`keys.socket: "keys.sock" is not an absolute path`}},
		{"key listener in clear off loopback", base + "keys:\n  listen:\n    address: 0.0.0.0:4501\n    tls: false\n    clients: [\"vpn1=10.0.0.5\"]\n",
			[]string{`keys.listen.tls: off is allowed only on a loopback address, not "0.0.0.0:4501"`}},
		{"key listener without certificate or clients", base + "keys:\n  listen:\n    address: 127.0.0.1:4501\n",
			[]string{"keys.listen.cert: is empty", "keys.listen.key: is empty", "keys.listen.clients: empty"}},
		{"key listener client", base + "keys:\n  listen:\n    address: 127.0.0.1:4501\n    tls: false\n    clients: [\"vpn1=vpn.example\"]\n",
			[]string{`keys.listen.clients: [0] "vpn1=vpn.example": client "vpn1": backend "vpn.example" is not an IP address`}},
		{"key listener pin", base + "keys:\n  listen:\n    address: 127.0.0.1:4501\n    tls: false\n    clients: [\"sha256:12=10.0.0.5\"]\n",
			[]string{`keys.listen.clients: [0] "sha256:12=10.0.0.5": sha256 "12": want the 64 hex digits`}},
		{"key socket peer uid", base + "keys:\n  socket_peer_uids: [0, -1]\n", []string{"keys.socket_peer_uids: [1] -1 is not a uid"}},
		{"duration without unit", base + "diag:\n  settle: 5\n", []string{"diag.settle: 5 has no unit"}},
		{"idle shorter than settle", base + "diag:\n  settle: 20m\n  idle: 10m\n", []string{"diag.idle: 10m0s must be longer than diag.settle"}},
		{"attach mode", base + "observe:\n  attach_mode: xdp\n", []string{`observe.attach_mode: "xdp" is not auto, tcx or tc`}},
		{"ring buffer", base + "observe:\n  ring_buffer_size: 1000000\n", []string{"observe.ring_buffer_size: 1000000 is not a power of two"}},
		{"capture bytes", base + "observe:\n  capture_bytes: abc\n", []string{`observe.capture_bytes: "abc" is not a whole number`}},
		{"metrics address", base + "metrics:\n  listen: localhost\n", []string{`metrics.listen: "localhost" is not an IP address and port`}},
		{"log level", base + "log:\n  level: loud\n", []string{`log.level: "loud" is not debug, info, warn or error`}},
		{"proxy without backends", base + "proxy:\n  enabled: true\n",
			[]string{"proxy.backends"}},
		{"proxy values", base + "proxy:\n  refragment: always\n  backends: [vpn.example]\n  pmtu_step_down: [1200, 1300]\n  pmtu_overrides: [{prefix: 10.0.0.0/33, mtu: 1400}]\n",
			[]string{`proxy.refragment: "always": want auto or off`, `proxy.backends: "vpn.example"`,
				"proxy.pmtu_step_down[1]: 1300", `proxy.pmtu_overrides: "10.0.0.0/33"`}},
		{"proxy unknown key", base + "proxy:\n  pmtu_defualt: 1400\n", []string{"proxy.pmtu_defualt: unknown key (did you mean proxy.pmtu_default?)"}},
		{"not YAML", "interfaces: [lo\n", []string{"is not valid YAML"}},
		{"several problems at once", "interfaces: [ikfd-absent0]\nports:\n  ike: 0\nbogus: 1\n",
			[]string{"bogus: unknown key", `interfaces[0]: "ikfd-absent0"`, "ports.ike: 0 is not a UDP port"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := check(t, c.yaml)
			if code != exitConfig {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, errOut)
			}
			if out != "" {
				t.Errorf("printed a configuration for a bad file:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if len(lines) != len(c.want) {
				t.Errorf("%d problem lines, want %d:\n%s", len(lines), len(c.want), errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "ikefragd: ") {
					t.Errorf("line %q does not start with the program name", l)
				}
			}
		})
	}
}

// A bad environment value fails --check-config naming the variable (the
// overrides themselves are tested in the config package).
func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("IKEFRAG_PORTS_NATT", "many")
	code, _, errOut := check(t, "")
	if code != exitConfig || !strings.Contains(errOut, `ports.natt: "many" is not a whole number (set by IKEFRAG_PORTS_NATT)`) {
		t.Errorf("exit %d, stderr:\n%s", code, errOut)
	}
}

// The effective configuration printed by --check-config reads back as the
// same configuration and holds only the documented keys: nothing secret
// can hide in it (the key sources are paths).
func TestCheckConfigDump(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "ikev2_decryption_table")
	if err := os.WriteFile(table, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	yamlText := base + "keys:\n  strongswan_table: " + table + "\nproxy:\n  backends: [192.0.2.10]\n  pmtu_overrides: [{prefix: 198.51.100.0/24, mtu: 1400}]\n  idle_timeout: 2m\n"
	code, out, errOut := check(t, yamlText)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "configuration OK; observing lo") {
		t.Errorf("stderr: %s", errOut)
	}
	p := filepath.Join(dir, "dump.yaml")
	if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	back, err := config.Load(p)
	if err != nil {
		t.Fatalf("the dump does not load: %v\n%s", err, out)
	}
	src := filepath.Join(dir, "src.yaml")
	if err := os.WriteFile(src, []byte(yamlText), 0o600); err != nil {
		t.Fatal(err)
	}
	orig, err := config.Load(src)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(config.Flatten(back), config.Flatten(orig)) {
		t.Errorf("dump does not round-trip:\n%v\n%v", config.Flatten(back), config.Flatten(orig))
	}
	if back.Keys.StrongswanTable != table || back.Proxy.IdleTimeout != 2*time.Minute || back.Proxy.Validate() != nil {
		t.Errorf("dump lost values: %+v", back)
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"control", "diag", "interfaces", "keys", "log", "metrics", "observe", "ports", "proxy"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("dump top-level keys %v, want %v", keys, want)
	}
}

// With no interfaces listed the default route names one; without a
// default route that is a configuration error naming the key.
func TestDefaultRouteInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	fresh, err := netns.New() // switches this thread
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // the thread must not go back to the pool in the wrong namespace
		}
		fresh.Close()
	}()
	_, want, ps := func() (config.Config, ifaceSet, config.Problems) {
		c := config.Default()
		w, ps := checkSystem(&c)
		return c, w, ps
	}()
	if len(ps) != 1 || ps[0].Key != "interfaces" || !strings.Contains(ps[0].Msg, "default route") {
		t.Fatalf("problems %v, interfaces %v", ps, want)
	}
	// A default route through lo gives lo.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Gw: net.IPv4(192, 0, 2, 2)}); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	want, ps = checkSystem(&c)
	if len(ps) != 0 || !want.followDefault || !reflect.DeepEqual(want.wanted(), []string{"lo"}) || !want.match("lo") {
		t.Errorf("problems %v, interfaces %v", ps, want)
	}
}
