package plan_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// chainEstate: a calls b in plaintext, b calls c in plaintext, and d is
// called in plaintext by both a (wave 1) and c (wave 3). Nothing is meshed
// yet; the default injector serves every namespace.
func chainEstate() (*cluster.Snapshot, *traffic.Graph) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("a"), ns("b"), ns("c"), ns("d")}
	s.Pods = pods(deploy("a", "client", 1), deploy("b", "server", 2), deploy("c", "db", 1), deploy("d", "sink", 1))
	g := graphOf(
		plain("a/client", "b/server"),
		plain("b/server", "c/db"),
		plain("a/client", "d/sink"),
		plain("c/db", "d/sink"),
	)
	return s, g
}

func TestWavesPutPlaintextCallersFirst(t *testing.T) {
	s, g := chainEstate()
	p := build(t, s, g, plan.Options{})

	want := [][]string{{"a"}, {"b"}, {"c"}, {"d"}}
	if got := wavesOf(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("waves = %v, want %v (a namespace that calls another in plaintext goes first)", got, want)
	}
	for i, w := range p.Waves {
		if w.Number != i+1 {
			t.Errorf("wave %d is numbered %d", i, w.Number)
		}
	}
	wave := map[string]int{}
	for _, n := range p.Namespaces {
		wave[n.Name] = n.Wave
	}
	if !(wave["a"] < wave["b"] && wave["b"] < wave["c"] && wave["c"] < wave["d"]) {
		t.Errorf("namespace waves %v: want a < b < c < d", wave)
	}
	if got := names(p); !reflect.DeepEqual(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("namespaces are listed %v, want in wave order", got)
	}
	calledBy := map[string][]string{}
	for _, n := range p.Namespaces {
		calledBy[n.Name] = n.CalledBy
	}
	wantCalled := map[string][]string{"a": nil, "b": {"a"}, "c": {"b"}, "d": {"a", "c"}}
	if !reflect.DeepEqual(calledBy, wantCalled) {
		t.Errorf("CalledBy = %v, want %v", calledBy, wantCalled)
	}
	if p.Summary.Waves != 4 || p.Summary.Namespaces != 4 {
		t.Errorf("summary = %+v, want 4 waves and 4 namespaces", p.Summary)
	}

	// The plaintext caller of b is meshed by a's inject phase: the verify
	// gate expects it to clear, it does not block, and STRICT is planned.
	v := phaseOf(t, p, "b", plan.PhaseVerify)
	if v.Status != plan.StatusPending || v.Gate == nil || v.Gate.Name != plan.GateNoPlaintext {
		t.Fatalf("b verify = %+v, want pending with the no-plaintext gate", v)
	}
	if len(v.Gate.Expect) != 1 || !strings.Contains(v.Gate.Expect[0], "a/client -> server") || !strings.Contains(v.Gate.Expect[0], "the inject phase of a meshes it") {
		t.Errorf("b verify gate expects %q, want a/client cleared by a's inject phase", v.Gate.Expect)
	}
	strict := oneStep(t, phaseOf(t, p, "b", plan.PhaseStrict), "PeerAuthentication/default")
	if strict.Status != plan.StatusPending || get(strict.Object, "spec", "mtls", "mode") != cluster.ModeStrict {
		t.Errorf("b strict step = %+v, want a pending STRICT PeerAuthentication", strict)
	}
}

func TestCycleSharesAWave(t *testing.T) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("x"), ns("y"), ns("z")}
	s.Pods = pods(deploy("x", "app", 1), deploy("y", "app", 1), deploy("z", "store", 1))
	g := graphOf(
		plain("x/app", "y/app"),
		plain("y/app", "x/app"),
		plain("y/app", "z/store"),
	)
	p := build(t, s, g, plan.Options{})
	want := [][]string{{"x", "y"}, {"z"}}
	if got := wavesOf(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("waves = %v, want %v: a cycle shares one wave, its callee comes after", got, want)
	}
	if x, y := nsOf(t, p, "x"), nsOf(t, p, "y"); x.Wave != y.Wave || !reflect.DeepEqual(x.CalledBy, []string{"y"}) || !reflect.DeepEqual(y.CalledBy, []string{"x"}) {
		t.Errorf("x = wave %d calledBy %v, y = wave %d calledBy %v", x.Wave, x.CalledBy, y.Wave, y.CalledBy)
	}
	for _, name := range []string{"x", "y", "z"} {
		if st := phaseOf(t, p, name, plan.PhaseStrict).Status; st != plan.StatusPending {
			t.Errorf("%s strict is %s: callers inside the plan must not block", name, st)
		}
	}
}

