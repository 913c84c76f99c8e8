package plan_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// authzEstate: shop is meshed and every workload has callers but admin.
// The api pods differ in their version label and share team=checkout; db is
// a StatefulSet; report is a CronJob (it serves nothing).
func authzEstate() (*cluster.Snapshot, *traffic.Graph) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("shop", labelInjection, "enabled")}
	api := deploy("shop", "api", 2, injected("1-30"), podLabel("team", "checkout"))
	api[0].Labels["version"] = "v1"
	api[1].Labels["version"] = "v2"
	api[1].Labels["pod-template-hash"] = "6c4b8d7f9" // a rollout in progress: two ReplicaSets
	s.Pods = pods(
		deploy("shop", "web", 2, injected("1-30")),
		api,
		workload("shop", "StatefulSet", "db", 1, injected("1-30")),
		workload("shop", "CronJob", "report", 1, injected("1-30")),
		deploy("shop", "admin", 1, injected("1-30")),
	)
	g := graphOf(
		mtlsAs("ingress/gateway", "cluster.local/ns/ingress/sa/ingress-gateway", "shop/web", 0),
		mtls("shop/web", "shop/api", 8080),
		mtls("shop/web", "shop/api", 9090),
		mtls("shop/report", "shop/api", 8080),
		mtls("shop/api", "shop/db", 5432),
		mtls("shop/web", "shop/db", 5432),
		mtls("shop/web", "shop/db", 0),
	)
	return s, g
}

func rule(principal string, ports ...string) map[string]any {
	r := map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{principal}}}}}
	if len(ports) > 0 {
		ps := make([]any, len(ports))
		for i, p := range ports {
			ps[i] = p
		}
		r["to"] = []any{map[string]any{"operation": map[string]any{"ports": ps}}}
	}
	return r
}

