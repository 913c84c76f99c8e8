package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// labels the queries group by: both ends of the call and how it was secured.
const groupBy = "source_workload_namespace,source_workload,source_principal," +
	"destination_workload_namespace,destination_workload,destination_service_name,connection_security_policy"

// The queries, keyed by what they count.
const (
	queryRequests    = "requests"
	queryConnections = "connections"
	queryBytes       = "bytes"
)

// countOverWindow is PromQL for how much counter metric grew over window w,
// per series, summed by both ends of the call. increase() alone misses a
// series born inside the window (its first sample is the baseline), which
// is exactly a new or rare caller, and after the inject phase every server
// pod's series are new. So series that already existed at the window's
// start count their increase, and series born inside it count their whole
// value.
func countOverWindow(metric, w string) string {
	sel := metric + `{reporter=~"destination|waypoint"}`
	return fmt.Sprintf("sum by (%s) ((increase(%s[%s]) and %s offset %s) or last_over_time(%s[%s]))",
		groupBy, sel, w, sel, w, sel, w)
}

// Queries returns the PromQL that reads the graph over window: requests
// (HTTP, gRPC), TCP connections opened, and TCP bytes received (a long-lived
// connection opened before the window sends bytes but opens nothing; it
// breaks under STRICT all the same). Aggregated server-side, never one query
// per pod. Only destination-side series are used: on source series
// connection_security_policy is always "unknown", and a client without a
// sidecar reports nothing (ISTIO.md 3.2, 3.3). Waypoints report for ambient.
func Queries(window time.Duration) map[string]string {
	w := model.Duration(window).String()
	return map[string]string{
		queryRequests:    countOverWindow("istio_requests_total", w),
		queryConnections: countOverWindow("istio_tcp_connections_opened_total", w),
		queryBytes:       countOverWindow("istio_tcp_received_bytes_total", w),
	}
}

// Prometheus reads the graph from a Prometheus HTTP API.
type Prometheus struct {
	// URL names the server in messages (the proxy path for in-cluster).
	URL string
	API promv1.API
	Now func() time.Time
}

// NewPrometheus returns a reader for the Prometheus at url; rt may be nil
// (plain HTTP) or carry the API server's credentials for the service proxy.
func NewPrometheus(url string, rt http.RoundTripper) (*Prometheus, error) {
	cfg := api.Config{Address: url}
	if rt != nil {
		cfg.RoundTripper = rt
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("prometheus URL %q: %w", url, err)
	}
	return &Prometheus{URL: url, API: promv1.NewAPI(c), Now: time.Now}, nil
}

// Read runs the queries and maps their results to edges. A window longer
// than Prometheus's retention is refused: it would silently miss callers.
func (p *Prometheus) Read(ctx context.Context, window time.Duration) (*Graph, error) {
	if window <= 0 {
		return nil, fmt.Errorf("traffic window must be positive, got %s", window)
	}
	if err := p.checkRetention(ctx, window); err != nil {
		return nil, err
	}
	end := p.Now().UTC().Truncate(time.Second)
	g := &Graph{APIVersion: APIVersion, Kind: Kind, Source: "prometheus " + p.URL,
		Window: model.Duration(window).String(), Start: end.Add(-window), End: end}
	qs := Queries(window)
	results := map[string]model.Vector{}
	for _, what := range []string{queryRequests, queryConnections, queryBytes} {
		q := qs[what]
		g.Queries = append(g.Queries, q)
		v, _, _, err := p.API.Query(ctx, q, end)
		if err != nil {
			return nil, fmt.Errorf("query Prometheus at %s: %w\nquery: %s", p.URL, explain(err), q)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return nil, fmt.Errorf("query Prometheus at %s: want a vector, got %s\nquery: %s", p.URL, v.Type(), q)
		}
		results[what] = vec
	}
	g.Edges = append(EdgesFromVector(results[queryRequests], HTTP),
		withBytes(EdgesFromVector(results[queryConnections], TCP), EdgesFromVector(results[queryBytes], TCP))...)
	g.sort()
	return g, nil
}

// withBytes merges the bytes received into the TCP edges; a pair that sent
// bytes without opening a connection in the window (a long-lived one)
// becomes an edge with Count 0 and its Bytes.
func withBytes(conns, bytes []Edge) []Edge {
	type key struct {
		src, dst Endpoint
		sec      string
	}
	idx := make(map[key]int, len(conns))
	for i, e := range conns {
		idx[key{e.Source, e.Destination, e.Security}] = i
	}
	for _, b := range bytes {
		k := key{b.Source, b.Destination, b.Security}
		if i, ok := idx[k]; ok {
			conns[i].Bytes = b.Count
			continue
		}
		b.Bytes, b.Count = b.Count, 0
		idx[k] = len(conns)
		conns = append(conns, b)
	}
	return conns
}

