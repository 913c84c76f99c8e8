//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

type trafficKey struct{}

type trafficEnv struct {
	exporter *e2e.Exporter
	prom     *e2e.Prometheus
	dir      string
}

// window is short so the test sees a client disappear within a minute.
const window = "20s"

func plaintextClients(n audit.NamespaceReport) []string {
	var out []string
	for _, c := range n.Traffic.PlaintextClients {
		out = append(out, c.Name())
	}
	return out
}

// TestTraffic feeds Istio-shaped telemetry (a stand-in for the sidecars) to
// a real Prometheus and audits through it.
func TestTraffic(t *testing.T) {
	plain := e2e.Edge("istio_requests_total", "", "orders/orders", "none", 5)
	mtls := e2e.Edge("istio_requests_total", "shop/cart", "orders/orders", "mutual_tls", 20)
	tcp := e2e.Edge("istio_tcp_connections_opened_total", "payments/api", "orders/orders", "mutual_tls", 1)

	f := features.New("the audit sees plaintext callers in Istio telemetry").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			exp, err := e2e.StartExporter()
			if err != nil {
				t.Fatal(err)
			}
			exp.Report(plain, mtls, tcp)
			dir := t.TempDir()
			prom, err := e2e.StartPrometheus(ctx, dir, exp.Addr, false)
			if err != nil {
				exp.Close()
				t.Fatal(err)
			}
			return context.WithValue(ctx, trafficKey{}, &trafficEnv{exporter: exp, prom: prom, dir: dir})
		}).
		Assess("the plaintext client is named and blocks STRICT", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			te := ctx.Value(trafficKey{}).(*trafficEnv)
			var orders audit.NamespaceReport
			err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(context.Context) (bool, error) {
				r, _ := auditJSON(t, c, "-n", "orders", "--prometheus-url", te.prom.URL, "--traffic-window", window)
				orders = namespace(t, r, "orders")
				return orders.Traffic.Inbound.MTLS > 0 && len(orders.Traffic.PlaintextClients) > 0, nil
			})
			if err != nil {
				t.Fatalf("Prometheus never showed the edges: %+v", orders.Traffic)
			}
			if got := plaintextClients(orders); len(got) != 1 || got[0] != "unidentified clients without a sidecar" || orders.Traffic.PlaintextClients[0].Meshed != "no" {
				t.Errorf("plaintext clients = %+v", orders.Traffic.PlaintextClients)
			}
			if objs := findingObjects(orders, audit.CodePlaintextClient); len(objs) != 1 || objs[0] != "Namespace/orders" {
				t.Errorf("PlaintextClient findings on %v", objs)
			}
			if orders.Readiness.Safe || !strings.Contains(strings.Join(orders.Readiness.Blockers, ";"), "plaintext from unidentified clients") {
				t.Errorf("readiness = %+v", orders.Readiness)
			}
			if !strings.Contains(orders.Traffic.Window, "20s since") || !strings.Contains(orders.Traffic.Window, te.prom.URL) {
				t.Errorf("the verdict must name its window and source: %q", orders.Traffic.Window)
			}
			return ctx
		}).
		Assess("an exported graph gives the same verdict offline", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			te := ctx.Value(trafficKey{}).(*trafficEnv)
			file := filepath.Join(te.dir, "traffic.yaml")
			if _, stderr, code := meshmigrate(t, c, "traffic", "export", "--prometheus-url", te.prom.URL, "--traffic-window", window, "-o", file); code != 0 {
				t.Fatalf("traffic export: exit %d: %s", code, stderr)
			}
			saved, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			matchesSchema(t, contract.TrafficGraph, string(saved))
			r, _ := auditJSON(t, c, "-n", "orders", "--traffic-file", file)
			if got := plaintextClients(namespace(t, r, "orders")); len(got) != 1 {
				t.Errorf("offline plaintext clients = %v", got)
			}
			return ctx
		}).
		Assess("the finding clears once the client stops", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			te := ctx.Value(trafficKey{}).(*trafficEnv)
			te.exporter.Stop(plain)
			var orders audit.NamespaceReport
			err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 2*time.Minute, true, func(context.Context) (bool, error) {
				r, _ := auditJSON(t, c, "-n", "orders", "--prometheus-url", te.prom.URL, "--traffic-window", window)
				orders = namespace(t, r, "orders")
				return len(orders.Traffic.PlaintextClients) == 0, nil
			})
			if err != nil {
				t.Fatalf("the plaintext client never aged out of the window: %+v", orders.Traffic.PlaintextClients)
			}
			if len(findingObjects(orders, audit.CodePlaintextClient)) != 0 || orders.Traffic.Status != audit.TrafficObserved || orders.Traffic.Inbound.MTLS == 0 {
				t.Errorf("after the client stopped: %+v %+v", orders.Traffic, orders.Findings)
			}
			// orders still has a DestinationRule with tls DISABLE aimed at it:
			// the gate stays closed for that reason alone.
			blockers := strings.Join(orders.Readiness.Blockers, ";")
			if strings.Contains(blockers, "plaintext from") || !strings.Contains(blockers, "DestinationRule") {
				t.Errorf("blockers = %q", blockers)
			}
			return ctx
		}).
		Assess("bad telemetry input fails clearly", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			te := ctx.Value(trafficKey{}).(*trafficEnv)
			_, stderr, code := meshmigrate(t, c, "audit", "-n", "orders", "--prometheus-url", "http://127.0.0.1:1")
			if code != 1 || !strings.Contains(stderr, "reach Prometheus at http://127.0.0.1:1") {
				t.Errorf("unreachable: exit %d, stderr %q", code, stderr)
			}
			_, stderr, code = meshmigrate(t, c, "audit", "-n", "orders", "--prometheus-url", te.prom.URL, "--traffic-window", "72h")
			if code != 1 || !strings.Contains(stderr, "longer than the retention") {
				t.Errorf("window beyond retention: exit %d, stderr %q", code, stderr)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			if te, ok := ctx.Value(trafficKey{}).(*trafficEnv); ok {
				te.prom.Stop()
				te.exporter.Close()
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
