package phases

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// ConflictError is a change someone else made after the tool's: rollback
// leaves it alone and stops, rather than overwrite it.
type ConflictError struct {
	Namespace, Target, Detail string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s %s: %s; rollback stopped here and changed nothing more (the records not yet undone stay in the checkpoint): restore it by hand or accept it, then run rollback again", e.Namespace, e.Target, e.Detail)
}

// Rollback undoes namespace ns's changes after phase `to` (every change
// when to is ""), newest first, from the checkpoint's records, saving the
// checkpoint after each so an interrupted rollback resumes. A full
// rollback removes the checkpoint and the lock too: nothing of the tool
// remains.
func (e *Executor) Rollback(ctx context.Context, ns, to string) (*Outcome, error) {
	out := &Outcome{}
	var locks *Locks
	if !e.dry() {
		runCtx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		var err error
		locks, err = e.Cluster.AcquireAll(runCtx, []string{ns}, e.Options.Identity, e.Options.LeaseDuration, e.Options.LockWait, e.Now, func(err error) { cancel(err) })
		if err != nil {
			return nil, err
		}
		defer locks.Release(context.WithoutCancel(ctx))
		ctx = runCtx
	}
	cp, err := e.Cluster.LoadCheckpoint(ctx, ns)
	if err != nil {
		return nil, err
	}
	e.cps = map[string]*Checkpoint{ns: cp}
	if !cp.Stored() {
		e.logf(ns, "nothing to roll back: the namespace has no checkpoint (no plan was applied to it)")
		return out, nil
	}
	records := UndoOrder(cp.Records, to)
	if len(records) == 0 {
		e.logf(ns, "nothing to roll back after phase %s", to)
	}
	if !e.dry() {
		// The phases after `to` are undone from here on: saying so first
		// means an interrupted rollback never leaves them marked done for
		// the next apply to skip.
		keep := cp.Phases[:0]
		for _, p := range cp.Phases {
			if to != "" && phaseIndex(p.Name) <= phaseIndex(to) {
				keep = append(keep, p)
			}
		}
		cp.Phases = keep
		if err := e.save(ctx, ns); err != nil {
			return out, err
		}
	}
	var rollouts []*rollout
	for _, r := range records {
		ro, err := e.undo(ctx, ns, r)
		if err != nil {
			return out, err
		}
		out.changed()
		if ro != nil {
			rollouts = append(rollouts, ro)
		}
		if !e.dry() {
			cp.Records = dropRecord(cp.Records, r.Seq)
			if err := e.save(ctx, ns); err != nil {
				return out, err
			}
		}
	}
	if err := e.waitRollouts(ctx, rollouts); err != nil {
		return out, fmt.Errorf("%w; the namespace is rolled back, its workloads are still rolling: watch them with kubectl rollout status", err)
	}
	if e.dry() {
		return out, nil
	}
	if to == "" && len(cp.Records) == 0 {
		if err := e.Cluster.DeleteCheckpoint(ctx, ns); err != nil {
			return out, err
		}
		if err := locks.Delete(context.WithoutCancel(ctx)); err != nil {
			return out, err
		}
		e.logf(ns, "rolled back completely: checkpoint and lock removed")
		return out, nil
	}
	e.logf(ns, "rolled back to the end of phase %s", to)
	return out, nil
}

func dropRecord(rs []Record, seq int) []Record {
	out := rs[:0]
	for _, r := range rs {
		if r.Seq != seq {
			out = append(out, r)
		}
	}
	return out
}