func rules(rs ...map[string]any) []any {
	out := make([]any, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

func TestAllowPoliciesFromObservedCallers(t *testing.T) {
	s, g := authzEstate()
	p := build(t, s, g, plan.Options{})
	authz := phaseOf(t, p, "shop", plan.PhaseAuthz)

	// Order: dry-run allows, dry-run allow-nothing, the gate, enforced
	// allows, enforced allow-nothing.
	var targets []string
	for _, st := range authz.Steps {
		targets = append(targets, st.Target)
	}
	allows := []string{"AuthorizationPolicy/meshmigrate-allow-api", "AuthorizationPolicy/meshmigrate-allow-db", "AuthorizationPolicy/meshmigrate-allow-web"}
	want := append(append(append(append([]string{}, allows...), "AuthorizationPolicy/meshmigrate-allow-nothing", string(plan.GateNoShadowDenials)), allows...), "AuthorizationPolicy/meshmigrate-allow-nothing")
	if !reflect.DeepEqual(targets, want) {
		t.Fatalf("authz steps:%s\nwant targets %v", describeSteps(authz.Steps), want)
	}
	gate := authz.Steps[4]
	if gate.Action != plan.ActionGate || gate.Status != plan.StatusPending || gate.Object != nil {
		t.Errorf("gate step = %+v", gate)
	}
	for i, st := range authz.Steps {
		if i == 4 {
			continue
		}
		if st.Action != plan.ActionApply || get(st.Object, "kind") != "AuthorizationPolicy" || get(st.Object, "apiVersion") != "security.istio.io/v1" ||
			get(st.Object, "metadata", "namespace") != "shop" || get(st.Object, "metadata", "labels", plan.LabelManagedBy) != plan.ManagedBy ||
			"AuthorizationPolicy/"+get(st.Object, "metadata", "name").(string) != st.Target {
			t.Errorf("step %d object = %v", i, st.Object)
		}
		dry := get(st.Object, "metadata", "annotations", plan.AnnotationDryRun)
		if i < 4 && dry != "true" {
			t.Errorf("step %d (%s) before the gate: dry-run annotation %#v, want \"true\"", i, st.Target, dry)
		}
		if i > 4 && get(st.Object, "metadata", "annotations") != nil {
			t.Errorf("step %d (%s) after the gate is enforced and must carry no annotation: %v", i, st.Target, get(st.Object, "metadata", "annotations"))
		}
		if i > 4 && !reflect.DeepEqual(get(st.Object, "spec"), get(authz.Steps[i-5].Object, "spec")) {
			t.Errorf("enforced %s differs from its dry-run copy", st.Target)
		}
	}

	api := authz.Steps[0].Object
	if got := get(api, "spec", "selector", "matchLabels"); !reflect.DeepEqual(got, map[string]any{"app": "api", "team": "checkout"}) {
		t.Errorf("allow-api selector = %v: want the labels all api pods share, without pod-template-hash or injector labels", got)
	}
	if get(api, "spec", "action") != "ALLOW" {
		t.Errorf("allow-api action = %v", get(api, "spec", "action"))
	}
	wantAPI := rules(rule("cluster.local/ns/shop/sa/report", "8080"), rule("cluster.local/ns/shop/sa/web", "8080", "9090"))
	if got := get(api, "spec", "rules"); !reflect.DeepEqual(got, wantAPI) {
		t.Errorf("allow-api rules = %v\nwant %v", got, wantAPI)
	}
	db := authz.Steps[1].Object
	if got := get(db, "spec", "selector", "matchLabels"); !reflect.DeepEqual(got, map[string]any{"app": "db"}) {
		t.Errorf("allow-db selector = %v: StatefulSet pod-name and revision labels must not select", got)
	}
	// web was also seen without a port: its rule allows any port.
	wantDB := rules(rule("cluster.local/ns/shop/sa/api", "5432"), rule("cluster.local/ns/shop/sa/web"))
	if got := get(db, "spec", "rules"); !reflect.DeepEqual(got, wantDB) {
		t.Errorf("allow-db rules = %v\nwant %v", got, wantDB)
	}
	web := authz.Steps[2].Object
	if got := get(web, "spec", "rules"); !reflect.DeepEqual(got, rules(rule("cluster.local/ns/ingress/sa/ingress-gateway"))) {
		t.Errorf("allow-web rules = %v: telemetry gave no port, so the rule has no ports", got)
	}
	for _, st := range authz.Steps {
		for _, r := range asSlice(get(st.Object, "spec", "rules")) {
			for _, f := range asSlice(get(r.(map[string]any), "from")) {
				for _, pr := range asSlice(get(f.(map[string]any), "source", "principals")) {
					if strings.HasPrefix(pr.(string), "spiffe://") {
						t.Errorf("principal %q: AuthorizationPolicies spell principals without spiffe://", pr)
					}
				}
			}
		}
	}

	nothing := authz.Steps[3].Object
	if spec := get(nothing, "spec"); !reflect.DeepEqual(spec, map[string]any{}) {
		t.Errorf("allow-nothing spec = %#v, want {}", spec)
	}
	out, err := p.Marshal(false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "spec: {}") || !strings.Contains(string(out), `istio.io/dry-run: "true"`) {
		t.Errorf("the YAML must show the allow-nothing as spec: {} and the dry-run annotation as a string")
	}

	// admin has no observed caller: it is listed, and the enforced
	// allow-nothing waits for an acknowledgement. The CronJob serves
	// nothing and is not listed.
	if n := nsOf(t, p, "shop"); !reflect.DeepEqual(n.Uncovered, []string{"shop/admin"}) {
		t.Errorf("uncovered = %v, want [shop/admin]", n.Uncovered)
	}
	if len(steps(authz, "AuthorizationPolicy/meshmigrate-allow-admin")) != 0 || len(steps(authz, "AuthorizationPolicy/meshmigrate-allow-report")) != 0 {
		t.Error("no ALLOW policy for workloads without callers")
	}
	if st := authz.Steps[3]; st.Status != plan.StatusPending {
		t.Errorf("dry-run allow-nothing = %s %q: a dry run denies nothing", st.Status, st.Reason)
	}
	enf := authz.Steps[8]
	if enf.Status != plan.StatusBlocked || !strings.Contains(enf.Reason, "shop/admin") || !strings.Contains(enf.Reason, "--allow-no-callers") {
		t.Errorf("enforced allow-nothing = %s %q, want blocked naming shop/admin", enf.Status, enf.Reason)
	}
	for _, st := range authz.Steps[5:8] {
		if st.Status != plan.StatusPending || !strings.HasPrefix(st.Reason, "enforce: allow ") {
			t.Errorf("enforced allow %s = %s %q", st.Target, st.Status, st.Reason)
		}
	}
	if authz.Status != plan.StatusBlocked || !containsPrefix(p.Summary.BlockedSteps, "shop authz: AuthorizationPolicy/meshmigrate-allow-nothing: ") {
		t.Errorf("authz = %s; summary %q", authz.Status, p.Summary.BlockedSteps)
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func TestAllowNoCallersAcknowledgesUncoveredWorkloads(t *testing.T) {
	s, g := authzEstate()
	for _, ack := range [][]string{{"shop/admin"}, {"shop/*"}} {
		p := build(t, s, g, plan.Options{AllowNoCallers: ack})
		authz := phaseOf(t, p, "shop", plan.PhaseAuthz)
		last := authz.Steps[len(authz.Steps)-1]
		if last.Target != "AuthorizationPolicy/meshmigrate-allow-nothing" || last.Status != plan.StatusPending || get(last.Object, "metadata", "annotations") != nil {
			t.Errorf("%v: enforced allow-nothing = %s %q", ack, last.Status, last.Reason)
		}
		if n := nsOf(t, p, "shop"); !reflect.DeepEqual(n.Uncovered, []string{"shop/admin"}) {
			t.Errorf("%v: uncovered = %v: acknowledged workloads are still listed", ack, n.Uncovered)
		}
		if p.NeedsAttention() {
			t.Errorf("%v: summary %q", ack, p.Summary.BlockedSteps)
		}
	}
	// Acknowledging another workload does not cover admin.
	p := build(t, s, g, plan.Options{AllowNoCallers: []string{"shop/web"}})
	authz := phaseOf(t, p, "shop", plan.PhaseAuthz)
	if last := authz.Steps[len(authz.Steps)-1]; last.Status != plan.StatusBlocked {
		t.Errorf("acknowledging shop/web: enforced allow-nothing = %s", last.Status)
	}
}

// TestPredictedPrincipals: callers the plan meshes have no principal yet;
// the plan predicts them from their service accounts in the mesh's trust
// domain.
func TestPredictedPrincipals(t *testing.T) {
	s := estate()
	s.Mesh.TrustDomain = "corp.example"
	s.Namespaces = []cluster.Namespace{ns("pay"), ns("shop", labelInjection, "enabled")}
	billing := deploy("pay", "billing", 2)
	billing[1].ServiceAccount = "billing-legacy"
	worker := deploy("pay", "worker", 1)
	worker[0].ServiceAccount = ""
	s.Pods = pods(billing, worker, deploy("shop", "api", 1, injected("1-30")), deploy("shop", "web", 1, injected("1-30")))
	g := graphOf(
		plain("pay/billing", "shop/api"),
		plain("pay/worker", "shop/api"),
		mtlsAs("shop/web", "corp.example/ns/shop/sa/web", "shop/api", 8080),
		mtlsAs("edge/gw", "corp.example/ns/edge/sa/gw", "shop/web", 8080),
	)
	p := build(t, s, g, plan.Options{})

	if got := wavesOf(p); !reflect.DeepEqual(got, [][]string{{"pay"}, {"shop"}}) {
		t.Errorf("waves = %v: pay calls shop in plaintext and goes first", got)
	}
	if p.Mesh.TrustDomain != "corp.example" {
		t.Errorf("mesh = %+v", p.Mesh)
	}
	if st := phaseOf(t, p, "shop", plan.PhaseStrict).Status; st != plan.StatusPending {
		t.Fatalf("shop strict = %s: callers meshed by the plan must not block", st)
	}
	authz := phaseOf(t, p, "shop", plan.PhaseAuthz)
	allow := steps(authz, "AuthorizationPolicy/meshmigrate-allow-api")
	if len(allow) != 2 {
		t.Fatalf("allow-api steps: %s", describeSteps(authz.Steps))
	}
	want := rules(
		rule("corp.example/ns/pay/sa/billing"),
		rule("corp.example/ns/pay/sa/billing-legacy"),
		rule("corp.example/ns/pay/sa/default"),
		rule("corp.example/ns/shop/sa/web", "8080"),
	)
	for _, st := range allow {
		if got := get(st.Object, "spec", "rules"); !reflect.DeepEqual(got, want) {
			t.Errorf("allow-api rules = %v\nwant %v", got, want)
		}
		if st.Status != plan.StatusPending || !strings.Contains(st.Reason, "principals predicted from service accounts") ||
			!strings.Contains(st.Reason, "corp.example/ns/pay/sa/billing-legacy (for pay/billing, meshed by this plan)") ||
			strings.Contains(st.Reason, "corp.example/ns/shop/sa/web (for") {
			t.Errorf("allow-api reason %q must say which principals are predicted (and only those)", st.Reason)
		}
	}
	out, _ := p.Marshal(false)
	if strings.Contains(string(out), "cluster.local/ns/") {
		t.Error("a principal in the plan uses cluster.local while the mesh's trust domain is corp.example")
	}
}

func TestAuthzModes(t *testing.T) {
	s, g := authzEstate()

	off := build(t, s, g, plan.Options{Authz: plan.AuthzOff})
	if a := phaseOf(t, off, "shop", plan.PhaseAuthz); a.Status != plan.StatusSkipped || len(a.Steps) != 0 || !strings.Contains(a.Reason, "--authz off") {
		t.Errorf("--authz off: %+v", a)
	}
	if st := phaseOf(t, off, "shop", plan.PhaseStrict).Status; st != plan.StatusPending {
		t.Errorf("--authz off keeps STRICT: %s", st)
	}

	dry := build(t, s, g, plan.Options{Authz: plan.AuthzDryRun})
	a := phaseOf(t, dry, "shop", plan.PhaseAuthz)
	if len(a.Steps) != 4 {
		t.Fatalf("--authz dry-run: %s", describeSteps(a.Steps))
	}
	for _, st := range a.Steps {
		if st.Action == plan.ActionGate || get(st.Object, "metadata", "annotations", plan.AnnotationDryRun) != "true" {
			t.Errorf("--authz dry-run step %s: %s, annotations %v", st.Target, st.Action, get(st.Object, "metadata", "annotations"))
		}
	}
	if a.Status != plan.StatusPending {
		t.Errorf("--authz dry-run denies nothing, so an uncovered workload does not block it: %s %q", a.Status, a.Reason)
	}

	perm := build(t, s, g, plan.Options{Target: plan.TargetPermissive})
	for _, name := range []plan.PhaseName{plan.PhaseVerify, plan.PhaseStrict, plan.PhaseAuthz} {
		ph := phaseOf(t, perm, "shop", name)
		if ph.Status != plan.StatusSkipped || len(ph.Steps) != 0 || !strings.Contains(ph.Reason, "--target permissive") {
			t.Errorf("--target permissive: %s = %s %q with %d steps", name, ph.Status, ph.Reason, len(ph.Steps))
		}
	}
	if ph := phaseOf(t, perm, "shop", plan.PhasePermissive); ph.Status != plan.StatusPending {
		t.Errorf("--target permissive still pins PERMISSIVE: %s", ph.Status)
	}
	out, _ := perm.Marshal(false)
	if strings.Contains(string(out), "mode: STRICT") || strings.Contains(string(out), "AuthorizationPolicy") {
		t.Error("--target permissive: the plan holds a STRICT or authorization object")
	}
}

func TestAuthzNeedsObservedTraffic(t *testing.T) {
	s, _ := authzEstate()
	p := build(t, s, nil, plan.Options{})
	if p.Traffic != nil {
		t.Errorf("traffic = %+v, want nil when telemetry was not read", p.Traffic)
	}
	a := phaseOf(t, p, "shop", plan.PhaseAuthz)
	if a.Status != plan.StatusBlocked || len(a.Steps) != 0 || !strings.Contains(a.Reason, "telemetry was not read") {
		t.Errorf("authz without traffic = %s %q", a.Status, a.Reason)
	}
	v := phaseOf(t, p, "shop", plan.PhaseVerify)
	if !strings.Contains(strings.Join(v.Notes, "\n"), "nothing is assumed safe") {
		t.Errorf("verify notes %q", v.Notes)
	}

	// Telemetry read, but nothing into shop: inconclusive, still blocked.
	p = build(t, s, graphOf(mtls("other/a", "other/b", 80)), plan.Options{})
	if a := phaseOf(t, p, "shop", plan.PhaseAuthz); a.Status != plan.StatusBlocked || !strings.Contains(a.Reason, "no inbound traffic observed") {
		t.Errorf("authz with no inbound traffic = %s %q", a.Status, a.Reason)
	}
}

func TestSelectorMatchingAnotherWorkloadBlocks(t *testing.T) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("shop", labelInjection, "enabled")}
	s.Pods = pods(
		deploy("shop", "web", 1, injected("1-30")),
		deploy("shop", "api", 2, injected("1-30")),
		deploy("shop", "api-canary", 1, injected("1-30"), podLabel("app", "api"), podLabel("track", "canary")),
	)
	g := graphOf(
		mtls("edge/gw", "shop/web", 8080),
		mtls("shop/web", "shop/api", 8080),
		mtls("shop/web", "shop/api-canary", 8080),
	)
	p := build(t, s, g, plan.Options{})
	authz := phaseOf(t, p, "shop", plan.PhaseAuthz)
	// apply -f loads it: a blocked apply step has no object to check.
	raw, err := p.Marshal(false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Parse(raw); err != nil {
		t.Errorf("the plan does not load: %v", err)
	}

	for _, st := range steps(authz, "AuthorizationPolicy/meshmigrate-allow-api") {
		if st.Status != plan.StatusBlocked || st.Object != nil || !strings.Contains(st.Reason, "app=api") || !strings.Contains(st.Reason, "also select Deployment/api-canary") {
			t.Errorf("allow-api = %s %q, object %v: its selector reaches api-canary's pods", st.Status, st.Reason, st.Object)
		}
	}
	canary := steps(authz, "AuthorizationPolicy/meshmigrate-allow-api-canary")
	if len(canary) != 2 {
		t.Fatalf("allow-api-canary: %s", describeSteps(authz.Steps))
	}
	for _, st := range canary {
		if st.Status != plan.StatusPending || !reflect.DeepEqual(get(st.Object, "spec", "selector", "matchLabels"), map[string]any{"app": "api", "track": "canary"}) {
			t.Errorf("allow-api-canary = %s %v", st.Status, get(st.Object, "spec", "selector"))
		}
	}
	for _, st := range steps(authz, "AuthorizationPolicy/meshmigrate-allow-nothing") {
		if st.Status != plan.StatusBlocked || !strings.Contains(st.Reason, "no policy can select api") {
			t.Errorf("allow-nothing = %s %q: a caller of api would be denied", st.Status, st.Reason)
		}
	}
	if p.Summary.Blocked != blockedCount(p) || !containsPrefix(p.Summary.BlockedSteps, "shop authz: AuthorizationPolicy/meshmigrate-allow-api: ") {
		t.Errorf("summary %+v", p.Summary)
	}
}

// TestAllowsComeBeforeAllowNothing checks the invariant on every plan the
// other fixtures make: in the authz phase, before and after the gate, no
// allow-nothing precedes an ALLOW policy, and nothing is enforced before the
// gate.
func TestAllowsComeBeforeAllowNothing(t *testing.T) {
	type fixture struct {
		s *cluster.Snapshot
		g *traffic.Graph
	}
	var fixtures []fixture
	for _, f := range []func() (*cluster.Snapshot, *traffic.Graph){authzEstate, cleanEstate, richEstate} {
		s, g := f()
		fixtures = append(fixtures, fixture{s, g})
	}
	for i, f := range fixtures {
		for _, opts := range []plan.Options{{}, {Authz: plan.AuthzDryRun}, {AllowNoCallers: []string{"shop/*"}}} {
			p := build(t, f.s, f.g, opts)
			for _, n := range p.Namespaces {
				a, _ := n.Phase(plan.PhaseAuthz)
				gateSeen, nothingSeen := false, false
				for _, st := range a.Steps {
					switch {
					case st.Action == plan.ActionGate:
						gateSeen, nothingSeen = true, false
					case st.Target == "AuthorizationPolicy/meshmigrate-allow-nothing":
						nothingSeen = true
					case nothingSeen:
						t.Errorf("fixture %d %s: %s comes after the allow-nothing", i, n.Name, st.Target)
					}
					if st.Object != nil && !gateSeen && get(st.Object, "metadata", "annotations", plan.AnnotationDryRun) != "true" {
						t.Errorf("fixture %d %s: %s is enforced before the gate", i, n.Name, st.Target)
					}
				}
			}
		}
	}
}
