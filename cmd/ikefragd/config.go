package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ebpf"
	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/proxy"
)

// Config is ikefragd's configuration. configs/ikefragd.yaml documents every
// key; defaultConfig holds the defaults.
type Config struct {
	// Interfaces to observe: exact names, which must exist at start, or
	// shell patterns (ppp*), attached whenever a matching link appears.
	// "default" (or empty): the interface of the default route, followed
	// as the route moves.
	Interfaces []string      `mapstructure:"interfaces"`
	Ports      PortsConfig   `mapstructure:"ports"`
	Observe    ObserveConfig `mapstructure:"observe"`
	Diag       DiagConfig    `mapstructure:"diag"`
	Metrics    MetricsConfig `mapstructure:"metrics"`
	Control    ControlConfig `mapstructure:"control"`
	Log        LogConfig     `mapstructure:"log"`
	// Proxy is the proxy package's own configuration type: its keys,
	// defaults and validation are the proxy's.
	Proxy proxy.Config `mapstructure:"proxy"`
	Keys  KeysConfig   `mapstructure:"keys"`
}

type PortsConfig struct {
	IKE  int `mapstructure:"ike"`
	NATT int `mapstructure:"natt"`
}

type ObserveConfig struct {
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

type DiagConfig struct {
	Settle      time.Duration `mapstructure:"settle"`
	Idle        time.Duration `mapstructure:"idle"`
	MaxSessions int           `mapstructure:"max_sessions"`
	MaxMemory   int           `mapstructure:"max_memory"`
	// VerdictLogRate bounds verdict log lines per second (a flood of
	// failing sessions must not flood the journal); every verdict still
	// reaches metrics and events.
	VerdictLogRate int `mapstructure:"verdict_log_rate"`
}

type MetricsConfig struct {
	Listen string `mapstructure:"listen"`
}

type ControlConfig struct {
	Socket string `mapstructure:"socket"`
	Group  string `mapstructure:"group"`
}

type LogConfig struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

type KeysConfig struct {
	StrongswanTable string           `mapstructure:"strongswan_table"`
	Socket          string           `mapstructure:"socket"`
	Listen          KeysListenConfig `mapstructure:"listen"`
}

// KeysListenConfig is keys.listen: the TLS key listener for forwarders on
// VPN server hosts (keys.Remote, docs/keys.md).
type KeysListenConfig struct {
	Address  string   `mapstructure:"address"`
	Cert     string   `mapstructure:"cert"`
	Key      string   `mapstructure:"key"`
	ClientCA string   `mapstructure:"client_ca"`
	TLS      bool     `mapstructure:"tls"`
	Clients  []string `mapstructure:"clients"`
}

// defaultConfig is the one place the defaults live; the documented file
// and `ikefragd --check-config` agree with it (a test checks the file).
func defaultConfig() Config {
	return Config{
		Ports: PortsConfig{IKE: 500, NATT: 4500},
		Observe: ObserveConfig{
			AttachMode:     string(ebpf.AttachAuto),
			TrainMapSize:   8192,
			CaptureBytes:   1500,
			LargeIKE:       1280,
			RingBufferSize: 1 << 20,
			MaxInterfaces:  16,
			RecordQueue:    4096,
			Drops:          true,
		},
		Diag: DiagConfig{
			Settle:         diag.DefaultOptions.Settle,
			Idle:           diag.DefaultOptions.Idle,
			MaxSessions:    diag.DefaultOptions.MaxSessions,
			MaxMemory:      diag.DefaultMaxMemory,
			VerdictLogRate: 20,
		},
		Metrics: MetricsConfig{Listen: "127.0.0.1:9717"},
		Control: ControlConfig{Socket: control.DefaultSocket},
		Log:     LogConfig{Level: "info", Format: "auto"},
		Keys:    KeysConfig{Listen: KeysListenConfig{TLS: true}},
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

// problem is one thing wrong with a configuration, tied to its key.
type problem struct {
	Key string
	Msg string
}

func (p problem) String() string {
	if p.Key == "" {
		return p.Msg
	}
	return p.Key + ": " + p.Msg
}

// problems is the error of a configuration that failed to load.
type problems []problem

// has reports whether a problem was found with key or a key under it.
func (ps problems) has(key string) bool {
	for _, p := range ps {
		if p.Key == key || strings.HasPrefix(key, p.Key+".") || strings.HasPrefix(key, p.Key+"[") {
			return true
		}
	}
	return false
}

func (ps problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, "\n")
}

const envPrefix = "IKEFRAG"

// envName is the environment variable that overrides key.
func envName(key string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// loadConfig reads the YAML file at path (none when path is ""), applies
// IKEFRAG_* environment overrides over it and the defaults under it,
// decodes strictly (unknown keys are problems) and validates every value.
// It does not look at the system (interfaces, files): see checkSystem.
func loadConfig(path string) (Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for k, val := range flatten(defaultConfig()) {
		v.SetDefault(k, val)
	}
	var raw problems
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, problems{{Msg: fmt.Sprintf("reading %s: %v", path, err)}}
		}
		if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
			return Config{}, problems{{Msg: fmt.Sprintf("%s is not valid YAML: %v", path, err)}}
		}
		raw = unknownKeys(b)
	}
	var c Config
	err := v.UnmarshalExact(&c, func(dc *mapstructure.DecoderConfig) {
		// Weak typing would turn `ike: true` into port 1; strings (from
		// the environment) are converted by the hook instead.
		dc.WeaklyTypedInput = false
		dc.DecodeHook = strictHook
		dc.ZeroFields = true
	})
	var ps problems
	if err != nil {
		ps = decodeProblems(err, v)
	}
	// Keys viper drops before decoding (an empty section, a null value)
	// are unknown all the same.
	for _, p := range raw {
		if !ps.has(p.Key) {
			ps = append(ps, p)
		}
	}
	// Validate what did decode; a key that failed to decode is reported
	// once, for its type, not again for its zero value.
	for _, p := range c.validate() {
		if !ps.has(p.Key) {
			ps = append(ps, p)
		}
	}
	annotateEnv(ps)
	if len(ps) > 0 {
		// The partly decoded configuration goes back too, so that the
		// caller can check the rest of it against the system.
		return c, ps
	}
	return c, nil
}

