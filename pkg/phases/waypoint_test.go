package phases

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

var (
	gvrPolicies = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}
	gvrGateways = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
)

func gatewayObj(class string, conds ...map[string]any) *unstructured.Unstructured {
	gw := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": "waypoint", "namespace": "shop", "generation": int64(2)},
		"spec":     map[string]any{"gatewayClassName": class}}}
	if len(conds) > 0 {
		list := make([]any, len(conds))
		for i, c := range conds {
			list[i] = c
		}
		gw.Object["status"] = map[string]any{"conditions": list}
	}
	return gw
}

func TestWaypointGate(t *testing.T) {
	programmed := func(status string, gen int64) map[string]any {
		return map[string]any{"type": "Programmed", "status": status, "reason": "Programmed", "observedGeneration": gen}
	}
	for _, tc := range []struct {
		name string
		gw   *unstructured.Unstructured
		want Verdict
		says string
	}{
		{"none", nil, GateFailed, "does not exist"},
		{"not a waypoint", gatewayObj("envoy-gateway", programmed("True", 2)), GateFailed, `class "envoy-gateway", not istio-waypoint`},
		{"not yet deployed", gatewayObj("istio-waypoint"), GateFailed, "no Programmed condition yet"},
		{"an older generation", gatewayObj("istio-waypoint", programmed("True", 1)), GateFailed, "generation 1, not its current 2"},
		{"not programmed", gatewayObj("istio-waypoint", map[string]any{"type": "Programmed", "status": "False", "reason": "AddressNotAssigned", "message": "no address"}), GateFailed, "AddressNotAssigned: no address"},
		{"programmed", gatewayObj("istio-waypoint", map[string]any{"type": "Accepted", "status": "True"}, programmed("True", 2)), GatePassed, "is Programmed"},
	} {
		g := WaypointGate(tc.gw, time.Now())
		if g.Result != tc.want || !strings.Contains(g.Message, tc.says) || g.Name != plan.GateWaypointProgrammed {
			t.Errorf("%s: %s %q, want %s saying %q", tc.name, g.Result, g.Message, tc.want, tc.says)
		}
	}
}

// getOnlyObj is the L7 policy a user wrote with kubectl: action ALLOW
// spelled out (the plan's copy of the spec leaves the default out).
func getOnlyObj(methods ...any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "get-only", "namespace": "shop", "uid": "uid-orig", "labels": map[string]any{"team": "shop"},
			"managedFields": []any{map[string]any{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "security.istio.io/v1"}}},
		"spec": map[string]any{"action": "ALLOW", "selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"rules": []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"methods": methods}}}}}}}}
}

