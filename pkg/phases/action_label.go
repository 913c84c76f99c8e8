package phases

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// labelAction sets and removes the namespace's injection labels.
type labelAction struct{}

func (labelAction) capture(ctx context.Context, e *Executor, s stepRef) (Undo, error) {
	obj, err := e.Cluster.get(ctx, kinds["Namespace"], "", s.ns)
	if err != nil || obj == nil {
		return Undo{}, fmt.Errorf("read namespace %s: %w", s.ns, orNotFound(err, "namespace "+s.ns))
	}
	cur := obj.GetLabels()
	u := Undo{Existed: true, Labels: map[string]*string{}, After: map[string]*string{}}
	for _, k := range append(slices.Sorted(maps.Keys(s.st.Labels)), s.st.Remove...) {
		u.Labels[k], u.After[k] = nil, nil
		if v, ok := cur[k]; ok {
			u.Labels[k] = &v
		}
		if v, ok := s.st.Labels[k]; ok {
			u.After[k] = &v
		}
	}
	return u, nil
}

// do sets the step's labels (server-side apply) and removes the ones it
// removes (a conditional JSON patch: see patchLabels).
//
// The new label goes on before the old one comes off: with both present
// istio-injection decides and pods are still injected, whereas a failure
// between the two writes in the other order would leave the namespace
// selecting no injector, and every pod created until a resume would start
// without a sidecar.
func (labelAction) do(ctx context.Context, e *Executor, s stepRef, _ *Record) (*rollout, error) {
	ns, st := s.ns, s.st
	if len(st.Labels) > 0 {
		labels := map[string]any{}
		for k, v := range st.Labels {
			labels[k] = v
		}
		obj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns, "labels": labels}}
		if _, err := e.Cluster.apply(ctx, kinds["Namespace"], "", obj); err != nil {
			return nil, fmt.Errorf("label namespace %s: %w", ns, err)
		}
	}
	if len(st.Remove) > 0 {
		obj, err := e.Cluster.get(ctx, kinds["Namespace"], "", ns)
		if err != nil || obj == nil {
			return nil, fmt.Errorf("read namespace %s: %w", ns, orNotFound(err, "namespace "+ns))
		}
		remove := map[string]*string{}
		for _, k := range st.Remove {
			remove[k] = nil
		}
		if err := e.Cluster.patchLabels(ctx, ns, obj.GetLabels(), remove); err != nil {
			return nil, err
		}
	}
	e.stepDone(s, "labelled %s", labelList(st.Labels, st.Remove))
	// Pods created from now on get a sidecar: the verify window starts here
	// (or at the end of the restarts' rollouts).
	t := e.now()
	e.cps[ns].MeshedAt = &t
	return nil, nil
}

// undo restores each label the step set or removed, if it still has the
// value the step gave it.
func (labelAction) undo(ctx context.Context, e *Executor, ns string, r Record) (*rollout, error) {
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
	e.undone(ns, r, "namespace labels restored: %s", restoredList(to))
	return nil, nil
}

func (labelAction) check(_ string, r Record) error {
	u := r.Undo
	if len(u.Labels) == 0 {
		return fmt.Errorf("it records no label")
	}
	for _, k := range slices.Sorted(maps.Keys(u.Labels)) {
		if err := plan.CheckLabel(k, u.Labels[k]); err != nil {
			return err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(u.After)) {
		if _, ok := u.Labels[k]; !ok {
			return fmt.Errorf("label %s has a value after the step but none before", k)
		}
		if err := plan.CheckLabel(k, u.After[k]); err != nil {
			return err
		}
	}
	return nil
}

func (labelAction) made(r Record, m *plan.Made) {
	for k := range r.Undo.Labels {
		m.Labels[k] = true
	}
	m.Injected = true
}

func (labelAction) restarts() bool { return false }