func TestMTLSCallersCreateNoOrdering(t *testing.T) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("pay", "istio-injection", "enabled"), ns("shop", "istio-injection", "enabled")}
	s.Pods = pods(deploy("pay", "api", 1, injected("1-30")), deploy("shop", "web", 1, injected("1-30")))
	g := graphOf(mtls("shop/web", "pay/api", 8080), mtls("pay/api", "shop/web", 8080))
	p := build(t, s, g, plan.Options{})
	if got := wavesOf(p); !reflect.DeepEqual(got, [][]string{{"pay", "shop"}}) {
		t.Fatalf("waves = %v, want a single wave: mTLS callers need nothing first", got)
	}
	for _, n := range p.Namespaces {
		if n.CalledBy != nil {
			t.Errorf("%s CalledBy = %v, want none", n.Name, n.CalledBy)
		}
		if v, _ := n.Phase(plan.PhaseVerify); v.Status != plan.StatusPending || len(v.Gate.Expect) != 0 {
			t.Errorf("%s verify = %+v", n.Name, v)
		}
	}

	// The same edges in plaintext do order the namespaces (into one
	// cycle): the test above is not vacuous.
	g = graphOf(plain("shop/web", "pay/api"))
	p = build(t, s, g, plan.Options{})
	if got := wavesOf(p); !reflect.DeepEqual(got, [][]string{{"shop"}, {"pay"}}) {
		t.Errorf("plaintext shop -> pay: waves = %v", got)
	}
}

