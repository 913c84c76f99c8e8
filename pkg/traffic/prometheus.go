package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
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
	return sumOverWindow(groupBy, metric+`{reporter=~"destination|waypoint"}`, w)
}

// sumOverWindow is how much the counters sel selects grew over window w,
// summed by the labels in by; series born inside the window count whole
// (see countOverWindow). The gates' and the guard's queries all count so.
func sumOverWindow(by, sel, w string) string {
	return fmt.Sprintf("sum by (%s) ((increase(%s[%s]) and %s offset %s) or last_over_time(%s[%s]))", by, sel, w, sel, w, sel, w)
}

// Queries returns the PromQL that reads the graph over window: requests
// (HTTP, gRPC), TCP connections opened, and TCP bytes received (a long-lived
// connection opened before the window sends bytes but opens nothing; it
// breaks under STRICT all the same). Aggregated server-side, never one query
// per pod. Only destination-side series are used: on source series
// connection_security_policy is always "unknown", and a client without a
// sidecar reports nothing (docs/istio.md 3.2, 3.3). Waypoints report for ambient.
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
// (docs/istio.md 3.2); "unknown" (plaintext) becomes empty.
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

// ShadowQuery is the PromQL that counts the dry-run authorization
// decisions of namespace ns's sidecars over window, per pod, protocol and
// result. It keys on the tags Istio's bootstrap extracts
// (tools/packaging/common/envoy_bootstrap.json: authz_dry_run_action from
// the istio_dry_run_allow_/istio_dry_run_deny_ shadow prefixes,
// authz_dry_run_result from shadow_allowed/shadow_denied), not on the metric
// name, which differs by protocol and by Istio version:
//
//   - HTTP, Istio 1.23.1 and later: envoy_http_rbac{http_conn_manager_prefix="inbound_0.0.0.0_8080"};
//     before: envoy_http_inbound_0_0_0_0_8080_rbac (and
//     envoy_http_InboundPassthroughCluster_rbac for undeclared ports).
//   - TCP (Envoy's network RBAC filter, stat prefix "tcp."): one counter per
//     pod with a tcp_prefix tag and no port.
//
// Istio always keeps these stats (pkg/bootstrap/config.go appends the
// suffixes rbac.allowed, rbac.denied, shadow_allowed, shadow_denied to the
// inclusion list whatever proxyStatsMatcher says). The action filter drops
// the zero series of enforced filters that carry no shadow rules. `namespace`
// and `pod` are added by the standard kubernetes-pods scrape job. Series
// born inside the window count whole, as in countOverWindow.
func ShadowQuery(ns string, window time.Duration) string {
	w := model.Duration(window).String()
	sel := fmt.Sprintf(`{__name__=~"envoy_.+",namespace=%q,authz_dry_run_action=~"allow|deny",authz_dry_run_result=~"allowed|denied"}`, ns)
	return sumOverWindow("pod, tcp_prefix, authz_dry_run_result", sel, w)
}

// ShadowCount is what one pod's dry-run policies decided over the window.
type ShadowCount struct {
	Pod string
	// Protocol is HTTP (requests) or TCP (connections).
	Protocol  string
	Denied    float64
	Decisions float64
}

// ShadowDecisions returns the dry-run policies' decisions in ns over
// window, per pod and protocol. No series at all is an empty list: the
// caller must treat it as inconclusive, never as a pass.
func (p *Prometheus) ShadowDecisions(ctx context.Context, ns string, window time.Duration) ([]ShadowCount, error) {
	if window <= 0 {
		return nil, fmt.Errorf("shadow-decision window must be positive, got %s", window)
	}
	end := p.Now().UTC().Truncate(time.Second)
	q := ShadowQuery(ns, window)
	v, _, _, err := p.API.Query(ctx, q, end)
	if err != nil {
		return nil, fmt.Errorf("query Prometheus at %s: %w\nquery: %s", p.URL, explain(err), q)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query Prometheus at %s: want a vector, got %s\nquery: %s", p.URL, v.Type(), q)
	}
	byKey := map[[2]string]*ShadowCount{}
	var keys [][2]string
	for _, s := range vec {
		proto := HTTP
		if s.Metric["tcp_prefix"] != "" {
			proto = TCP
		}
		k := [2]string{string(s.Metric["pod"]), proto}
		c := byKey[k]
		if c == nil {
			c = &ShadowCount{Pod: k[0], Protocol: proto}
			byKey[k] = c
			keys = append(keys, k)
		}
		c.Decisions += float64(s.Value)
		if s.Metric["authz_dry_run_result"] == "denied" {
			c.Denied += float64(s.Value)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][0] < keys[j][0] || keys[i][0] == keys[j][0] && keys[i][1] < keys[j][1]
	})
	out := make([]ShadowCount, 0, len(keys))
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	return out, nil
}
