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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

const ambientNS = "amb-audit"

// ambientPod is a bare pod of app in ambientNS. captured stands in for
// istio-cni (there is none here): the annotation the CNI agent writes on
// a pod it redirected to ztunnel (docs/istio.md 1.6).
func ambientPod(app string, captured bool, labels map[string]string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ambientNS, Name: app, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
			Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}}}
	for k, v := range labels {
		p.Labels[k] = v
	}
	if captured {
		p.Annotations = map[string]string{"ambient.istio.io/redirection": "enabled"}
	}
	return p
}

// nodeAgent is a DaemonSet shaped like Istio's ztunnel or istio-cni chart
// (name, selector label, image); kwok's nodes "run" its pods without
// pulling the image, so its status turns ready as a real one would.
func nodeAgent(name, selectorKey, image string) *appsv1.DaemonSet {
	labels := map[string]string{selectorKey: name}
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: name},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers:  []corev1.Container{{Name: name, Image: image}},
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}}}}
}

// installNodeAgents creates ztunnel and istio-cni DaemonSets shaped like
// Istio's charts, waits until kwok's nodes run them, and removes them when
// the test ends.
func installNodeAgents(ctx context.Context, t *testing.T, c *envconf.Config) {
	t.Helper()
	kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
	for _, ds := range []*appsv1.DaemonSet{nodeAgent("ztunnel", "app", "docker.io/istio/ztunnel:1.29.1"), nodeAgent("istio-cni-node", "k8s-app", "docker.io/istio/install-cni:1.29.1")} {
		if _, err := kube.AppsV1().DaemonSets("istio-system").Create(ctx, ds, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, name := range []string{"ztunnel", "istio-cni-node"} {
			_ = kube.AppsV1().DaemonSets("istio-system").Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, name := range []string{"ztunnel", "istio-cni-node"} {
			ds, err := kube.AppsV1().DaemonSets("istio-system").Get(ctx, name, metav1.GetOptions{})
			if err != nil || ds.Status.DesiredNumberScheduled == 0 || ds.Status.NumberReady < ds.Status.DesiredNumberScheduled {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("the node agents' DaemonSets never became ready: %v", err)
	}
}

func findingsByCode(r *audit.Report) map[string][]audit.Finding {
	out := map[string][]audit.Finding{}
	for _, f := range r.Findings {
		out[f.Code] = append(out[f.Code], f)
	}
	for _, n := range r.Namespaces {
		for _, f := range n.Findings {
			out[f.Code] = append(out[f.Code], f)
		}
	}
	return out
}

// TestAmbientAudit: an ambient namespace on the real API server, read by
// the plugin: a pod ztunnel did not capture, one opted out, a
// selector-bound ALLOW policy with L7 rules (an outage under ztunnel), and
// no node agents; once ztunnel and istio-cni DaemonSets run, that finding
// goes away.
func TestAmbientAudit(t *testing.T) {
	f := features.New("the audit of an ambient namespace").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			ic := istioclient.NewForConfigOrDie(c.Client().RESTConfig())
			if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ambientNS,
				Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, p := range []*corev1.Pod{ambientPod("web", true, nil), ambientPod("api", false, nil), ambientPod("batch", false, map[string]string{"istio.io/dataplane-mode": "none"})} {
				if _, err := kube.CoreV1().Pods(ambientNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			ap := &clientsecv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ambientNS, Name: "api-get-only"},
				Spec: securityv1beta1.AuthorizationPolicy{Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "api"}},
					Action: securityv1beta1.AuthorizationPolicy_ALLOW,
					Rules:  []*securityv1beta1.Rule{{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Methods: []string{"GET"}}}}}}}}
			if _, err := ic.SecurityV1().AuthorizationPolicies(ambientNS).Create(ctx, ap, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("missing node agents, an uncaptured pod, an opt-out and an L7 policy on ztunnel are reported", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			r, code := auditJSON(t, c, "-n", ambientNS, "--no-traffic")
			if code != 2 {
				t.Errorf("exit %d, want 2 (errors found)", code)
			}
			got := findingsByCode(r)
			for code, want := range map[string]string{
				audit.CodeAmbientNodeAgentsMissing: "ztunnel (carries their traffic): no DaemonSet in istio-system or kube-system",
				audit.CodeAmbientPodNotCaptured:    "Pod/api",
				audit.CodeAmbientWorkloadOptedOut:  "Pod/batch",
				audit.CodeAmbientL7PolicyOnZtunnel: "AuthorizationPolicy/api-get-only",
			} {
				fs := got[code]
				if len(fs) != 1 || !strings.Contains(fs[0].Object+" "+fs[0].Message, want) {
					t.Errorf("%s: %+v, want one naming %q", code, fs, want)
				}
			}
			if fs := got[audit.CodeAmbientPodNotCaptured]; len(fs) == 1 && strings.Contains(fs[0].Object, "web") {
				t.Errorf("the captured pod is reported: %+v", fs)
			}
			return ctx
		}).
		Assess("once ztunnel and istio-cni run, the node agents are no longer reported", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			installNodeAgents(ctx, t, c)
			var last []audit.Finding
			err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(context.Context) (bool, error) {
				r, _ := auditJSON(t, c, "-n", ambientNS, "--no-traffic")
				last = findingsByCode(r)[audit.CodeAmbientNodeAgentsMissing]
				return len(last) == 0, nil
			})
			if err != nil {
				t.Errorf("with both DaemonSets created, still: %+v", last)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			// Other stories audit -A: take the namespace out of ambient
			// first (deletion takes a while), then remove it all.
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			if ns, err := kube.CoreV1().Namespaces().Get(ctx, ambientNS, metav1.GetOptions{}); err == nil {
				delete(ns.Labels, "istio.io/dataplane-mode")
				_, _ = kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
			}
			_ = kube.CoreV1().Namespaces().Delete(ctx, ambientNS, metav1.DeleteOptions{})
			for _, name := range []string{"ztunnel", "istio-cni-node"} {
				_ = kube.AppsV1().DaemonSets("istio-system").Delete(ctx, name, metav1.DeleteOptions{})
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestAmbientMigration: a plaintext namespace and a sidecar namespace move
// to ambient through STRICT with `plan --dataplane ambient` and apply, and
// roll back exactly (the sidecars come back); without ztunnel and
// istio-cni, and with a selector-bound L7 policy, the move is refused
// before any change. istio-cni is a stand-in (e2e.StartCNI).
func TestAmbientMigration(t *testing.T) {
	var (
		est      *e2e.Estate
		prom     *e2e.Prometheus
		before   map[string]any
		planFile string
		thePlan  *plan.Plan
	)
	dir := t.TempDir()
	podsOf := func(ctx context.Context, t *testing.T, c *envconf.Config, ns string) []audit.Pod {
		r, _ := auditJSON(t, c, "-n", ns, "--no-traffic")
		return namespace(t, r, ns).Pods.Items
	}
	waitPods := func(ctx context.Context, t *testing.T, c *envconf.Config, ns, sidecar string) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			ps := podsOf(ctx, t, c, ns)
			for _, p := range ps {
				if p.Sidecar != sidecar {
					return false, nil
				}
			}
			return len(ps) > 0, nil
		})
		if err != nil {
			t.Fatalf("%s: pods %+v, want each with sidecar %q", ns, podsOf(ctx, t, c, ns), sidecar)
		}
	}
	f := features.New("plaintext and sidecar namespaces to ambient, and back").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est = newEstate(ctx, t, c, "ambm", 0)
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			// back's pods get sidecars (the injector stand-in serves its
			// istio.io/rev label): a sidecar namespace.
			if out, stderr, code := run(t, c, kubectl, "rollout", "restart", "deployment/api", "-n", est.Back); code != 0 {
				t.Fatalf("rollout restart: %s %s", out, stderr)
			}
			waitPods(ctx, t, c, est.Back, "classic")
			cniCtx, stop := context.WithCancel(context.Background())
			t.Cleanup(stop)
			e2e.StartCNI(cniCtx, kube, 500*time.Millisecond, est.Front, est.Back)
			// ztunnel reports TCP, the sidecars requests: both, over mTLS.
			_, prom = telemetry(ctx, t, c, append(est.Series(),
				e2e.Edge("istio_tcp_connections_opened_total", est.Front+"/web", est.Back+"/api", "mutual_tls", 2),
				e2e.Edge("istio_tcp_connections_opened_total", est.Back+"/api", est.Front+"/web", "mutual_tls", 1))...)
			before = touched(ctx, t, c, est.Front, est.Back)
			return ctx
		}).
		Assess("without ztunnel and istio-cni the move is refused before any change", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			graph := filepath.Join(dir, "traffic.yaml")
			if err := os.WriteFile(graph, []byte(est.Graph()), 0o644); err != nil {
				t.Fatal(err)
			}
			out, _, code := meshmigrate(t, c, "plan", "-n", est.Front+","+est.Back, "--traffic-file", graph, "--dataplane", "ambient", "-o", "json", "--min-verify-window", "5s")
			if code != 2 || !strings.Contains(out, "ztunnel is not installed; istio-cni is not installed: enrolled pods would not be captured") {
				t.Fatalf("plan: exit %d, want 2 naming the missing agents\n%s", code, out)
			}
			file := filepath.Join(dir, "blocked.json")
			if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--prometheus-url", prom.URL)
			if code != 2 || !strings.Contains(out, "enroll: STOP") {
				t.Errorf("apply of the blocked plan: exit %d\n%s\n%s", code, out, stderr)
			}
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(before, after) {
				t.Error("a refused move changed the cluster")
			}
			return ctx
		}).
		Assess("with them, both namespaces move to ambient through STRICT", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			installNodeAgents(ctx, t, c)
			file, p := planGraph(t, c, est, dir, est.Graph(), "--dataplane", "ambient", "--authz", "enforce")
			planFile, thePlan = file, p
			table, _, code := meshmigrate(t, c, "plan", "-n", est.Front+","+est.Back, "--traffic-file", filepath.Join(dir, "traffic.yaml"), "--dataplane", "ambient", "--authz", "off", "-o", "table", "--min-verify-window", "5s")
			if code != 0 || !strings.Contains(table, "ENROLL") || !strings.Contains(table, "WAYPOINT") {
				t.Errorf("plan -o table: exit %d\n%s", code, table)
			}
			back, _ := p.Namespace(est.Back)
			if back.Dataplane != plan.DataplaneAmbient || len(back.Phases) != len(plan.AmbientPhases) {
				t.Fatalf("back: %+v", back)
			}
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL, "--verify-window", "30s", "--bake", "5s")
			if code != 0 {
				t.Fatalf("apply: exit %d\n%s\n%s", code, out, stderr)
			}
			for _, want := range []string{est.Back + ": enroll: restarted Deployment/api", "gate ambient-captured passed", est.Back + ": strict: guard passed"} {
				if !strings.Contains(out, want) {
					t.Errorf("apply does not say %q:\n%s", want, out)
				}
			}
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			for _, ns := range []string{est.Front, est.Back} {
				n, _ := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
				if n.Labels["istio.io/dataplane-mode"] != "ambient" || n.Labels["istio.io/rev"] != "" || n.Labels["istio-injection"] != "" {
					t.Errorf("%s labels %v: want ambient and no injection label", ns, n.Labels)
				}
				if m := mode(t, c, ns); m != "STRICT" {
					t.Errorf("%s is %s, want STRICT", ns, m)
				}
				for _, p := range podsOf(ctx, t, c, ns) {
					if p.Sidecar != "ambient" {
						t.Errorf("%s pod %s: sidecar %q, want captured by ztunnel and no sidecar", ns, p.Name, p.Sidecar)
					}
				}
			}
			return ctx
		}).
		Assess("enforce: the callers-allowed gate admits every caller ztunnel saw, then the policies are enforced and baked", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "apply", "-f", planFile, "--yes", "--prometheus-url", prom.URL, "--verify-window", "30s", "--bake", "5s")
			if code != 0 {
				t.Fatalf("apply: exit %d\n%s\n%s", code, out, stderr)
			}
			for _, ns := range []string{est.Front, est.Back} {
				for _, want := range []string{ns + ": authz: gate callers-allowed passed", ns + ": authz: guard passed"} {
					if !strings.Contains(out, want) {
						t.Errorf("apply does not say %q:\n%s", want, out)
					}
				}
				if all, dry := dryRunPolicies(ctx, t, c, ns, thePlan.ID); all < 2 || dry != 0 {
					t.Errorf("%s: %d policies, %d in dry-run: want the ALLOW and allow-nothing policies, enforced (ztunnel has no dry-run)", ns, all, dry)
				}
			}
			if i, j := strings.Index(out, est.Back+": authz: gate callers-allowed passed"), strings.Index(out, est.Back+": authz: applied AuthorizationPolicy/"); j < 0 || i > j {
				t.Errorf("a policy was applied before the gate passed:\n%s", out)
			}
			return ctx
		}).
		Assess("rollback restores exactly: labels, policies, and back's sidecars", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "rollback", "-n", est.Front+","+est.Back, "--all", "--yes")
			if code != 0 {
				t.Fatalf("rollback: exit %d\n%s\n%s", code, out, stderr)
			}
			waitPods(ctx, t, c, est.Back, "classic")
			waitPods(ctx, t, c, est.Front, "")
			if after := touched(ctx, t, c, est.Front, est.Back); !reflect.DeepEqual(before, after) {
				b, _ := json.MarshalIndent(before, "", " ")
				a, _ := json.MarshalIndent(after, "", " ")
				t.Errorf("after rollback the objects differ from before:\nbefore: %s\nafter: %s", b, a)
			}
			return ctx
		}).
		Assess("a selector-bound L7 policy blocks the move, and its waypoint phase says why", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			installNodeAgents(ctx, t, c) // so the policy is what blocks
			ic := istioclient.NewForConfigOrDie(c.Client().RESTConfig())
			ap := &clientsecv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: est.Back, Name: "get-only"},
				Spec: securityv1beta1.AuthorizationPolicy{Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "api"}},
					Rules: []*securityv1beta1.Rule{{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Methods: []string{"GET"}}}}}}}}
			if _, err := ic.SecurityV1().AuthorizationPolicies(est.Back).Create(ctx, ap, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			out, _, code := meshmigrate(t, c, "plan", "-n", est.Back, "--traffic-file", filepath.Join(dir, "traffic.yaml"), "--dataplane", "ambient", "-o", "json", "--min-verify-window", "5s")
			// Created by this test's client, whose manager counts as an
			// owner: moving it (deleting the original) is refused too, so
			// the refusal holds with or without the Gateway API installed.
			if code != 2 || !strings.Contains(out, "AuthorizationPolicy get-only (methods) uses L7 attributes") || !strings.Contains(out, "needs a waypoint (L7), and cannot move to one") {
				t.Errorf("plan: exit %d\n%s", code, out)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
