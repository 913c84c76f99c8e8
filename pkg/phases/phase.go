package phases

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// runPhase runs the tasks of one phase of one namespace (BuildQueue):
// the checks before it, its steps, the rollouts, its gate.
func (e *Executor) runPhase(ctx context.Context, p *plan.Plan, tasks []Task, out *Outcome) error {
	if len(tasks) == 0 {
		return nil
	}
	ns, phase := tasks[0].Namespace, tasks[0].Phase
	pn, _ := p.Namespace(ns)
	ph, _ := pn.Phase(phase)
	cp := e.cps[ns]
	rec := cp.Phase(phase)
	if first := tasks[0]; first.Step < 0 && first.Kind == TaskSkip {
		if cp.PhaseDone(phase) {
			e.emit(Event{Type: EventPhaseSkipped, Namespace: ns, Phase: phase, Message: fmt.Sprintf("%s: already %s (%s)", phase, rec.State, stamp(rec.FinishedAt))})
			return nil
		}
	}
	// The phases before this one must be done: --phase cannot skip ahead.
	if !e.dry() {
		for _, prev := range plan.AllPhases[:phaseIndex(phase)] {
			if _, has := pn.Phase(prev); has && !cp.PhaseDone(prev) {
				out.stop(Stop{Namespace: ns, Phase: phase, Reason: fmt.Sprintf("phase %s is not done yet: run it first (apply --through %s)", prev, prev)})
				return nil
			}
		}
	}
	started := false
	start := func() error {
		if started {
			return nil
		}
		started = true
		if !e.dry() {
			if rec.StartedAt == nil {
				t := e.now()
				rec.StartedAt = &t
			}
			rec.State, rec.Message = StateRunning, ""
			if err := e.save(ctx, ns); err != nil {
				return err
			}
		}
		e.emit(Event{Type: EventPhaseStarted, Namespace: ns, Phase: phase, Message: string(phase) + ": start"})
		return nil
	}
	var rollouts []*rollout
	var gate *GateResult
	for _, t := range tasks {
		if t.Kind != TaskCheckCallers && t.Kind != TaskVerifyAgain && !(t.Step < 0 && (t.Kind == TaskSkip || t.Kind == TaskBlocked)) {
			if err := start(); err != nil {
				return err
			}
		}
		switch t.Kind {
		case TaskSkip:
			if t.Step < 0 {
				e.emit(Event{Type: EventPhaseSkipped, Namespace: ns, Phase: phase, Message: fmt.Sprintf("%s: %s in the plan: %s", phase, ph.Status, ph.Reason)})
				return e.finishPhase(ctx, ns, rec, StateSkipped, "the plan has it "+string(ph.Status)+": "+ph.Reason, nil)
			}
			st := ph.Steps[t.Step]
			e.emit(Event{Type: EventStepSkipped, Namespace: ns, Phase: phase, Action: st.Action, Target: st.Target, Message: fmt.Sprintf("%s: %s %s: %s (%s)", phase, st.Action, st.Target, st.Status, st.Reason)})
		case TaskBlocked:
			if t.Step < 0 {
				return e.stopPhase(ctx, ns, rec, t.Reason, out)
			}
			return e.stopPhase(ctx, ns, rec, fmt.Sprintf("%s %s is blocked: %s", t.Action, t.Target, t.Reason), out)
		case TaskCheckCallers:
			reason, err := e.callerStop(ctx, p, pn)
			if err != nil {
				return err
			}
			if reason != "" {
				return e.stopPhase(ctx, ns, rec, reason, out)
			}
		case TaskVerifyAgain:
			g, err := e.verifyAgain(ctx, p, pn)
			if err != nil {
				return err
			}
			if g != nil && g.Result != GatePassed {
				return e.gateStop(ctx, ns, rec, *g, out)
			}
		case TaskNote:
			e.emit(Event{Type: EventNote, Namespace: ns, Phase: phase, Target: t.Target, Message: fmt.Sprintf("%s: note: %s: %s", phase, t.Target, t.Reason)})
		case TaskChange:
			st := ph.Steps[t.Step]
			if st.Forced {
				e.emit(Event{Type: EventWarning, Namespace: ns, Phase: phase, Action: st.Action, Target: st.Target, Message: fmt.Sprintf("%s: FORCED by --force-strict over: %s", phase, st.Reason)})
			}
			r, err := e.runStep(ctx, p, ns, phase, t.Step, st, out)
			if reason, ok := refused(err); ok {
				return e.stopPhase(ctx, ns, rec, reason, out)
			}
			if err != nil {
				return fmt.Errorf("%s %s %s: %w", ns, phase, st.Target, err)
			}
			if r != nil {
				rollouts = append(rollouts, r)
			}
		case TaskWaitRollouts:
			if len(rollouts) > 0 {
				if err := e.rolledOut(ctx, ns, rollouts); err != nil {
					return e.stopOnTimeout(ctx, ns, rec, err, out)
				}
				rollouts = nil
			}
		case TaskGate:
			if t.Step >= 0 {
				g, err := e.stepGate(ctx, p, ns, phase, t.Step, t.Gate)
				if err != nil {
					return err
				}
				if g != nil && g.Result != GatePassed {
					return e.gateStop(ctx, ns, rec, *g, out)
				}
				continue
			}
			check := phaseGate(phase, ph)
			if e.dry() {
				e.emit(Event{Type: EventNote, Namespace: ns, Phase: phase, Message: fmt.Sprintf("%s: gate %s would be checked here (%s)", phase, check.Name, check.Description)})
				continue
			}
			if stopped, err := e.stopIfReverted(ctx, p, ns, rec, out); stopped || err != nil {
				return err
			}
			g, err := e.phaseGate(ctx, p, pn, phase, check, ph.Steps)
			if err != nil {
				return err
			}
			gate = &g
			if g.Result != GatePassed {
				return e.gateStop(ctx, ns, rec, g, out)
			}
			e.gateEvent(ns, phase, g, "%s: gate %s passed: %s", phase, g.Name, g.Message)
			if phase == plan.PhaseVerify {
				e.markVerified(ns)
			}
		case TaskGuard:
			if stopped, err := e.guard(ctx, p, ns, phase, t.Step, rec, out); stopped || err != nil {
				return err
			}
		}
	}
	if err := start(); err != nil {
		return err
	}
	if e.dry() {
		return nil
	}
	if stopped, err := e.stopIfReverted(ctx, p, ns, rec, out); stopped || err != nil {
		return err
	}
	e.emit(Event{Type: EventPhaseDone, Namespace: ns, Phase: phase, Message: string(phase) + ": done"})
	return e.finishPhase(ctx, ns, rec, StateDone, "", gate)
}

