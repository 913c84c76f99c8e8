package plan_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

func withAgents(s *cluster.Snapshot) *cluster.Snapshot {
	s.Ambient = cluster.AmbientComponents{
		Ztunnel: &cluster.DaemonSetState{Namespace: "istio-system", Name: "ztunnel", Desired: 2, Ready: 2},
		CNI:     &cluster.DaemonSetState{Namespace: "istio-system", Name: "istio-cni-node", Desired: 2, Ready: 2}}
	return s
}

// --dataplane ambient: a plaintext namespace is enrolled by its label
// alone (no restart: istio-cni captures running pods); a sidecar namespace
// loses its injection label in the same step and its workloads restart so
// the sidecars go away; both are gated on capture, need no waypoint, and
// go on to PERMISSIVE, verify, STRICT and authz.
func TestPlanAmbientEnrollsPlaintextAndSidecarNamespaces(t *testing.T) {
	s := withAgents(estate())
	s.Namespaces = []cluster.Namespace{ns("plain"), ns("shop", "istio-injection", "enabled")}
	s.Pods = pods(deploy("plain", "web", 2), deploy("shop", "cart", 1, injected("1-30")))
	g := graphOf(mtls("shop/cart", "plain/web", 8080), mtls("plain/web", "shop/cart", 8080))
	p := build(t, s, g, plan.Options{Dataplane: plan.DataplaneAmbient})
	if p.Options.Dataplane != plan.DataplaneAmbient {
		t.Errorf("options.dataplane %q", p.Options.Dataplane)
	}
	for _, name := range []string{"plain", "shop"} {
		n := nsOf(t, p, name)
		var got []plan.PhaseName
		for _, ph := range n.Phases {
			got = append(got, ph.Name)
		}
		if n.Dataplane != plan.DataplaneAmbient || !reflect.DeepEqual(got, plan.AmbientPhases) {
			t.Errorf("%s: dataplane %q phases %v, want ambient %v", name, n.Dataplane, got, plan.AmbientPhases)
		}
		if wp := phaseOf(t, p, name, plan.PhaseWaypoint); wp.Status != plan.StatusSkipped {
			t.Errorf("%s: waypoint %s %q, want skipped (no L7 policy)", name, wp.Status, wp.Reason)
		}
		if e := phaseOf(t, p, name, plan.PhaseEnroll); e.Gate == nil || e.Gate.Name != plan.GateAmbientCaptured {
			t.Errorf("%s: enroll gate %+v", name, e.Gate)
		}
	}
	plain := phaseOf(t, p, "plain", plan.PhaseEnroll)
	if len(plain.Steps) != 1 || !reflect.DeepEqual(plain.Steps[0].Labels, map[string]string{"istio.io/dataplane-mode": "ambient"}) || len(plain.Steps[0].Remove) != 0 {
		t.Errorf("plain enroll:%s\nwant only the label, no restart", describeSteps(plain.Steps))
	}
	shop := phaseOf(t, p, "shop", plan.PhaseEnroll)
	label := oneStep(t, shop, "Namespace/shop")
	if !reflect.DeepEqual(label.Remove, []string{"istio-injection"}) || label.Labels["istio.io/dataplane-mode"] != "ambient" {
		t.Errorf("shop label step %+v: want ambient set and istio-injection removed in the same step", label)
	}
	if r := oneStep(t, shop, "Deployment/cart"); r.Action != plan.ActionRestartWorkload || r.Status != plan.StatusPending || !strings.Contains(r.Reason, "carry a sidecar") {
		t.Errorf("cart: %+v, want a restart that removes its sidecar", r)
	}
	if st := phaseOf(t, p, "plain", plan.PhaseStrict); st.Status != plan.StatusPending {
		t.Errorf("plain strict %s %q: enrolled pods count as meshed", st.Status, st.Reason)
	}
	// A ztunnel whose version says nothing of its denial counter: authz
	// is never applied unwatched.
	if az := phaseOf(t, p, "plain", plan.PhaseAuthz); az.Status != plan.StatusBlocked || len(az.Steps) != 0 || !strings.Contains(az.Reason, "the guard needs ztunnel 1.29 or newer") {
		t.Errorf("plain authz %s %q %d steps, want blocked with no step", az.Status, az.Reason, len(az.Steps))
	}
	if p := build(t, s, g, plan.Options{Dataplane: plan.DataplaneAmbient, Authz: plan.AuthzOff}); phaseOf(t, p, "plain", plan.PhaseAuthz).Status != plan.StatusSkipped {
		t.Error("--authz off: authz should be skipped, not blocked")
	}
}