// waypointPlan is shop's waypoint and enroll phases as pkg/plan makes them.
func waypointPlan(t *testing.T, obs *fakeObserver) *plan.Plan {
	t.Helper()
	p := onePlan(t, obs)
	rules := []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"methods": []any{"GET"}}}}}}
	gw := map[string]any{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": "waypoint", "namespace": "shop", "labels": map[string]any{"istio.io/waypoint-for": "service"}},
		"spec":     map[string]any{"gatewayClassName": "istio-waypoint", "listeners": []any{map[string]any{"name": "mesh", "port": int64(15008), "protocol": "HBONE"}}}}
	cp := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "get-only-waypoint", "namespace": "shop"},
		"spec":     map[string]any{"rules": rules, "targetRefs": []any{map[string]any{"group": "", "kind": "Service", "name": "web"}}}}
	orig := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "get-only", "namespace": "shop"},
		"spec":     map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}}, "rules": rules}}
	n := &p.Namespaces[0]
	n.Dataplane = plan.DataplaneAmbient
	n.Phases = []plan.Phase{
		{Name: plan.PhaseWaypoint, Status: plan.StatusPending, Steps: []plan.Step{
			{Action: plan.ActionApply, Target: "Gateway/waypoint", Status: plan.StatusPending, Object: gw},
			{Action: plan.ActionApply, Target: "AuthorizationPolicy/get-only-waypoint", Status: plan.StatusPending, Object: cp}},
			Gate: &plan.Gate{Name: plan.GateWaypointProgrammed}},
		{Name: plan.PhaseEnroll, Status: plan.StatusPending, Steps: []plan.Step{
			{Action: plan.ActionDelete, Target: "AuthorizationPolicy/get-only", Status: plan.StatusPending, Object: orig},
			{Action: plan.ActionLabelNamespace, Target: "Namespace/shop", Status: plan.StatusPending,
				Labels: map[string]string{"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}, Remove: []string{"istio-injection"}}},
			Gate: &plan.Gate{Name: plan.GateAmbientCaptured}},
		{Name: plan.PhasePermissive, Status: plan.StatusBlocked, Reason: "stop here"},
	}
	return p
}

// istiodStandIn programs every waypoint Gateway it is asked for, as
// istiod would once it deployed it: a FAKE for the unit test.
func istiodStandIn(dyn *dynamicfake.FakeDynamicClient) {
	dyn.PrependReactor("get", "gateways", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ga := a.(k8stesting.GetAction)
		obj, err := dyn.Tracker().Get(ga.GetResource(), ga.GetNamespace(), ga.GetName())
		if err != nil {
			return true, nil, err
		}
		u := obj.(*unstructured.Unstructured).DeepCopy()
		u.Object["status"] = map[string]any{"conditions": []any{map[string]any{"type": "Programmed", "status": "True", "reason": "Programmed"}}}
		return true, u, nil
	})
}

// The waypoint phase writes the Gateway and the copy before enroll deletes
// the original (recorded whole), then labels the namespace; rollback
// re-creates the original as it was and removes what the plan created.
func TestWaypointMoveIsRecordedAndRolledBackExactly(t *testing.T) {
	orig := getOnlyObj("GET")
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}), orig.DeepCopy())
	istiodStandIn(dyn)
	seedServiceOfWeb(t, c, map[string]string{"app": "web"})
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	obs.report.Namespaces[0].Pods.Items[0].Sidecar = "ambient"
	p := waypointPlan(t, obs)
	out := applyOnce(t, c, obs, p)

	// The label step sets the new labels, then removes the injection label.
	want := []string{"patch gateways", "patch authorizationpolicies", "delete authorizationpolicies", "patch namespaces", "patch namespaces"}
	if got := writes(dyn); !reflect.DeepEqual(got, want) {
		t.Fatalf("writes %v, want %v (the waypoint and its copy before the original goes, the label last)\n%s", writes(dyn), want, out)
	}
	ctx := context.Background()
	if _, err := dyn.Resource(gvrPolicies).Namespace("shop").Get(ctx, "get-only", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the original is still there: %v", err)
	}
	cp, _ := c.LoadCheckpoint(ctx, "shop")
	var del *Record
	for i := range cp.Records {
		if cp.Records[i].Action == plan.ActionDelete {
			del = &cp.Records[i]
		}
	}
	if del == nil || !del.Undo.Existed || del.Undo.UID != "uid-orig" || len(del.Undo.PriorManagedFields) != 1 {
		t.Fatalf("delete record %+v: want the whole object and its managers recorded", del)
	}
	if !cp.PhaseDone(plan.PhaseWaypoint) || cp.Phase(plan.PhaseWaypoint).Gate == nil {
		t.Errorf("waypoint phase %+v: want done with its gate", cp.Phase(plan.PhaseWaypoint))
	}

	if _, err := newExecutor(c, obs, out).Rollback(ctx, []string{"shop"}, ""); err != nil {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	back, err := dyn.Resource(gvrPolicies).Namespace("shop").Get(ctx, "get-only", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("rollback did not re-create the original: %v", err)
	}
	if !reflect.DeepEqual(back.Object["spec"], orig.Object["spec"]) || !reflect.DeepEqual(back.GetLabels(), orig.GetLabels()) {
		t.Errorf("re-created %v, want %v", back.Object, orig.Object)
	}
	// Its managers (the fake keeps none) are checked on the real API server
	// in test/e2e (TestAmbientWaypoint).
	for _, gone := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{{gvrPolicies, "get-only-waypoint"}, {gvrGateways, "waypoint"}} {
		if _, err := dyn.Resource(gone.gvr).Namespace("shop").Get(ctx, gone.name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s %s outlived the rollback: %v", gone.gvr.Resource, gone.name, err)
		}
	}
	ns, _ := dyn.Resource(kinds["Namespace"]).Get(ctx, "shop", metav1.GetOptions{})
	if l := ns.GetLabels(); !reflect.DeepEqual(l, map[string]string{"istio-injection": "enabled"}) {
		t.Errorf("labels after rollback %v", l)
	}
}

