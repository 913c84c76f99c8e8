package plan_test

import (
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// getOnly is an L7 ALLOW policy bound to app=web by selector, as the
// reader records it.
func getOnly(ns string) cluster.AuthorizationPolicy {
	return cluster.AuthorizationPolicy{Namespace: ns, Name: "get-only", Action: "ALLOW", Rules: 1, L7: []string{"methods"},
		Selector: map[string]string{"app": "web"},
		Spec: map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"rules": []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"methods": []any{"GET"}}}}}}}}
}

// waypointEstate is a sidecar namespace shop whose web pods an L7 policy
// selects, with the Gateway API installed and a Service for web.
func waypointEstate() *cluster.Snapshot {
	s := withAgents(estate())
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = pods(deploy("shop", "web", 2, injected("1-30")), deploy("shop", "cart", 1, injected("1-30")))
	s.AuthorizationPolicies = []cluster.AuthorizationPolicy{getOnly("shop")}
	s.Ambient.GatewayAPI = "v1"
	s.Ambient.Services = []cluster.Service{{Namespace: "shop", Name: "web", Selector: map[string]string{"app": "web"}},
		{Namespace: "shop", Name: "cart", Selector: map[string]string{"app": "cart"}}}
	return s
}

// An L7 policy moves as Istio's migration guide says: the waypoint phase
// (before enroll) deploys the waypoint and a copy of the policy bound to
// the Service of the pods it selected; enroll deletes the original before
// its label step, which also sets istio.io/use-waypoint.
func TestPlanAmbientMovesL7PolicyToWaypoint(t *testing.T) {
	p := build(t, waypointEstate(), nil, plan.Options{Dataplane: plan.DataplaneAmbient, Authz: plan.AuthzOff})
	if got := nsOf(t, p, "shop").Phases[0].Name; got != plan.PhaseWaypoint {
		t.Fatalf("first phase %s, want waypoint (the policies move before the namespace is enrolled)", got)
	}
	wp := phaseOf(t, p, "shop", plan.PhaseWaypoint)
	if wp.Status != plan.StatusPending || wp.Gate == nil || wp.Gate.Name != plan.GateWaypointProgrammed {
		t.Fatalf("waypoint %s %q gate %+v, want pending, gated on waypoint-programmed", wp.Status, wp.Reason, wp.Gate)
	}
	gw := oneStep(t, wp, "Gateway/waypoint")
	if get(gw.Object, "apiVersion") != "gateway.networking.k8s.io/v1" || get(gw.Object, "spec", "gatewayClassName") != "istio-waypoint" ||
		get(gw.Object, "metadata", "labels").(map[string]any)["istio.io/waypoint-for"] != "service" {
		t.Errorf("Gateway %v", gw.Object)
	}
	listener := get(gw.Object, "spec", "listeners").([]any)[0].(map[string]any)
	if listener["name"] != "mesh" || listener["protocol"] != "HBONE" || listener["port"] != int64(15008) {
		t.Errorf("listener %v, want mesh 15008 HBONE", listener)
	}
	cp := oneStep(t, wp, "AuthorizationPolicy/get-only-waypoint")
	if get(cp.Object, "spec", "selector") != nil {
		t.Errorf("copy keeps a selector: %v (the CRD refuses selector with targetRefs)", get(cp.Object, "spec"))
	}
	refs := get(cp.Object, "spec", "targetRefs")
	if want := []any{map[string]any{"group": "", "kind": "Service", "name": "web"}}; !reflect.DeepEqual(refs, want) {
		t.Errorf("targetRefs %v, want %v (the Service of exactly the selected pods)", refs, want)
	}
	if !reflect.DeepEqual(get(cp.Object, "spec", "rules"), getOnly("shop").Spec["rules"]) {
		t.Errorf("copy rules %v, want the original's", get(cp.Object, "spec", "rules"))
	}

	enroll := phaseOf(t, p, "shop", plan.PhaseEnroll)
	if enroll.Status != plan.StatusPending {
		t.Fatalf("enroll %s %q, want pending once the policy moves", enroll.Status, enroll.Reason)
	}
	del := enroll.Steps[0]
	if del.Action != plan.ActionDelete || del.Target != "AuthorizationPolicy/get-only" || !strings.Contains(del.Reason, "Istio's documented gap") {
		t.Errorf("enroll's first step %+v, want the original deleted first, naming the gap (its pods carry sidecars)", del)
	}
	label := oneStep(t, enroll, "Namespace/shop")
	if label.Labels["istio.io/use-waypoint"] != "waypoint" || label.Labels["istio.io/dataplane-mode"] != "ambient" {
		t.Errorf("label step %+v, want dataplane-mode and use-waypoint in one write", label)
	}
	if p.NeedsAttention() {
		t.Errorf("plan needs attention: %v", p.Summary.BlockedSteps)
	}

	// A namespace-wide L7 policy targets the waypoint itself; an existing
	// waypoint is not applied again; a plaintext namespace has no gap.
	s := waypointEstate()
	s.Namespaces = []cluster.Namespace{ns("shop")}
	s.Pods = pods(deploy("shop", "web", 2), deploy("shop", "cart", 1))
	ap := getOnly("shop")
	ap.Selector, ap.Namespaced = nil, true
	delete(ap.Spec, "selector")
	s.AuthorizationPolicies = []cluster.AuthorizationPolicy{ap}
	s.Ambient.Gateways = []string{"shop/waypoint"}
	p = build(t, s, nil, plan.Options{Dataplane: plan.DataplaneAmbient})
	wp = phaseOf(t, p, "shop", plan.PhaseWaypoint)
	if gw := oneStep(t, wp, "Gateway/waypoint"); gw.Status != plan.StatusDone || gw.Object != nil {
		t.Errorf("existing waypoint: %+v, want done with nothing to write", gw)
	}
	if refs := get(oneStep(t, wp, "AuthorizationPolicy/get-only-waypoint").Object, "spec", "targetRefs"); !reflect.DeepEqual(refs, []any{map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}}) {
		t.Errorf("namespace-wide policy targetRefs %v, want the waypoint", refs)
	}
	if del := phaseOf(t, p, "shop", plan.PhaseEnroll).Steps[0]; strings.Contains(del.Reason, "gap") {
		t.Errorf("plaintext namespace: %q names a gap, but nothing enforced the policy before", del.Reason)
	}
}