// Refusals, each a blocked enroll step with its reason, before any change:
// no node agents, a selector-bound L7 policy (ztunnel would deny), a pod
// that asks for its own sidecar.
func TestPlanAmbientRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(s *cluster.Snapshot)
		says  string
	}{
		{"no ztunnel", func(s *cluster.Snapshot) { s.Ambient.Ztunnel = nil }, "ztunnel is not installed"},
		{"istio-cni not ready", func(s *cluster.Snapshot) { s.Ambient.CNI.Ready = 1 }, "istio-cni is not ready: DaemonSet istio-system/istio-cni-node (1 of 2 ready)"},
		{"L7 policy", func(s *cluster.Snapshot) {
			s.AuthorizationPolicies = []cluster.AuthorizationPolicy{{Namespace: "shop", Name: "get-only", Action: "ALLOW", Rules: 1, L7: []string{"methods"}}}
		}, "AuthorizationPolicy get-only (methods) uses L7 attributes"},
		{"own sidecar", func(s *cluster.Snapshot) { s.Pods[0].Labels["sidecar.istio.io/inject"] = "true" }, "asks for a sidecar itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := withAgents(estate())
			s.Namespaces = []cluster.Namespace{ns("shop")}
			s.Pods = pods(deploy("shop", "web", 1))
			tc.setup(s)
			p := build(t, s, nil, plan.Options{Dataplane: plan.DataplaneAmbient})
			e := phaseOf(t, p, "shop", plan.PhaseEnroll)
			if e.Status != plan.StatusBlocked || !strings.Contains(e.Reason, tc.says) || !p.NeedsAttention() {
				t.Errorf("enroll %s %q, want blocked saying %q", e.Status, e.Reason, tc.says)
			}
		})
	}
	if _, err := tryBuild(withAgents(estate()), nil, plan.Options{Dataplane: "cilium"}); err == nil || !strings.Contains(err.Error(), `--dataplane "cilium": want sidecar or ambient`) {
		t.Errorf("err = %v", err)
	}
}

// A ztunnel older than ambient's GA (1.24) is refused; an image whose tag
// is not an Istio version says nothing either way.
func TestPlanAmbientRefusesPreGAZtunnel(t *testing.T) {
	for image, blocked := range map[string]bool{
		"docker.io/istio/ztunnel:1.23.4":            true,
		"docker.io/istio/ztunnel:1.24.0-distroless": false,
		"gcr.io/istio-release/ztunnel:1.30.1":       false,
		"registry.k8s.io/pause:3.10":                false,
	} {
		s := withAgents(estate())
		s.Ambient.Ztunnel.Image = image
		s.Namespaces = []cluster.Namespace{ns("shop")}
		s.Pods = pods(deploy("shop", "web", 1))
		e := phaseOf(t, build(t, s, nil, plan.Options{Dataplane: plan.DataplaneAmbient}), "shop", plan.PhaseEnroll)
		if got := e.Status == plan.StatusBlocked && strings.Contains(e.Reason, "older than ambient's general availability in 1.24"); got != blocked {
			t.Errorf("%s: enroll %s %q, want blocked %v", image, e.Status, e.Reason, blocked)
		}
	}
}

