package phases

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// action is one kind of step: what it reads before it changes anything (the
// undo record), the change, its reversal, and what a record of it may
// hold. apply and rollback use the same types; actionFor is the one place
// that tells the kinds apart.
type action interface {
	// capture reads what the step is about to change.
	capture(ctx context.Context, e *Executor, s stepRef) (Undo, error)
	// do makes the change; a restart returns the rollout to wait for.
	do(ctx context.Context, e *Executor, s stepRef, rec *Record) (*rollout, error)
	// undo reverts record r, only if the object is still as the step left
	// it (a ConflictError otherwise).
	undo(ctx context.Context, e *Executor, ns string, r Record) (*rollout, error)
	// check tells whether r's undo record, in namespace ns, is one this
	// action writes (the checkpoint is untrusted input).
	check(ns string, r Record) error
	// restarts is true for a change that rolls pods: apply waits for its
	// rollout before the next step, and rollback reverts it after all
	// others (once the injection labels are back, so the pods it rolls
	// come back as they were).
	restarts() bool
	// made adds what r changed to m (the staleness check of a resumed
	// namespace).
	made(r Record, m *plan.Made)
}

// actionFor returns the action of a step or record.
func actionFor(name plan.Action) (action, error) {
	switch name {
	case plan.ActionLabelNamespace:
		return labelAction{}, nil
	case plan.ActionRestartWorkload:
		return restartAction{}, nil
	case plan.ActionApply:
		return applyAction{}, nil
	case plan.ActionDelete:
		return deleteAction{}, nil
	}
	return nil, fmt.Errorf("unknown step action %q", name)
}

// stepRef is one step of the plan being applied.
type stepRef struct {
	p      *plan.Plan
	ns     string
	phase  plan.PhaseName
	idx    int
	st     plan.Step
	kind   string
	name   string
	target string
}

func newStepRef(p *plan.Plan, ns string, phase plan.PhaseName, idx int, st plan.Step) stepRef {
	kind, name, _ := strings.Cut(st.Target, "/")
	return stepRef{p: p, ns: ns, phase: phase, idx: idx, st: st, kind: kind, name: name, target: st.Target}
}

// rollout is a restarted workload to wait for.
type rollout struct {
	ns, target string
	// what names the rollout's cause in progress lines; phase is the
	// phase of the step (or record, on rollback) that caused it.
	what  string
	phase plan.PhaseName
	gvr   schema.GroupVersionResource
	// seq is the restart's checkpoint record.
	seq int
}

// runStep makes one change, write-ahead: the record of what the object
// looked like before is saved first, the change made, the record marked
// done. A record left "started" by a crash is completed by the next run,
// which makes the same change again (all of them are idempotent) and keeps
// the first prior state.
func (e *Executor) runStep(ctx context.Context, p *plan.Plan, ns string, phase plan.PhaseName, idx int, st plan.Step, out *Outcome) (*rollout, error) {
	act, err := actionFor(st.Action)
	if err != nil {
		return nil, err
	}
	s := newStepRef(p, ns, phase, idx, st)
	cp := e.cps[ns]
	rec := cp.Record(p.ID, phase, idx)
	if rec != nil && (rec.Action != st.Action || rec.Target != st.Target) {
		// The checkpoint is untrusted input: a record that claims this
		// step must be this step, or it could make apply skip one (an
		// ALLOW before the allow-nothing).
		return nil, fmt.Errorf("the checkpoint of %s holds record %d (%s %s) for step %d of phase %s, which is %s %s in plan %s: it was edited, or belongs to another plan with this id; inspect it (kubectl get configmap %s -n %s -o yaml)",
			ns, rec.Seq, rec.Action, rec.Target, idx, phase, st.Action, st.Target, p.ID, CheckpointName, ns)
	}
	if rec != nil && rec.State == StateDone {
		e.emit(Event{Type: EventStepSkipped, Namespace: ns, Phase: phase, Action: st.Action, Target: st.Target,
			Message: fmt.Sprintf("%s: %s %s: done by an earlier run", phase, st.Action, st.Target)})
		return nil, nil
	}
	if rec == nil {
		undo, err := act.capture(ctx, e, s)
		if err != nil {
			return nil, err
		}
		if !e.dry() {
			cp.Records = append(cp.Records, Record{Seq: cp.next(), PlanID: p.ID, Phase: phase, Step: idx, Action: st.Action,
				Target: st.Target, State: StateStarted, StartedAt: e.now(), Undo: undo})
			rec = &cp.Records[len(cp.Records)-1]
			if err := e.save(ctx, ns); err != nil {
				return nil, err
			}
		} else {
			rec = &Record{Undo: undo}
		}
	}
	r, err := act.do(ctx, e, s, rec)
	if err != nil {
		return nil, err
	}
	out.changed()
	if r != nil || e.dry() {
		return r, nil // a restart is done once its rollout is
	}
	return nil, e.markDone(ctx, ns, rec.Seq)
}

func (e *Executor) dryNote() string {
	if e.dry() {
		return " (dry run: " + string(e.Options.DryRun) + ")"
	}
	return ""
}

// markDone marks record seq done. Records are found by their sequence
// number, never held by pointer: appending a record may move the others.
func (e *Executor) markDone(ctx context.Context, ns string, seq int) error {
	cp := e.cps[ns]
	for i := range cp.Records {
		if cp.Records[i].Seq == seq {
			t := e.now()
			cp.Records[i].State, cp.Records[i].DoneAt = StateDone, &t
			return e.save(ctx, ns)
		}
	}
	return fmt.Errorf("checkpoint of %s lost record %d", ns, seq)
}

func (e *Executor) stepDone(s stepRef, format string, args ...any) {
	e.emit(Event{Type: EventStepDone, Namespace: s.ns, Phase: s.phase, Action: s.st.Action, Target: s.target,
		Message: fmt.Sprintf("%s: ", s.phase) + fmt.Sprintf(format, args...) + e.dryNote()})
}

func (e *Executor) undone(ns string, r Record, format string, args ...any) {
	e.emit(Event{Type: EventUndone, Namespace: ns, Phase: r.Phase, Action: r.Action, Target: r.Target,
		Message: "rollback: " + fmt.Sprintf(format, args...) + e.dryNote()})
}

func orNotFound(err error, what string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s no longer exists", what)
}

// Clean drops what the server manages from an object, leaving what rollback
// restores: labels, annotations, spec and the rest.
func Clean(obj map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range obj {
		if k != "status" {
			out[k] = v
		}
	}
	if md, ok := obj["metadata"].(map[string]any); ok {
		m := map[string]any{}
		for k, v := range md {
			switch k {
			case "resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds":
			default:
				m[k] = v
			}
		}
		out["metadata"] = m
	}
	return out
}

// Digest is what rollback compares to tell an object left as the tool
// wrote it from one changed since: its labels, annotations and spec.
func Digest(obj map[string]any) string {
	md, _ := obj["metadata"].(map[string]any)
	b, _ := json.Marshal([]any{md["labels"], md["annotations"], obj["spec"]})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func labelList(set map[string]string, remove []string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		parts = append(parts, k+"="+set[k])
	}
	for _, k := range remove {
		parts = append(parts, k+"-")
	}
	return strings.Join(parts, " ")
}