// flatten turns a Config into dotted keys and leaf values, for viper's
// defaults: every key then has a default, which is what lets IKEFRAG_*
// variables override any of them.
func flatten(c Config) map[string]any {
	out := map[string]any{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("mapstructure"), ",")[0]
			if tag == "" || tag == "-" || !f.IsExported() {
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			fv := v.Field(i)
			if f.Type.Kind() == reflect.Struct {
				walk(key, fv)
				continue
			}
			if v := fv; v.Kind() == reflect.Interface && !v.IsNil() {
				v = v.Elem()
				if (v.Kind() == reflect.Slice || v.Kind() == reflect.Map) && v.Len() == 0 {
					fv = reflect.Zero(fv.Type())
				}
			}
			if fv.Kind() == reflect.Slice && fv.Len() == 0 {
				// An empty list and no list mean the same.
				fv = reflect.Zero(fv.Type())
			}
			out[key] = fv.Interface()
		}
	}
	walk("", reflect.ValueOf(c))
	return out
}

// unknownKeys walks the file's own mappings and reports keys that are
// neither a configuration key nor a section of them.
func unknownKeys(b []byte) problems {
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil
	}
	known := flatten(defaultConfig())
	var ps problems
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := strings.ToLower(k)
			if prefix != "" {
				key = prefix + "." + key
			}
			if _, ok := known[key]; ok {
				continue
			}
			sub, isMap := v.(map[string]any)
			if isMap && isSection(known, key) {
				walk(key, sub)
				continue
			}
			ps = append(ps, problem{Key: key, Msg: "unknown key" + suggest(key)})
		}
	}
	walk("", doc)
	return ps
}

func isSection(known map[string]any, key string) bool {
	for k := range known {
		if strings.HasPrefix(k, key+".") {
			return true
		}
	}
	return false
}

var durationType = reflect.TypeFor[time.Duration]()

