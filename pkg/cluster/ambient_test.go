package cluster

import (
	"context"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
)

// An ambient namespace makes the reader look for ztunnel and istio-cni in
// istiod's namespace and kube-system, by name or by their charts' selector
// labels; a sidecar-only read does not look.
func TestReadFindsTheAmbientNodeAgents(t *testing.T) {
	f := newFixture(true)
	ctx := context.Background()
	for _, o := range []*appsv1.DaemonSet{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel"},
			Spec:   appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}}},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberReady: 3}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "istio-cni"},
			Spec:   appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "istio-cni-node"}}},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberReady: 2}},
	} {
		if _, err := f.kube.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := f.read(t, Scope{Namespaces: []string{"shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Ambient.Ztunnel != nil || s.Ambient.CNI != nil {
		t.Errorf("a sidecar-only read looked for the ambient agents: %+v", s.Ambient)
	}
	if _, err := f.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh", Labels: map[string]string{LabelDataplaneMode: "ambient"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err = f.read(t, Scope{Namespaces: []string{"mesh"}})
	if err != nil {
		t.Fatal(err)
	}
	want := AmbientComponents{
		Ztunnel: &DaemonSetState{Namespace: "istio-system", Name: "ztunnel", Desired: 3, Ready: 3},
		CNI:     &DaemonSetState{Namespace: "kube-system", Name: "istio-cni", Desired: 3, Ready: 2},
	}
	if !reflect.DeepEqual(s.Ambient, want) {
		t.Errorf("ambient %+v / %+v, want %+v / %+v", s.Ambient.Ztunnel, s.Ambient.CNI, want.Ztunnel, want.CNI)
	}
}

func TestAuthorizationPolicyL7Attributes(t *testing.T) {
	spec := securityv1beta1.AuthorizationPolicy{
		Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "api"}},
		Rules: []*securityv1beta1.Rule{
			{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Principals: []string{"cluster.local/ns/a/sa/b"}}}},
				To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Ports: []string{"8080"}, Methods: []string{"GET"}}}}},
			{When: []*securityv1beta1.Condition{{Key: "request.headers[x-user]", Values: []string{"a"}}, {Key: "source.ip", Values: []string{"10.0.0.0/8"}}}},
		},
	}
	ap := authorizationPolicyFrom(&metav1.ObjectMeta{Namespace: "mesh", Name: "api"}, &spec)
	if want := []string{"methods", "when request.headers[x-user]"}; !reflect.DeepEqual(ap.L7, want) {
		t.Errorf("L7 = %v, want %v (principals, ports and source.ip are L4)", ap.L7, want)
	}
	l4 := securityv1beta1.AuthorizationPolicy{Rules: []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Namespaces: []string{"front"}}}}}},
		TargetRefs: []*typev1beta1.PolicyTargetReference{{Kind: "Gateway", Group: "gateway.networking.k8s.io", Name: "waypoint"}}}
	ap = authorizationPolicyFrom(&metav1.ObjectMeta{Namespace: "mesh", Name: "l4"}, &l4)
	if len(ap.L7) != 0 || !reflect.DeepEqual(ap.TargetRefs, []string{"Gateway/waypoint"}) {
		t.Errorf("L7 %v, targetRefs %v", ap.L7, ap.TargetRefs)
	}
}
