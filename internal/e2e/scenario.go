package e2e

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	clientnetv1 "istio.io/client-go/pkg/apis/networking/v1"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e/injector"
)

// Revisions the scenario installs: 1-30 is the default (classic sidecars,
// as before Istio 1.28), 1-31 injects native sidecars and is behind the tag
// "canary".
var (
	Revisions = []injector.Revision{
		{Name: "1-30", ProxyImage: "docker.io/istio/proxyv2:1.30.0"},
		{Name: "1-31", ProxyImage: "docker.io/istio/proxyv2:1.31.0", Native: true},
	}
	Installs = []injector.Install{
		{Revision: "1-30", Default: true},
		{Revision: "1-31", Tags: []string{"canary"}},
	}
)

// Scenario builds an estate mid-migration, the way it comes about in real
// life (objects created in order, namespaces relabelled after their pods
// started):
//
//	istio-system  mesh config istio-1-30, mesh-wide PeerAuthentication PERMISSIVE
//	legacy        no injection; Deployment legacy-client; a DestinationRule with
//	              tls DISABLE toward orders
//	shop          labelled istio-injection=enabled after Deployment web and StatefulSet
//	              cache started (they need a restart), and Job migrate ran; Deployment cart
//	              created after (meshed); Deployment batch opted out; DaemonSet
//	              node-agent on hostNetwork
//	payments      istio.io/rev=1-30 when Deployment api started, now istio.io/rev=canary
//	              (-> 1-31): api runs the old revision; StatefulSet ledger is on 1-31
//	orders        istio-injection=enabled, PeerAuthentication PERMISSIVE, all meshed,
//	              a workload policy with a port-level exception
type Scenario struct {
	Kube  kubernetes.Interface
	Istio istioclient.Interface
	// Nodes is the number of kwok nodes (DaemonSets run one pod per node).
	Nodes int
}

// Apply creates the scenario and waits until every pod runs.
func (s *Scenario) Apply(ctx context.Context) error {
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"istio-system", s.istioSystem},
		{"legacy", s.legacy},
		{"shop", s.shop},
		{"payments", s.payments},
		{"orders", s.orders},
	}
	for _, st := range steps {
		if err := st.do(ctx); err != nil {
			return fmt.Errorf("scenario %s: %w", st.what, err)
		}
	}
	return nil
}

func (s *Scenario) namespace(ctx context.Context, name string, labels map[string]string) error {
	_, err := s.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	return ignoreExists(err)
}

// ignoreExists tolerates objects a real Istio install made already (kind).
func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func (s *Scenario) relabel(ctx context.Context, name string, labels map[string]string) error {
	ns, err := s.Kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	ns.Labels = labels
	ns.Labels["kubernetes.io/metadata.name"] = name
	_, err = s.Kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
	return err
}

// template is a pod template that kwok's fake nodes accept.
func template(app string, podLabels map[string]string, hostNetwork bool) corev1.PodTemplateSpec {
	labels := map[string]string{"app": app}
	for k, v := range podLabels {
		labels[k] = v
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: "default",
			HostNetwork:        hostNetwork,
			// A real image, so the kind provider can run it too; kwok runs nothing.
			Containers:  []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
			Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
}

func int32p(i int32) *int32 { return &i }

func (s *Scenario) deployment(ctx context.Context, ns, app string, replicas int32, podLabels map[string]string) error {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
		Spec: appsv1.DeploymentSpec{Replicas: int32p(replicas), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: template(app, podLabels, false)}}
	if _, err := s.Kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return err
	}
	return s.waitPods(ctx, ns, app, int(replicas), corev1.PodRunning)
}

func (s *Scenario) statefulSet(ctx context.Context, ns, app string, replicas int32) error {
	st := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
		Spec: appsv1.StatefulSetSpec{Replicas: int32p(replicas), ServiceName: app, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: template(app, nil, false)}}
	if _, err := s.Kube.AppsV1().StatefulSets(ns).Create(ctx, st, metav1.CreateOptions{}); err != nil {
		return err
	}
	return s.waitPods(ctx, ns, app, int(replicas), corev1.PodRunning)
}

// waitPods waits until n pods labelled app=name are in phase in ns.
func (s *Scenario) waitPods(ctx context.Context, ns, app string, n int, phase corev1.PodPhase) error {
	var last int
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := s.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err
		}
		last = 0
		for _, p := range pods.Items {
			if p.Status.Phase == phase && p.DeletionTimestamp == nil {
				last++
			}
		}
		return last == n, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %d %s pods of %s/%s (have %d): %w", n, phase, ns, app, last, err)
	}
	return nil
}