// TestCallersThePlanCannotMeshBlockStrict: the verify gate would never pass,
// so the plan marks it and the STRICT step blocked, naming the client.
func TestCallersThePlanCannotMeshBlockStrict(t *testing.T) {
	cases := []struct {
		name   string
		edge   traffic.Edge
		opts   plan.Options
		client string // as the reason names it
		why    string
		waves  [][]string
	}{
		// Callers outside the planned namespaces create no wave; a planned
		// namespace calling in plaintext still goes first.
		{"outside the plan", plain("legacy/cron", "shop/api"), plan.Options{}, "legacy/cron", "namespace legacy is outside this plan", [][]string{{"batch", "shop"}}},
		{"unidentified", plain("unknown", "shop/api"), plan.Options{}, "unidentified clients without a sidecar", "Istio cannot name them", [][]string{{"batch", "shop"}}},
		{"excluded workload", plain("batch/loader", "shop/api"), plan.Options{ExcludeWorkloads: []string{"batch/loader"}}, "batch/loader", "the plan does not mesh it", [][]string{{"batch"}, {"shop"}}},
		{"opted out", plain("batch/optout", "shop/api"), plan.Options{}, "batch/optout", "the plan does not mesh it", [][]string{{"batch"}, {"shop"}}},
		{"sidecar but plaintext", plain("batch/meshed", "shop/api"), plan.Options{}, "batch/meshed", "it has a sidecar but still sends plaintext", [][]string{{"batch"}, {"shop"}}},
		{"no such workload", plain("batch/gone", "shop/api"), plan.Options{}, "batch/gone", "no running workload of that name", [][]string{{"batch"}, {"shop"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := estate()
			s.Namespaces = []cluster.Namespace{ns("batch", "istio-injection", "enabled"), ns("shop", "istio-injection", "enabled")}
			s.Pods = pods(
				deploy("shop", "api", 2, injected("1-30")),
				deploy("batch", "loader", 1),
				deploy("batch", "optout", 1, podLabel("sidecar.istio.io/inject", "false")),
				deploy("batch", "meshed", 1, injected("1-30")),
			)
			p := build(t, s, graphOf(c.edge, mtls("batch/meshed", "shop/api", 8080)), c.opts)

			v := phaseOf(t, p, "shop", plan.PhaseVerify)
			if v.Status != plan.StatusBlocked || !strings.Contains(v.Reason, c.client+" -> api") || !strings.Contains(v.Reason, c.why) {
				t.Errorf("verify = %s %q, want blocked naming %q (%s)", v.Status, v.Reason, c.client, c.why)
			}
			strictPh := phaseOf(t, p, "shop", plan.PhaseStrict)
			st := oneStep(t, strictPh, "PeerAuthentication/default")
			if st.Status != plan.StatusBlocked || st.Forced || !strings.Contains(st.Reason, c.client) {
				t.Errorf("strict step = %s %q, want blocked naming %q", st.Status, st.Reason, c.client)
			}
			if strictPh.Status != plan.StatusBlocked {
				t.Errorf("strict phase = %s, want blocked", strictPh.Status)
			}
			if a := phaseOf(t, p, "shop", plan.PhaseAuthz); a.Status != plan.StatusBlocked || !strings.Contains(a.Reason, "needs STRICT first") {
				t.Errorf("authz = %s %q, want blocked until STRICT", a.Status, a.Reason)
			}
			if !p.NeedsAttention() {
				t.Error("a plan with a blocked STRICT step must need attention")
			}
			var lines []string
			for _, l := range p.Summary.BlockedSteps {
				if strings.HasPrefix(l, "shop verify: ") || strings.HasPrefix(l, "shop strict: PeerAuthentication/default: ") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 2 {
				t.Errorf("summary blocked steps %q: want the verify phase and the STRICT step", p.Summary.BlockedSteps)
			}
			if got := wavesOf(p); !reflect.DeepEqual(got, c.waves) {
				t.Errorf("waves = %v, want %v", got, c.waves)
			}
		})
	}
}

func TestBlockedPhasesKeepAllFivePhases(t *testing.T) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("off", "istio-injection", "disabled")}
	s.Pods = deploy("off", "legacy", 2)
	p := build(t, s, graphOf(plain("unknown", "off/legacy")), plan.Options{})
	n := nsOf(t, p, "off")
	var got []plan.PhaseName
	for _, ph := range n.Phases {
		got = append(got, ph.Name)
	}
	if !reflect.DeepEqual(got, plan.Phases) {
		t.Errorf("phases = %v, want all of %v even when blocked", got, plan.Phases)
	}
	inject := phaseOf(t, p, "off", plan.PhaseInject)
	label := oneStep(t, inject, "Namespace/off")
	if label.Action != plan.ActionLabelNamespace || label.Status != plan.StatusBlocked || !strings.Contains(label.Reason, "istio-injection=disabled") {
		t.Errorf("label step = %+v, want a blocked label-namespace saying istio-injection=disabled", label)
	}
	if label.Labels != nil || label.Remove != nil {
		t.Errorf("a blocked label step must change nothing: set %v remove %v", label.Labels, label.Remove)
	}
	if inject.Status != plan.StatusBlocked || !strings.Contains(inject.Reason, "istio-injection=disabled") {
		t.Errorf("inject phase = %s %q", inject.Status, inject.Reason)
	}
	if !containsPrefix(p.Summary.BlockedSteps, "off inject: Namespace/off: istio-injection=disabled") {
		t.Errorf("summary %q lacks the blocked label step", p.Summary.BlockedSteps)
	}
}

func TestOnDeleteStatefulSetNamesThePodsToDelete(t *testing.T) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("db", "istio-injection", "enabled")}
	s.Pods = pods(workload("db", "StatefulSet", "pg", 2), workload("db", "StatefulSet", "cache", 1), deploy("db", "admin", 1))
	s.OnDelete = []cluster.NamespacedWorkload{{Namespace: "db", WorkloadRef: cluster.WorkloadRef{Kind: "StatefulSet", Name: "pg"}}}
	p := build(t, s, nil, plan.Options{})
	inject := phaseOf(t, p, "db", plan.PhaseInject)

	pg := oneStep(t, inject, "StatefulSet/pg")
	if pg.Action != plan.ActionReport || pg.Status != plan.StatusBlocked {
		t.Errorf("pg step = %s %s, want a blocked report (a restart does not replace OnDelete pods)", pg.Action, pg.Status)
	}
	if !strings.Contains(pg.Reason, "OnDelete") || !strings.Contains(pg.Reason, "kubectl delete pod -n db pg-0 pg-1") {
		t.Errorf("pg reason %q must name the pods to delete", pg.Reason)
	}
	for _, target := range []string{"StatefulSet/cache", "Deployment/admin"} {
		if st := oneStep(t, inject, target); st.Action != plan.ActionRestartWorkload || st.Status != plan.StatusPending {
			t.Errorf("%s = %s %s, want a pending restart", target, st.Action, st.Status)
		}
	}
	if inject.Status != plan.StatusBlocked || !strings.HasPrefix(inject.Reason, "StatefulSet/pg: ") {
		t.Errorf("inject phase = %s %q", inject.Status, inject.Reason)
	}
	if !containsPrefix(p.Summary.BlockedSteps, "db inject: StatefulSet/pg: updateStrategy OnDelete") {
		t.Errorf("summary %q lacks the OnDelete step", p.Summary.BlockedSteps)
	}
}

