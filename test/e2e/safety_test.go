//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// callerGraph is a recorded graph where front's web calls back's api in
// plaintext (front has no sidecar yet) and api answers web over mTLS: the
// plan meshes front first, and back waits for it (calledBy).
func callerGraph(est *e2e.Estate) string {
	return fmt.Sprintf(`apiVersion: meshmigrate.io/v1alpha1
kind: TrafficGraph
source: recorded for a safety e2e story
window: 24h
start: "2026-01-01T00:00:00Z"
end: "2026-01-02T00:00:00Z"
edges:
- source: {namespace: %[1]s, workload: web}
  destination: {namespace: %[2]s, workload: api, service: api}
  protocol: http
  security: plaintext
  count: 100
- source: {namespace: %[2]s, workload: api, principal: cluster.local/ns/%[2]s/sa/default}
  destination: {namespace: %[1]s, workload: web, service: web}
  protocol: http
  security: mutual_tls
  count: 50
`, est.Front, est.Back)
}

// TestSafetyThinWindowGate: the verify gate does not pass on a few seconds
// of traffic, nor while a caller the plan expects to clear has not been
// seen arriving over mTLS, whatever the namespace's other traffic.
func TestSafetyThinWindowGate(t *testing.T) {
	var (
		est  *e2e.Estate
		exp  *e2e.Exporter
		prom *e2e.Prometheus
		file string
		p    *plan.Plan
	)
	f := features.New("thin telemetry never passes the verify gate").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est = newEstate(ctx, t, c, "thin", 0)
			// Live: api answers web, and an unrelated meshed client calls
			// api; web's own calls to api (the caller the plan expects to
			// clear) are not seen yet.
			exp, prom = telemetry(ctx, t, c,
				e2e.Edge("istio_requests_total", est.Back+"/api", est.Front+"/web", "mutual_tls", 5),
				e2e.Edge("istio_requests_total", "monitoring/prober", est.Back+"/api", "mutual_tls", 1))
			// The default floor: 10 minutes.
			file, p = planGraph(t, c, est, t.TempDir(), callerGraph(est), "--min-verify-window", "10m")
			if p.Options.MinVerifyWindow != "10m0s" {
				t.Fatalf("the plan records minVerifyWindow %q", p.Options.MinVerifyWindow)
			}
			if back, _ := p.Namespace(est.Back); len(back.CalledBy) != 1 || back.CalledBy[0] != est.Front {
				t.Fatalf("back is not planned after its caller: %+v", back.CalledBy)
			}
			return ctx
		}).
		Assess("a --verify-window under the plan's floor is refused before any change", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			_, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--prometheus-url", prom.URL, "--verify-window", "30s")
			if code != 1 || !strings.Contains(stderr, "--verify-window 30s is under plan "+p.ID+"'s minimum of 10m0s") {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			if cp := checkpoint(ctx, t, c, est.Front); cp != nil {
				t.Errorf("a refused apply left a checkpoint: %+v", cp.Records)
			}
			return ctx
		}).
		Assess("right after meshing, the window is too short to judge: inconclusive, STRICT not applied", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL)
			if code != 2 || !strings.Contains(out, "gate no-plaintext inconclusive: the window is") || !strings.Contains(out, "under the plan's minimum of 10m0s") {
				t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
			}
			for _, ns := range []string{est.Front, est.Back} {
				if r, _ := auditJSON(t, c, "-n", ns, "--no-traffic"); namespace(t, r, ns).MTLS.Mode == "STRICT" {
					t.Errorf("%s went STRICT on a window under the floor", ns)
				}
			}
			return ctx
		}).
		Assess("judged anyway (recorded), a plan's expected caller not yet seen keeps the gate inconclusive", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "-n", est.Back,
				"--prometheus-url", prom.URL, "--verify-window", "30s", "--allow-short-verify-window")
			if code != 2 || !strings.Contains(out, "caller "+est.Front+"/web: the plan expects it to arrive over mTLS") {
				t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
			}
			cp := checkpoint(ctx, t, c, est.Back)
			if cp == nil || len(cp.Overrides) == 0 || !strings.Contains(cp.Overrides[0], "--allow-short-verify-window") {
				t.Errorf("the override is not recorded in the checkpoint: %+v", cp)
			}
			if r, _ := auditJSON(t, c, "-n", est.Back, "--no-traffic"); namespace(t, r, est.Back).MTLS.Mode == "STRICT" {
				t.Error("back went STRICT before its expected caller was seen over mTLS")
			}
			return ctx
		}).
		Assess("once the caller arrives over mTLS, the gate passes and STRICT goes on", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			exp.Report(e2e.Edge("istio_requests_total", est.Front+"/web", est.Back+"/api", "mutual_tls", 3))
			time.Sleep(3 * time.Second) // a few scrapes
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "-n", est.Back,
				"--prometheus-url", prom.URL, "--verify-window", "30s", "--allow-short-verify-window")
			if code != 0 || !strings.Contains(out, "gate no-plaintext passed") {
				t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
			}
			if r, _ := auditJSON(t, c, "-n", est.Back, "--no-traffic"); namespace(t, r, est.Back).MTLS.Mode != "STRICT" {
				t.Error("back is not STRICT after its gate passed")
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestSafetyRollbackCallerOfStrict: rolling back a caller alone would send
// its calls to a STRICT namespace in plaintext; rollback refuses, naming
// it, and rolls both back together.
func TestSafetyRollbackCallerOfStrict(t *testing.T) {
	var (
		est    *e2e.Estate
		prom   *e2e.Prometheus
		file   string
		before map[string]any
	)
	f := features.New("rollback never unmeshes a caller of a STRICT namespace").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est = newEstate(ctx, t, c, "dep", 0)
			_, prom = telemetry(ctx, t, c, est.Series()...)
			file, _ = planGraph(t, c, est, t.TempDir(), callerGraph(est))
			before = touched(ctx, t, c, est.Front, est.Back)
			return ctx
		}).
		Assess("both namespaces go STRICT, the caller first", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL, "--verify-window", "30s")
			if code != 0 {
				t.Fatalf("apply: exit %d\n%s\n%s", code, out, stderr)
			}
			if r, _ := auditJSON(t, c, "-n", est.Back, "--no-traffic"); namespace(t, r, est.Back).MTLS.Mode != "STRICT" {
				t.Fatal("back is not STRICT")
			}
			return ctx
		}).
		Assess("rollback of the caller alone is refused, naming the STRICT namespace, and changes nothing", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			mid := touched(ctx, t, c, est.Front, est.Back)
			out, stderr, code := meshmigrate(t, c, "rollback", "-n", est.Front, "--all", "--yes")
			if code != 1 || !strings.Contains(stderr, est.Back+" (STRICT since") || !strings.Contains(stderr, "called by "+est.Front) ||
				!strings.Contains(stderr, "--break-dependents") || !strings.Contains(stderr, "nothing was changed") {
				t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
			}
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(mid, after) {
				t.Error("a refused rollback changed the estate")
			}
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			if ns, _ := kube.CoreV1().Namespaces().Get(ctx, est.Front, metav1.GetOptions{}); ns.Labels["istio-injection"] != "enabled" {
				t.Errorf("front lost its injection label: %v", ns.Labels)
			}
			return ctx
		}).
		Assess("rolled back together, both return exactly to the state before", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "rollback", "-n", est.Front+","+est.Back, "--all", "--yes")
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
			}
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(before, after) {
				t.Errorf("rollback together did not restore the estate:\nbefore %v\nafter  %v", before, after)
			}
			for _, ns := range []string{est.Front, est.Back} {
				if cp := checkpoint(ctx, t, c, ns); cp != nil {
					t.Errorf("%s: a checkpoint outlived the full rollback", ns)
				}
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
