// Package deptest checks packages' imports against the architecture's
// rules, as tailscale's tstest/deptest does: it reads `go list -deps
// -json` of the packages and reports every forbidden dependency with the
// chain of imports that brings it in. arch_test.go holds ikefrag's rules.
package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
)

// Rule is what a set of packages may not depend on. A pattern is an
// import path, or a path ending in "/..." for it and everything below.
type Rule struct {
	// Pkgs is the go list pattern of the packages the rule is about.
	Pkgs string
	// Why the rule holds; printed with every violation.
	Why string
	// Forbid: no package of Pkgs depends on these, directly or through
	// any other package.
	Forbid []string
	// ForbidOwn: no package of Pkgs imports these itself; its
	// dependencies may (the standard crypto/x509 imports net and os, for
	// system roots the codec never asks for).
	ForbidOwn []string
	// NonStd, when set, lists the only patterns a dependency from outside
	// the standard library may match.
	NonStd []string
	// Pending are forbidden dependencies that exist today and are to go,
	// each with what removes it. They are logged, not failed, until they
	// go; then the rule asks for the entry to be removed.
	Pending map[string]string
}

// Package is the part of `go list -json` output the check reads.
type Package struct {
	ImportPath string
	Standard   bool
	DepOnly    bool
	Imports    []string
}

// Violation is one forbidden dependency.
type Violation struct {
	Dep   string   // the forbidden package
	Chain []string // from a package of Pkgs to Dep, import by import
	Kind  string   // "forbidden", "imported by the package itself", "not allowed outside the standard library"
	// Below counts the forbidden packages that come in only through Dep
	// (its own imports, theirs...): they are not reported one by one.
	Below int
	// Pending is the Rule.Pending reason when the violation is a known
	// one, "" otherwise.
	Pending string
}

func (v Violation) String() string {
	s := fmt.Sprintf("%s depends on %s (%s): %s", v.Chain[0], v.Dep, v.Kind, strings.Join(v.Chain, " → "))
	if v.Below > 0 {
		s += fmt.Sprintf(", and through it on %d more forbidden package(s)", v.Below)
	}
	return s
}

// List runs `go list -deps -json` on pattern with the go command gocmd.
func List(gocmd, pattern string) ([]Package, error) {
	cmd := exec.Command(gocmd, "list", "-deps", "-json=ImportPath,Standard,DepOnly,Imports", pattern)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %v\n%s", pattern, err, stderr.String())
	}
	var pkgs []Package
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p Package
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list %s: %v", pattern, err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// Match reports whether path matches pattern: the path itself, or with
// pattern "p/...", p and any path below it.
func Match(pattern, path string) bool {
	if p, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == p || strings.HasPrefix(path, p+"/")
	}
	return path == pattern
}

func matchAny(patterns []string, path string) (string, bool) {
	for _, p := range patterns {
		if Match(p, path) {
			return p, true
		}
	}
	return "", false
}

// Check applies r to the output of List: the packages not marked DepOnly
// are those of r.Pkgs. Violations come sorted by dependency.
func (r Rule) Check(pkgs []Package) []Violation {
	byPath := make(map[string]*Package, len(pkgs))
	var roots []string
	for i := range pkgs {
		p := &pkgs[i]
		byPath[p.ImportPath] = p
		if !p.DepOnly {
			roots = append(roots, p.ImportPath)
		}
	}
	sort.Strings(roots)
	// Breadth first from every root: the shortest chain to each package.
	parent := map[string]string{}
	queue := slices.Clone(roots)
	for _, root := range roots {
		parent[root] = ""
	}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		p := byPath[cur]
		if p == nil {
			continue
		}
		for _, imp := range p.Imports {
			if _, seen := parent[imp]; !seen {
				parent[imp] = cur
				queue = append(queue, imp)
			}
		}
	}
	chain := func(to string) []string {
		var c []string
		for at := to; at != ""; at = parent[at] {
			c = append(c, at)
		}
		slices.Reverse(c)
		return c
	}
	var out []Violation
	bad := map[string]bool{} // reached packages that break Forbid or NonStd
	for _, p := range pkgs {
		if _, reached := parent[p.ImportPath]; !reached {
			continue
		}
		_, forbidden := matchAny(r.Forbid, p.ImportPath)
		_, allowed := matchAny(r.NonStd, p.ImportPath)
		bad[p.ImportPath] = forbidden || r.NonStd != nil && !p.Standard && !allowed
	}
	// first is the first bad package on the chain to path: the one
	// reported, with the others below it counted.
	first := func(c []string) string {
		for _, at := range c {
			if bad[at] {
				return at
			}
		}
		return ""
	}
	below := map[string]int{}
	add := func(v Violation) {
		for pat, why := range r.Pending {
			if Match(pat, v.Dep) {
				v.Pending = why
			}
		}
		out = append(out, v)
	}
	for _, p := range pkgs {
		if !bad[p.ImportPath] {
			continue
		}
		c := chain(p.ImportPath)
		if f := first(c); f != p.ImportPath {
			below[f]++
			continue
		}
		kind := "not allowed outside the standard library"
		if _, forbidden := matchAny(r.Forbid, p.ImportPath); forbidden {
			kind = "forbidden"
		}
		add(Violation{Dep: p.ImportPath, Chain: c, Kind: kind})
	}
	for i := range out {
		out[i].Below = below[out[i].Dep]
	}
	for _, root := range roots {
		for _, imp := range byPath[root].Imports {
			if _, bad := matchAny(r.ForbidOwn, imp); bad {
				add(Violation{Dep: imp, Chain: []string{root, imp}, Kind: "imported by the package itself"})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Dep < out[j].Dep })
	return out
}