// strictHook converts what YAML and the environment give into the target
// types without weak typing's surprises: strings (environment values) are
// parsed, durations need a unit, numbers must be whole.
func strictHook(from, to reflect.Type, data any) (any, error) {
	if to == durationType {
		switch d := data.(type) {
		case string:
			td, err := time.ParseDuration(strings.TrimSpace(d))
			if err != nil {
				return nil, fmt.Errorf("%q is not a duration (like 30s, 10m, 1h)", d)
			}
			return td, nil
		case int:
			if d == 0 {
				return time.Duration(0), nil
			}
			return nil, fmt.Errorf("%d has no unit: write it like %ds", d, d)
		case time.Duration:
			return d, nil
		}
		return nil, fmt.Errorf("%v is not a duration (like 30s, 10m, 1h)", data)
	}
	s, isString := data.(string)
	switch to.Kind() {
	case reflect.Int:
		switch n := data.(type) {
		case string:
			i, err := strconv.Atoi(strings.TrimSpace(n))
			if err != nil {
				return nil, fmt.Errorf("%q is not a whole number", n)
			}
			return i, nil
		case float64:
			if n != math.Trunc(n) || math.Abs(n) > math.MaxInt32 {
				return nil, fmt.Errorf("%v is not a whole number", n)
			}
			return int(n), nil
		case bool:
			return nil, fmt.Errorf("%v is not a number", n)
		}
	case reflect.Bool:
		if isString {
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("%q is not true or false", s)
			}
			return b, nil
		}
		if _, ok := data.(bool); !ok {
			return nil, fmt.Errorf("%v is not true or false", data)
		}
	case reflect.String:
		switch data.(type) {
		case string:
		case nil:
			return "", nil
		default:
			return nil, fmt.Errorf("%v is not a string (quote it)", data)
		}
	case reflect.Slice:
		if isString {
			// An environment value: a comma- or space-separated list.
			fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
			if to.Elem().Kind() == reflect.String {
				return fields, nil
			}
			if to.Elem().Kind() == reflect.Int {
				out := make([]int, 0, len(fields))
				for _, f := range fields {
					i, err := strconv.Atoi(f)
					if err != nil {
						return nil, fmt.Errorf("%q is not a whole number", f)
					}
					out = append(out, i)
				}
				return out, nil
			}
			return nil, fmt.Errorf("%q: a list is expected here; set it in the file", s)
		}
	}
	return data, nil
}

// decodeProblems turns mapstructure's joined errors into one problem per
// key: unknown keys one by one, and type errors with the key's path.
func decodeProblems(err error, v *viper.Viper) problems {
	var ps problems
	var walk func(err error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		de, ok := err.(*mapstructure.DecodeError)
		if !ok {
			if inner := errors.Unwrap(err); inner != nil {
				walk(inner)
				return
			}
		}
		if ok {
			inner := de.Unwrap()
			if _, ok := inner.(interface{ Unwrap() []error }); ok {
				walk(inner)
				return
			}
			msg := inner.Error()
			if rest, ok := strings.CutPrefix(msg, "has invalid keys: "); ok {
				for _, k := range strings.Split(rest, ", ") {
					key := k
					if de.Name() != "" {
						key = de.Name() + "." + k
					}
					ps = append(ps, problem{Key: key, Msg: "unknown key" + suggest(key)})
				}
				return
			}
			ps = append(ps, problem{Key: de.Name(), Msg: friendlyTypeError(de.Name(), inner, v)})
			return
		}
		ps = append(ps, problem{Msg: err.Error()})
	}
	walk(err)
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Key < ps[j].Key })
	return ps
}

func friendlyTypeError(key string, err error, v *viper.Viper) string {
	var ut *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ut) {
		return fmt.Sprintf("%v is not %s", v.Get(key), kindName(ut.Expected.Type()))
	}
	return err.Error()
}

func kindName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration (like 30s)"
	case t.Kind() == reflect.Int:
		return "a whole number"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		return "a section (key: value lines)"
	}
	return t.String()
}

