package phases

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// restartAction restarts a workload as `kubectl rollout restart` does: a
// new restartedAt annotation on its pod template.
type restartAction struct{}

func (restartAction) capture(ctx context.Context, e *Executor, s stepRef) (Undo, error) {
	gvr, err := resourceFor("apps/v1", s.kind)
	if err != nil {
		return Undo{}, err
	}
	obj, err := e.Cluster.get(ctx, gvr, s.ns, s.name)
	if err != nil || obj == nil {
		return Undo{}, fmt.Errorf("read %s: %w", s.target, orNotFound(err, s.target))
	}
	u := Undo{Existed: true, APIVersion: "apps/v1", Set: e.now().Format(time.RFC3339)}
	if v, ok, _ := unstructured.NestedString(obj.Object, "spec", "template", "metadata", "annotations", AnnotationRestartedAt); ok {
		u.RestartedAt = &v
	}
	return u, nil
}

// do sets the recorded restartedAt value (a resumed step sets the same one,
// so the workload rolls once).
func (restartAction) do(ctx context.Context, e *Executor, s stepRef, rec *Record) (*rollout, error) {
	gvr, err := resourceFor("apps/v1", s.kind)
	if err != nil {
		return nil, err
	}
	// An apply of the annotation alone would try to create a deleted
	// workload: say what happened instead.
	if cur, err := e.Cluster.get(ctx, gvr, s.ns, s.name); err != nil {
		return nil, err
	} else if cur == nil {
		return nil, fmt.Errorf("%s no longer exists (deleted since the plan was made): make a new plan", s.target)
	}
	if _, err := e.Cluster.apply(ctx, gvr, s.ns, templateAnnotation(s.kind, s.name, s.ns, &rec.Undo.Set)); err != nil {
		return nil, fmt.Errorf("restart %s: %w", s.target, err)
	}
	e.stepDone(s, "restarted %s", s.target)
	if e.dry() {
		return nil, nil
	}
	return &rollout{ns: s.ns, target: s.target, what: string(s.phase), phase: s.phase, gvr: gvr, seq: rec.Seq}, nil
}

// templateAnnotation is the apply that owns the pod template's restartedAt
// (nil: owns none, so the annotation this tool set goes away).
func templateAnnotation(kind, name, ns string, restartedAt *string) map[string]any {
	obj := map[string]any{"apiVersion": "apps/v1", "kind": kind, "metadata": map[string]any{"name": name, "namespace": ns}}
	if restartedAt != nil {
		obj["spec"] = map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationRestartedAt: *restartedAt}}}}
	}
	return obj
}

// undo puts the template's prior restartedAt back, which rolls the
// workload back onto its prior template: with injection restored, its pods
// come back as they were.
func (restartAction) undo(ctx context.Context, e *Executor, ns string, r Record) (*rollout, error) {
	kind, name := splitTarget(r.Target)
	gvr, err := resourceFor("apps/v1", kind)
	if err != nil {
		return nil, err
	}
	obj, err := e.Cluster.get(ctx, gvr, ns, name)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		e.undone(ns, r, "%s no longer exists: nothing to restart", r.Target)
		return nil, nil
	}
	now, has, _ := unstructured.NestedString(obj.Object, "spec", "template", "metadata", "annotations", AnnotationRestartedAt)
	switch {
	case same(now, has, r.Undo.RestartedAt):
		return nil, nil
	case (!has || now != r.Undo.Set) && e.Options.AcceptRestarts:
		// A restart is not data: its pods run the current template.
		e.undone(ns, r, "%s was restarted again since (restartedAt %s, this plan set %s): accepted (--accept-restarts), left as it is", r.Target, show(now, has), r.Undo.Set)
		return nil, nil
	case !has || now != r.Undo.Set:
		return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: fmt.Sprintf("it was restarted again since (restartedAt %s, this plan set %s); a restart is not data: pass --accept-restarts to leave it and finish", show(now, has), r.Undo.Set)}
	}
	if _, err := e.Cluster.apply(ctx, gvr, ns, templateAnnotation(kind, name, ns, r.Undo.RestartedAt)); err != nil {
		return nil, fmt.Errorf("restore %s: %w", r.Target, err)
	}
	e.undone(ns, r, "%s restarted onto its prior pod template", r.Target)
	if e.dry() {
		return nil, nil
	}
	return &rollout{ns: ns, target: r.Target, what: "rollback", phase: r.Phase, gvr: gvr}, nil
}

func (restartAction) check(_ string, r Record) error {
	if r.Undo.APIVersion != "" && r.Undo.APIVersion != "apps/v1" {
		return fmt.Errorf("apiVersion %q, want apps/v1", r.Undo.APIVersion)
	}
	if r.Undo.Set == "" {
		return fmt.Errorf("it records no restartedAt value set")
	}
	return nil
}

func (restartAction) made(_ Record, m *plan.Made) { m.Injected = true }

func (restartAction) restarts() bool { return true }
