package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// unknownKeys walks the file's own mappings and reports keys that are
// neither a configuration key nor a section of them.
func unknownKeys(b []byte) Problems {
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil
	}
	known := Flatten(Default())
	var ps Problems
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
			ps = append(ps, Problem{Key: key, Msg: "unknown key" + suggest(key)})
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
func decodeProblems(err error, v *viper.Viper) Problems {
	var ps Problems
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
					ps = append(ps, Problem{Key: key, Msg: "unknown key" + suggest(key)})
				}
				return
			}
			ps = append(ps, Problem{Key: de.Name(), Msg: friendlyTypeError(de.Name(), inner, v)})
			return
		}
		ps = append(ps, Problem{Msg: err.Error()})
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
