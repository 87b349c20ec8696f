package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// strictHook converts only what means one thing: strings from the
// environment are parsed, durations need a unit, numbers must be whole.
func TestStrictHook(t *testing.T) {
	var (
		tInt   = reflect.TypeFor[int]()
		tBool  = reflect.TypeFor[bool]()
		tStr   = reflect.TypeFor[string]()
		tDur   = reflect.TypeFor[time.Duration]()
		tStrs  = reflect.TypeFor[[]string]()
		tInts  = reflect.TypeFor[[]int]()
		tMaps  = reflect.TypeFor[[]map[string]int]()
		tOther = reflect.TypeFor[float64]()
	)
	cases := []struct {
		name    string
		to      reflect.Type
		data    any
		want    any    // when err is ""
		wantErr string // substring
	}{
		{"duration text", tDur, "90s", 90 * time.Second, ""},
		{"duration text with spaces", tDur, " 1m ", time.Minute, ""},
		{"duration zero without unit", tDur, 0, time.Duration(0), ""},
		{"duration without unit", tDur, 5, nil, "5 has no unit: write it like 5s"},
		{"duration not text", tDur, "soon", nil, `"soon" is not a duration`},
		{"duration bool", tDur, true, nil, "true is not a duration"},
		{"int from text", tInt, "4501", 4501, ""},
		{"int from bad text", tInt, "many", nil, `"many" is not a whole number`},
		{"int from whole float", tInt, 1400.0, 1400, ""},
		{"int from fraction", tInt, 1400.5, nil, "1400.5 is not a whole number"},
		{"int from huge float", tInt, 1e12, nil, "is not a whole number"},
		{"int from bool", tInt, true, nil, "true is not a number"},
		{"int stays", tInt, 7, 7, ""},
		{"bool from text", tBool, "false", false, ""},
		{"bool from bad text", tBool, "maybe", nil, `"maybe" is not true or false`},
		{"bool from number", tBool, 1, nil, "1 is not true or false"},
		{"string stays", tStr, "x", "x", ""},
		{"string from null", tStr, nil, "", ""},
		{"string from number", tStr, 3, nil, "3 is not a string (quote it)"},
		{"list from text", tStrs, "a, b c", []string{"a", "b", "c"}, ""},
		{"ints from text", tInts, "1400,1280", []int{1400, 1280}, ""},
		{"ints from bad text", tInts, "1400,x", nil, `"x" is not a whole number`},
		{"objects from text", tMaps, "a=1", nil, "a list is expected here; set it in the file"},
		{"list stays", tStrs, []any{"a"}, []any{"a"}, ""},
		{"other types pass", tOther, 1.5, 1.5, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := strictHook(reflect.TypeOf(c.data), c.to, c.data)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("got %v, %v; want error %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %#v, %v; want %#v", got, err, c.want)
			}
		})
	}
}
