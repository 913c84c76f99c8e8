package phases

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

func call(src, principal, dst string, port int, security string) traffic.Edge {
	sns, sw, _ := strings.Cut(src, "/")
	dns, dw, _ := strings.Cut(dst, "/")
	return traffic.Edge{Source: traffic.Endpoint{Namespace: sns, Workload: sw, Principal: principal},
		Destination: traffic.Endpoint{Namespace: dns, Workload: dw}, Port: port, Security: security, Count: 3}
}

func TestCallersGate(t *testing.T) {
	const front = "cluster.local/ns/front/sa/web"
	allows := PlannedAllows{Rules: map[string][]AllowRule{
		"api": {{Principals: []string{front}}},
		"db":  {{Principals: []string{"cluster.local/ns/shop/sa/api"}, Ports: []string{"5432"}}},
	}, DenyUnmatched: true}
	both := []traffic.Edge{call("front/web", front, "shop/api", 0, traffic.MutualTLS), call("shop/api", "cluster.local/ns/shop/sa/api", "shop/db", 5432, traffic.MutualTLS)}
	for _, tc := range []struct {
		name  string
		edges []traffic.Edge
		want  Verdict
		says  string
	}{
		{"every call admitted", both, GatePassed, "2 callers of 2 workloads"},
		{"no call at all", nil, GateUnsettled, "zero calls are not a pass"},
		{"a covered workload not called", both[:1], GateUnsettled, "workload shop/db"},
		{"a caller the plan never saw", append(both, call("batch/job", "cluster.local/ns/batch/sa/job", "shop/api", 0, traffic.MutualTLS)), GateFailed, "batch/job (cluster.local/ns/batch/sa/job) -> api: the planned ALLOW policy of api does not admit it"},
		{"the right caller on an unknown port", []traffic.Edge{both[0], call("shop/api", "cluster.local/ns/shop/sa/api", "shop/db", 0, traffic.MutualTLS)}, GateFailed, "-> db"},
		{"a workload no policy covers", append(both, call("front/web", front, "shop/cache", 0, traffic.MutualTLS)), GateFailed, "no planned ALLOW policy covers cache, and allow-nothing would deny the call"},
		{"plaintext", append(both, call("unknown/unknown", "", "shop/api", 0, "unknown")), GateFailed, "arrives without mTLS"},
	} {
		g := CallersGate("shop", tc.edges, allows, time.Now())
		if g.Result != tc.want || !strings.Contains(g.Message+strings.Join(g.Culprits, ";"), tc.says) {
			t.Errorf("%s: %s %q %v, want %s saying %q", tc.name, g.Result, g.Message, g.Culprits, tc.want, tc.says)
		}
	}
}

// ambientAuthzPlan is shop's authz phase as pkg/plan makes it for ambient
// with --authz enforce: the gate, then the policies, enforced.
func ambientAuthzPlan(t *testing.T, obs *fakeObserver) *plan.Plan {
	t.Helper()
	p := authzPlan(t, obs)
	allow := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "meshmigrate-allow-api", "namespace": "shop"},
		"spec": map[string]any{"action": "ALLOW", "selector": map[string]any{"matchLabels": map[string]any{"app": "api"}},
			"rules": []any{map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/shop/sa/web"}}}}}}}}
	nothing := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "meshmigrate-allow-nothing", "namespace": "shop"}, "spec": map[string]any{}}
	n := &p.Namespaces[0]
	n.Dataplane = plan.DataplaneAmbient
	n.Phases = []plan.Phase{
		{Name: plan.PhaseWaypoint, Status: plan.StatusSkipped}, {Name: plan.PhaseEnroll, Status: plan.StatusDone},
		{Name: plan.PhasePermissive, Status: plan.StatusDone}, {Name: plan.PhaseVerify, Status: plan.StatusDone}, {Name: plan.PhaseStrict, Status: plan.StatusDone},
		{Name: plan.PhaseAuthz, Status: plan.StatusPending, Steps: []plan.Step{
			{Action: plan.ActionGate, Target: string(plan.GateCallersAllowed), Status: plan.StatusPending},
			{Action: plan.ActionApply, Target: "AuthorizationPolicy/meshmigrate-allow-api", Status: plan.StatusPending, Object: allow},
			{Action: plan.ActionApply, Target: "AuthorizationPolicy/meshmigrate-allow-nothing", Status: plan.StatusPending, Object: nothing}}}}
	return p
}

func ambientAuthzRun(t *testing.T, edges ...traffic.Edge) (*Outcome, string, []string) {
	t.Helper()
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/dataplane-mode": "ambient"}))
	obs := &fakeObserver{report: shopReport("STRICT", "namespace")}
	p := ambientAuthzPlan(t, obs)
	obs.report.Namespaces[0].Traffic = audit.Traffic{Status: audit.TrafficObserved, Edges: edges}
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	ex.Options.VerifyWindow, ex.Options.AllowShortWindow = time.Hour, true
	return runApply(t, ex, p), out.String(), writes(dyn)
}

// Ambient enforcement: the policies are applied, allows first, only after
// the callers-allowed gate admitted every caller seen; a caller they would
// deny stops the phase before anything is written.
func TestAmbientAuthzEnforcesOnlyAfterTheCallersGate(t *testing.T) {
	web := call("shop/web", "cluster.local/ns/shop/sa/web", "shop/api", 0, traffic.MutualTLS)
	res, out, w := ambientAuthzRun(t, web)
	if len(res.Stops) != 0 || strings.Join(w, ",") != "patch authorizationpolicies,patch authorizationpolicies" {
		t.Fatalf("stops %+v writes %v\n%s", res.Stops, w, out)
	}
	if !strings.Contains(out, "gate callers-allowed passed") || strings.Index(out, "meshmigrate-allow-api") > strings.Index(out, "meshmigrate-allow-nothing") {
		t.Errorf("want the gate passed, then the allow before allow-nothing:\n%s", out)
	}

	res, out, w = ambientAuthzRun(t, web, call("batch/job", "cluster.local/ns/batch/sa/job", "shop/api", 0, traffic.MutualTLS))
	if len(res.Stops) != 1 || !strings.Contains(res.Stops[0].Reason, "callers-allowed") || len(w) != 0 {
		t.Fatalf("a caller the policies would deny: stops %+v writes %v\n%s", res.Stops, w, out)
	}
	if !strings.Contains(out, "batch/job (cluster.local/ns/batch/sa/job) -> api") {
		t.Errorf("the stop does not name the caller:\n%s", out)
	}
}