func TestNoInjectorBlocksInjection(t *testing.T) {
	s := estate()
	s.Injectors = nil
	s.Namespaces = []cluster.Namespace{ns("shop")}
	s.Pods = deploy("shop", "web", 1)
	p := build(t, s, nil, plan.Options{})
	inject := phaseOf(t, p, "shop", plan.PhaseInject)
	label := oneStep(t, inject, "Namespace/shop")
	if label.Status != plan.StatusBlocked || !strings.Contains(label.Reason, "injector is not installed") {
		t.Errorf("label step = %s %q, want blocked: no injector", label.Status, label.Reason)
	}
	if inject.Status != plan.StatusBlocked {
		t.Errorf("inject phase = %s", inject.Status)
	}
	if !p.NeedsAttention() {
		t.Error("plan must need attention")
	}
}

// monitoringEstate: a hostNetwork DaemonSet Istio never injects, next to a
// meshed Deployment.
func monitoringEstate() *cluster.Snapshot {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("monitoring", "istio-injection", "enabled")}
	s.Pods = pods(workload("monitoring", "DaemonSet", "node-exporter", 2, hostNetwork()), deploy("monitoring", "grafana", 1, injected("1-30")))
	return s
}

func TestHostNetworkDaemonSetBlocksStrict(t *testing.T) {
	s := monitoringEstate()
	p := build(t, s, graphOf(mtls("ops/browser", "monitoring/grafana", 3000)), plan.Options{})
	inject := phaseOf(t, p, "monitoring", plan.PhaseInject)
	ds := oneStep(t, inject, "DaemonSet/node-exporter")
	if ds.Action != plan.ActionReport || ds.Status != plan.StatusSkipped || !strings.Contains(ds.Reason, "hostNetwork") ||
		!strings.Contains(ds.Reason, "node-exporter-node0") || !strings.Contains(ds.Reason, "node-exporter-node1") {
		t.Errorf("DaemonSet step = %+v, want a skipped report naming its hostNetwork pods", ds)
	}
	if inject.Status == plan.StatusBlocked {
		t.Errorf("inject is %s: pods that cannot be injected are reported, not forced", inject.Status)
	}
	st := oneStep(t, phaseOf(t, p, "monitoring", plan.PhaseStrict), "PeerAuthentication/default")
	if st.Status != plan.StatusBlocked || st.Forced || !strings.Contains(st.Reason, "DaemonSet/node-exporter stays out of the mesh") {
		t.Errorf("strict step = %s forced=%t %q, want blocked by the unmeshed DaemonSet", st.Status, st.Forced, st.Reason)
	}
}