// A policy changed since the plan copied it is not deleted: the copy on
// the waypoint would hold the old rules.
func TestWaypointMoveRefusesAPolicyChangedSince(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}), getOnlyObj("GET", "HEAD"))
	istiodStandIn(dyn)
	seedServiceOfWeb(t, c, map[string]string{"app": "web"})
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := waypointPlan(t, obs)
	var out bytes.Buffer
	res := runApply(t, newExecutor(c, obs, &out), p)
	if len(res.Stops) != 1 || res.Stops[0].Phase != plan.PhaseEnroll || !strings.Contains(res.Stops[0].Reason, "its spec changed since the plan was made") {
		t.Fatalf("stops %+v, want enroll stopped before the delete\n%s", res.Stops, out.String())
	}
	if _, err := dyn.Resource(gvrPolicies).Namespace("shop").Get(context.Background(), "get-only", metav1.GetOptions{}); err != nil {
		t.Errorf("the changed policy was deleted: %v", err)
	}
	ns, _ := dyn.Resource(kinds["Namespace"]).Get(context.Background(), "shop", metav1.GetOptions{})
	if ns.GetLabels()["istio.io/dataplane-mode"] != "" {
		t.Errorf("the namespace was enrolled after a refused delete: %v", ns.GetLabels())
	}
}

// seedServiceOfWeb gives the fake API server the pods of web and cart
// and Service web with selector sel.
func seedServiceOfWeb(t *testing.T, c *Cluster, sel map[string]string) {
	t.Helper()
	ctx := context.Background()
	for _, pod := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web", "tier": "front"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-1", Labels: map[string]string{"app": "cart", "tier": "front"}}},
	} {
		if _, err := c.Kube.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: corev1.ServiceSpec{Selector: sel}}
	if _, err := c.Kube.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A Service the copy targets that selects, by now, a pod the original's
// selector does not, or that is gone: the original is not deleted, since
// the copy on the waypoint would reach that pod too, or nothing.
func TestWaypointMoveRefusesAServiceChangedSince(t *testing.T) {
	for _, tc := range []struct {
		name string
		sel  map[string]string
		says string
	}{
		{"wider", map[string]string{"tier": "front"}, "Service shop/web, which AuthorizationPolicy/get-only-waypoint on the waypoint targets, now also selects pods AuthorizationPolicy shop/get-only does not (cart-1)"},
		{"gone", nil, "Service shop/web, which AuthorizationPolicy/get-only-waypoint on the waypoint targets, no longer exists"},
	} {
		c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}), getOnlyObj("GET"))
		istiodStandIn(dyn)
		if tc.sel != nil {
			seedServiceOfWeb(t, c, tc.sel)
		}
		obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
		var out bytes.Buffer
		res := runApply(t, newExecutor(c, obs, &out), waypointPlan(t, obs))
		if len(res.Stops) != 1 || res.Stops[0].Phase != plan.PhaseEnroll || !strings.Contains(res.Stops[0].Reason, tc.says) {
			t.Fatalf("%s: stops %+v, want enroll refused saying %q\n%s", tc.name, res.Stops, tc.says, out.String())
		}
		if _, err := dyn.Resource(gvrPolicies).Namespace("shop").Get(context.Background(), "get-only", metav1.GetOptions{}); err != nil {
			t.Errorf("%s: the original was deleted: %v", tc.name, err)
		}
	}
}

// Applying the waypoint and enroll phases a second time changes nothing:
// no Gateway, copy, delete or label write again.
func TestWaypointMoveTwiceChangesNothing(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}), getOnlyObj("GET"))
	istiodStandIn(dyn)
	seedServiceOfWeb(t, c, map[string]string{"app": "web"})
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	obs.report.Namespaces[0].Pods.Items[0].Sidecar = "ambient"
	p := waypointPlan(t, obs)
	applyOnce(t, c, obs, p)
	first := len(writes(dyn))
	var out bytes.Buffer
	res := runApply(t, newExecutor(c, obs, &out), p)
	if got := writes(dyn)[first:]; len(got) != 0 || res.Changes != 0 {
		t.Errorf("the second apply wrote %v (%d changes)\n%s", got, res.Changes, out.String())
	}
}