// A policy that cannot move keeps the namespace out of ambient: the
// waypoint phase is blocked with the reason, and so is enroll.
func TestPlanAmbientWaypointRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(s *cluster.Snapshot)
		says  string
	}{
		{"no Gateway API", func(s *cluster.Snapshot) { s.Ambient.GatewayAPI = "" }, "the Gateway API is not installed"},
		{"Service wider than the selector", func(s *cluster.Snapshot) {
			s.Ambient.Services = append(s.Ambient.Services, cluster.Service{Namespace: "shop", Name: "all", Selector: map[string]string{"pod-template-hash": "5d8f7c9b4"}})
		}, "Service all also selects pods the policy's selector does not (cart-5d8f7c9b4-0)"},
		{"no Service", func(s *cluster.Snapshot) { s.Ambient.Services = nil }, "no Service selects its pods"},
		{"an ALLOW left at ztunnel", func(s *cluster.Snapshot) {
			s.AuthorizationPolicies = append(s.AuthorizationPolicies, cluster.AuthorizationPolicy{Namespace: "shop", Name: "from-front", Action: "ALLOW", Rules: 1, Selector: map[string]string{"app": "cart"}})
		}, "AuthorizationPolicy shop/from-front allows at ztunnel"},
		{"managed by Argo CD", func(s *cluster.Snapshot) {
			s.AuthorizationPolicies[0].Ownership = cluster.OwnershipOf(map[string]string{"argocd.argoproj.io/instance": "shop"}, nil, []metav1.ManagedFieldsEntry{{Manager: "argocd-controller"}})
		}, "its owner would put it back"},
		{"copy name taken", func(s *cluster.Snapshot) {
			s.AuthorizationPolicies = append(s.AuthorizationPolicies, cluster.AuthorizationPolicy{Namespace: "shop", Name: "get-only-waypoint", Action: "DENY", TargetRefs: []string{"Gateway/other"}})
		}, "get-only-waypoint, which exists already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := waypointEstate()
			tc.setup(s)
			p := build(t, s, nil, plan.Options{Dataplane: plan.DataplaneAmbient})
			wp := phaseOf(t, p, "shop", plan.PhaseWaypoint)
			if wp.Status != plan.StatusBlocked || !strings.Contains(wp.Reason, tc.says) || len(wp.Steps) != 0 {
				t.Errorf("waypoint %s %q (%d steps), want blocked saying %q", wp.Status, wp.Reason, len(wp.Steps), tc.says)
			}
			if e := phaseOf(t, p, "shop", plan.PhaseEnroll); e.Status != plan.StatusBlocked || !strings.Contains(e.Reason, "AmbientL7PolicyOnZtunnel") {
				t.Errorf("enroll %s %q, want blocked: ztunnel would enforce the L7 policy", e.Status, e.Reason)
			}
		})
	}
}

// A plan made by the version before waypoints ordered enroll first: it is
// refused, with the way out.
func TestParseRefusesTheOldAmbientPhaseOrder(t *testing.T) {
	raw, err := build(t, waypointEstate(), nil, plan.Options{Dataplane: plan.DataplaneAmbient, Authz: plan.AuthzOff}).Marshal(true)
	if err != nil {
		t.Fatal(err)
	}
	old := reseal(t, raw, func(m map[string]any) {
		phases := m["namespaces"].([]any)[0].(map[string]any)["phases"].([]any)
		phases[0], phases[1] = phases[1], phases[0]
	})
	refuses(t, old, `phase 0 is "enroll", want "waypoint"`, "re-plan with this version")
}
