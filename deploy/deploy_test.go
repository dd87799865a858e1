package deploy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/yaml"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// exprsOfDashboard returns every PromQL expression of the dashboard: its
// panels' queries and its variables' label_values queries.
func exprsOfDashboard(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("grafana-dashboard.json: title %q, uid %q, %d panels", d.Title, d.UID, len(d.Panels))
	}
	var exprs []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			s, _ := q["query"].(string)
			if inner, ok := strings.CutPrefix(s, "label_values("); ok {
				exprs = append(exprs, strings.SplitN(inner, ",", 2)[0])
			}
		}
	}
	return exprs
}

// exprsOfRules returns every alerting rule's expression, checking that
// each rule is complete.
func exprsOfRules(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("prometheus-alerts.yml: %v", err)
	}
	var exprs []string
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("rule group %q: no name or no rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: alert, expr, severity and summary are all required", r.Alert)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("rule %q: for %q: %v", r.Alert, r.For, err)
				}
			}
			exprs = append(exprs, r.Expr)
		}
	}
	return exprs
}

// promqlKeywords are PromQL words that are not metric names: operators,
// modifiers and the aggregations (which may be followed by "by (...)"
// before their parenthesis).
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "group": true,
}

// metricNames returns the metric names a PromQL expression selects: the
// identifiers that are not functions or aggregations (followed by "("),
// keywords, label names (inside {} or after by/without/on/ignoring),
// durations (inside []), strings or numbers. It fails on unbalanced
// brackets or quotes.
func metricNames(expr string) ([]string, error) {
	var names []string
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	var stack []byte
	skipList := false // the parenthesized label list after by/without/on/ignoring
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := strings.IndexByte(expr[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			i += j + 2
		case c == '{' || c == '[':
			close := map[byte]byte{'{': '}', '[': ']'}[c]
			j := strings.IndexByte(expr[i:], close)
			if j < 0 {
				return nil, fmt.Errorf("unbalanced %c at %d", c, i)
			}
			i += j + 1
		case c == '(':
			stack = append(stack, c)
			if skipList {
				j := strings.IndexByte(expr[i:], ')')
				if j < 0 {
					return nil, fmt.Errorf("unbalanced ( at %d", i)
				}
				stack = stack[:len(stack)-1]
				i += j + 1
				skipList = false
				continue
			}
			i++
		case c == ')':
			if len(stack) == 0 {
				return nil, fmt.Errorf("unbalanced ) at %d", i)
			}
			stack = stack[:len(stack)-1]
			i++
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.' || (expr[i] == '-' || expr[i] == '+') && (expr[i-1] == 'e' || expr[i-1] == 'E')) {
				i++
			}
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			switch {
			case word == "by" || word == "without" || word == "on" || word == "ignoring" || word == "group_left" || word == "group_right":
				skipList = true
			case promqlKeywords[word]:
			case k < len(expr) && expr[k] == '(':
				// a function or an aggregation
			default:
				names = append(names, word)
			}
			i = j
		default:
			i++
		}
	}
	if len(stack) != 0 {
		return nil, fmt.Errorf("unbalanced (")
	}
	return names, nil
}

// served returns the metric names a live proxy serves on /proxy/metrics
// after it has carried some traffic: histogram and summary families also
// by their series names.
func served(t *testing.T) map[string]bool {
	t.Helper()
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	c := testutil.Client(t, p.Addr())
	ctx := testutil.Context(t, 30*time.Second)
	wch := c.Watch(ctx, "k")
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	<-wch
	if _, err := c.Get(ctx, "k", clientv3.WithSerializable()); err != nil {
		t.Fatal(err)
	}
	lease, err := c.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + p.Addr() + "/proxy/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for name, f := range fams {
		names[name] = true
		switch f.GetType().String() {
		case "HISTOGRAM":
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case "SUMMARY":
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	return names
}

// The dashboard and the alerting rules parse, and every metric they name
// is served by the proxy.
func TestDashboardAndAlertsNameServedMetrics(t *testing.T) {
	exprs := append(exprsOfDashboard(t), exprsOfRules(t)...)
	have := served(t)
	var missing []string
	n := 0
	for _, e := range exprs {
		names, err := metricNames(e)
		if err != nil {
			t.Errorf("%q: %v", e, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%q names no metric", e)
		}
		for _, name := range names {
			n++
			if !have[name] && !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
		}
	}
	if len(missing) > 0 {
		t.Fatalf("named by the dashboard or the alerts but not served on /proxy/metrics: %v", missing)
	}
	t.Logf("%d expressions, %d metric references, all served", len(exprs), n)
}

// The scanner finds metric names and nothing else, and refuses unbalanced
// expressions.
func TestMetricNames(t *testing.T) {
	got, err := metricNames(`sum by (instance, grpc_method) (rate(a_total{x=~"b|c", y="z"}[5m])) / clamp_min(sum without (le) (b_bucket offset 5m), 1e-9) > 0.05 and on (instance) up_metric == 1`)
	if err != nil || !slices.Equal(got, []string{"a_total", "b_bucket", "up_metric"}) {
		t.Fatalf("metricNames = %v, %v", got, err)
	}
	for _, bad := range []string{`sum(rate(a[5m])`, `a{x="y"`, `rate(a[5m]))`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