// undo reverts one record. A record whose change was never made (a crash
// between writing it and making the change) finds the prior state in place
// and does nothing.
func (e *Executor) undo(ctx context.Context, ns string, r Record) (*rollout, error) {
	kind, name, _ := strings.Cut(r.Target, "/")
	switch r.Action {
	case plan.ActionLabelNamespace:
		obj, err := e.Cluster.get(ctx, kinds["Namespace"], "", ns)
		if err != nil || obj == nil {
			return nil, fmt.Errorf("read namespace %s: %w", ns, orNotFound(err, "namespace "+ns))
		}
		cur := obj.GetLabels()
		to := map[string]*string{}
		for _, k := range slices.Sorted(maps.Keys(r.Undo.Labels)) {
			now, has := cur[k]
			prior, after := r.Undo.Labels[k], r.Undo.After[k]
			switch {
			case same(now, has, prior):
				// already as before
			case same(now, has, after):
				to[k] = prior
			default:
				return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: fmt.Sprintf("label %s is now %s, not the %s this plan set", k, show(now, has), showPtr(after))}
			}
		}
		if err := e.Cluster.patchLabels(ctx, ns, cur, to); err != nil {
			return nil, err
		}
		e.logf(ns, "rollback: namespace labels restored: %s%s", restoredList(to), e.dryNote())
		return nil, nil
	case plan.ActionRestartWorkload:
		gvr, err := resourceFor("apps/v1", kind)
		if err != nil {
			return nil, err
		}
		obj, err := e.Cluster.get(ctx, gvr, ns, name)
		if err != nil {
			return nil, err
		}
		if obj == nil {
			e.logf(ns, "rollback: %s no longer exists: nothing to restart", r.Target)
			return nil, nil
		}
		now, has, _ := unstructured.NestedString(obj.Object, "spec", "template", "metadata", "annotations", AnnotationRestartedAt)
		switch {
		case same(now, has, r.Undo.RestartedAt):
			return nil, nil
		case !has || now != r.Undo.Set:
			return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: fmt.Sprintf("it was restarted again since (restartedAt %s, this plan set %s)", show(now, has), r.Undo.Set)}
		}
		// Restoring the template's annotation rolls the workload back onto
		// its prior template: with injection restored, its pods come back
		// as they were.
		md := map[string]any{"name": name, "namespace": ns}
		applied := map[string]any{"apiVersion": "apps/v1", "kind": kind, "metadata": md}
		if r.Undo.RestartedAt != nil {
			applied["spec"] = map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationRestartedAt: *r.Undo.RestartedAt}}}}
		}
		if _, err := e.Cluster.apply(ctx, gvr, ns, applied); err != nil {
			return nil, fmt.Errorf("restore %s: %w", r.Target, err)
		}
		e.logf(ns, "rollback: %s restarted onto its prior pod template%s", r.Target, e.dryNote())
		if e.dry() {
			return nil, nil
		}
		return &rollout{ns: ns, target: r.Target, what: "rollback", gvr: gvr}, nil
	case plan.ActionApply:
		gvr, err := resourceFor(r.Undo.APIVersion, kind)
		if err != nil {
			return nil, err
		}
		cur, err := e.Cluster.get(ctx, gvr, ns, name)
		if err != nil {
			return nil, err
		}
		if !r.Undo.Existed {
			if cur == nil {
				return nil, nil
			}
			if cur.GetLabels()[plan.LabelPlanID] != r.PlanID {
				return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: fmt.Sprintf("it no longer carries %s=%s: someone replaced the object this plan created", plan.LabelPlanID, r.PlanID)}
			}
			if err := e.Cluster.delete(ctx, gvr, ns, name, cur.GetUID()); err != nil {
				return nil, fmt.Errorf("delete %s: %w", r.Target, err)
			}
			e.logf(ns, "rollback: deleted %s (created by plan %s)%s", r.Target, r.PlanID, e.dryNote())
			return nil, nil
		}
		if _, err := e.Cluster.apply(ctx, gvr, ns, r.Undo.Prior); err != nil {
			return nil, fmt.Errorf("restore %s: %w", r.Target, err)
		}
		e.logf(ns, "rollback: restored %s as it was%s", r.Target, e.dryNote())
		return nil, nil
	}
	return nil, fmt.Errorf("checkpoint record %d has unknown action %q", r.Seq, r.Action)
}

func same(v string, has bool, want *string) bool {
	if want == nil {
		return !has
	}
	return has && v == *want
}

func show(v string, has bool) string {
	if !has {
		return "absent"
	}
	return fmt.Sprintf("%q", v)
}

func showPtr(v *string) string {
	if v == nil {
		return "absent"
	}
	return fmt.Sprintf("%q", *v)
}

func restoredList(to map[string]*string) string {
	if len(to) == 0 {
		return "(already as before)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(to)) {
		if to[k] == nil {
			parts = append(parts, k+"-")
		} else {
			parts = append(parts, k+"="+*to[k])
		}
	}
	return strings.Join(parts, " ")
}
