package deptest

import (
	"slices"
	"testing"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, path string
		want          bool
	}{
		{"net", "net", true},
		{"net", "net/netip", false},
		{"os/...", "os", true},
		{"os/...", "os/exec", true},
		{"os/...", "osx", false},
		{"github.com/cilium/ebpf/...", "github.com/cilium/ebpf/link", true},
		{"github.com/cilium/ebpf/...", "github.com/cilium/ebpfx", false},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.path); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.path, got, c.want)
		}
	}
}

// A synthetic graph: app → lib → net; app → x/crypto; app imports os.
var graph = []Package{
	{ImportPath: "app", Imports: []string{"lib", "os", "example.com/x/crypto"}},
	{ImportPath: "lib", DepOnly: true, Imports: []string{"net", "strings"}},
	{ImportPath: "net", DepOnly: true, Standard: true, Imports: []string{"os"}},
	{ImportPath: "os", DepOnly: true, Standard: true},
	{ImportPath: "strings", DepOnly: true, Standard: true},
	{ImportPath: "example.com/x/crypto", DepOnly: true},
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		rule Rule
		want []string // Violation.String()
	}{
		{"nothing forbidden", Rule{}, nil},
		{"a dependency of a dependency", Rule{Forbid: []string{"net"}},
			[]string{"app depends on net (forbidden): app → lib → net"}},
		{"through a forbidden package", Rule{Forbid: []string{"lib", "net"}},
			[]string{"app depends on lib (forbidden): app → lib, and through it on 1 more forbidden package(s)"}},
		{"the shortest chain", Rule{Forbid: []string{"os"}},
			[]string{"app depends on os (forbidden): app → os"}},
		{"own imports only", Rule{ForbidOwn: []string{"net", "os"}},
			[]string{"app depends on os (imported by the package itself): app → os"}},
		{"outside the standard library", Rule{NonStd: []string{"app", "lib"}},
			[]string{"app depends on example.com/x/crypto (not allowed outside the standard library): app → example.com/x/crypto"}},
		{"allowed outside the standard library", Rule{NonStd: []string{"app", "lib", "example.com/x/..."}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, v := range c.rule.Check(graph) {
				got = append(got, v.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got %q\nwant %q", got, c.want)
			}
		})
	}
}

// A pending violation is marked with its reason.
func TestCheckPending(t *testing.T) {
	vs := Rule{Forbid: []string{"net"}, Pending: map[string]string{"net": "lib is to stop using it"}}.Check(graph)
	if len(vs) != 1 || vs[0].Pending != "lib is to stop using it" {
		t.Errorf("%+v", vs)
	}
}
