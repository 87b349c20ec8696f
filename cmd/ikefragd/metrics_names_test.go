package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/diag"
)

// verdictSeries lists exactly the (code, severity) pairs the engine's
// evaluator gives: read from diag's source, every call add(Code, Severity,
// ...), a severity held in a variable standing for every constant
// assigned to it in that function.
func TestVerdictSeriesMatchDiag(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("../../diag/*.go")
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{} // Go name → code
	type pair struct{ code, sev string }
	var found []pair
	sevs := map[string]string{"Info": string(diag.Info), "Warning": string(diag.Warning), "Error": string(diag.Error)}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			if gd, ok := d.(*ast.GenDecl); ok && gd.Tok == token.CONST {
				for _, sp := range gd.Specs {
					vs := sp.(*ast.ValueSpec)
					if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
						continue
					}
					for i, n := range vs.Names {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
							codes[n.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			}
		}
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			assigned := map[string][]string{}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == len(as.Rhs) {
					for i, l := range as.Lhs {
						li, ok1 := l.(*ast.Ident)
						ri, ok2 := as.Rhs[i].(*ast.Ident)
						if ok1 && ok2 && sevs[ri.Name] != "" {
							assigned[li.Name] = append(assigned[li.Name], sevs[ri.Name])
						}
					}
				}
				return true
			})
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) < 2 {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); !ok || sel.Sel.Name != "add" {
					return true
				}
				ci, ok1 := call.Args[0].(*ast.Ident)
				si, ok2 := call.Args[1].(*ast.Ident)
				if !ok1 || !ok2 {
					return true
				}
				if s := sevs[si.Name]; s != "" {
					found = append(found, pair{ci.Name, s})
				} else {
					for _, s := range assigned[si.Name] {
						found = append(found, pair{ci.Name, s})
					}
				}
				return true
			})
		}
	}
	want := map[string]bool{}
	for _, p := range found {
		code, ok := codes[p.code]
		if !ok {
			t.Fatalf("add(%s, ...): not a Code constant", p.code)
		}
		want[code+"/"+p.sev] = true
	}
	have := map[string]bool{}
	for _, v := range verdictSeries {
		have[string(v.code)+"/"+string(v.sev)] = true
	}
	var missing, extra []string
	for k := range want {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	for k := range have {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(want) < 10 || len(missing) > 0 || len(extra) > 0 {
		t.Errorf("verdictSeries: missing %v, not given by diag %v (diag gives %d pairs)", missing, extra, len(want))
	}
}

// A fresh registry has every verdict series at zero, the split engine and
// kernel counters under their own names, and the old lumped names marked
// deprecated.
func TestMetricsAtStart(t *testing.T) {
	m := newMetrics()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() != "ikefrag_verdicts_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			n++
			if s.GetCounter().GetValue() != 0 {
				t.Errorf("%v is not 0", s.GetLabel())
			}
		}
	}
	distinct := map[diag.CodeSeverity]bool{}
	for _, v := range verdictSeries {
		distinct[diag.CodeSeverity{Code: v.code, Severity: v.sev}] = true
	}
	for _, v := range diag.OtherVerdicts() {
		distinct[v] = true
	}
	if n != len(distinct) {
		t.Errorf("%d ikefrag_verdicts_total series at start, want %d", n, len(distinct))
	}
	for _, d := range []string{descEngine.String(), descKernelIP.String()} {
		if !strings.Contains(d, "DEPRECATED") {
			t.Errorf("not marked deprecated: %s", d)
		}
	}
	if len(descEngineNamed) != len(engineCounts(&engineSnapshot{})) {
		t.Errorf("%d named engine metrics for %d engine counters", len(descEngineNamed), len(engineCounts(&engineSnapshot{})))
	}
	for _, c := range ipFragCounters {
		if descKernelNamed[c] == nil {
			t.Errorf("kernel counter %s has no named metric", c)
		}
	}
}
