package config

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/ikefrag/ikefrag/proxy"
)

// envPrefix starts every environment variable that overrides a key.
const envPrefix = "IKEFRAG"

// EnvName is the environment variable that overrides key.
func EnvName(key string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Load reads the YAML file at path (none when path is ""), applies
// IKEFRAG_* environment overrides over it and the defaults under it,
// decodes strictly (unknown keys are problems) and validates every value.
// Its error is Problems, but for a file that cannot be read. It does not
// look at the host (interfaces, files).
//
// On Problems the partly decoded configuration goes back too, so that the
// caller can check the rest of it against the host.
func Load(path string) (Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for k, val := range Flatten(Default()) {
		v.SetDefault(k, val)
	}
	var raw Problems
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, Problems{{Msg: fmt.Sprintf("reading %s: %v", path, err)}}
		}
		if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
			return Config{}, Problems{{Msg: fmt.Sprintf("%s is not valid YAML: %v", path, err)}}
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
	var ps Problems
	if err != nil {
		ps = decodeProblems(err, v)
	}
	// Keys viper drops before decoding (an empty section, a null value)
	// are unknown all the same.
	ps = ps.Merge(raw)
	canonicalize(&c)
	// Validate what did decode; a key that failed to decode is reported
	// once, for its type, not again for its zero value.
	ps = ps.Merge(c.Validate())
	annotateEnv(ps)
	if len(ps) > 0 {
		return c, ps
	}
	return c, nil
}

// canonicalize gives values that can be written several ways one form,
// so that loading the same file twice gives equal configurations (a
// reload of an unchanged file changes no key) and the dump is stable.
func canonicalize(c *Config) {
	// proxy.pmtu_overrides is free-form: a map or a list, and viper
	// splits a map's dotted keys into nested maps, sometimes keeping the
	// joined key beside them. An unreadable value stays as written, for
	// the proxy's validation to name.
	if ov, err := proxy.CanonicalOverrides(c.Proxy.PMTUOverrides); err == nil {
		c.Proxy.PMTUOverrides = ov
	}
}

// Flatten turns a Config into dotted keys and leaf values: viper's
// defaults (every key then has one, which is what lets IKEFRAG_*
// variables override any of them), the known keys, the dump and the
// reload diff.
func Flatten(c Config) map[string]any {
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

// annotateEnv says where a value came from when the environment set it.
func annotateEnv(ps Problems) {
	for i := range ps {
		if ps[i].Key == "" {
			continue
		}
		top := ps[i].Key
		if j := strings.IndexAny(top, "["); j >= 0 {
			top = top[:j]
		}
		if name := EnvName(top); os.Getenv(name) != "" {
			ps[i].Msg += " (set by " + name + ")"
		}
	}
}
