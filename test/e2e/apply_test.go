//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
	"sigs.k8s.io/yaml"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

const migrator = "system:serviceaccount:default:migrator"

// installApplyRole creates the shipped apply ClusterRole and binds it to
// the ServiceAccount default/migrator (and nothing to default/outsider).
func installApplyRole(ctx context.Context, t *testing.T, c *envconf.Config) {
	t.Helper()
	bindShippedClusterRole(ctx, t, c, "apply-clusterrole.yaml", "migrator", "outsider")
	// RBAC bindings take a moment to reach the authorizer's cache.
	err := wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Second, true, func(context.Context) (bool, error) {
		_, _, code := meshmigrate(t, c, "status", "-A", "--as", migrator)
		return code == 0, nil
	})
	if err != nil {
		t.Fatal("the migrator's binding never took effect")
	}
}

// TestApplyMigration migrates an estate through every phase, as a
// ServiceAccount bound only to the shipped ClusterRole, re-applies it (no
// change), and rolls it back to exactly the state before.
func TestApplyMigration(t *testing.T) {
	var (
		est    *e2e.Estate
		prom   *e2e.Prometheus
		file   string
		p      *plan.Plan
		before map[string]any
	)
	f := features.New("a full migration, as the migrator ServiceAccount, and its rollback").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			installApplyRole(ctx, t, c)
			est = newEstate(ctx, t, c, "mig", 0)
			_, prom = telemetry(ctx, t, c, est.Series()...)
			file, p = planEstate(t, c, est, t.TempDir())
			before = touched(ctx, t, c, est.Front, est.Back)
			return ctx
		}).
		Assess("without the role, apply is refused before any change", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			_, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--as", "system:serviceaccount:default:outsider")
			if code != 1 || !strings.Contains(stderr, "forbidden") {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			if cp := checkpoint(ctx, t, c, est.Front); cp != nil {
				t.Errorf("a refused apply left a checkpoint: %+v", cp)
			}
			return ctx
		}).
		Assess("a client dry run changes nothing", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--dry-run=client", "--as", migrator)
			if code != 0 || !strings.Contains(out, "nothing was changed") {
				t.Fatalf("dry run: exit %d\n%s\n%s", code, out, stderr)
			}
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(before, after) {
				t.Errorf("a dry run changed the cluster")
			}
			if cp := checkpoint(ctx, t, c, est.Front); cp != nil {
				t.Errorf("a dry run wrote a checkpoint")
			}
			return ctx
		}).
		Assess("apply runs every phase through its gates", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--as", migrator, "--prometheus-url", prom.URL, "--verify-window", "30s")
			if code != 0 {
				t.Fatalf("apply: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
			}
			for _, want := range []string{"gate sidecars-current passed", "gate peer-authentication-in-force passed: STRICT", "gate no-plaintext passed", "gate no-shadow-denials passed", "Done:"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			for _, ns := range []string{est.Front, est.Back} {
				r, _ := auditJSON(t, c, "-n", ns, "--no-traffic")
				n := namespace(t, r, ns)
				if n.Pods.Meshed != n.Pods.Total || n.Pods.Total == 0 {
					t.Errorf("%s: %d of %d pods meshed", ns, n.Pods.Meshed, n.Pods.Total)
				}
				if n.MTLS.Mode != "STRICT" || n.MTLS.Source != "namespace" {
					t.Errorf("%s: mTLS %+v, want STRICT from the namespace", ns, n.MTLS)
				}
				cp := checkpoint(ctx, t, c, ns)
				if cp == nil || cp.PlanID != p.ID || !cp.PhaseDone(plan.PhaseAuthz) {
					t.Fatalf("%s: checkpoint %+v", ns, cp)
				}
				checkRecords(t, cp, p.ID)
			}
			dyn := dynamic.NewForConfigOrDie(c.Client().RESTConfig())
			// back's own PeerAuthentication was reused and made STRICT; front
			// got one named default.
			pa, err := dyn.Resource(gvrPeerAuth).Namespace(est.Back).Get(ctx, "legacy-pa", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if mode, _, _ := unstructured.NestedString(pa.Object, "spec", "mtls", "mode"); mode != "STRICT" {
				t.Errorf("legacy-pa mode %q", mode)
			}
			for _, ns := range []string{est.Front, est.Back} {
				aps, err := dyn.Resource(gvrAuthz).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: plan.LabelPlanID + "=" + p.ID})
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, ap := range aps.Items {
					names = append(names, ap.GetName())
					if ap.GetAnnotations()[plan.AnnotationDryRun] == "true" {
						t.Errorf("%s/%s is still dry-run after enforcement", ns, ap.GetName())
					}
					if ap.GetLabels()[plan.LabelManagedBy] != plan.ManagedBy {
						t.Errorf("%s/%s lacks the managed-by label", ns, ap.GetName())
					}
					if mf := ap.GetManagedFields(); len(mf) == 0 || mf[0].Manager != phases.FieldManager || mf[0].Operation != metav1.ManagedFieldsOperationApply {
						t.Errorf("%s/%s managed fields %+v, want server-side apply by %s", ns, ap.GetName(), mf, phases.FieldManager)
					}
				}
				if len(names) != 2 || !strings.Contains(strings.Join(names, ","), "meshmigrate-allow-nothing") {
					t.Errorf("%s: AuthorizationPolicies %v, want one ALLOW and the allow-nothing", ns, names)
				}
			}
			out, _, code = meshmigrate(t, c, "status", "-n", est.Front+","+est.Back, "--as", migrator)
			if code != 0 || strings.Count(out, p.ID) != 2 || strings.Count(out, "authz") != 2 || !strings.Contains(out, "free") {
				t.Errorf("status: exit %d\n%s", code, out)
			}
			out, _, code = meshmigrate(t, c, "status", "-n", est.Front+","+est.Back, "-o", "json", "--as", migrator)
			if code != 0 {
				t.Errorf("status -o json: exit %d\n%s", code, out)
			}
			matchesSchema(t, contract.Status, out, undoNulls...)
			return ctx
		}).
		Assess("applying again changes nothing", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			mid := touched(ctx, t, c, est.Front, est.Back)
			// As a script does: the summary on stdout, the progress on stderr.
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--as", migrator, "--prometheus-url", prom.URL, "-o", "json")
			if code != 0 || !strings.Contains(stderr, "Done: 0 changes made") {
				t.Fatalf("re-apply: exit %d\n%s\n%s", code, out, stderr)
			}
			// The events, one JSON object a line, then the summary.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			skipped := 0
			for _, l := range lines[:len(lines)-1] {
				matchesSchema(t, contract.ApplyEvent, l)
				var ev phases.Event
				if err := json.Unmarshal([]byte(l), &ev); err != nil {
					t.Fatalf("event %q: %v", l, err)
				}
				if ev.Type == phases.EventStepDone {
					t.Errorf("a re-apply made a change: %s", l)
				}
				if ev.Type == phases.EventPhaseSkipped {
					skipped++
				}
			}
			if skipped < 10 {
				t.Errorf("%d phase-skipped events, want every phase of both namespaces already done:\n%s", skipped, out)
			}
			matchesSchema(t, contract.ApplySummary, lines[len(lines)-1])
			var sum struct {
				Result  string `json:"result"`
				Changes int    `json:"changes"`
			}
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil || sum.Result != "done" || sum.Changes != 0 {
				t.Errorf("re-apply summary %+v (%v), want done with 0 changes:\n%s", sum, err, out)
			}
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(mid, after) {
				t.Errorf("re-applying changed the cluster")
			}
			return ctx
		}).
		Assess("rollback --all restores exactly the state before", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "rollback", "-n", est.Back, "--all", "--dry-run=client", "--as", migrator)
			if code != 0 || !strings.Contains(out, "restored PeerAuthentication/legacy-pa") {
				t.Errorf("rollback dry run: exit %d\n%s\n%s", code, out, stderr)
			}
			for _, ns := range []string{est.Front, est.Back} {
				out, stderr, code := meshmigrate(t, c, "rollback", "-n", ns, "--all", "--yes", "--as", migrator)
				if code != 0 {
					t.Fatalf("rollback %s: exit %d\n%s\n%s", ns, code, out, stderr)
				}
			}
			after := touched(ctx, t, c, est.Front, est.Back)
			if !reflect.DeepEqual(before, after) {
				b, _ := json.MarshalIndent(before, "", " ")
				a, _ := json.MarshalIndent(after, "", " ")
				t.Errorf("after rollback the objects differ from before:\nbefore: %s\nafter: %s", b, a)
			}
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			for _, ns := range []string{est.Front, est.Back} {
				if _, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, phases.CheckpointName, metav1.GetOptions{}); err == nil {
					t.Errorf("%s: the checkpoint outlived a full rollback", ns)
				}
				if _, err := kube.CoordinationV1().Leases(ns).Get(ctx, phases.LeaseName, metav1.GetOptions{}); err == nil {
					t.Errorf("%s: the lock outlived a full rollback", ns)
				}
			}
			// front had no injection before: its pods roll back without a sidecar.
			err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(context.Context) (bool, error) {
				r, _ := auditJSON(t, c, "-n", est.Front, "--no-traffic")
				n := namespace(t, r, est.Front)
				return n.Pods.Meshed == 0 && n.Pods.Total == 2, nil
			})
			if err != nil {
				t.Errorf("front's pods still carry sidecars after the rollback")
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestApplyStalePlan changes a namespace after planning: apply refuses the
// plan with exit 3 and names the change.
func TestApplyStalePlan(t *testing.T) {
	f := features.New("a stale plan is refused").
		Assess("a label changed after planning", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est := newEstate(ctx, t, c, "stale", 0)
			file, _ := planEstate(t, c, est, t.TempDir())
			if _, stderr, code := run(t, c, kubectl, "label", "namespace", est.Front, "team=other", "--overwrite"); code != 0 {
				t.Fatal(stderr)
			}
			before := touched(ctx, t, c, est.Front, est.Back)
			_, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes")
			if code != 3 || !strings.Contains(stderr, "namespace "+est.Front+": label team") || !strings.Contains(stderr, `"other"`) {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(before, after) {
				t.Errorf("a stale plan changed the cluster")
			}
			// An edited plan is refused too, and so is a namespace not in it.
			raw, _ := os.ReadFile(file)
			edited := filepath.Join(t.TempDir(), "edited.yaml")
			_ = os.WriteFile(edited, []byte(strings.Replace(string(raw), "mode: STRICT", "mode: DISABLE", 1)), 0o644)
			if _, stderr, code := meshmigrate(t, c, "apply", "-f", edited, "--yes"); code != 1 || !strings.Contains(stderr, "hash") {
				t.Errorf("edited plan: exit %d, stderr %q", code, stderr)
			}
			if _, stderr, code := meshmigrate(t, c, "apply", "-f", file, "-n", "kube-system", "--yes"); code != 1 || !strings.Contains(stderr, "not in plan") {
				t.Errorf("namespace outside the plan: exit %d, stderr %q", code, stderr)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestApplyLockCrashResume runs two applies on one estate: the second is
// refused, naming the first; the first is killed (SIGKILL) in the middle
// of a rollout; a third run waits for the dead run's lock to expire, takes
// it over and finishes, repeating no step.
func TestApplyLockCrashResume(t *testing.T) {
	f := features.New("concurrent applies, a crash, and a resume").
		Assess("lock, kill, resume", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			// minReadySeconds holds each rollout for 20 s: long enough to
			// catch the first run in the middle of the inject phase.
			est := newEstate(ctx, t, c, "crash", 20)
			file, p := planEstate(t, c, est, t.TempDir())

			first := startMeshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "inject")
			first.waitFor(t, "restarted Deployment/", 60*time.Second)

			_, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "inject")
			if code != 1 || !strings.Contains(stderr, "is locked by") || !strings.Contains(stderr, fmt.Sprintf("pid %d ", first.cmd.Process.Pid)) {
				t.Errorf("second apply: exit %d, stderr %q", code, stderr)
			}

			if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-first.done
			var started int
			for _, ns := range []string{est.Front, est.Back} {
				if cp := checkpoint(ctx, t, c, ns); cp != nil {
					for _, r := range cp.Records {
						if r.State == phases.StateStarted {
							started++
						}
					}
				}
			}
			if started == 0 {
				t.Fatalf("the kill did not land in the middle of a step:\n%s", first.output())
			}

			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "inject", "--wait-for-lock", "2m")
			if code != 0 || !strings.Contains(out, "took over the expired lock") || !strings.Contains(out, "Resuming from the checkpoint") {
				t.Fatalf("resume: exit %d\n%s\n%s", code, out, stderr)
			}
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			for _, w := range []struct{ ns, app string }{{est.Front, "web"}, {est.Back, "api"}} {
				cp := checkpoint(ctx, t, c, w.ns)
				if cp == nil || !cp.PhaseDone(plan.PhaseInject) {
					t.Fatalf("%s: inject not done: %+v", w.ns, cp)
				}
				checkRecords(t, cp, p.ID)
				// One restart, one new ReplicaSet: the resumed run re-applied
				// the same restartedAt rather than restarting again.
				rss, err := kube.AppsV1().ReplicaSets(w.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + w.app})
				if err != nil {
					t.Fatal(err)
				}
				if len(rss.Items) != 2 {
					t.Errorf("%s/%s has %d ReplicaSets, want 2 (restarted exactly once)", w.ns, w.app, len(rss.Items))
				}
			}
			out, _, _ = meshmigrate(t, c, "status", "-n", est.Front)
			if !strings.Contains(out, "inject") || !strings.Contains(out, "done") || !strings.Contains(out, "free") {
				t.Errorf("status after the resume:\n%s", out)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestApplyVerifyGate keeps STRICT back while a plaintext client is
// reported, names it, and lets STRICT through once it is gone.
func TestApplyVerifyGate(t *testing.T) {
	f := features.New("the verify gate").
		Assess("plaintext blocks STRICT until it stops", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est := newEstate(ctx, t, c, "verify", 0)
			plain := e2e.Edge("istio_requests_total", "", est.Back+"/api", "none", 3)
			exp, prom := telemetry(ctx, t, c, append(est.Series(), plain)...)
			file, _ := planEstate(t, c, est, t.TempDir())

			if out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "permissive"); code != 0 {
				t.Fatalf("apply through permissive: exit %d\n%s\n%s", code, out, stderr)
			}
			// The plaintext client keeps calling after the namespace was
			// meshed: the gate, reading only the time since, sees it.
			time.Sleep(3 * time.Second)
			out, _, code := meshmigrate(t, c, "verify", "-n", est.Back, "--prometheus-url", prom.URL, "--traffic-window", "30s")
			if code != 2 || !strings.Contains(out, "unidentified clients") {
				t.Errorf("verify: exit %d\n%s", code, out)
			}
			out, _, _ = meshmigrate(t, c, "verify", "-n", est.Back, "--prometheus-url", prom.URL, "--traffic-window", "30s", "-o", "json")
			matchesSchema(t, contract.Verify, out)
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL)
			if code != 2 || !strings.Contains(out, "gate no-plaintext failed") || !strings.Contains(out, "unidentified clients") {
				t.Fatalf("apply through strict: exit %d\n%s\n%s", code, out, stderr)
			}
			r, _ := auditJSON(t, c, "-n", est.Back, "--no-traffic")
			if m := namespace(t, r, est.Back).MTLS.Mode; m != "PERMISSIVE" {
				t.Errorf("a failed gate let %s go %s", est.Back, m)
			}
			out, _, _ = meshmigrate(t, c, "status", "-n", est.Back)
			if !strings.Contains(out, "no-plaintext failed") {
				t.Errorf("status does not show the failed gate:\n%s", out)
			}

			exp.Stop(plain)
			err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 90*time.Second, true, func(context.Context) (bool, error) {
				_, _, code := meshmigrate(t, c, "verify", "-n", est.Back, "--prometheus-url", prom.URL, "--traffic-window", "5s")
				return code == 0, nil
			})
			if err != nil {
				t.Fatal("verify never passed after the plaintext client stopped")
			}
			out, stderr, code = meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL, "--verify-window", "5s")
			if code != 0 {
				t.Fatalf("apply after the client stopped: exit %d\n%s\n%s", code, out, stderr)
			}
			r, _ = auditJSON(t, c, "-n", est.Back, "--no-traffic")
			if m := namespace(t, r, est.Back).MTLS.Mode; m != "STRICT" {
				t.Errorf("%s is %s after the gate passed", est.Back, m)
			}

			// Back to PERMISSIVE: the hand-made policy returns to its own
			// mode, the earlier phases stay done, and STRICT can be applied
			// again.
			if out, stderr, code := meshmigrate(t, c, "rollback", "-n", est.Back, "--to", "permissive", "--yes"); code != 0 || !strings.Contains(out, "restored PeerAuthentication/legacy-pa") {
				t.Fatalf("rollback --to permissive: exit %d\n%s\n%s", code, out, stderr)
			}
			r, _ = auditJSON(t, c, "-n", est.Back, "--no-traffic")
			if n := namespace(t, r, est.Back); n.MTLS.Mode != "PERMISSIVE" || n.MTLS.Policy != est.Back+"/legacy-pa" || n.Pods.Meshed != n.Pods.Total {
				t.Errorf("after rollback --to permissive: mTLS %+v, %d/%d meshed", n.MTLS, n.Pods.Meshed, n.Pods.Total)
			}
			if cp := checkpoint(ctx, t, c, est.Back); cp == nil || !cp.PhaseDone(plan.PhasePermissive) || cp.PhaseDone(plan.PhaseStrict) {
				t.Errorf("checkpoint after rollback --to permissive: %+v", cp)
			}
			out, stderr, code = meshmigrate(t, c, "apply", "-f", file, "--yes", "-n", est.Back, "--through", "strict", "--prometheus-url", prom.URL, "--verify-window", "5s")
			if code != 0 || !strings.Contains(out, "inject: already done") || !strings.Contains(out, "applied PeerAuthentication/legacy-pa") {
				t.Errorf("strict again after the rollback: exit %d\n%s\n%s", code, out, stderr)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestApplyUnderNamespacedRole migrates an estate as a ServiceAccount that
// holds the shipped Role in the estate's namespaces only (plus the small
// ClusterRole for cluster-scoped reads): a team migrating its own
// namespaces, and refused anywhere else.
func TestApplyUnderNamespacedRole(t *testing.T) {
	f := features.New("a team migrates its namespaces under the namespaced Role").
		Assess("plan, apply, status and rollback within the team's namespaces", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est := newEstate(ctx, t, c, "team", 0)
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			root, _ := e2e.RepoRoot()
			raw, err := os.ReadFile(filepath.Join(root, "deploy", "rbac", "apply-role.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			docs := strings.Split(string(raw), "\n---\n")
			if len(docs) != 2 {
				t.Fatalf("apply-role.yaml holds %d documents, want the Role and the ClusterRole", len(docs))
			}
			var role rbacv1.Role
			var cluster rbacv1.ClusterRole
			if err := yaml.Unmarshal([]byte(docs[0]), &role); err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal([]byte(docs[1]), &cluster); err != nil {
				t.Fatal(err)
			}
			if _, err := kube.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "team"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "team", Namespace: "default"}}
			for _, ns := range []string{est.Front, est.Back} {
				r := role.DeepCopy()
				r.Namespace = ns
				if _, err := kube.RbacV1().Roles(ns).Create(ctx, r, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshmigrate-team"},
					RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name}, Subjects: subject}
				if _, err := kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := kube.RbacV1().ClusterRoles().Create(ctx, &cluster, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "meshmigrate-team-cluster"},
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: cluster.Name}, Subjects: subject}
			if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			const team = "system:serviceaccount:default:team"
			dir := t.TempDir()
			graph := filepath.Join(dir, "traffic.yaml")
			if err := os.WriteFile(graph, []byte(est.Graph()), 0o644); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "plan.yaml")
			var out, stderr string
			var code int
			err = wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Second, true, func(context.Context) (bool, error) {
				out, stderr, code = meshmigrate(t, c, "plan", "-n", est.Front+","+est.Back, "--traffic-file", graph, "-o", "yaml", "--as", team)
				return code == 0, nil
			})
			if err != nil {
				t.Fatalf("plan under the Role: exit %d\n%s", code, stderr)
			}
			if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			before := touched(ctx, t, c, est.Front, est.Back)
			if out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--through", "permissive", "--yes", "--as", team); code != 0 {
				t.Fatalf("apply under the Role: exit %d\n%s\n%s", code, out, stderr)
			}
			if out, stderr, code := meshmigrate(t, c, "status", "-n", est.Front+","+est.Back, "--as", team); code != 0 || strings.Count(out, "permissive") != 2 {
				t.Errorf("status under the Role: exit %d\n%s\n%s", code, out, stderr)
			}
			if _, stderr, code := meshmigrate(t, c, "rollback", "-n", "kube-public", "--all", "--yes", "--as", team); code != 1 || !strings.Contains(stderr, "forbidden") {
				t.Errorf("rollback outside the team's namespaces: exit %d, %s", code, stderr)
			}
			for _, ns := range []string{est.Front, est.Back} {
				if out, stderr, code := meshmigrate(t, c, "rollback", "-n", ns, "--all", "--yes", "--as", team); code != 0 {
					t.Fatalf("rollback %s under the Role: exit %d\n%s\n%s", ns, code, out, stderr)
				}
			}
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(before, after) {
				t.Errorf("the rollback under the Role did not restore the estate")
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