// markVerified notes that ns passed its verify gate in this run.
func (e *Executor) markVerified(ns string) {
	e.cpMu.Lock()
	defer e.cpMu.Unlock()
	if e.verified == nil {
		e.verified = map[string]bool{}
	}
	e.verified[ns] = true
}

func (e *Executor) verifiedNow(ns string) bool {
	e.cpMu.Lock()
	defer e.cpMu.Unlock()
	return e.verified[ns]
}

// verifyAgain judges the verify gate again before STRICT when it did not
// pass in this run: a pass from an earlier run (before a rollback to
// verify, or days before a resumed strict phase) says nothing about the
// traffic now.
func (e *Executor) verifyAgain(ctx context.Context, p *plan.Plan, pn *plan.Namespace) (*GateResult, error) {
	vp, ok := pn.Phase(plan.PhaseVerify)
	if !ok || vp.Status != plan.StatusPending || vp.Gate == nil || e.dry() || e.verifiedNow(pn.Name) {
		return nil, nil
	}
	g, err := e.phaseGate(ctx, p, pn, plan.PhaseVerify, vp.Gate, nil)
	if err != nil {
		return nil, err
	}
	if g.Result == GatePassed {
		e.gateEvent(pn.Name, plan.PhaseStrict, g, "strict: gate %s passed again: %s", g.Name, g.Message)
		e.markVerified(pn.Name)
	}
	return &g, nil
}

// strictStepsDone is true when a run of this plan already made the
// strict phase's changes (its gate is all that is left).
func strictStepsDone(cp *Checkpoint, planID string, ph *plan.Phase) bool {
	made := false
	for i, st := range ph.Steps {
		if st.Status != plan.StatusPending {
			continue
		}
		if r := cp.Record(planID, ph.Name, i); r == nil || r.State != StateDone {
			return false
		}
		made = true
	}
	return made
}

func (e *Executor) finishPhase(ctx context.Context, ns string, rec *PhaseRecord, state State, msg string, gate *GateResult) error {
	if e.dry() {
		return nil
	}
	rec.State, rec.Message = state, msg
	if gate != nil {
		rec.Gate = gate
	}
	if state == StateDone || state == StateSkipped {
		t := e.now()
		rec.FinishedAt = &t
	}
	return e.save(ctx, ns)
}

