package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Series is one Istio metric series the exporter reports.
type Series struct {
	Metric string            // istio_requests_total or istio_tcp_connections_opened_total
	Labels map[string]string // Istio's standard labels (docs/istio.md 3.1)
	// PerScrape is how much the counter grows between two scrapes.
	PerScrape float64
	// PodsOf ("namespace/app"), when set, reports the series once per
	// running pod of that app, with its `pod` label, as Prometheus'
	// kubernetes-pods job scrapes each sidecar: the series follow the
	// pods through rollouts.
	PodsOf string
	value  float64
}

// Edge returns the destination-side series a server sidecar (or ztunnel)
// reports for a call from src (namespace/workload; "" for a client without
// a sidecar) to dst, secured with csp ("mutual_tls", "none", or ztunnel's
// "unknown"). The caller's principal is its service account's, as the
// estate's pods run: the namespace's default one.
func Edge(metric, src, dst, csp string, perScrape float64) Series {
	srcNS, srcWL, _ := strings.Cut(src, "/")
	dstNS, dstWL, _ := strings.Cut(dst, "/")
	principal := "unknown"
	if src == "" {
		srcNS, srcWL = "unknown", "unknown"
	} else if csp == "mutual_tls" {
		principal = "spiffe://cluster.local/ns/" + srcNS + "/sa/default"
	}
	return Series{Metric: metric, PerScrape: perScrape, Labels: map[string]string{
		"reporter": "destination", "source_workload_namespace": srcNS, "source_workload": srcWL, "source_principal": principal,
		"destination_workload_namespace": dstNS, "destination_workload": dstWL, "destination_service_name": dstWL,
		"destination_service": dstWL + "." + dstNS + ".svc.cluster.local", "connection_security_policy": csp,
		"request_protocol": "http", "response_code": "200",
	}}
}

// Exporter is a STAND-IN FOR THE SIDECARS' TELEMETRY (there is no Envoy
// here): an HTTP endpoint on 127.0.0.1 that serves Istio-shaped counters in
// Prometheus' text format, growing at every scrape, for a real Prometheus to
// scrape. The test decides which edges exist, and can stop reporting one.
type Exporter struct {
	Addr string
	// Pods lists the running pods of an app in a namespace, for the
	// series reported per pod (Series.PodsOf).
	Pods   func(namespace, app string) []string
	mu     sync.Mutex
	series map[string]*Series
	perPod map[string]float64
	srv    *http.Server
}

// StartExporter serves the series on a free loopback port.
func StartExporter() (*Exporter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &Exporter{Addr: ln.Addr().String(), series: map[string]*Series{}, perPod: map[string]float64{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", e.serve)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
	return e, nil
}

func key(s Series) string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(s.Metric + "{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s=%q", k, s.Labels[k])
	}
	b.WriteString("}")
	if s.PodsOf != "" {
		// One entry per app, expanded per pod when served.
		b.WriteString(" per pod of " + s.PodsOf)
	}
	return b.String()
}

// Report adds series (or keeps them growing if already reported).
func (e *Exporter) Report(series ...Series) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range series {
		if _, ok := e.series[key(s)]; !ok {
			s := s
			e.series[key(s)] = &s
		}
	}
}

// Stop stops reporting series, as when a client goes away: Prometheus marks
// them stale and they age out of the window.
func (e *Exporter) Stop(series ...Series) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range series {
		delete(e.series, key(s))
	}
}

func (e *Exporter) serve(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	keys := make([]string, 0, len(e.series))
	for k := range e.series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	typed := map[string]bool{}
	for _, k := range keys {
		s := e.series[k]
		if !typed[s.Metric] {
			fmt.Fprintf(w, "# TYPE %s counter\n", s.Metric)
			typed[s.Metric] = true
		}
		if s.PodsOf == "" {
			s.value += s.PerScrape
			fmt.Fprintf(w, "%s %g\n", k, s.value)
			continue
		}
		ns, app, _ := strings.Cut(s.PodsOf, "/")
		if e.Pods == nil {
			continue
		}
		for _, pod := range e.Pods(ns, app) {
			one := Series{Metric: s.Metric, Labels: map[string]string{"pod": pod, "app": app, "namespace": ns}}
			for l, v := range s.Labels {
				one.Labels[l] = v
			}
			pk := key(one)
			e.perPod[pk] += s.PerScrape
			fmt.Fprintf(w, "%s %g\n", pk, e.perPod[pk])
		}
	}
}

// Close stops the exporter.
func (e *Exporter) Close() error { return e.srv.Close() }

// Prometheus is a real Prometheus server (Debian's package, or any
// `prometheus` on PATH) run on loopback, scraping the exporter every second.
type Prometheus struct {
	URL string
	cmd *exec.Cmd
}

// StartPrometheus starts Prometheus with its data in dir, scraping target.
// A detached Prometheus outlives this process (the demo's); its pid is in
// dir/prometheus.pid.
func StartPrometheus(ctx context.Context, dir, target string, detach bool) (*Prometheus, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, errors.New("the e2e suite needs a real Prometheus: `make prometheus` installs Debian's package (apt-get install prometheus)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: istio-sidecar-telemetry-stand-in
    static_configs:
      - targets: [%q]
`, target)), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--storage.tsdb.retention.time=1d")
	cmd.Stdout, cmd.Stderr = logf, logf
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		return nil, err
	}
	p := &Prometheus{URL: "http://" + addr, cmd: cmd}
	// Ready is not enough: Prometheus hands discovered targets to its
	// scrape loops on a 5-second tick, so its first scrape comes up to
	// about 5 s after /-/ready. Wait for two scrapes of the target, so
	// every series exists (and has a baseline) before a test acts.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if n, err := p.scrapes(ctx); err == nil && n >= 2 {
			return p, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.Stop()
	return nil, fmt.Errorf("prometheus on %s did not scrape %s twice within 30s: see %s", addr, target, logf.Name())
}

// scrapes counts the successful scrapes of the last minute.
func (p *Prometheus) scrapes(ctx context.Context) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/api/v1/query?query="+url.QueryEscape("sum(sum_over_time(up[1m]))"), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Data.Result) == 0 {
		return 0, err
	}
	v, _ := body.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(v, 64)
}

// Stop ends the Prometheus process.
func (p *Prometheus) Stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// DemoTraffic is what the demo's estate sends: the legacy client (no
// sidecar) calls orders in plaintext, shop's cart calls orders over mTLS,
// and payments' api opens mTLS connections to the shop's cart.
var DemoTraffic = []Series{
	Edge("istio_requests_total", "", "orders/orders", "none", 2),
	Edge("istio_requests_total", "shop/cart", "orders/orders", "mutual_tls", 25),
	Edge("istio_tcp_connections_opened_total", "payments/api", "shop/cart", "mutual_tls", 1),
}
