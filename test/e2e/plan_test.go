//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

// planTraffic is a saved traffic graph for the scenario: legacy-client
// calls orders in plaintext (it has no sidecar yet), shop/cart and
// payments/api call it over mTLS.
const planTraffic = `apiVersion: meshmigrate.io/v1alpha1
kind: TrafficGraph
source: recorded for the plan e2e test
window: 168h
start: "2026-01-01T00:00:00Z"
end: "2026-01-08T00:00:00Z"
edges:
- source: {namespace: legacy, workload: legacy-client}
  destination: {namespace: orders, workload: orders, service: orders}
  protocol: http
  security: plaintext
  count: 30
- source: {namespace: shop, workload: cart, principal: cluster.local/ns/shop/sa/default}
  destination: {namespace: orders, workload: orders, service: orders}
  protocol: http
  security: mutual_tls
  count: 100
- source: {namespace: payments, workload: api, principal: cluster.local/ns/payments/sa/default}
  destination: {namespace: orders, workload: orders, service: orders}
  protocol: tcp
  security: mutual_tls
  count: 5
`

// TestPlan plans the scenario estate and checks that every manifest the
// plan would apply is accepted by the real API server (server-side dry-run,
// Istio's CRD schemas and CEL rules included). --force-conflicts: the plan
// takes over fields another manager set (orders' PeerAuthentication was
// created by a client), as apply will, having recorded them for rollback.
func TestPlan(t *testing.T) {
	var (
		p   *plan.Plan
		dir string
	)
	f := features.New("plan the scenario estate").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			var err error
			if dir, err = os.MkdirTemp("", "meshmigrate-plan-"); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("the plan orders, blocks and names the cluster", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			traffic := filepath.Join(dir, "traffic.yaml")
			if err := os.WriteFile(traffic, []byte(planTraffic), 0o644); err != nil {
				t.Fatal(err)
			}
			planFile := filepath.Join(dir, "plan.yaml")
			out, stderr, code := meshmigrate(t, c, "plan", "-n", "legacy,shop,payments,orders", "--traffic-file", traffic,
				"--port-exception", "orders/orders:9090", "--force-strict", "orders", "--out-dir", filepath.Join(dir, "manifests"), "-o", "yaml")
			// shop keeps a hostNetwork DaemonSet and an opted-out Deployment
			// outside the mesh: its STRICT step is blocked.
			if code != 2 {
				t.Fatalf("plan: exit %d, want 2 (blocked steps)\nstderr: %s", code, stderr)
			}
			if err := os.WriteFile(planFile, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			matchesSchema(t, contract.MigrationPlan, out)
			var err error
			if p, err = plan.Load(planFile); err != nil {
				t.Fatalf("the printed plan does not load: %v", err)
			}
			ks, err := kubernetes.NewForConfigOrDie(c.Client().RESTConfig()).CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Cluster.UID != string(ks.UID) || p.Cluster.UID == "" {
				t.Errorf("plan names cluster %q, kube-system UID is %q", p.Cluster.UID, ks.UID)
			}
			legacy, _ := p.Namespace("legacy")
			orders, _ := p.Namespace("orders")
			shop, _ := p.Namespace("shop")
			if legacy.Wave >= orders.Wave {
				t.Errorf("legacy (wave %d) calls orders (wave %d) in plaintext: it must be meshed first", legacy.Wave, orders.Wave)
			}
			if l := legacy.Phases[0].Steps[0]; l.Labels["istio-injection"] != "enabled" || l.Status != plan.StatusPending {
				t.Errorf("legacy label step = %+v", l)
			}
			strict, _ := shop.Phase(plan.PhaseStrict)
			if strict.Status != plan.StatusBlocked || !strings.Contains(strict.Reason, "DaemonSet/node-agent stays out of the mesh") || !strings.Contains(strict.Reason, "Deployment/batch") {
				t.Errorf("shop strict = %s: %s", strict.Status, strict.Reason)
			}
			ostrict, _ := orders.Phase(plan.PhaseStrict)
			last := ostrict.Steps[len(ostrict.Steps)-1]
			if !last.Forced || !strings.Contains(last.Reason, "DestinationRule legacy/orders-plaintext") {
				t.Errorf("orders STRICT must be marked forced over the DestinationRule: %+v", last)
			}
			authz, _ := orders.Phase(plan.PhaseAuthz)
			var principals []string
			for _, st := range authz.Steps {
				if st.Target == "AuthorizationPolicy/meshmigrate-allow-orders" && st.Object != nil {
					for _, r := range st.Object["spec"].(map[string]any)["rules"].([]any) {
						if from, ok := r.(map[string]any)["from"]; ok {
							principals = append(principals, from.([]any)[0].(map[string]any)["source"].(map[string]any)["principals"].([]any)[0].(string))
						}
					}
					break
				}
			}
			sort.Strings(principals)
			// legacy-client's principal is predicted from its service account:
			// the plan meshes it before orders goes STRICT.
			want := "cluster.local/ns/legacy/sa/default,cluster.local/ns/payments/sa/default,cluster.local/ns/shop/sa/default"
			if strings.Join(principals, ",") != want {
				t.Errorf("orders allows %v, want %s", principals, want)
			}
			return ctx
		}).
		Assess("every manifest passes server-side dry-run", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			root := filepath.Join(dir, "manifests")
			files, _ := filepath.Glob(filepath.Join(root, "*", "[0-9]*.yaml"))
			if len(files) < 8 {
				t.Fatalf("only %d manifest files: %v", len(files), files)
			}
			var kinds []string
			for _, file := range files {
				raw, _ := os.ReadFile(file)
				for _, k := range []string{"kind: PeerAuthentication", "kind: AuthorizationPolicy", "kind: Namespace"} {
					if strings.Contains(string(raw), k) {
						kinds = append(kinds, k)
					}
				}
				out, stderr, code := run(t, c, kubectl, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "--field-manager", "kubectl-meshmigrate", "-f", file)
				if code != 0 {
					t.Errorf("%s: exit %d\n%s%s", file, code, out, stderr)
				}
			}
			for _, k := range []string{"kind: PeerAuthentication", "kind: AuthorizationPolicy", "kind: Namespace"} {
				if !strings.Contains(strings.Join(kinds, "\n"), k) {
					t.Errorf("no manifest holds %s", k)
				}
			}
			for _, ns := range []string{"legacy", "orders"} {
				out, stderr, code := run(t, c, kubectl, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "--field-manager", "kubectl-meshmigrate", "-k", filepath.Join(root, ns))
				if code != 0 {
					t.Errorf("kustomization of %s: exit %d\n%s%s", ns, code, out, stderr)
				}
			}
			// Dry-run changed nothing.
			r, _ := auditJSON(t, c, "-n", "legacy", "--no-traffic")
			if got := namespace(t, r, "legacy").Injection.Mode; got != "none" {
				t.Errorf("legacy injection after dry-run = %s, want none", got)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			os.RemoveAll(dir)
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
