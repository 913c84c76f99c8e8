package phases

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
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

// Rollback undoes the namespaces' changes after phase `to` (every change
// when to is ""), newest first, from each checkpoint's records, saving the
// checkpoint after each so an interrupted rollback resumes. A full
// rollback removes the checkpoints and the locks too: nothing of the tool
// remains.
//
// A full rollback removes sidecars, so it first refuses (unless
// BreakDependents) while a namespace outside the set relies on them: one
// that is STRICT, or enforces authorization, with a namespace of the set
// among its callers. Namespaces rolled back together first all go back to
// the end of their inject phase, then the rest: none of them is STRICT
// while a caller among them loses its sidecars.
func (e *Executor) Rollback(ctx context.Context, namespaces []string, to plan.PhaseName) (*Outcome, error) {
	out := &Outcome{}
	cps, err := e.storedCheckpoints(ctx, namespaces, to)
	if err != nil {
		return out, err
	}
	var stored []string
	for _, ns := range namespaces {
		if cps[ns] != nil {
			stored = append(stored, ns)
		}
	}
	if len(stored) == 0 {
		return out, nil
	}
	var locks *Locks
	if !e.dry() {
		runCtx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		locks, err = e.Cluster.AcquireAll(runCtx, stored, e.Options.Identity, e.Options.LeaseDuration, e.Options.LockWait, e.Clock, func(err error) { cancel(err) })
		if err != nil {
			return nil, err
		}
		defer locks.Release(context.WithoutCancel(ctx))
		ctx = runCtx
	}
	// Again under the locks: another run may have moved them.
	if e.cps, err = e.storedCheckpoints(ctx, stored, to); err != nil {
		return out, err
	}
	var set []string
	for _, ns := range stored {
		if e.cps[ns] != nil {
			set = append(set, ns)
		}
	}
	if to == "" {
		deps, err := e.dependents(ctx, set)
		if err != nil {
			return out, err
		}
		if len(deps) > 0 {
			if !e.Options.BreakDependents {
				return out, &DependentsError{Namespaces: set, Dependents: deps}
			}
			for _, d := range deps {
				e.emit(Event{Type: EventWarning, Namespace: strings.Join(set, ","), Message: fmt.Sprintf("FORCED by --break-dependents: %s: calls from %s arrive in plaintext from now on and fail", d, strings.Join(set, ", "))})
			}
		}
	}
	passes := []plan.PhaseName{to}
	if to == "" && len(set) > 1 && !e.dry() {
		passes = []plan.PhaseName{plan.PhaseInject, ""}
	}
	for _, pass := range passes {
		for _, ns := range set {
			to := pass
			if to == plan.PhaseInject && e.cps[ns].dataplane() == plan.DataplaneAmbient {
				to = plan.PhaseEnroll // the end of its mesh phases (waypoint, enroll)
			}
			if err := e.rollbackOne(ctx, ns, to, out); err != nil {
				return out, err
			}
		}
	}
	if e.dry() || to != "" {
		return out, nil
	}
	if err := locks.Delete(context.WithoutCancel(ctx)); err != nil {
		return out, err
	}
	for _, ns := range set {
		e.emit(Event{Type: EventRolledBack, Namespace: ns, Message: "rolled back completely: checkpoint and lock removed"})
		if err := e.leftoverSidecars(ctx, ns, out); err != nil {
			return out, err
		}
	}
	return out, nil
}

// storedCheckpoints reads the namespaces' checkpoints; one without a
// checkpoint has nothing to roll back (noCheckpoint says so) and is left
// out of the map.
func (e *Executor) storedCheckpoints(ctx context.Context, namespaces []string, to plan.PhaseName) (map[string]*Checkpoint, error) {
	cps := map[string]*Checkpoint{}
	for _, ns := range namespaces {
		cp, err := e.Cluster.LoadCheckpoint(ctx, ns)
		if err != nil {
			return nil, err
		}
		if !cp.Stored() {
			if err := e.noCheckpoint(ctx, ns, to); err != nil {
				return nil, err
			}
			continue
		}
		cps[ns] = cp
	}
	return cps, nil
}

// DependentsError refuses a full rollback that would break namespaces
// relying on the sidecars it removes.
type DependentsError struct {
	Namespaces, Dependents []string
}

func (e *DependentsError) Error() string {
	set := strings.Join(e.Namespaces, ",")
	return fmt.Sprintf("rollback -n %s --all would remove the sidecars of %s, and these namespaces rely on them:\n  %s\ntheir calls would arrive in plaintext and fail. Roll those back first (rollback -n NS --to permissive), or together with %s (rollback -n %s,NS --all), or pass --break-dependents to break them knowingly; nothing was changed",
		set, strings.Join(e.Namespaces, ", "), strings.Join(e.Dependents, "\n  "), set, set)
}

