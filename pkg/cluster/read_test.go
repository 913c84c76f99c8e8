package cluster

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	k8stesting "k8s.io/client-go/testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
)

var t0 = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

func controller(kind, name string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, Controller: &yes}}
}

func meta(kind, apiVersion, ns, name string, owners []metav1.OwnerReference) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: kind, APIVersion: apiVersion},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: owners}}
}

type fixture struct {
	kube  *kubefake.Clientset
	istio *istiofake.Clientset
	md    *metadatafake.FakeMetadataClient
}

// newFixture is a cluster with Istio (revision 1-30 from istio-system, root
// namespace "mesh-root" in the mesh config), namespaces shop and other, and
// a pod of a Deployment, of a CronJob and a bare pod in shop.
func newFixture(withIstioCRDs bool) *fixture {
	always := corev1.ContainerRestartPolicyAlways
	kube := kubefake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: "u-shop", Labels: map[string]string{"istio-injection": "enabled", "team": "a"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other", UID: "u-other", Labels: map[string]string{"team": "b"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio-1-30"},
			Data: map[string]string{"mesh": "rootNamespace: mesh-root\ntrustDomain: example.org\nenableAutoMtls: false\n"}},
		&admissionv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector-1-30", Labels: map[string]string{"istio.io/rev": "1-30"}},
			Webhooks: []admissionv1.MutatingWebhook{
				{Name: "rev.namespace.sidecar-injector.istio.io", ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: "istio-system", Name: "istiod-1-30"}}},
				{Name: "unrelated.example.com"},
			}},
		&admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "other-webhook"}, Webhooks: []admissionv1.MutatingWebhook{{Name: "x.example.com"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-abc-1", OwnerReferences: controller("ReplicaSet", "web-abc"),
			Annotations: map[string]string{"sidecar.istio.io/status": `{"revision":"1-30"}`, "kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
			Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app"}},
				InitContainers: []corev1.Container{{Name: "istio-proxy", RestartPolicy: &always}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "report-123-x", OwnerReferences: controller("Job", "report-123")}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "debug"}, Spec: corev1.PodSpec{HostNetwork: true}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "api"}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
			Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cache"},
			Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType}}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "agent"},
			Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}}},
	)
	scheme := metadatafake.NewTestScheme()
	_ = metav1.AddMetaToScheme(scheme)
	md := metadatafake.NewSimpleMetadataClient(scheme,
		meta("ReplicaSet", "apps/v1", "shop", "web-abc", controller("Deployment", "web")),
		meta("Job", "batch/v1", "shop", "report-123", controller("CronJob", "report")),
	)
	ic := istiofake.NewSimpleClientset(
		&clientsecv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh-root", Name: "default", CreationTimestamp: t0},
			Spec: securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}}},
		&clientsecv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", CreationTimestamp: t0,
			Labels: map[string]string{"team": "shop", LabelArgoInstance: "shop-mesh"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationApply},
				{Manager: "pilot-discovery", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status"}}},
			Spec: securityv1beta1.PeerAuthentication{Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}},
				PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{9090: {Mode: securityv1beta1.PeerAuthentication_MutualTLS_DISABLE}}}},
		&clientsecv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "default", CreationTimestamp: t0}},
		&clientsecv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "allow-nothing",
			Annotations: map[string]string{"istio.io/dry-run": "true", AnnotationHelmReleaseName: "policies", AnnotationHelmReleaseNamespace: "shop"}}},
	)
	if withIstioCRDs {
		kube.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{
			{GroupVersion: "security.istio.io/v1", APIResources: []metav1.APIResource{{Name: "peerauthentications"}, {Name: "authorizationpolicies"}}},
			{GroupVersion: "networking.istio.io/v1", APIResources: []metav1.APIResource{{Name: "destinationrules"}}},
		}
	}
	return &fixture{kube: kube, istio: ic, md: md}
}