// suggest names the known key closest to a misspelt one.
func suggest(key string) string {
	best, bestD := "", 3
	for k := range flatten(defaultConfig()) {
		// Sections are candidates too: "metric" is "metrics".
		for cand := k; cand != ""; {
			if d := editDistance(cand, key); d < bestD || d == bestD && cand < best {
				best, bestD = cand, d
			}
			i := strings.LastIndexByte(cand, '.')
			if i < 0 {
				break
			}
			cand = cand[:i]
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// annotateEnv says where a value came from when the environment set it.
func annotateEnv(ps problems) {
	for i := range ps {
		if ps[i].Key == "" {
			continue
		}
		top := ps[i].Key
		if j := strings.IndexAny(top, "["); j >= 0 {
			top = top[:j]
		}
		if name := envName(top); os.Getenv(name) != "" {
			ps[i].Msg += " (set by " + name + ")"
		}
	}
}

// validate checks every value and returns one problem per bad one.
func (c *Config) validate() problems {
	var ps problems
	add := func(key, format string, a ...any) {
		ps = append(ps, problem{Key: key, Msg: fmt.Sprintf(format, a...)})
	}
	seen := map[string]bool{}
	for i, name := range c.Interfaces {
		key := fmt.Sprintf("interfaces[%d]", i)
		switch {
		case name == "":
			add(key, "empty interface name")
		case len(name) > 15:
			add(key, "%q is longer than an interface name can be (15 bytes)", name)
		case strings.ContainsAny(name, "/: \t\n"):
			add(key, "%q is not an interface name (no '/', ':' or white space)", name)
		case seen[name]:
			add(key, "%q is listed twice", name)
		default:
			if _, err := path.Match(name, ""); err != nil {
				add(key, "%q is not a valid pattern: %v", name, err)
			}
		}
		seen[name] = true
	}
	port := func(key string, p int) {
		if p < 1 || p > 65535 {
			add(key, "%d is not a UDP port (1-65535)", p)
		}
	}
	port("ports.ike", c.Ports.IKE)
	port("ports.natt", c.Ports.NATT)
	if c.Ports.IKE == c.Ports.NATT {
		add("ports.natt", "%d is also ports.ike; IKE and NAT-T need different ports", c.Ports.NATT)
	}

	o := &c.Observe
	switch ebpf.AttachMode(o.AttachMode) {
	case ebpf.AttachAuto, ebpf.AttachTCX, ebpf.AttachTC:
	default:
		add("observe.attach_mode", "%q is not auto, tcx or tc", o.AttachMode)
	}
	rng := func(key string, v, lo, hi int, what string) {
		if v < lo || v > hi {
			add(key, "%d is outside %d-%d (%s)", v, lo, hi, what)
		}
	}
	rng("observe.train_map_size", o.TrainMapSize, 1, 1<<22, "fragment trains tracked at once")
	if o.FragmentTimeout != 0 && (o.FragmentTimeout < 100*time.Millisecond || o.FragmentTimeout > 10*time.Minute) {
		add("observe.fragment_timeout", "%v is outside 100ms-10m (0s means the kernel's net.ipv4.ipfrag_time)", o.FragmentTimeout)
	}
	rng("observe.capture_bytes", o.CaptureBytes, 64, ebpf.CaptureMax, "bytes of UDP payload per IKE datagram")
	rng("observe.large_ike", o.LargeIKE, 1, 65535, "IKE message length counted as large")
	if rb := o.RingBufferSize; rb < os.Getpagesize() || rb > 1<<30 || rb&(rb-1) != 0 {
		add("observe.ring_buffer_size", "%d is not a power of two between the page size (%d) and 1073741824", rb, os.Getpagesize())
	}
	rng("observe.max_interfaces", o.MaxInterfaces, 1, 255, "interfaces attached at once")
	rng("observe.record_queue", o.RecordQueue, 1, 1<<20, "observations queued for the diagnosis engine")
	if n := len(c.Interfaces); n > o.MaxInterfaces {
		add("interfaces", "%d interfaces listed but observe.max_interfaces is %d", n, o.MaxInterfaces)
	}

	d := &c.Diag
	if d.Settle < time.Second || d.Settle > time.Hour {
		add("diag.settle", "%v is outside 1s-1h", d.Settle)
	}
	if d.Idle < time.Minute || d.Idle > 24*time.Hour {
		add("diag.idle", "%v is outside 1m-24h", d.Idle)
	} else if d.Idle <= d.Settle {
		add("diag.idle", "%v must be longer than diag.settle (%v): sessions must settle before they are forgotten", d.Idle, d.Settle)
	}
	rng("diag.max_sessions", d.MaxSessions, 1, 1_000_000, "sessions kept")
	rng("diag.max_memory", d.MaxMemory, 1<<20, 1<<40, "bytes the diagnosis keeps of sessions")
	rng("diag.verdict_log_rate", d.VerdictLogRate, 1, 100000, "verdict log lines per second")

	if c.Metrics.Listen != "" {
		if ap, err := netip.ParseAddrPort(c.Metrics.Listen); err != nil || ap.Port() == 0 {
			add("metrics.listen", "%q is not an IP address and port like 127.0.0.1:9717 (\"\" turns metrics off)", c.Metrics.Listen)
		}
	}
	absPath := func(key, p string, required bool) {
		switch {
		case p == "" && required:
			add(key, "is empty; an absolute path is needed")
		case p != "" && !filepath.IsAbs(p):
			add(key, "%q is not an absolute path", p)
		}
	}
	absPath("control.socket", c.Control.Socket, true)
	if g := c.Control.Group; g != "" {
		if _, err := control.LookupGroup(g); err != nil {
			add("control.group", "%q: no such group", g)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "text", "json", "journal":
	default:
		add("log.format", "%q is not auto, text, json or journal", c.Log.Format)
	}
	// The proxy checks its own section, when it is to run or names
	// backends; its messages start with the key.
	if c.Proxy.Enabled || len(c.Proxy.Backends) > 0 {
		ps = append(ps, proxyProblems(c.Proxy.Validate())...)
	}
	absPath("keys.strongswan_table", c.Keys.StrongswanTable, false)
	absPath("keys.socket", c.Keys.Socket, false)
	if l := c.Keys.Listen; l.Address != "" {
		host, _, err := net.SplitHostPort(l.Address)
		if err != nil {
			add("keys.listen.address", "%q: want host:port", l.Address)
		}
		for i, cl := range l.Clients {
			if _, err := keys.ParseRemoteClient(cl); err != nil {
				add("keys.listen.clients", "[%d] %q: %v", i, cl, err)
			}
		}
		if l.TLS {
			absPath("keys.listen.cert", l.Cert, true)
			absPath("keys.listen.key", l.Key, true)
			absPath("keys.listen.client_ca", l.ClientCA, false)
			if len(l.Clients) == 0 {
				add("keys.listen.clients", "empty: the key listener would accept nobody")
			}
		} else if a, err := netip.ParseAddr(host); err == nil && !a.IsLoopback() || err != nil && host != "localhost" {
			add("keys.listen.tls", "off is allowed only on a loopback address, not %q: keys would cross the network in clear", l.Address)
		}
	}
	if c.Keys.Socket != "" && c.Keys.Socket == c.Control.Socket {
		add("keys.socket", "%q is also control.socket", c.Keys.Socket)
	}
	return ps
}

// proxyProblems splits the proxy's joined validation errors, taking the
// key each message starts with.
func proxyProblems(err error) problems {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var ps problems
	for _, e := range errs {
		msg := e.Error()
		key, rest, ok := strings.Cut(msg, " ")
		key = strings.TrimSuffix(key, ":")
		if !ok || !strings.HasPrefix(key, "proxy") {
			key, rest = "proxy", msg
		}
		ps = append(ps, problem{Key: key, Msg: strings.TrimSpace(rest)})
	}
	return ps
}

// restartKeys are the keys a reload cannot change: they shape the BPF
// programs and maps, the engine, or sockets opened at start.
var restartKeys = []string{"ports", "observe", "diag", "control", "proxy", "keys"}

// changedKeys lists the keys whose values differ between a and b, and
// those of them that need a restart.
func changedKeys(a, b Config) (changed, needRestart []string) {
	fa, fb := flatten(a), flatten(b)
	for k, va := range fa {
		// pmtu_overrides is free-form (a map or a list, and viper may
		// keep a dotted key both split and joined): compared by meaning.
		if reflect.DeepEqual(va, fb[k]) || k == "proxy.pmtu_overrides" && proxy.SameOverrides(va, fb[k]) {
			continue
		}
		changed = append(changed, k)
		top := strings.SplitN(k, ".", 2)[0]
		if slices.Contains(restartKeys, top) {
			needRestart = append(needRestart, k)
		}
	}
	sort.Strings(changed)
	sort.Strings(needRestart)
	return changed, needRestart
}