// dependents lists the namespaces outside set that rely on set's sidecars:
// named by a checkpoint of the set as callees (the plan's calledBy, reversed)
// or naming a namespace of the set among their callers in their own
// checkpoint (a later plan's), and past STRICT (a strict or authz change
// not undone).
func (e *Executor) dependents(ctx context.Context, set []string) ([]string, error) {
	in := map[string]bool{}
	for _, ns := range set {
		in[ns] = true
	}
	callers := map[string]map[string]bool{}
	note := func(dep, caller string) {
		if in[dep] {
			return
		}
		if callers[dep] == nil {
			callers[dep] = map[string]bool{}
		}
		callers[dep][caller] = true
	}
	for _, ns := range set {
		for _, d := range e.cps[ns].Callees {
			note(d, ns)
		}
	}
	all, _, err := e.Cluster.ListCheckpoints(ctx)
	switch {
	case apierrors.IsForbidden(err):
		e.warn(strings.Join(set, ","), "cannot list checkpoints across the cluster (RBAC), so only the dependents recorded in these namespaces' checkpoints are checked")
	case err != nil:
		return nil, err
	}
	for dep, cp := range all {
		for _, c := range cp.CalledBy {
			if in[c] {
				note(dep, c)
			}
		}
	}
	var out []string
	for _, dep := range slices.Sorted(maps.Keys(callers)) {
		cp := all[dep]
		if cp == nil {
			if cp, err = e.Cluster.LoadCheckpoint(ctx, dep); err != nil {
				return nil, err
			}
		}
		if why := pastStrict(cp); why != "" {
			out = append(out, fmt.Sprintf("%s (%s; called by %s)", dep, why, strings.Join(slices.Sorted(maps.Keys(callers[dep])), ", ")))
		}
	}
	return out, nil
}

// pastStrict says how a namespace relies on its callers' sidecars: its
// checkpoint holds a change of the strict or authz phase that was not
// undone ("" when none).
func pastStrict(cp *Checkpoint) string {
	why := ""
	for _, r := range cp.Records {
		switch {
		case r.Phase == plan.PhaseStrict && why == "":
			why = fmt.Sprintf("STRICT since %s, plan %s", r.StartedAt.UTC().Format(time.RFC3339), r.PlanID)
		case r.Phase == plan.PhaseAuthz:
			why = fmt.Sprintf("authorization policies applied %s, plan %s", r.StartedAt.UTC().Format(time.RFC3339), r.PlanID)
		}
	}
	return why
}

// leftoverSidecars lists, after a full rollback, the pods that still carry
// a sidecar the restored labels no longer give them: pods created while
// the namespace was labelled (a scale-up, a reschedule), which the plan's
// restarts did not roll back. Each comes with the command that restarts it.
func (e *Executor) leftoverSidecars(ctx context.Context, ns string, out *Outcome) error {
	_, r, err := e.Observer.Audit(ctx, []string{ns}, time.Time{})
	if err != nil {
		return fmt.Errorf("list the pods of %s that keep a sidecar: %w", ns, err)
	}
	seen := map[string]bool{}
	for _, p := range namespaceOf(r, ns).Pods.Items {
		if p.State != audit.PodSidecarNotExpected || seen[p.Workload] {
			continue
		}
		seen[p.Workload] = true
		kind, name, _ := strings.Cut(p.Workload, "/")
		cmd := fmt.Sprintf("kubectl rollout restart %s/%s -n %s", strings.ToLower(kind), name, ns)
		if kind == "Pod" || kind == "Job" || kind == "CronJob" {
			cmd = fmt.Sprintf("kubectl delete pod %s -n %s (when it may be stopped)", p.Name, ns)
		}
		line := fmt.Sprintf("%s still carries a sidecar (pod %s, created while the namespace was labelled for injection): %s", p.Workload, p.Name, cmd)
		e.note(ns, "rollback: note: %s", line)
		out.mu.Lock()
		out.Leftovers = append(out.Leftovers, ns+": "+line)
		out.mu.Unlock()
	}
	return nil
}

// rollbackOne rolls namespace ns back to the end of phase `to` ("": every
// change; the checkpoint is then deleted).
func (e *Executor) rollbackOne(ctx context.Context, ns string, to plan.PhaseName, out *Outcome) error {
	cp := e.cps[ns]
	records := UndoOrder(cp.Records, to)
	if len(records) == 0 && to != "" {
		e.note(ns, "nothing to roll back after phase %s", to)
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
			return err
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
			e.warn(ns, "rollback would stop here unless an earlier undo of this rollback restores it: %v", err)
			continue
		}
		if err != nil {
			return err
		}
		out.changed()
		if ro != nil {
			rollouts = append(rollouts, ro)
		}
		if !e.dry() {
			cp.Records = dropRecord(cp.Records, r.Seq)
			if err := e.save(ctx, ns); err != nil {
				return err
			}
		}
	}
	if err := e.waitRollouts(ctx, rollouts); err != nil {
		return fmt.Errorf("%w; the namespace is rolled back, its workloads are still rolling: watch them with kubectl rollout status", err)
	}
	if e.dry() {
		return nil
	}
	if to == "" && len(cp.Records) == 0 {
		return e.Cluster.DeleteCheckpoint(ctx, ns)
	}
	if to != "" {
		e.emit(Event{Type: EventRolledBack, Namespace: ns, Phase: to, Message: "rolled back to the end of phase " + string(to)})
	}
	return nil
}

// noCheckpoint explains that there is nothing to roll back, and removes a
// lock a full rollback left behind (it deleted the checkpoint, then failed
// to delete the Lease).
func (e *Executor) noCheckpoint(ctx context.Context, ns string, to plan.PhaseName) error {
	e.note(ns, "nothing to roll back: the namespace has no checkpoint (no plan was applied to it, or a full rollback already ran)")
	if to != "" || e.dry() {
		return nil
	}
	lock, err := e.Cluster.LockState(ctx, ns)
	if err != nil || lock == nil {
		return err
	}
	if lock.Held {
		return fmt.Errorf("namespace %s has no checkpoint but its lock is held by %q: a run may be starting there; if you know that run is dead, `kubectl meshmigrate unlock -n %s`, then roll back again", ns, lock.Holder, ns)
	}
	if err := e.Cluster.deleteLease(ctx, ns); err != nil {
		return err
	}
	e.note(ns, "removed the lock a full rollback left behind")
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
	act, err := actionFor(r.Action)
	if err != nil {
		return nil, err
	}
	return act.undo(ctx, e, ns, r)
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