func (f *fixture) read(t *testing.T, scope Scope) (*Snapshot, error) {
	t.Helper()
	r := NewReader(Clients{Kube: f.kube, Istio: f.istio, Metadata: f.md})
	return r.Read(context.Background(), scope)
}

func TestReadNamedNamespace(t *testing.T) {
	s, err := newFixture(true).read(t, Scope{Namespaces: []string{"shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Namespaces) != 1 || s.Namespaces[0].Name != "shop" || s.Namespaces[0].UID != "u-shop" {
		t.Fatalf("namespaces = %+v", s.Namespaces)
	}
	owners := map[string]string{}
	for _, p := range s.Pods {
		owners[p.Name] = p.Owner.String()
	}
	want := map[string]string{"web-abc-1": "Deployment/web", "report-123-x": "CronJob/report", "debug": "Pod/debug"}
	for pod, o := range want {
		if owners[pod] != o {
			t.Errorf("owner of %s = %q, want %q", pod, owners[pod], o)
		}
	}
	if len(s.Pods) != 3 {
		t.Errorf("pods of other namespaces leaked in: %+v", owners)
	}
	web := s.Pods[len(s.Pods)-1]
	if web.Name != "web-abc-1" || web.ServiceAccount != "web" || len(web.InitContainers) != 1 || !web.InitContainers[0].RestartAlways {
		t.Errorf("web pod = %+v", web)
	}
	if _, kept := web.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; kept || web.Annotations["sidecar.istio.io/status"] == "" {
		t.Errorf("only Istio annotations are kept: %v", web.Annotations)
	}
	if len(s.Injectors) != 1 || s.Injectors[0].Revision != "1-30" || s.IstiodNamespace != "istio-system" {
		t.Errorf("injectors = %+v, istiod in %q", s.Injectors, s.IstiodNamespace)
	}
	if s.Mesh != (MeshConfig{RootNamespace: "mesh-root", TrustDomain: "example.org", EnableAutoMTLS: false, Source: "istio-system/istio-1-30"}) {
		t.Errorf("mesh = %+v", s.Mesh)
	}
	if !s.Istio.PoliciesReadable || s.Istio.SecurityVersion != "v1" {
		t.Errorf("istio = %+v", s.Istio)
	}
	pas := map[string]PeerAuthentication{}
	for _, pa := range s.PeerAuthentications {
		pas[pa.Namespace+"/"+pa.Name] = pa
	}
	if _, ok := pas["other/default"]; ok || len(pas) != 2 {
		t.Errorf("want the root namespace's and shop's policies only, got %v", pas)
	}
	if pas["mesh-root/default"].Mode != ModeStrict || pas["shop/web"].Mode != ModeUnset || pas["shop/web"].PortModes[9090] != ModeDisable {
		t.Errorf("policies = %+v", pas)
	}
	if len(s.OnDelete) != 1 || s.OnDelete[0].String() != "StatefulSet/db" || s.OnDelete[0].Namespace != "shop" {
		t.Errorf("OnDelete = %+v: want only shop's OnDelete StatefulSet", s.OnDelete)
	}
	if len(s.AuthorizationPolicies) != 1 || !s.AuthorizationPolicies[0].DryRun || !s.AuthorizationPolicies[0].Namespaced {
		t.Errorf("authorization policies = %+v", s.AuthorizationPolicies)
	}
	// Ownership keeps the field managers (not status writers) and the
	// owner marks, nothing else of the metadata.
	if o := pas["shop/web"].Ownership; !reflect.DeepEqual(o, Ownership{Managers: []string{"argocd-controller"}, Marks: map[string]string{LabelArgoInstance: "shop-mesh"}}) {
		t.Errorf("ownership of shop/web = %+v", o)
	}
	if o := s.AuthorizationPolicies[0].Ownership; !reflect.DeepEqual(o.Marks, map[string]string{AnnotationHelmReleaseName: "policies", AnnotationHelmReleaseNamespace: "shop"}) {
		t.Errorf("ownership of shop/allow-nothing = %+v", o)
	}
	if o := pas["mesh-root/default"].Ownership; o.Managers != nil || o.Marks != nil {
		t.Errorf("a policy without owner marks has ownership %+v", o)
	}
}

func TestReadSelectorFallsBackPerNamespaceWhenClusterWideIsForbidden(t *testing.T) {
	f := newFixture(true)
	f.kube.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("cluster-wide list not allowed"))
		}
		return false, nil, nil
	})
	s, err := f.read(t, Scope{Selector: "team=a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Namespaces) != 1 || len(s.Pods) != 3 {
		t.Errorf("got %d namespaces, %d pods", len(s.Namespaces), len(s.Pods))
	}
	var perNS bool
	for _, a := range f.kube.Actions() {
		if a.GetVerb() == "list" && a.GetResource().Resource == "pods" && a.GetNamespace() == "shop" {
			perNS = true
		}
	}
	if !perNS {
		t.Error("no per-namespace pod list after the cluster-wide one was forbidden")
	}
}

