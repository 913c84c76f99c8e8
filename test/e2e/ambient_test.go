//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
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
// (name and selector label); kwok's nodes run its pods, so its status
// turns ready as a real one would.
func nodeAgent(name, selectorKey string) *appsv1.DaemonSet {
	labels := map[string]string{selectorKey: name}
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: name},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers:  []corev1.Container{{Name: name, Image: "registry.k8s.io/pause:3.10"}},
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}}}}
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
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
			for _, ds := range []*appsv1.DaemonSet{nodeAgent("ztunnel", "app"), nodeAgent("istio-cni-node", "k8s-app")} {
				if _, err := kube.AppsV1().DaemonSets("istio-system").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
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
