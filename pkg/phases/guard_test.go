package phases

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

func callersOf(kv ...any) []traffic.CallerCount {
	var out []traffic.CallerCount
	for i := 0; i < len(kv); i += 2 {
		out = append(out, traffic.CallerCount{Caller: kv[i].(string), Count: float64(kv[i+1].(int))})
	}
	return out
}

func TestGuardVerdict(t *testing.T) {
	healthy := traffic.Health{Requests: callersOf("front/web", 100), Errors: callersOf("front/web", 1), Inbound: 100}
	for _, tc := range []struct {
		name     string
		h        traffic.Health
		baseline float64
		lim      GuardLimits
		want     Verdict
		says     string
	}{
		{"healthy, 1% errors on a 1% baseline", healthy, 0.01, GuardLimits{MaxErrorRatio: -1}, GatePassed, "error ratio 1.0%"},
		{"a plaintext caller after STRICT", traffic.Health{Plaintext: callersOf("unknown", 4), Inbound: 4}, 0, GuardLimits{MaxErrorRatio: -1}, GateFailed, "4 plaintext calls arrived (refused under STRICT) from unknown (4)"},
		{"a denial after enforcement", traffic.Health{Denied: callersOf("batch/report", 2), Inbound: 50}, 0, GuardLimits{MaxErrorRatio: -1, Enforced: true}, GateFailed, "2 calls were denied since enforcement, from batch/report (2)"},
		{"a 403 before enforcement is the app's", traffic.Health{Denied: callersOf("batch/report", 2), Inbound: 50}, 0, GuardLimits{MaxErrorRatio: -1}, GatePassed, "no plaintext call"},
		{"errors over the baseline plus one point", traffic.Health{Requests: callersOf("front/web", 100, "front/cron", 10), Errors: callersOf("front/cron", 5), Inbound: 110}, 0.02, GuardLimits{MaxErrorRatio: -1}, GateFailed, "error ratio is 4.5% (5 of 110 requests), over the limit of 3.0% (baseline 2.0%)"},
		{"errors under an explicit limit", traffic.Health{Requests: callersOf("front/web", 100), Errors: callersOf("front/web", 4), Inbound: 100}, 0, GuardLimits{MaxErrorRatio: 0.05}, GatePassed, "error ratio 4.0%"},
		{"no data at all", traffic.Health{}, 0, GuardLimits{MaxErrorRatio: -1}, GateUnsettled, "no traffic to shop at all in the window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := GuardVerdict("shop", tc.h, tc.baseline, tc.lim)
			if g.Result != tc.want || !strings.Contains(g.Message, tc.says) {
				t.Errorf("%s %q, want %s saying %q", g.Result, g.Message, tc.want, tc.says)
			}
		})
	}
	g := GuardVerdict("shop", traffic.Health{Requests: callersOf("front/web", 100, "front/cron", 10), Errors: callersOf("front/cron", 5)}, 0, GuardLimits{MaxErrorRatio: -1})
	if len(g.Culprits) != 1 || !strings.Contains(g.Culprits[0], "front/cron (5 of 10 requests failed)") {
		t.Errorf("culprits %v, want the caller whose own calls fail, not the healthy one", g.Culprits)
	}
}

// strictPlan is onePlan taken through STRICT (verify skipped: the guard is
// what is under test), with every phase before it done by an earlier run.
func strictPlan(t *testing.T, c *Cluster, obs *fakeObserver) *plan.Plan {
	t.Helper()
	p := onePlan(t, obs)
	ns := &p.Namespaces[0]
	ns.Phases[2] = plan.Phase{Name: plan.PhaseVerify, Status: plan.StatusSkipped, Reason: "not in this test"}
	ns.Phases = append(ns.Phases, plan.Phase{Name: plan.PhaseStrict, Status: plan.StatusPending, Steps: []plan.Step{
		{Action: plan.ActionApply, Target: "PeerAuthentication/default", Status: plan.StatusPending, Object: map[string]any{
			"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
			"metadata": map[string]any{"name": "default", "namespace": "shop"},
			"spec":     map[string]any{"mtls": map[string]any{"mode": "STRICT"}}}}}})
	done := time.Now().Add(-time.Hour)
	cp := &Checkpoint{Namespace: "shop", PlanID: p.ID, PlanHash: p.Hash, Phases: []PhaseRecord{
		{Name: plan.PhaseInject, State: StateDone, FinishedAt: &done}, {Name: plan.PhasePermissive, State: StateDone, FinishedAt: &done},
		{Name: plan.PhaseVerify, State: StateSkipped, FinishedAt: &done}}}
	if err := c.SaveCheckpoint(context.Background(), cp, "earlier run", done); err != nil {
		t.Fatal(err)
	}
	return p
}