func (e *Executor) gateStop(ctx context.Context, ns string, rec *PhaseRecord, g GateResult, out *Outcome) error {
	e.emit(Event{Type: EventStop, Namespace: ns, Phase: rec.Name, Gate: &g, Details: g.Culprits,
		Message: fmt.Sprintf("%s: STOP: gate %s %s: %s", rec.Name, g.Name, g.Result, g.Message)})
	out.stop(Stop{Namespace: ns, Phase: rec.Name, Reason: "gate " + string(g.Name) + " " + string(g.Result) + ": " + g.Message, Gate: &g})
	return e.finishPhase(ctx, ns, rec, StateStopped, "gate "+string(g.Name)+" "+string(g.Result), &g)
}

type timeoutError struct{ msg string }

func (t *timeoutError) Error() string { return t.msg }

func (e *Executor) stopOnTimeout(ctx context.Context, ns string, rec *PhaseRecord, err error, out *Outcome) error {
	var te *timeoutError
	if !errors.As(err, &te) {
		return err
	}
	return e.stopPhase(ctx, ns, rec, te.msg, out)
}

// stopPhase ends the run's work on ns at this phase: said, recorded in
// the outcome (exit 2) and in the checkpoint, for a later run to resume.
func (e *Executor) stopPhase(ctx context.Context, ns string, rec *PhaseRecord, reason string, out *Outcome) error {
	e.emit(Event{Type: EventStop, Namespace: ns, Phase: rec.Name, Message: fmt.Sprintf("%s: STOP: %s", rec.Name, reason)})
	out.stop(Stop{Namespace: ns, Phase: rec.Name, Reason: reason})
	return e.finishPhase(ctx, ns, rec, StateStopped, reason, nil)
}

// callerStop re-reads, before verify and before STRICT, every namespace
// this one waits for (the plan's calledBy). Its checkpoint: a concurrent
// rollback may have undone its inject phase since this run loaded it (the
// namespaces of this run are locked, so their progress is read from the
// last snapshot). And its pods: each caller workload the plan expects to
// clear must carry a sidecar now. It returns why the phase must not start,
// or "" when every caller is meshed.
func (e *Executor) callerStop(ctx context.Context, p *plan.Plan, pn *plan.Namespace) (string, error) {
	if e.dry() || len(pn.CalledBy) == 0 {
		return "", nil
	}
	var waiting []string
	for _, caller := range pn.CalledBy {
		if cn, ok := p.Namespace(caller); ok {
			if ph, ok := cn.Phase(cn.MeshPhase()); ok && ph.Status == plan.StatusDone {
				continue // meshed before the plan: its pods are checked below
			}
		}
		injected := e.peers[caller].injected
		if !e.inRun[caller] {
			cp, err := e.Cluster.LoadCheckpoint(ctx, caller)
			if err != nil {
				return "", fmt.Errorf("check the callers of %s: %w", pn.Name, err)
			}
			injected = cp.meshed()
		}
		if !injected {
			waiting = append(waiting, caller)
		}
	}
	if len(waiting) > 0 {
		return "wave order: " + strings.Join(waiting, ", ") + " call this namespace in plaintext and are not meshed (their inject phase is not done, or was rolled back since): apply their inject phase first", nil
	}
	_, r, err := e.Observer.Audit(ctx, pn.CalledBy, time.Time{})
	if err != nil {
		return "", fmt.Errorf("check the callers of %s: %w", pn.Name, err)
	}
	expected := map[string]map[string]bool{}
	if vp, ok := pn.Phase(plan.PhaseVerify); ok && vp.Gate != nil {
		for _, c := range vp.Gate.Callers {
			ns, w, _ := strings.Cut(c, "/")
			if expected[ns] == nil {
				expected[ns] = map[string]bool{}
			}
			expected[ns][w] = true
		}
	}
	var bare []string
	for _, caller := range pn.CalledBy {
		for _, pod := range namespaceOf(r, caller).Pods.Items {
			_, w, _ := strings.Cut(pod.Workload, "/")
			switch {
			case pod.Sidecar != "":
				continue
			case expected[caller] != nil && !expected[caller][w]:
				continue // not a caller the plan counts on
			case expected[caller] == nil && pod.State != audit.PodNeedsRestart && pod.State != audit.PodNotSelected:
				continue // a plan without named callers: judge what should be meshed
			}
			bare = append(bare, fmt.Sprintf("%s/%s (%s)", caller, pod.Name, pod.Workload))
		}
	}
	if len(bare) > 0 {
		sort.Strings(bare)
		return fmt.Sprintf("callers this namespace relies on are not meshed now (rolled back, or scaled up without injection, since): %s without a sidecar: %s; STRICT would refuse their calls: mesh them again (apply their inject phase) first",
			plural(len(bare), "pod", "pods"), strings.Join(bare, ", ")), nil
	}
	return "", nil
}