func TestForceStrict(t *testing.T) {
	s := monitoringEstate()
	s.Namespaces = append(s.Namespaces, ns("shop", "istio-injection", "enabled"))
	s.Pods = append(s.Pods, deploy("shop", "api", 1, injected("1-30"))...)
	g := graphOf(mtls("ops/browser", "monitoring/grafana", 3000), plain("legacy/cron", "shop/api"))

	unforced := build(t, s, g, plan.Options{})
	forced := build(t, s, g, plan.Options{ForceStrict: []string{"monitoring", "shop"}})

	for _, name := range []string{"monitoring", "shop"} {
		before := oneStep(t, phaseOf(t, unforced, name, plan.PhaseStrict), "PeerAuthentication/default")
		after := oneStep(t, phaseOf(t, forced, name, plan.PhaseStrict), "PeerAuthentication/default")
		if before.Status != plan.StatusBlocked || before.Forced {
			t.Fatalf("%s without --force-strict: %s forced=%t", name, before.Status, before.Forced)
		}
		if after.Status != plan.StatusPending || !after.Forced {
			t.Errorf("%s with --force-strict: %s forced=%t, want pending and Forced", name, after.Status, after.Forced)
		}
		if !strings.HasPrefix(after.Reason, "FORCED by --force-strict over: ") || !strings.Contains(after.Reason, before.Reason) {
			t.Errorf("%s forced reason %q must carry the blockers %q", name, after.Reason, before.Reason)
		}
		if get(after.Object, "spec", "mtls", "mode") != cluster.ModeStrict {
			t.Errorf("%s forced step object = %v", name, after.Object)
		}
		for _, l := range forced.Summary.BlockedSteps {
			if strings.HasPrefix(l, name+" strict:") || strings.HasPrefix(l, name+" verify:") {
				t.Errorf("forced plan still counts %q as blocked", l)
			}
		}
	}
	if r := oneStep(t, phaseOf(t, forced, "monitoring", plan.PhaseStrict), "PeerAuthentication/default").Reason; !strings.Contains(r, "node-exporter") {
		t.Errorf("forced monitoring reason %q must name the DaemonSet", r)
	}
	if r := oneStep(t, phaseOf(t, forced, "shop", plan.PhaseStrict), "PeerAuthentication/default").Reason; !strings.Contains(r, "legacy/cron") {
		t.Errorf("forced shop reason %q must name the plaintext client", r)
	}
	// The verify gate is not enforced for a forced namespace, and says what
	// it would fail on.
	v := phaseOf(t, forced, "shop", plan.PhaseVerify)
	if v.Status != plan.StatusSkipped || !strings.Contains(v.Reason, "--force-strict") || !strings.Contains(v.Reason, "legacy/cron") {
		t.Errorf("forced verify = %s %q", v.Status, v.Reason)
	}
	if forced.Summary.Blocked >= unforced.Summary.Blocked {
		t.Errorf("forcing must unblock steps: blocked %d -> %d", unforced.Summary.Blocked, forced.Summary.Blocked)
	}

	// Forcing one namespace leaves the other one blocked.
	one := build(t, s, g, plan.Options{ForceStrict: []string{"shop"}})
	if st := oneStep(t, phaseOf(t, one, "monitoring", plan.PhaseStrict), "PeerAuthentication/default"); st.Status != plan.StatusBlocked || st.Forced {
		t.Errorf("monitoring not forced: %s forced=%t", st.Status, st.Forced)
	}
}

func TestSummaryCountsEveryBlockedStep(t *testing.T) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("db", "istio-injection", "enabled"), ns("off", "istio-injection", "disabled"), ns("shop", "istio-injection", "enabled")}
	s.Pods = pods(workload("db", "StatefulSet", "pg", 1), deploy("off", "legacy", 1), deploy("shop", "web", 1, injected("1-30")))
	s.OnDelete = []cluster.NamespacedWorkload{{Namespace: "db", WorkloadRef: cluster.WorkloadRef{Kind: "StatefulSet", Name: "pg"}}}
	g := graphOf(mtls("ingress/gw", "shop/web", 8080), mtls("shop/web", "db/pg", 5432), plain("legacy/cron", "db/pg"))
	p := build(t, s, g, plan.Options{})

	if p.Summary.Blocked != blockedCount(p) || p.Summary.Blocked != len(p.Summary.BlockedSteps) {
		t.Fatalf("summary blocked %d, %d lines; the plan holds %d blocked steps and phases: %q",
			p.Summary.Blocked, len(p.Summary.BlockedSteps), blockedCount(p), p.Summary.BlockedSteps)
	}
	for _, prefix := range []string{
		"db inject: StatefulSet/pg: ",
		"db verify: plaintext callers the plan does not mesh: legacy/cron",
		"db strict: PeerAuthentication/default: ",
		"db authz: needs STRICT first",
		"off inject: Namespace/off: ",
		"off authz: ",
	} {
		if !containsPrefix(p.Summary.BlockedSteps, prefix) {
			t.Errorf("summary lacks %q: %q", prefix, p.Summary.BlockedSteps)
		}
	}
	// off's inject is blocked, so its pod stays unmeshed: STRICT is blocked
	// for that reason, and authz behind it.
	if !containsPrefix(p.Summary.BlockedSteps, "off strict: PeerAuthentication/default: the inject phase is blocked, so 1 pod stays without a sidecar") ||
		!strings.Contains(phaseOf(t, p, "off", plan.PhaseAuthz).Reason, "needs STRICT first") {
		t.Errorf("off strict and authz must be blocked behind its blocked inject: %q", p.Summary.BlockedSteps)
	}
	for _, l := range p.Summary.BlockedSteps {
		if strings.HasPrefix(l, "shop ") {
			t.Errorf("shop has nothing blocked, but the summary says %q", l)
		}
	}
	if !p.NeedsAttention() {
		t.Error("NeedsAttention must be true")
	}
	pending := 0
	for _, n := range p.Namespaces {
		for _, ph := range n.Phases {
			for _, st := range ph.Steps {
				if st.Status == plan.StatusPending {
					pending++
				}
			}
		}
	}
	if p.Summary.Steps != pending {
		t.Errorf("summary steps = %d, the plan holds %d pending steps", p.Summary.Steps, pending)
	}
}