func explain(err error) error {
	var pe *promv1.Error
	if errors.As(err, &pe) && pe.Type == promv1.ErrClient && strings.Contains(pe.Msg, "404") {
		return fmt.Errorf("%w (is this a Prometheus server?)", err)
	}
	return err
}

// checkRetention compares the window with the server's storage retention
// (runtime info, e.g. "15d" or "15d or 10GiB").
func (p *Prometheus) checkRetention(ctx context.Context, window time.Duration) error {
	info, err := p.API.Runtimeinfo(ctx)
	if err != nil {
		return fmt.Errorf("reach Prometheus at %s: %w (check --prometheus-url, or pass --no-traffic)", p.URL, explain(err))
	}
	first := strings.TrimSpace(strings.Split(info.StorageRetention, " ")[0])
	retention, perr := model.ParseDuration(first)
	if perr != nil || retention <= 0 {
		return nil // size-based or unknown retention: nothing to compare
	}
	if window > time.Duration(retention) {
		return fmt.Errorf("--traffic-window %s is longer than the retention of Prometheus at %s (%s): callers older than that are gone; use a window of at most %s",
			model.Duration(window), p.URL, info.StorageRetention, retention)
	}
	return nil
}

// EdgesFromVector maps one query's samples to edges. Samples with a zero
// count (a series that existed but did not move in the window) are dropped.
func EdgesFromVector(vec model.Vector, protocol string) []Edge {
	out := make([]Edge, 0, len(vec))
	for _, s := range vec {
		if s.Value <= 0 {
			continue
		}
		m := s.Metric
		e := Edge{
			Source: Endpoint{
				Namespace: string(m["source_workload_namespace"]),
				Workload:  string(m["source_workload"]),
				Principal: principal(string(m["source_principal"])),
			},
			Destination: Endpoint{
				Namespace: string(m["destination_workload_namespace"]),
				Workload:  string(m["destination_workload"]),
				Service:   string(m["destination_service_name"]),
			},
			Protocol: protocol,
			Security: security(string(m["connection_security_policy"])),
			Count:    float64(s.Value),
		}
		if e.Source.Namespace == UnknownWorkload {
			e.Source.Namespace = ""
		}
		if e.Destination.Service == UnknownWorkload {
			e.Destination.Service = ""
		}
		out = append(out, e)
	}
	return out
}

// principal strips "spiffe://": AuthorizationPolicy principals omit it
// (ISTIO.md 3.2); "unknown" (plaintext) becomes empty.
func principal(p string) string {
	if p == UnknownWorkload {
		return ""
	}
	return strings.TrimPrefix(p, "spiffe://")
}

func security(csp string) string {
	switch csp {
	case "mutual_tls":
		return MutualTLS
	case "none":
		return Plaintext
	default:
		return Unknown
	}
}

// ShadowQueries is the PromQL that counts the dry-run authorization
// decisions of namespace ns's sidecars over window: Envoy's inbound RBAC
// stats, tagged authz_dry_run_result by Istio's bootstrap (ISTIO.md,
// "Dry run"), with the pod's namespace in the `namespace` label the
// standard kubernetes-pods scrape job adds. Series born inside the window
// count whole, as in countOverWindow.
func ShadowQueries(ns string, window time.Duration) (denied, decisions string) {
	w := model.Duration(window).String()
	q := func(result string) string {
		sel := fmt.Sprintf(`{__name__=~"envoy_http_inbound_.*_rbac",namespace=%q,authz_dry_run_result=~%q}`, ns, result)
		return fmt.Sprintf("sum((increase(%s[%s]) and %s offset %s) or last_over_time(%s[%s]))", sel, w, sel, w, sel, w)
	}
	return q("denied"), q("allowed|denied")
}

// ShadowDenials counts the dry-run policies' denials and all their
// decisions in ns over window. No series at all counts as zero decisions:
// the caller must treat that as inconclusive, never as a pass.
func (p *Prometheus) ShadowDenials(ctx context.Context, ns string, window time.Duration) (denied, decisions float64, err error) {
	if window <= 0 {
		return 0, 0, fmt.Errorf("shadow-denial window must be positive, got %s", window)
	}
	end := p.Now().UTC().Truncate(time.Second)
	qd, qa := ShadowQueries(ns, window)
	var out [2]float64
	for i, q := range []string{qd, qa} {
		v, _, _, err := p.API.Query(ctx, q, end)
		if err != nil {
			return 0, 0, fmt.Errorf("query Prometheus at %s: %w\nquery: %s", p.URL, explain(err), q)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return 0, 0, fmt.Errorf("query Prometheus at %s: want a vector, got %s\nquery: %s", p.URL, v.Type(), q)
		}
		for _, s := range vec {
			out[i] += float64(s.Value)
		}
	}
	return out[0], out[1], nil
}