func (s *Scenario) istioSystem(ctx context.Context) error {
	if err := s.namespace(ctx, "istio-system", nil); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio-1-30", Labels: map[string]string{"istio.io/rev": "1-30"}},
		Data: map[string]string{"mesh": "rootNamespace: istio-system\ntrustDomain: cluster.local\nenableAutoMtls: true\n"}}
	if _, err := s.Kube.CoreV1().ConfigMaps("istio-system").Create(ctx, cm, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	return s.peerAuthentication(ctx, "istio-system", "default", securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE, nil, nil)
}

func (s *Scenario) peerAuthentication(ctx context.Context, ns, name string, mode securityv1beta1.PeerAuthentication_MutualTLS_Mode,
	selector map[string]string, ports map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS) error {
	pa := &clientsecv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: mode}, PortLevelMtls: ports}}
	if selector != nil {
		pa.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: selector}
	}
	_, err := s.Istio.SecurityV1().PeerAuthentications(ns).Create(ctx, pa, metav1.CreateOptions{FieldManager: HandMade})
	return err
}

// HandMade is the field manager of the policies the estates start with:
// kubectl create's, as a person makes them. Without one the API server
// names the writer after the test binary ("e2e.test"), which the tool
// takes for a controller that manages them and never changes.
const HandMade = "kubectl-create"

func (s *Scenario) legacy(ctx context.Context) error {
	if err := s.namespace(ctx, "legacy", map[string]string{"team": "legacy"}); err != nil {
		return err
	}
	dr := &clientnetv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: "legacy", Name: "orders-plaintext"},
		Spec: networkingv1alpha3.DestinationRule{Host: "orders.orders.svc.cluster.local",
			TrafficPolicy: &networkingv1alpha3.TrafficPolicy{Tls: &networkingv1alpha3.ClientTLSSettings{Mode: networkingv1alpha3.ClientTLSSettings_DISABLE}}}}
	if _, err := s.Istio.NetworkingV1().DestinationRules("legacy").Create(ctx, dr, metav1.CreateOptions{}); err != nil {
		return err
	}
	return s.deployment(ctx, "legacy", "legacy-client", 2, nil)
}

func (s *Scenario) shop(ctx context.Context) error {
	if err := s.namespace(ctx, "shop", map[string]string{"team": "shop"}); err != nil {
		return err
	}
	// Started before the namespace was labelled: these need a restart.
	if err := s.deployment(ctx, "shop", "web", 2, nil); err != nil {
		return err
	}
	if err := s.statefulSet(ctx, "shop", "cache", 1); err != nil {
		return err
	}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "migrate"},
		Spec: batchv1.JobSpec{Template: template("migrate", nil, false)}}
	job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
	if _, err := s.Kube.BatchV1().Jobs("shop").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		return err
	}
	// kwok completes Job pods, as a real Job finishes: the audit skips them.
	if err := s.waitPods(ctx, "shop", "migrate", 1, corev1.PodSucceeded); err != nil {
		return err
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "node-agent"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "node-agent"}}, Template: template("node-agent", nil, true)}}
	if _, err := s.Kube.AppsV1().DaemonSets("shop").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := s.waitPods(ctx, "shop", "node-agent", s.Nodes, corev1.PodRunning); err != nil {
		return err
	}
	if err := s.relabel(ctx, "shop", map[string]string{"team": "shop", "istio-injection": "enabled"}); err != nil {
		return err
	}
	// Created after the label: cart is injected, batch opted out.
	if err := s.deployment(ctx, "shop", "cart", 2, nil); err != nil {
		return err
	}
	return s.deployment(ctx, "shop", "batch", 1, map[string]string{"sidecar.istio.io/inject": "false"})
}

func (s *Scenario) payments(ctx context.Context) error {
	if err := s.namespace(ctx, "payments", map[string]string{"team": "payments", "istio.io/rev": "1-30"}); err != nil {
		return err
	}
	if err := s.deployment(ctx, "payments", "api", 2, nil); err != nil {
		return err
	}
	if err := s.relabel(ctx, "payments", map[string]string{"team": "payments", "istio.io/rev": "canary"}); err != nil {
		return err
	}
	return s.statefulSet(ctx, "payments", "ledger", 1)
}

func (s *Scenario) orders(ctx context.Context) error {
	if err := s.namespace(ctx, "orders", map[string]string{"team": "orders", "istio-injection": "enabled"}); err != nil {
		return err
	}
	if err := s.peerAuthentication(ctx, "orders", "default", securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE, nil, nil); err != nil {
		return err
	}
	if err := s.peerAuthentication(ctx, "orders", "orders-metrics", securityv1beta1.PeerAuthentication_MutualTLS_UNSET, map[string]string{"app": "orders"},
		map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{9090: {Mode: securityv1beta1.PeerAuthentication_MutualTLS_DISABLE}}); err != nil {
		return err
	}
	return s.deployment(ctx, "orders", "orders", 2, nil)
}