// cleanEstate: shop is labelled and meshed, and every workload has an
// observed mTLS caller: nothing needs attention.
func cleanEstate() (*cluster.Snapshot, *traffic.Graph) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = pods(deploy("shop", "web", 2, injected("1-30")), deploy("shop", "api", 2, injected("1-30")))
	g := graphOf(mtlsAs("ingress/gateway", "cluster.local/ns/ingress/sa/ingress-gateway", "shop/web", 8080), mtls("shop/web", "shop/api", 8080))
	return s, g
}

func TestCleanPlanNeedsNoAttention(t *testing.T) {
	s, g := cleanEstate()
	p := build(t, s, g, plan.Options{})
	if p.NeedsAttention() || p.Summary.Blocked != 0 || len(p.Summary.BlockedSteps) != 0 {
		t.Fatalf("clean plan: summary %+v", p.Summary)
	}
	wantStatus := map[plan.PhaseName]plan.Status{
		plan.PhaseInject: plan.StatusDone, plan.PhasePermissive: plan.StatusPending, plan.PhaseVerify: plan.StatusPending,
		plan.PhaseStrict: plan.StatusPending, plan.PhaseAuthz: plan.StatusPending,
	}
	for _, ph := range nsOf(t, p, "shop").Phases {
		if ph.Status != wantStatus[ph.Name] {
			t.Errorf("%s = %s %q, want %s", ph.Name, ph.Status, ph.Reason, wantStatus[ph.Name])
		}
	}
	pa := oneStep(t, phaseOf(t, p, "shop", plan.PhasePermissive), "PeerAuthentication/default")
	if pa.Action != plan.ActionApply || get(pa.Object, "spec", "mtls", "mode") != cluster.ModePermissive ||
		get(pa.Object, "metadata", "namespace") != "shop" || get(pa.Object, "apiVersion") != "security.istio.io/v1" {
		t.Errorf("permissive step = %+v", pa)
	}
	if p.Cluster != (plan.Cluster{Context: "prod", Server: "https://10.0.0.1:6443", UID: "uid-kube-system"}) {
		t.Errorf("cluster = %+v", p.Cluster)
	}
	if p.Traffic == nil || p.Traffic.Edges != 2 || p.Traffic.Window != "7d" || !p.Traffic.Start.Equal(g.Start) {
		t.Errorf("traffic = %+v", p.Traffic)
	}
	if p.Options.Target != plan.TargetStrict || p.Options.Authz != plan.AuthzEnforce {
		t.Errorf("default options = %+v, want strict and enforce", p.Options)
	}
}

func TestSkippedNamespaces(t *testing.T) {
	s, g := cleanEstate()
	s.Namespaces = append(s.Namespaces, ns("kube-system"), ns("istio-system"), ns("edge", "istio.io/dataplane-mode", "ambient"))
	p := build(t, s, g, plan.Options{})
	skipped := map[string]string{}
	for _, sk := range p.Skipped {
		skipped[sk.Name] = sk.Reason
	}
	if len(skipped) != 3 || !strings.Contains(skipped["edge"], "ambient") || skipped["kube-system"] == "" || skipped["istio-system"] == "" {
		t.Errorf("skipped = %v", skipped)
	}
	if got := names(p); !reflect.DeepEqual(got, []string{"shop"}) {
		t.Errorf("planned = %v", got)
	}
	if _, err := tryBuild(s, g, plan.Options{ForceStrict: []string{"kube-system"}}); err == nil || !strings.Contains(err.Error(), "--force-strict kube-system") {
		t.Errorf("--force-strict on a skipped namespace: err %v", err)
	}
}

