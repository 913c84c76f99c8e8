package traffic

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/common/model"
)

// Health is what the telemetry says about a namespace's callers over one
// window: the signals the post-change guard judges (docs/apply.md, "The
// guard"). Each list is per caller ("namespace/workload", or "pod/NAME"
// for a TCP denial counted by the denying pod), sorted, zero counts left
// out.
type Health struct {
	// Plaintext are calls that arrived without mTLS: destination-side
	// requests and TCP connections whose connection_security_policy is not
	// mutual_tls (a sidecar says none, ztunnel's inbound passthrough
	// unknown; a connection ztunnel refuses under STRICT is counted opened
	// before it is refused, istio/ztunnel src/proxy/inbound_passthrough.rs).
	Plaintext []CallerCount `json:"plaintext"`
	// Denied are calls the namespace's proxies refused: destination-side
	// response_code="403" for HTTP, the sidecars' enforced RBAC filters'
	// authz_enforce_result="denied" (TCP and HTTP) by pod, and the mTLS
	// connections ztunnel failed by policy (istio_tcp_connections_failed_total,
	// response_flags="DENY", Istio 1.29 on).
	Denied []CallerCount `json:"denied"`
	// Requests and Errors are the callers' own view (reporter="source"):
	// every request to the namespace, and those that failed (5xx, or no
	// response code, or an Envoy response flag of a failed upstream
	// connection: UF, URX, UC, UH, UPE).
	Requests []CallerCount `json:"requests"`
	Errors   []CallerCount `json:"errors"`
	// Inbound is the destination side's total (requests and connections,
	// any security policy): zero with no Requests either means no data.
	Inbound float64 `json:"inbound"`
}

// CallerCount is one caller's count over the window.
type CallerCount struct {
	Caller string  `json:"caller"`
	Count  float64 `json:"count"`
}

// Total sums the counts.
func Total(cs []CallerCount) float64 {
	t := 0.0
	for _, c := range cs {
		t += c.Count
	}
	return t
}

// failedFlags are the Envoy response flags of a call that never reached a
// healthy upstream: a TLS handshake refused by a STRICT server shows as
// UF (upstream connection failure) or URX, a reset as UC.
const failedFlags = `.*(UF|URX|UC|UH|UPE).*`

// HealthQueries returns the PromQL of the guard's signals for namespace ns
// over window, keyed by signal. Series born inside the window count whole,
// as in countOverWindow.
func HealthQueries(ns string, window time.Duration) map[string]string {
	w := model.Duration(window).String()
	count := func(by, sel string) string { return sumOverWindow(by, sel, w) }
	src := "source_workload_namespace, source_workload"
	dst := fmt.Sprintf(`reporter="destination",destination_workload_namespace=%q`, ns)
	srcSide := fmt.Sprintf(`reporter="source",destination_workload_namespace=%q`, ns)
	// One query per metric: increase() drops the metric name, so a
	// selector over two metrics would give series that collide.
	out := map[string]string{
		"denied":         count(src, `istio_requests_total{`+dst+`,response_code="403"}`),
		"denied-by-pod":  count("pod", fmt.Sprintf(`{__name__=~"envoy_.+",namespace=%q,authz_enforce_result="denied"}`, ns)),
		"requests":       count(src, `istio_requests_total{`+srcSide+`}`),
		"errors":         count(src, `istio_requests_total{`+srcSide+`,response_code=~"5..|0"}`),
		"errors-flagged": count(src, `istio_requests_total{`+srcSide+`,response_code!~"5..|0",response_flags=~"`+failedFlags+`"}`), // disjoint from "errors": they add up
		// Plaintext ones are counted as plaintext (opened) already.
		"denied-ztunnel": count(src, `istio_tcp_connections_failed_total{`+dst+`,response_flags="DENY",connection_security_policy="mutual_tls"}`),
	}
	for _, m := range []string{"istio_requests_total", "istio_tcp_connections_opened_total"} {
		out["plaintext "+m] = count(src, m+`{`+dst+`,connection_security_policy!="mutual_tls"}`)
		out["inbound "+m] = count("reporter", m+`{`+dst+`}`)
	}
	return out
}

// Health reads the guard's signals for ns over the window that ends at
// until. No series at all is a Health of zeros: the caller must treat it
// as no data, never as healthy.
func (p *Prometheus) Health(ctx context.Context, ns string, window time.Duration, until time.Time) (Health, error) {
	if window <= 0 {
		return Health{}, fmt.Errorf("guard window must be positive, got %s", window)
	}
	qs := HealthQueries(ns, window)
	read := func(what string) ([]CallerCount, error) {
		q := qs[what]
		v, _, _, err := p.API.Query(ctx, q, until.UTC().Truncate(time.Second))
		if err != nil {
			return nil, fmt.Errorf("query Prometheus at %s: %w\nquery: %s", p.URL, explain(err), q)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return nil, fmt.Errorf("query Prometheus at %s: want a vector, got %s\nquery: %s", p.URL, v.Type(), q)
		}
		return callerCounts(vec), nil
	}
	h := Health{Plaintext: []CallerCount{}, Denied: []CallerCount{}, Requests: []CallerCount{}, Errors: []CallerCount{}}
	for _, sig := range []struct {
		what string
		into *[]CallerCount
	}{{"plaintext istio_requests_total", &h.Plaintext}, {"plaintext istio_tcp_connections_opened_total", &h.Plaintext},
		{"denied", &h.Denied}, {"denied-by-pod", &h.Denied}, {"denied-ztunnel", &h.Denied}, {"requests", &h.Requests}, {"errors", &h.Errors}, {"errors-flagged", &h.Errors}} {
		cs, err := read(sig.what)
		if err != nil {
			return Health{}, err
		}
		*sig.into = merged(append(*sig.into, cs...))
	}
	for _, m := range []string{"istio_requests_total", "istio_tcp_connections_opened_total"} {
		in, err := read("inbound " + m)
		if err != nil {
			return Health{}, err
		}
		h.Inbound += Total(in)
	}
	return h, nil
}

// merged sums the counts of each caller, sorted by caller.
func merged(cs []CallerCount) []CallerCount {
	byCaller := map[string]float64{}
	for _, c := range cs {
		byCaller[c.Caller] += c.Count
	}
	out := make([]CallerCount, 0, len(byCaller))
	for c, n := range byCaller {
		out = append(out, CallerCount{Caller: c, Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Caller < out[j].Caller })
	return out
}

// callerCounts maps samples to callers: "namespace/workload" by the
// source labels, "pod/NAME" by pod, "unknown" for a caller without a
// sidecar (plaintext has no identity); zero counts are dropped.
func callerCounts(vec model.Vector) []CallerCount {
	var out []CallerCount
	for _, s := range vec {
		if s.Value <= 0 {
			continue
		}
		caller := UnknownWorkload
		switch {
		case s.Metric["pod"] != "":
			caller = "pod/" + string(s.Metric["pod"])
		case s.Metric["source_workload"] != "" && s.Metric["source_workload"] != UnknownWorkload:
			caller = string(s.Metric["source_workload_namespace"]) + "/" + string(s.Metric["source_workload"])
		case s.Metric["reporter"] != "":
			caller = string(s.Metric["reporter"])
		}
		out = append(out, CallerCount{Caller: caller, Count: float64(s.Value)})
	}
	return merged(out)
}