func applyStrict(t *testing.T, c *Cluster, obs *fakeObserver, p *plan.Plan, bake time.Duration) (*Outcome, string) {
	t.Helper()
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	ex.Options.Phase, ex.Options.Bake, ex.Options.BakeMaxErrorRatio = plan.PhaseStrict, bake, -1
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	return res, out.String()
}

// A caller that shows up in plaintext only after STRICT makes the guard
// put the PeerAuthentication back as it was, record it, and stop the
// namespace naming the caller.
func TestGuardUndoesStrictWhenACallerBreaks(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
	obs := &fakeObserver{report: shopReport("STRICT", "namespace")}
	p := strictPlan(t, c, obs)
	obs.health = func(time.Time, time.Time) (traffic.Health, error) {
		if obs.healthCalls == 1 {
			return traffic.Health{Requests: callersOf("front/web", 50), Inbound: 50}, nil // the baseline, before the change
		}
		return traffic.Health{Plaintext: callersOf("unknown", 3), Inbound: 3}, nil
	}
	res, out := applyStrict(t, c, obs, p, time.Minute)
	if len(res.Stops) != 1 || res.Stops[0].Result != ResultUndone || res.Stops[0].Guard == nil || !res.Stops[0].Guard.Undone {
		t.Fatalf("stops %+v, want the strict phase undone by the guard\n%s", res.Stops, out)
	}
	if !strings.Contains(out, "GUARD FAILED: 3 plaintext calls arrived (refused under STRICT) from unknown (3)") {
		t.Errorf("the run does not say which callers broke:\n%s", out)
	}
	if w := strings.Join(writes(dyn), ","); w != "patch peerauthentications,delete peerauthentications" {
		t.Errorf("writes %s: want STRICT applied, then undone (the policy did not exist before)", w)
	}
	cp, err := c.LoadCheckpoint(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	rec := cp.Phase(plan.PhaseStrict)
	if rec.State != StateStopped || rec.Guard == nil || rec.Guard.Result != GateFailed || !rec.Guard.Undone {
		t.Errorf("strict phase record %+v (guard %+v): want stopped, guard failed and undone", rec, rec.Guard)
	}
	for _, r := range cp.Records {
		if r.Phase == plan.PhaseStrict {
			t.Errorf("record %d of the undone STRICT step is still there: rollback would undo it twice", r.Seq)
		}
	}
	if res.Results[0].Result != ResultUndone {
		t.Errorf("summary %+v, want undone", res.Results)
	}
}

// No data during the bake (or no Prometheus) is never a pass: the change
// stays and the namespace is unverified; the next run watches again.
func TestGuardWithoutDataLeavesTheChangeUnverified(t *testing.T) {
	for name, health := range map[string]func(since, until time.Time) (traffic.Health, error){
		"no traffic": func(time.Time, time.Time) (traffic.Health, error) { return traffic.Health{}, nil },
		"prometheus is down": func(time.Time, time.Time) (traffic.Health, error) {
			return traffic.Health{}, errors.New("connection refused")
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
			obs := &fakeObserver{report: shopReport("STRICT", "namespace"), health: health}
			p := strictPlan(t, c, obs)
			res, out := applyStrict(t, c, obs, p, 2*time.Second)
			if len(res.Stops) != 1 || res.Stops[0].Result != ResultUnverified || !strings.Contains(res.Stops[0].Reason, "unverified after change") {
				t.Fatalf("stops %+v, want unverified\n%s", res.Stops, out)
			}
			if w := strings.Join(writes(dyn), ","); w != "patch peerauthentications" {
				t.Errorf("writes %s: the change must stay", w)
			}
			if obs.healthCalls < 3 {
				t.Errorf("%d reads of the telemetry in a 2s bake polled every second, want the baseline and one a second", obs.healthCalls)
			}
			cp, _ := c.LoadCheckpoint(context.Background(), "shop")
			if st := StatusOf(cp, nil); st.State != StateUnverified || st.Guard == nil || st.Guard.Result != GateUnsettled {
				t.Errorf("status %+v, want unverified with the guard's verdict", st)
			}
			// The next run finds the step made and watches again.
			obs.health = func(time.Time, time.Time) (traffic.Health, error) {
				return traffic.Health{Requests: callersOf("front/web", 10), Inbound: 10}, nil
			}
			res, out = applyStrict(t, c, obs, p, time.Second)
			if len(res.Stops) != 0 || !strings.Contains(out, "guard passed") {
				t.Fatalf("the resumed run: stops %+v\n%s", res.Stops, out)
			}
			if w := strings.Join(writes(dyn), ","); !strings.HasPrefix(w, "patch peerauthentications") || strings.Count(w, "patch") > 2 {
				t.Errorf("writes %s", w)
			}
		})
	}
}