func TestOptionsNamingNothingAreErrors(t *testing.T) {
	s, g := cleanEstate()
	cases := []struct {
		opts plan.Options
		want string
	}{
		{plan.Options{ExcludeWorkloads: []string{"shop"}}, "--exclude-workload"},
		{plan.Options{ExcludeWorkloads: []string{"shop/wbe"}}, `no running workload "wbe"`},
		{plan.Options{ExcludeWorkloads: []string{"nowhere/web"}}, "namespace nowhere is not in the plan's scope"},
		{plan.Options{PortExceptions: []string{"shop/api"}}, "want NAMESPACE/WORKLOAD:PORT"},
		{plan.Options{PortExceptions: []string{"shop/api:0"}}, "port must be 1-65535"},
		{plan.Options{PortExceptions: []string{"shop/api:65536"}}, "port must be 1-65535"},
		{plan.Options{PortExceptions: []string{"shop/ghost:80"}}, "--port-exception shop/ghost"},
		{plan.Options{AllowNoCallers: []string{"shop/ghost"}}, "--allow-no-callers shop/ghost"},
		{plan.Options{ForceStrict: []string{"nowhere"}}, "--force-strict nowhere"},
		{plan.Options{Revision: "1-99"}, "--revision 1-99"},
	}
	for _, c := range cases {
		p, err := tryBuild(s, g, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want one containing %q", c.opts, err, c.want)
		}
		if p != nil {
			t.Errorf("%+v: a plan came back with the error", c.opts)
		}
	}
	// The valid forms of the same options build.
	if _, err := tryBuild(s, g, plan.Options{ExcludeWorkloads: []string{"shop/web"}, PortExceptions: []string{"shop/api:9090"},
		AllowNoCallers: []string{"shop/*"}, ForceStrict: []string{"shop"}, Revision: "1-30"}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestPortExceptionKeepsPlaintextOnOnePort(t *testing.T) {
	s, _ := cleanEstate()
	scrape := plain("monitoring/prometheus", "shop/api")
	scrape.Port = 9090
	g := graphOf(mtlsAs("ingress/gateway", "cluster.local/ns/ingress/sa/ingress-gateway", "shop/web", 8080), mtls("shop/web", "shop/api", 8080), scrape)

	blocked := build(t, s, g, plan.Options{})
	if st := phaseOf(t, blocked, "shop", plan.PhaseStrict).Status; st != plan.StatusBlocked {
		t.Fatalf("without the exception the unmeshed scraper must block STRICT, got %s", st)
	}

	p := build(t, s, g, plan.Options{PortExceptions: []string{"shop/api:9090"}})
	strictPh := phaseOf(t, p, "shop", plan.PhaseStrict)
	if len(strictPh.Steps) != 2 || strictPh.Steps[0].Target != "PeerAuthentication/meshmigrate-ports-api" || strictPh.Steps[1].Target != "PeerAuthentication/default" {
		t.Fatalf("strict steps: %s; want the port exception before STRICT", describeSteps(strictPh.Steps))
	}
	exc := strictPh.Steps[0]
	if exc.Status != plan.StatusPending || get(exc.Object, "spec", "mtls") != nil ||
		!reflect.DeepEqual(get(exc.Object, "spec", "portLevelMtls"), map[string]any{"9090": map[string]any{"mode": "PERMISSIVE"}}) ||
		!reflect.DeepEqual(get(exc.Object, "spec", "selector", "matchLabels"), map[string]any{"app": "api"}) {
		t.Errorf("port exception = %+v", exc)
	}
	if st := strictPh.Steps[1]; st.Status != plan.StatusPending {
		t.Errorf("STRICT with the exception: %s %q", st.Status, st.Reason)
	}
	v := phaseOf(t, p, "shop", plan.PhaseVerify)
	if v.Status != plan.StatusPending || len(v.Notes) == 0 || !strings.Contains(strings.Join(v.Notes, "\n"), "accepted by --port-exception on shop/api port 9090") {
		t.Errorf("verify = %s notes %q", v.Status, v.Notes)
	}
	allow := steps(phaseOf(t, p, "shop", plan.PhaseAuthz), "AuthorizationPolicy/meshmigrate-allow-api")
	if len(allow) != 2 {
		t.Fatalf("allow-api steps: %d", len(allow))
	}
	rs, _ := get(allow[1].Object, "spec", "rules").([]any)
	if len(rs) == 0 {
		t.Fatalf("allow-api has no rules: %v", allow[1].Object)
	}
	last, _ := rs[len(rs)-1].(map[string]any)
	if _, hasFrom := last["from"]; hasFrom || !reflect.DeepEqual(last["to"], []any{map[string]any{"operation": map[string]any{"ports": []any{"9090"}}}}) {
		t.Errorf("port exception rule = %v, want any caller on port 9090", last)
	}

	// A plaintext caller on the exception port that the plan meshes will
	// send mTLS once injected: it is expected to clear, and allowed by its
	// predicted principal, not left to the port rule (it would be denied on
	// every other port).
	s.Namespaces = append(s.Namespaces, ns("pay"))
	s.Pods = append(s.Pods, deploy("pay", "billing", 1)...)
	billing := plain("pay/billing", "shop/api")
	billing.Port = 9090
	g.Edges = append(g.Edges, billing)
	p = build(t, s, g, plan.Options{PortExceptions: []string{"shop/api:9090"}})
	v = phaseOf(t, p, "shop", plan.PhaseVerify)
	if v.Status != plan.StatusPending || len(v.Gate.Expect) != 1 || !strings.HasPrefix(v.Gate.Expect[0], "pay/billing -> api") {
		t.Errorf("verify = %s, expects %q, notes %q: pay/billing is meshed by the plan", v.Status, v.Gate.Expect, v.Notes)
	}
	want := rules(rule("cluster.local/ns/pay/sa/billing", "9090"), rule("cluster.local/ns/shop/sa/web", "8080"),
		map[string]any{"to": []any{map[string]any{"operation": map[string]any{"ports": []any{"9090"}}}}})
	for _, st := range steps(phaseOf(t, p, "shop", plan.PhaseAuthz), "AuthorizationPolicy/meshmigrate-allow-api") {
		if got := get(st.Object, "spec", "rules"); !reflect.DeepEqual(got, want) {
			t.Errorf("allow-api rules = %v\nwant %v", got, want)
		}
	}
}

func TestExcludedWorkloadIsNotRestartedAndBlocksStrict(t *testing.T) {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = pods(deploy("shop", "web", 1), deploy("shop", "batch", 1))
	p := build(t, s, nil, plan.Options{ExcludeWorkloads: []string{"shop/batch"}})
	inject := phaseOf(t, p, "shop", plan.PhaseInject)
	if st := oneStep(t, inject, "Deployment/batch"); st.Status != plan.StatusSkipped || !strings.Contains(st.Reason, "--exclude-workload") {
		t.Errorf("excluded workload step = %+v", st)
	}
	if st := oneStep(t, inject, "Deployment/web"); st.Status != plan.StatusPending || st.Action != plan.ActionRestartWorkload {
		t.Errorf("web step = %+v", st)
	}
	if st := oneStep(t, phaseOf(t, p, "shop", plan.PhaseStrict), "PeerAuthentication/default"); st.Status != plan.StatusBlocked || !strings.Contains(st.Reason, "Deployment/batch is excluded") {
		t.Errorf("strict = %s %q", st.Status, st.Reason)
	}
}

func TestExistingStrictIsNeverLowered(t *testing.T) {
	s, g := cleanEstate()
	s.PeerAuthentications = []cluster.PeerAuthentication{{Namespace: "shop", Name: "lockdown", Mode: cluster.ModeStrict, CreatedAt: t0}}
	p := build(t, s, g, plan.Options{})
	if v := phaseOf(t, p, "shop", plan.PhaseVerify); v.Status != plan.StatusDone {
		t.Errorf("verify on a STRICT namespace = %s %q, want done", v.Status, v.Reason)
	}
	per := phaseOf(t, p, "shop", plan.PhasePermissive)
	if per.Status != plan.StatusDone || len(per.Steps) != 0 || !strings.Contains(per.Reason, "never lowered") {
		t.Errorf("permissive on a STRICT namespace = %+v", per)
	}
	// The STRICT step reuses the namespace-wide policy in force.
	if st := oneStep(t, phaseOf(t, p, "shop", plan.PhaseStrict), "PeerAuthentication/lockdown"); st.Status != plan.StatusDone {
		t.Errorf("strict step = %+v", st)
	}
}

func containsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
