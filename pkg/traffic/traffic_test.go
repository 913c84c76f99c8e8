package traffic

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// recorded serves Prometheus API responses recorded in testdata, choosing
// the query's response by the metric it reads, and records the queries.
func recorded(t *testing.T, queryStatus int) (*httptest.Server, *[]string) {
	t.Helper()
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		file := ""
		switch {
		case r.URL.Path == "/api/v1/status/runtimeinfo":
			file = "runtimeinfo.json"
		case r.URL.Path == "/api/v1/query":
			_ = r.ParseForm()
			q := r.Form.Get("query")
			queries = append(queries, q)
			if queryStatus != http.StatusOK {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(queryStatus)
				fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"parse error"}`)
				return
			}
			switch {
			case strings.Contains(q, "istio_requests_total"):
				file = "requests.json"
			case strings.Contains(q, "istio_tcp_received_bytes_total"):
				file = "bytes.json"
			default:
				file = "tcp.json"
			}
		default:
			http.NotFound(w, r)
			return
		}
		b, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv, &queries
}

func reader(t *testing.T, url string) *Prometheus {
	t.Helper()
	p, err := NewPrometheus(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Now = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	return p
}

func TestReadMapsRecordedResponses(t *testing.T) {
	srv, queries := recorded(t, http.StatusOK)
	g, err := reader(t, srv.URL).Read(context.Background(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(*queries) != 3 {
		t.Errorf("want three queries (requests, connections, bytes), ran %d", len(*queries))
	}
	for _, q := range *queries {
		if !strings.Contains(q, `reporter=~"destination|waypoint"`) || !strings.Contains(q, "[1d]") || !strings.Contains(q, "sum by (") {
			t.Errorf("query %q: want aggregated destination-side series over the window", q)
		}
		// Series born inside the window count their whole value.
		if !strings.Contains(q, "offset 1d) or last_over_time(") {
			t.Errorf("query %q: a caller whose series appears inside the window would be missed", q)
		}
	}
	if g.Window != "1d" || !g.Start.Equal(time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)) || g.Source != "prometheus "+srv.URL {
		t.Errorf("graph window = %s from %s (%s)", g.Window, g.Start, g.Source)
	}
	// The zero-count web edge is dropped; the rest sorted by destination.
	want := []Edge{
		{Source: Endpoint{Namespace: "legacy", Workload: "unknown"}, Destination: Endpoint{Namespace: "orders", Workload: "orders", Service: "orders"}, Protocol: HTTP, Security: Plaintext, Count: 120},
		{Source: Endpoint{Namespace: "shop", Workload: "cart", Principal: "cluster.local/ns/shop/sa/cart"}, Destination: Endpoint{Namespace: "orders", Workload: "orders", Service: "orders"}, Protocol: HTTP, Security: MutualTLS, Count: 4500.5},
		{Source: Endpoint{Workload: "unknown"}, Destination: Endpoint{Namespace: "payments", Workload: "ledger", Service: "ledger"}, Protocol: TCP, Security: Unknown, Count: 7, Bytes: 2048},
		{Source: Endpoint{Namespace: "legacy", Workload: "reporting"}, Destination: Endpoint{Namespace: "payments", Workload: "ledger", Service: "ledger"}, Protocol: TCP, Security: Plaintext, Bytes: 5000},
	}
	if len(g.Edges) != len(want) {
		t.Fatalf("edges = %+v", g.Edges)
	}
	for i := range want {
		if g.Edges[i] != want[i] {
			t.Errorf("edge %d = %+v, want %+v", i, g.Edges[i], want[i])
		}
	}
	if !g.Edges[0].UnmeshedSource() || g.Edges[1].UnmeshedSource() {
		t.Error("a client Istio could not identify has no sidecar")
	}
}

func TestReadRefusesWindowBeyondRetention(t *testing.T) {
	srv, queries := recorded(t, http.StatusOK)
	_, err := reader(t, srv.URL).Read(context.Background(), 30*24*time.Hour)
	if err == nil || !strings.Contains(err.Error(), "longer than the retention") || !strings.Contains(err.Error(), "15d") {
		t.Errorf("err = %v", err)
	}
	if len(*queries) != 0 {
		t.Error("no query should run with a window Prometheus cannot answer")
	}
}

func TestReadErrorsNameURLAndQuery(t *testing.T) {
	srv, _ := recorded(t, http.StatusBadRequest)
	_, err := reader(t, srv.URL).Read(context.Background(), time.Hour)
	if err == nil || !strings.Contains(err.Error(), srv.URL) || !strings.Contains(err.Error(), "query: sum by") {
		t.Errorf("err = %v", err)
	}
	_, err = reader(t, "http://127.0.0.1:1").Read(context.Background(), time.Hour)
	if err == nil || !strings.Contains(err.Error(), "reach Prometheus at http://127.0.0.1:1") {
		t.Errorf("unreachable: err = %v", err)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	srv, _ := recorded(t, http.StatusOK)
	g, err := reader(t, srv.URL).Read(context.Background(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"graph.yaml", "graph.json"} {
		path := filepath.Join(t.TempDir(), name)
		if err := g.Save(path); err != nil {
			t.Fatal(err)
		}
		back, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(back.Edges) != len(g.Edges) || back.Edges[1] != g.Edges[1] || back.Edges[2] != g.Edges[2] || back.Window != g.Window || back.Source != "file "+path {
			t.Errorf("%s: round trip lost data: %+v", name, back)
		}
	}
}

func TestLoadRejectsMalformed(t *testing.T) {
	for name, body := range map[string]string{
		"not yaml":      "{{{",
		"another kind":  "apiVersion: v1\nkind: ConfigMap\n",
		"unknown field": "apiVersion: meshmigrate.io/v1alpha1\nkind: TrafficGraph\nbogus: 1\n",
		"bad security":  "apiVersion: meshmigrate.io/v1alpha1\nkind: TrafficGraph\nedges:\n- destination: {namespace: a, workload: b}\n  security: maybe\n  count: 1\n",
	} {
		path := filepath.Join(t.TempDir(), "g.yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file loaded")
	}
}

// syntheticVector is 20,000 destination-side samples between 2,000
// workloads in 100 namespaces, a tenth of them plaintext.
func syntheticVector() model.Vector {
	vec := make(model.Vector, 0, 20000)
	for i := 0; i < 20000; i++ {
		dst, src := i%2000, (i*7+3)%2000
		csp := "mutual_tls"
		if i%10 == 0 {
			csp = "none"
		}
		vec = append(vec, &model.Sample{Value: model.SampleValue(i + 1), Metric: model.Metric{
			"source_workload_namespace":      model.LabelValue(fmt.Sprintf("ns-%d", src/20)),
			"source_workload":                model.LabelValue(fmt.Sprintf("wl-%d", src)),
			"source_principal":               model.LabelValue(fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/wl-%d", src/20, src)),
			"destination_workload_namespace": model.LabelValue(fmt.Sprintf("ns-%d", dst/20)),
			"destination_workload":           model.LabelValue(fmt.Sprintf("wl-%d", dst)),
			"destination_service_name":       model.LabelValue(fmt.Sprintf("wl-%d", dst)),
			"connection_security_policy":     model.LabelValue(csp),
		}})
	}
	return vec
}

// BenchmarkEdgesFromVector maps 20,000 samples (2,000 workloads) to edges
// and sorts them, as one Read does. `make bench` prints time and memory.
func BenchmarkEdgesFromVector(b *testing.B) {
	vec := syntheticVector()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g := &Graph{Edges: EdgesFromVector(vec, HTTP)}
		g.sort()
		if len(g.Edges) != 20000 {
			b.Fatal("wrong edge count")
		}
	}
}

// Each guard query reads one istio_* metric: increase() drops the metric
// name, so one selector over requests and TCP connections returns series
// that collide, and Prometheus refuses the whole query (found on ztunnel's
// TCP series beside the sidecars' requests).
func TestHealthQueriesReadOneIstioMetricEach(t *testing.T) {
	for what, q := range HealthQueries("shop", time.Minute) {
		if strings.Contains(q, `__name__=~"istio_`) {
			t.Errorf("%s: %s selects several istio metrics in one increase()", what, q)
		}
		if !strings.Contains(q, `"shop"`) {
			t.Errorf("%s: %s is not scoped to the namespace", what, q)
		}
	}
}
