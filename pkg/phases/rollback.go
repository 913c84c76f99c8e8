package phases

import (
	"context"
	"errors"
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
	first, err := e.Cluster.LoadCheckpoint(ctx, ns)
	if err != nil {
		return nil, err
	}
	if !first.Stored() {
		return out, e.noCheckpoint(ctx, ns, to)
	}
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
	// Again under the lock: another run may have moved it.
	cp, err := e.Cluster.LoadCheckpoint(ctx, ns)
	if err != nil {
		return nil, err
	}
	e.cps = map[string]*Checkpoint{ns: cp}
	if !cp.Stored() {
		return out, e.noCheckpoint(ctx, ns, to)
	}
	records := UndoOrder(cp.Records, to)
	if len(records) == 0 {
		e.logf(ns, "nothing to roll back after phase %s", to)
	}
	if !e.dry() {
		// The phases after `to` are undone from here on: saying so first
		// means an interrupted rollback never leaves them marked done for
		// the next apply to skip.
		// A verify pass is about the traffic before STRICT went on: undoing
		// STRICT undoes it too, so the next apply verifies again.
		last := phaseIndex(to)
		if to == plan.PhaseVerify {
			last = phaseIndex(plan.PhasePermissive)
		}
		keep := cp.Phases[:0]
		for _, p := range cp.Phases {
			if to != "" && phaseIndex(p.Name) <= last {
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
		var conflict *ConflictError
		if e.dry() && errors.As(err, &conflict) {
			// A dry run changes nothing, so a later record meets the
			// object as it is now, not as the undos before it would
			// leave it: report, and go on.
			e.logf(ns, "rollback: would stop here unless an earlier undo of this rollback restores it: %v", err)
			continue
		}
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

// noCheckpoint explains that there is nothing to roll back, and removes a
// lock a full rollback left behind (it deleted the checkpoint, then failed
// to delete the Lease).
func (e *Executor) noCheckpoint(ctx context.Context, ns, to string) error {
	e.logf(ns, "nothing to roll back: the namespace has no checkpoint (no plan was applied to it, or a full rollback already ran)")
	if to != "" || e.dry() {
		return nil
	}
	lock, err := e.Cluster.LockState(ctx, ns)
	if err != nil || lock == nil {
		return err
	}
	if lock.Held && e.Now().Before(lock.Expires) {
		return fmt.Errorf("namespace %s has no checkpoint but its lock is held by %q: a run is starting there", ns, lock.Holder)
	}
	if err := e.Cluster.deleteLease(ctx, ns); err != nil {
		return err
	}
	e.logf(ns, "removed the lock a full rollback left behind")
	return nil
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
	// Whatever handed it the record, undo writes only within ns and the
	// kinds a plan produces (validate.go).
	if err := checkRecord(ns, r); err != nil {
		return nil, err
	}
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
		// The object must still be as this step wrote it. A record whose
		// change was never confirmed (a crash right after the write) has no
		// digest: the object is then either as before (nothing to do) or
		// as the step left it.
		switch {
		case cur == nil && !r.Undo.Existed:
			return nil, nil
		case cur == nil:
			return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: "it was deleted since this plan changed it: not re-created"}
		case r.Undo.Existed && Digest(cur.Object) == Digest(r.Undo.Prior):
			return nil, nil
		case r.Undo.Digest != "" && Digest(cur.Object) != r.Undo.Digest:
			return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: "its labels, annotations or spec changed since this plan wrote it"}
		case r.Undo.UID != "" && string(cur.GetUID()) != r.Undo.UID:
			return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: "it was deleted and made again since this plan wrote it"}
		}
		if !r.Undo.Existed {
			if cur.GetLabels()[plan.LabelPlanID] != r.PlanID {
				return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: fmt.Sprintf("it no longer carries %s=%s: someone replaced the object this plan created", plan.LabelPlanID, r.PlanID)}
			}
			if err := e.Cluster.delete(ctx, gvr, ns, name, cur.GetUID()); err != nil {
				return nil, fmt.Errorf("delete %s: %w", r.Target, err)
			}
			e.logf(ns, "rollback: deleted %s (created by plan %s)%s", r.Target, r.PlanID, e.dryNote())
			return nil, nil
		}
		// Nobody else changed it since: applying the prior content back
		// sets what the plan changed to its prior value and drops the
		// fields only the plan added.
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