// Authorization in ambient: no step is ever applied in dry-run (ztunnel
// cannot run one); the callers-allowed gate judges the planned policies,
// and enforce applies them after it, the allows before allow-nothing. It
// is refused where the guard could not see a denial (ztunnel before
// 1.29) and where ztunnel would see a waypoint's identity.
func TestPlanAmbientAuthz(t *testing.T) {
	estateWith := func(image string) *cluster.Snapshot {
		s := withAgents(estate())
		s.Ambient.Ztunnel.Image = image
		s.Namespaces = []cluster.Namespace{ns("front"), ns("back")}
		s.Pods = pods(deploy("front", "web", 1), deploy("back", "api", 1))
		return s
	}
	g := graphOf(mtls("front/web", "back/api", 8080))
	p := build(t, estateWith("docker.io/istio/ztunnel:1.29.1"), g, plan.Options{Dataplane: plan.DataplaneAmbient, Authz: plan.AuthzEnforce})
	az := phaseOf(t, p, "back", plan.PhaseAuthz)
	if az.Status != plan.StatusPending || len(az.Steps) != 3 {
		t.Fatalf("back authz %s %q:%s\nwant the gate, the ALLOW policy, allow-nothing", az.Status, az.Reason, describeSteps(az.Steps))
	}
	if az.Steps[0].Action != plan.ActionGate || az.Steps[0].Target != string(plan.GateCallersAllowed) {
		t.Errorf("first step %+v, want the callers-allowed gate", az.Steps[0])
	}
	if az.Steps[2].Target != "AuthorizationPolicy/meshmigrate-allow-nothing" {
		t.Errorf("last step %s, want allow-nothing after the allows", az.Steps[2].Target)
	}
	for _, st := range az.Steps[1:] {
		if get(st.Object, "metadata", "annotations") != nil {
			t.Errorf("%s carries annotations %v: nothing is applied in dry-run in ambient", st.Target, get(st.Object, "metadata", "annotations"))
		}
	}
	rule := get(az.Steps[1].Object, "spec", "rules").([]any)[0].(map[string]any)
	if rule["from"] == nil || rule["to"] != nil {
		t.Errorf("the ALLOW rule %v: want the caller's principal and no port (the gate reads ztunnel's series, which name none)", rule)
	}

	// --authz dry-run: only the gate runs; the policies are in the plan,
	// skipped.
	dry := phaseOf(t, build(t, estateWith("docker.io/istio/ztunnel:1.29.1"), g, plan.Options{Dataplane: plan.DataplaneAmbient, Authz: plan.AuthzDryRun}), "back", plan.PhaseAuthz)
	if dry.Steps[0].Status != plan.StatusPending || dry.Steps[1].Status != plan.StatusSkipped || dry.Steps[2].Status != plan.StatusSkipped || !strings.Contains(dry.Steps[1].Reason, "ztunnel cannot run a policy in dry-run") {
		t.Errorf("dry-run authz:%s", describeSteps(dry.Steps))
	}

	for image, says := range map[string]string{
		"docker.io/istio/ztunnel:1.28.2": "ztunnel is Istio 1.28, and the guard needs ztunnel 1.29 or newer",
		"example.com/ztunnel:latest":     "ztunnel is an unknown version (image example.com/ztunnel:latest)",
	} {
		az := phaseOf(t, build(t, estateWith(image), g, plan.Options{Dataplane: plan.DataplaneAmbient, Authz: plan.AuthzEnforce}), "back", plan.PhaseAuthz)
		if az.Status != plan.StatusBlocked || !strings.Contains(az.Reason, says) || len(az.Steps) != 0 {
			t.Errorf("%s: authz %s %q, want blocked saying %q", image, az.Status, az.Reason, says)
		}
	}
	s := waypointEstate()
	s.Ambient.Ztunnel.Image = "docker.io/istio/ztunnel:1.29.1"
	if az := phaseOf(t, build(t, s, nil, plan.Options{Dataplane: plan.DataplaneAmbient, Authz: plan.AuthzEnforce}), "shop", plan.PhaseAuthz); az.Status != plan.StatusBlocked || !strings.Contains(az.Reason, "ambient with a waypoint") {
		t.Errorf("with a waypoint: authz %s %q", az.Status, az.Reason)
	}
}
