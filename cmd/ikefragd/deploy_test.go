package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/ikefrag/ikefrag/proxy"
)

const (
	dashboardFile    = "../../deploy/grafana/dashboards/ikefrag.json"
	provisioningFile = "../../deploy/grafana/provisioning/dashboards/ikefrag.yaml"
	rulesFile        = "../../deploy/prometheus/ikefrag-rules.yml"
	rulesTestFile    = "../../deploy/prometheus/ikefrag-rules.test.yml"
)

// registeredNames returns every metric name the daemon's registry
// describes: the one runDaemon builds (newMetrics, the scrape-time
// collector, the proxy's collector when the proxy runs). Histograms add
// their _bucket, _sum and _count series.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := newMetrics().reg
	reg.MustRegister(&collector{})
	reg.MustRegister((&proxy.Proxy{}).Collector())
	ch := make(chan *prometheus.Desc, 1024)
	go func() { reg.Describe(ch); close(ch) }()
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		names[m[1]] = true
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			names[m[1]+suf] = true
		}
	}
	if !names["ikefrag_verdicts_total"] || !names["ikefrag_proxy_backend_up"] || !names["ikefrag_packets_total"] {
		t.Fatalf("registry names look incomplete: %d names", len(names))
	}
	return names
}

var metricRef = regexp.MustCompile(`\bikefrag_[a-z0-9_]+\b`)

// checkExpr fails for a PromQL expression naming a metric the daemon does
// not register, or none at all.
func checkExpr(t *testing.T, where, expr string, names map[string]bool) {
	t.Helper()
	refs := metricRef.FindAllString(expr, -1)
	if len(refs) == 0 {
		t.Errorf("%s: %q names no ikefrag metric", where, expr)
	}
	for _, r := range refs {
		if !names[r] {
			t.Errorf("%s: %q names %s, which ikefragd does not register", where, expr, r)
		}
	}
}

// The dashboard is a Grafana dashboard model whose every query names
// metrics the daemon registers; the provisioning file points Grafana at
// where the package installs it.
func TestDashboard(t *testing.T) {
	names := registeredNames(t)
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID           string `json:"uid"`
		Title         string `json:"title"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name, Type string
				Query      any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion < 30 {
		t.Errorf("dashboard header: uid %q title %q schemaVersion %d", dash.UID, dash.Title, dash.SchemaVersion)
	}
	ids := map[int]bool{}
	sections := map[string]bool{}
	queries := 0
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			sections[p.Title] = true
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %v, %d targets", p.Title, p.Datasource, len(p.Targets))
		}
		for _, tg := range p.Targets {
			queries++
			checkExpr(t, "panel "+p.Title, tg.Expr, names)
		}
	}
	for _, s := range []string{"Daemon and interfaces", "Fragment trains and drops", "Verdicts", "Proxy", "ESP fast path"} {
		if !sections[s] {
			t.Errorf("no %q row", s)
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			checkExpr(t, "variable "+v.Name, q["query"].(string), names)
		}
	}
	if queries < 20 {
		t.Errorf("%d queries", queries)
	}

	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	pb, err := os.ReadFile(provisioningFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(pb, &prov); err != nil {
		t.Fatal(err)
	}
	if prov.APIVersion != 1 || len(prov.Providers) != 1 || prov.Providers[0].Type != "file" ||
		prov.Providers[0].Options.Path != "/usr/share/ikefrag/grafana/dashboards" {
		t.Errorf("provisioning: %+v", prov)
	}
}

// The alert rules name only registered metrics, and pass promtool's check
// and its unit tests against recorded series.
func TestAlertRules(t *testing.T) {
	names := registeredNames(t)
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			checkExpr(t, "alert "+r.Alert, r.Expr, names)
		}
	}
	for _, a := range []string{"IkefragFragmentsDropped", "IkefragNoIKEAnswered", "IkefragProxyBackendDown", "IkefragFastPathFallback"} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; make deps installs it)")
	}
	if out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command(promtool, "test", "rules", "ikefrag-rules.test.yml")
	cmd.Dir = "../../deploy/prometheus"
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
}
