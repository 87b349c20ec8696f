package main

import (
	"encoding"
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/cmd/internal/control"
	"github.com/ikefrag/ikefrag/diag"
)

var snake = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// Every object key ikefragctl prints with --json is snake_case: the field
// names of every type it encodes, walked through nested structs, slices,
// pointers and map values. (Map keys are data — interface names, verdict
// codes, kernel counter names — and are printed as they are.)
func TestJSONKeysSnakeCase(t *testing.T) {
	types := map[string]any{
		"pmtu":          pmtuReport{},
		"decode":        decodeLine{},
		"analyze":       diag.Report{},
		"verdicts":      diag.Report{},
		"sessions":      []diag.SessionReport{},
		"peers":         []diag.PMTUEstimate{},
		"peers (proxy)": []control.ProxyPeer{},
		"status":        control.Status{},
		"stats":         control.Stats{},
		"events":        control.Event{},
	}
	marshaler := reflect.TypeFor[json.Marshaler]()
	textMarshaler := reflect.TypeFor[encoding.TextMarshaler]()
	for cmd, v := range types {
		seen := map[reflect.Type]bool{}
		var walk func(path string, ty reflect.Type)
		walk = func(path string, ty reflect.Type) {
			for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Array || ty.Kind() == reflect.Map {
				ty = ty.Elem()
			}
			if ty.Kind() != reflect.Struct || seen[ty] || ty.Implements(marshaler) || reflect.PointerTo(ty).Implements(marshaler) ||
				ty.Implements(textMarshaler) || reflect.PointerTo(ty).Implements(textMarshaler) {
				return
			}
			seen[ty] = true
			for i := range ty.NumField() {
				f := ty.Field(i)
				if !f.IsExported() {
					continue
				}
				tag := f.Tag.Get("json")
				name, _, _ := strings.Cut(tag, ",")
				if name == "-" {
					continue
				}
				if f.Anonymous && name == "" {
					walk(path, f.Type)
					continue
				}
				if name == "" {
					name = f.Name
				}
				if !snake.MatchString(name) {
					t.Errorf("%s --json: %s.%s is printed as %q, not snake_case (%s)", cmd, path, f.Name, name, ty)
				}
				walk(path+"."+name, f.Type)
			}
		}
		walk(cmd, reflect.TypeOf(v))
	}
}
