package phases

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

func taskLine(t Task) string {
	s := fmt.Sprintf("%d %s %s %s", t.Wave, t.Namespace, t.Phase, t.Kind)
	if t.Target != "" {
		s += " " + t.Target
	}
	if t.Gate != "" {
		s += " " + string(t.Gate)
	}
	if t.Done {
		s += " done"
	}
	return s
}

// The queue is what a run will do, in order: wave by wave, phase by phase
// across the wave's namespaces; the caller checks before verify and STRICT,
// the restarts' rollouts waited for before the next step, each gate last.
func TestBuildQueueOrdersWhatARunDoes(t *testing.T) {
	obs := &fakeObserver{report: callerReport()}
	p := callerPlan(obs)
	front := &p.Namespaces[0]
	front.Phases[0].Steps = append(front.Phases[0].Steps,
		plan.Step{Action: plan.ActionRestartWorkload, Target: "Deployment/ui", Status: plan.StatusPending},
		plan.Step{Action: plan.ActionRestartWorkload, Target: "Deployment/cron", Status: plan.StatusSkipped, Reason: "--exclude-workload"})
	front.Phases[0].Gate = &plan.Gate{Name: plan.GateSidecars}
	// An earlier run labelled front already.
	cps := map[string]*Checkpoint{"front": {Namespace: "front", PlanID: p.ID, Records: []Record{
		{Seq: 1, PlanID: p.ID, Phase: plan.PhaseInject, Step: 0, Action: plan.ActionLabelNamespace, Target: "Namespace/front", State: StateDone}}}}
	var got []string
	for _, task := range BuildQueue(p, []string{"front", "shop"}, plan.Phases, cps) {
		got = append(got, taskLine(task))
	}
	want := []string{
		"1 front inject change Namespace/front done",
		"1 front inject change Deployment/ui",
		"1 front inject skip Deployment/cron",
		"1 front inject wait-rollouts",
		"1 front inject gate sidecars-current",
		"1 front permissive skip", "1 front verify skip", "1 front strict skip", "1 front authz skip",
		"2 shop inject skip", "2 shop permissive skip",
		"2 shop verify check-callers front",
		"2 shop verify gate no-plaintext",
		"2 shop strict check-callers front",
		"2 shop strict verify-again no-plaintext",
		"2 shop strict change PeerAuthentication/default",
		"2 shop strict gate peer-authentication-in-force",
		"2 shop strict guard",
		"2 shop authz skip",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("queue:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A dry run prints the queue before it goes through it.
func TestDryRunPrintsTheQueue(t *testing.T) {
	c, _ := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	c.DryRun = DryRunClient
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	var events []Event
	ex := newExecutor(c, obs, &bytes.Buffer{})
	ex.Events = func(ev Event) { events = append(events, ev) }
	ex.Options.DryRun = DryRunClient
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Apply(context.Background(), p, pv); err != nil {
		t.Fatal(err)
	}
	var queued []Task
	for _, ev := range events {
		if ev.Type == EventQueue {
			queued = append(queued, *ev.Task)
		}
	}
	want := BuildQueue(p, pv.Namespaces, pv.Phases, nil)
	if len(queued) != len(want) || len(queued) == 0 {
		t.Fatalf("queued %d tasks, want %d", len(queued), len(want))
	}
	for i := range want {
		if taskLine(queued[i]) != taskLine(want[i]) {
			t.Errorf("task %d: %s, want %s", i, taskLine(queued[i]), taskLine(want[i]))
		}
	}
	if events[0].Type != EventQueue {
		t.Errorf("the first event is %s, want the queue first", events[0].Type)
	}
}

// A run reports what it does as typed events, in order.
func TestApplyReportsTypedEvents(t *testing.T) {
	c, _ := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	var got []string
	ex := newExecutor(c, obs, &bytes.Buffer{})
	ex.Events = func(ev Event) {
		line := string(ev.Type) + " " + string(ev.Phase)
		if ev.Target != "" {
			line += " " + ev.Target
		}
		if ev.Gate != nil {
			line += " " + string(ev.Gate.Name) + "=" + string(ev.Gate.Result)
		}
		got = append(got, line)
	}
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Apply(context.Background(), p, pv); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"phase-started inject", "step-done inject Namespace/shop", "gate inject sidecars-current=passed", "phase-done inject",
		"phase-started permissive", "step-done permissive PeerAuthentication/default", "gate permissive peer-authentication-in-force=passed", "phase-done permissive",
		"stop verify",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A gate that never passes ends at --timeout on the executor's clock: the
// test moves a fake clock, nothing sleeps.
func TestGateTimesOutOnTheExecutorsClock(t *testing.T) {
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	obs.report.Namespaces[0].Pods.Items[0].State = audit.PodNeedsRestart
	p := onePlan(t, obs)
	c, _ := newFakeCluster(t, namespaceObj("shop", nil))
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ex := newExecutor(c, obs, &bytes.Buffer{})
	ex.Clock, ex.Options.Timeout = clk, 5*time.Minute
	pn, _ := p.Namespace("shop")
	type result struct {
		g   GateResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		g, err := ex.phaseGate(context.Background(), p, pn, plan.PhaseInject, &plan.Gate{Name: plan.GateSidecars}, nil)
		done <- result{g, err}
	}()
	start := time.Now()
	for {
		select {
		case r := <-done:
			if r.err != nil || r.g.Result != GateFailed || !strings.Contains(r.g.Message, "lack a current sidecar") {
				t.Fatalf("gate %+v, %v: want failed after the timeout", r.g, r.err)
			}
			if want := int(5*time.Minute/gatePoll) + 1; obs.audits != want {
				t.Errorf("%d audits, want one every %s for 5m: %d", obs.audits, gatePoll, want)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("the wait took %s of real time", time.Since(start))
			}
			return
		default:
		}
		if clk.HasWaiters() {
			clk.Step(gatePoll)
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

// A transient API error is "not yet"; any other error ends the wait.
func TestPollTreatsTransientErrorsAsNotYet(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	calls := 0
	errc := make(chan error, 1)
	go func() {
		errc <- poll(context.Background(), clk, time.Second, time.Minute, func(context.Context) (bool, error) {
			calls++
			if calls < 3 {
				return false, apierrors.NewServiceUnavailable("etcd is busy")
			}
			return true, nil
		})
	}()
	for {
		select {
		case err := <-errc:
			if err != nil || calls != 3 {
				t.Fatalf("poll = %v after %d calls, want nil after 3", err, calls)
			}
			forbidden := poll(context.Background(), clk, time.Second, time.Minute, func(context.Context) (bool, error) {
				return false, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "x", errors.New("no"))
			})
			if !apierrors.IsForbidden(forbidden) || wait.Interrupted(forbidden) {
				t.Errorf("a forbidden read: %v, want it returned at once", forbidden)
			}
			return
		default:
		}
		if clk.HasWaiters() {
			clk.Step(time.Second)
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}