// --bake 0 turns the guard off, and the checkpoint says so.
func TestGuardOffIsRecorded(t *testing.T) {
	c, _ := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
	obs := &fakeObserver{report: shopReport("STRICT", "namespace")}
	p := strictPlan(t, c, obs)
	res, out := applyStrict(t, c, obs, p, 0)
	if len(res.Stops) != 0 || obs.healthCalls != 0 {
		t.Fatalf("stops %+v, %d telemetry reads\n%s", res.Stops, obs.healthCalls, out)
	}
	cp, _ := c.LoadCheckpoint(context.Background(), "shop")
	if g := cp.Phase(plan.PhaseStrict).Guard; g == nil || g.Result != GuardOff {
		t.Errorf("guard %+v, want off recorded", g)
	}
}

// With --keep-going a namespace that depends on a stopped one (its
// calledBy) is held back; the summary lists every namespace.
func TestResultsAndHeldBack(t *testing.T) {
	p := &plan.Plan{Namespaces: []plan.Namespace{{Name: "back", CalledBy: []string{"front"}}, {Name: "front"}, {Name: "other"}}}
	stopped := map[string]bool{"front": true}
	if on := heldBackBy(p, "back", stopped); len(on) != 1 || on[0] != "front" {
		t.Errorf("back held back by %v, want front", on)
	}
	if on := heldBackBy(p, "other", stopped); len(on) != 0 {
		t.Errorf("other held back by %v, want nothing: it does not depend on front", on)
	}
	rs := results([]string{"other", "front", "back"}, []Stop{{Namespace: "front", Phase: plan.PhaseVerify, Result: ResultStopped, Reason: "gate"}, {Namespace: "back", Phase: plan.PhaseVerify, Result: ResultHeldBack}})
	got := ""
	for _, r := range rs {
		got += r.Namespace + "=" + string(r.Result) + " "
	}
	if got != "back=held-back front=stopped other=done " {
		t.Errorf("results %s", got)
	}
}

// The enroll gate: captured pods pass, a pod that keeps its sidecar or is
// not captured fails it, and what the plan leaves out does not count.
func TestAmbientGate(t *testing.T) {
	nr := &audit.NamespaceReport{Name: "shop", Pods: audit.Pods{Total: 4, Items: []audit.Pod{
		{Name: "web-1", Workload: "Deployment/web", Sidecar: "ambient", State: audit.PodMeshed},
		{Name: "api-1", Workload: "Deployment/api", Sidecar: "classic", State: audit.PodSidecarNotExpected},
		{Name: "cron-1", Workload: "CronJob/cron", State: audit.PodNotSelected},
		{Name: "node-1", Workload: "DaemonSet/node", State: audit.PodNotInjectable},
	}}}
	g := AmbientGate(nr, map[string]bool{"CronJob/cron": true}, time.Now())
	if g.Result != GateFailed || len(g.Culprits) != 1 || !strings.Contains(g.Culprits[0], "pod api-1 (Deployment/api): still carries a sidecar") {
		t.Errorf("gate %+v, want failed naming api-1 only", g)
	}
	nr.Pods.Items[1] = audit.Pod{Name: "api-2", Workload: "Deployment/api", Sidecar: "ambient", State: audit.PodMeshed}
	nr.Pods.Items = append(nr.Pods.Items, audit.Pod{Name: "db-0", Workload: "StatefulSet/db", State: audit.PodNotSelected})
	if g := AmbientGate(nr, map[string]bool{"CronJob/cron": true}, time.Now()); g.Result != GateFailed || !strings.Contains(strings.Join(g.Culprits, ";"), "db-0 (StatefulSet/db): not captured by ztunnel") {
		t.Errorf("gate %+v, want the uncaptured db-0 named", g)
	}
	nr.Pods.Items = nr.Pods.Items[:4]
	if g := AmbientGate(nr, map[string]bool{"CronJob/cron": true}, time.Now()); g.Result != GatePassed || g.Message != "2 of 4 pods captured by ztunnel; the others stay out as planned" {
		t.Errorf("gate %+v, want passed", g)
	}
}
