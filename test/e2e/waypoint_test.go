//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// waypointManifests are back's Service for api and an L7 ALLOW policy on
// api's pods by selector, as a team would have them on sidecars.
func waypointManifests(ns string) string {
	return `apiVersion: v1
kind: Service
metadata: {name: api, namespace: ` + ns + `}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: ` + ns + `, labels: {team: shop}}
spec:
  action: ALLOW
  selector: {matchLabels: {app: api}}
  rules:
  - to:
    - operation: {methods: [GET]}
`
}

// TestAmbientWaypoint: a sidecar namespace whose L7 policy only a waypoint
// can enforce moves to ambient with one. Without the Gateway API the move
// is refused before any change; with it the waypoint phase deploys the
// Gateway and a targetRefs copy of the policy, enroll deletes the original
// before the namespace is labelled, and rollback re-creates it exactly,
// managers included. A plaintext caller that ztunnel reports (as
// "unknown") after front's STRICT makes the guard undo it. istiod's gateway controller and istio-cni are
// stand-ins (e2e.StartWaypoints, e2e.StartCNI); the Gateway API CRDs are
// the real ones from the sigs.k8s.io/gateway-api module. meshmigrate runs
// as a ServiceAccount bound only to the shipped apply ClusterRole.
func TestAmbientWaypoint(t *testing.T) {
	var (
		est    *e2e.Estate
		exp    *e2e.Exporter
		prom   *e2e.Prometheus
		before map[string]any
		prior  *unstructured.Unstructured
	)
	dir := t.TempDir()
	policy := func(ctx context.Context, t *testing.T, c *envconf.Config, name string) *unstructured.Unstructured {
		t.Helper()
		u, err := dynamic.NewForConfigOrDie(c.Client().RESTConfig()).Resource(gvrAuthz).Namespace(est.Back).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return u
	}
	managers := func(u *unstructured.Unstructured) []string {
		var out []string
		for _, f := range u.GetManagedFields() {
			out = append(out, f.Manager)
		}
		return out
	}
	f := features.New("a sidecar namespace with an L7 policy to ambient, with a waypoint, and back").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			installApplyRole(ctx, t, c)
			est = newEstate(ctx, t, c, "ambw", 0)
			installNodeAgents(ctx, t, c)
			if out, stderr, code := run(t, c, kubectl, "rollout", "restart", "deployment/api", "-n", est.Back); code != 0 {
				t.Fatalf("rollout restart: %s %s", out, stderr)
			}
			file := filepath.Join(dir, "back.yaml")
			if err := os.WriteFile(file, []byte(waypointManifests(est.Back)), 0o644); err != nil {
				t.Fatal(err)
			}
			// kubectl apply, as a team does: its manager is kubectl's.
			if out, stderr, code := run(t, c, kubectl, "apply", "-f", file); code != 0 {
				t.Fatalf("kubectl apply: %s %s", out, stderr)
			}
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				pods, err := kube.CoreV1().Pods(est.Back).List(ctx, metav1.ListOptions{LabelSelector: "app=api"})
				if err != nil || len(pods.Items) == 0 {
					return false, nil
				}
				for _, p := range pods.Items {
					if p.Annotations["sidecar.istio.io/status"] == "" || p.DeletionTimestamp != nil {
						return false, nil
					}
				}
				return true, nil
			})
			if err != nil {
				t.Fatalf("back's pods never got sidecars: %v", err)
			}
			stands, stop := context.WithCancel(context.Background())
			t.Cleanup(stop)
			e2e.StartCNI(stands, kube, 500*time.Millisecond, est.Front, est.Back)
			e2e.StartWaypoints(stands, dynamic.NewForConfigOrDie(c.Client().RESTConfig()), 500*time.Millisecond, est.Back)
			exp, prom = telemetry(ctx, t, c, append(est.Series(),
				e2e.Edge("istio_tcp_connections_opened_total", est.Front+"/web", est.Back+"/api", "mutual_tls", 2),
				e2e.Edge("istio_tcp_connections_opened_total", est.Back+"/api", est.Front+"/web", "mutual_tls", 1))...)
			prior = policy(ctx, t, c, "get-only")
			before = touched(ctx, t, c, est.Front, est.Back)
			return ctx
		}).
		Assess("without the Gateway API the move is refused before any change", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			graph := filepath.Join(dir, "traffic.yaml")
			if err := os.WriteFile(graph, []byte(est.Graph()), 0o644); err != nil {
				t.Fatal(err)
			}
			out, _, code := meshmigrate(t, c, "plan", "-n", est.Front+","+est.Back, "--traffic-file", graph, "--dataplane", "ambient", "--authz", "off", "-o", "json", "--min-verify-window", "5s", "--as", migrator)
			if code != 2 || !strings.Contains(out, "the Gateway API is not installed") || !strings.Contains(out, "AmbientL7PolicyOnZtunnel") {
				t.Fatalf("plan: exit %d, want 2: no Gateway API, so enroll is blocked\n%s", code, out)
			}
			file := filepath.Join(dir, "blocked.json")
			if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--prometheus-url", prom.URL, "--bake=0", "--as", migrator); code != 2 || !strings.Contains(out, est.Back+": waypoint: STOP") {
				t.Errorf("apply of the blocked plan: exit %d\n%s\n%s", code, out, stderr)
			}
			if after := touched(ctx, t, c, est.Back); !reflect.DeepEqual(before["Namespace/"+est.Back], after["Namespace/"+est.Back]) || policy(ctx, t, c, "get-only") == nil {
				t.Error("a refused move changed back")
			}
			return ctx
		}).
		Assess("with it, the policy moves to the waypoint and back reaches STRICT in ambient; front's guard undoes STRICT for a plaintext caller ztunnel reports", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			if err := e2e.InstallGatewayAPICRDs(ctx, c.Client().RESTConfig()); err != nil {
				t.Fatal(err)
			}
			file, p := planGraph(t, c, est, dir, est.Graph(), "--dataplane", "ambient", "--authz", "off", "--as", migrator)
			back, _ := p.Namespace(est.Back)
			if wp, _ := back.Phase(plan.PhaseWaypoint); wp.Status != plan.StatusPending || len(wp.Steps) != 2 {
				t.Fatalf("back's waypoint phase %+v", wp)
			}
			b := startMeshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL, "--verify-window", "30s", "--bake", "15s", "--as", migrator)
			b.waitFor(t, est.Front+": strict: guard: watching for 15s", 3*time.Minute)
			// A client without a sidecar calls front/web: ztunnel's inbound
			// passthrough reports it as connection_security_policy
			// "unknown", not the sidecars' "none".
			exp.Report(e2e.Edge("istio_tcp_connections_opened_total", "", est.Front+"/web", "unknown", 2))
			code := b.exit(t, 2*time.Minute)
			out := b.output()
			if code != 2 {
				t.Fatalf("apply: exit %d, want 2 (front's guard undid STRICT)\n%s", code, out)
			}
			for _, want := range []string{
				est.Back + ": waypoint: applied Gateway/waypoint",
				est.Back + ": waypoint: gate waypoint-programmed passed",
				est.Back + ": enroll: deleted AuthorizationPolicy/get-only (recorded for rollback)",
				est.Back + ": strict: guard passed",
				est.Front + ": strict: GUARD FAILED: ",
				"plaintext calls arrived (refused under STRICT) from unknown",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("apply does not say %q:\n%s", want, out)
				}
			}
			if i, j := strings.Index(out, "deleted AuthorizationPolicy/get-only"), strings.Index(out, est.Back+": enroll: labelled"); i < 0 || j < i {
				t.Errorf("the namespace was labelled before the original policy went:\n%s", out)
			}
			if policy(ctx, t, c, "get-only") != nil {
				t.Error("the selector-bound original is still there: ztunnel would enforce it")
			}
			cp := policy(ctx, t, c, "get-only-waypoint")
			if cp == nil {
				t.Fatal("no copy of the policy on the waypoint")
			}
			refs, _, _ := unstructured.NestedSlice(cp.Object, "spec", "targetRefs")
			if _, hasSel := cp.Object["spec"].(map[string]any)["selector"]; hasSel || !reflect.DeepEqual(refs, []any{map[string]any{"group": "", "kind": "Service", "name": "api"}}) {
				t.Errorf("copy spec %v, want targetRefs Service api and no selector", cp.Object["spec"])
			}
			gw, err := dynamic.NewForConfigOrDie(c.Client().RESTConfig()).Resource(e2e.GatewaysGVR).Namespace(est.Back).Get(ctx, "waypoint", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName"); class != "istio-waypoint" || gw.GetLabels()["istio.io/waypoint-for"] != "service" {
				t.Errorf("Gateway %v", gw.Object)
			}
			n, _ := kubernetes.NewForConfigOrDie(c.Client().RESTConfig()).CoreV1().Namespaces().Get(ctx, est.Back, metav1.GetOptions{})
			if n.Labels["istio.io/use-waypoint"] != "waypoint" || n.Labels["istio.io/dataplane-mode"] != "ambient" || n.Labels["istio.io/rev"] != "" {
				t.Errorf("back labels %v", n.Labels)
			}
			if m := mode(t, c, est.Back); m != "STRICT" {
				t.Errorf("back is %s, want STRICT", m)
			}
			if m := mode(t, c, est.Front); m == "STRICT" {
				t.Errorf("front is still STRICT after its guard saw plaintext through ztunnel")
			}
			// The audit no longer finds an L7 policy ztunnel would enforce.
			if out, _, _ := meshmigrate(t, c, "audit", "-n", est.Back, "--no-traffic", "-o", "json"); strings.Contains(out, "AmbientL7PolicyOnZtunnel") {
				t.Errorf("audit still reports AmbientL7PolicyOnZtunnel:\n%s", out)
			}
			return ctx
		}).
		Assess("rollback re-creates the policy exactly, with its managers, and removes the waypoint", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "rollback", "-n", est.Front+","+est.Back, "--all", "--yes", "--as", migrator)
			if code != 0 {
				t.Fatalf("rollback: exit %d\n%s\n%s", code, out, stderr)
			}
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(before, after) {
				b, _ := json.MarshalIndent(before, "", " ")
				a, _ := json.MarshalIndent(after, "", " ")
				t.Errorf("after rollback the objects differ from before:\nbefore: %s\nafter: %s", b, a)
			}
			back := policy(ctx, t, c, "get-only")
			if back == nil {
				t.Fatal("rollback did not re-create get-only")
			}
			if got, want := managers(back), managers(prior); !reflect.DeepEqual(got, want) {
				t.Errorf("get-only's managers %v after rollback, want %v as before", got, want)
			}
			if _, err := dynamic.NewForConfigOrDie(c.Client().RESTConfig()).Resource(e2e.GatewaysGVR).Namespace(est.Back).Get(ctx, "waypoint", metav1.GetOptions{}); err == nil {
				t.Error("the waypoint the plan created outlived the rollback")
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