func TestReadForbiddenNamesVerbAndResource(t *testing.T) {
	f := newFixture(true)
	f.kube.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("RBAC: denied"))
	})
	_, err := f.read(t, Scope{AllNamespaces: true})
	var fe *ForbiddenError
	if !errors.As(err, &fe) || fe.Verb != "list" || fe.Resource != "pods" {
		t.Fatalf("err = %v, want a ForbiddenError for list pods", err)
	}
	if !strings.Contains(err.Error(), `cannot list pods in namespace`) {
		t.Errorf("message does not say what was denied: %v", err)
	}
}

func TestReadMissingNamespace(t *testing.T) {
	_, err := newFixture(true).read(t, Scope{Namespaces: []string{"shop", "nope"}})
	if err == nil || !strings.Contains(err.Error(), `namespace "nope" not found`) {
		t.Errorf("err = %v", err)
	}
}

func TestReadWithoutIstioCRDs(t *testing.T) {
	s, err := newFixture(false).read(t, Scope{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Istio.PoliciesReadable || !strings.Contains(s.Istio.Reason, "not installed") {
		t.Errorf("istio = %+v", s.Istio)
	}
	if len(s.Pods) != 4 || len(s.Namespaces) != 3 {
		t.Errorf("pods and namespaces must still be read: %d pods, %d namespaces", len(s.Pods), len(s.Namespaces))
	}
}

func TestReadUnreachable(t *testing.T) {
	f := newFixture(true)
	f.kube.Discovery().(*fakediscovery.FakeDiscovery).PrependReactor("get", "version", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("boom")
	})
	if _, err := f.read(t, Scope{AllNamespaces: true}); err == nil {
		t.Error("want an error when the API server cannot be reached")
	}
}

func TestReadMarksDestinationRulesPartialWhenClusterWideIsForbidden(t *testing.T) {
	f := newFixture(true)
	f.istio.PrependReactor("list", "destinationrules", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "networking.istio.io", Resource: "destinationrules"}, "", errors.New("denied"))
		}
		return false, nil, nil
	})
	f.istio.Tracker().Add(&clientsecv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh-root", Name: "mesh-deny"},
		Spec: securityv1beta1.AuthorizationPolicy{Action: securityv1beta1.AuthorizationPolicy_DENY}})
	s, err := f.read(t, Scope{Namespaces: []string{"shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Istio.DestinationRulesPartial {
		t.Error("a narrowed DestinationRule read must be recorded")
	}
	var root bool
	for _, ap := range s.AuthorizationPolicies {
		root = root || (ap.Namespace == "mesh-root" && ap.Action == "DENY")
	}
	if !root {
		t.Errorf("mesh-wide AuthorizationPolicies in the root namespace must be read: %+v", s.AuthorizationPolicies)
	}
}
