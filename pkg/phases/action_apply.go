package phases

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// applyAction server-side applies one of the plan's policies.
type applyAction struct{}

func splitTarget(target string) (kind, name string) {
	kind, name, _ = strings.Cut(target, "/")
	return kind, name
}

func (applyAction) capture(ctx context.Context, e *Executor, s stepRef) (Undo, error) {
	obj := s.p.Manifest(s.st)
	apiVersion := fmt.Sprint(obj["apiVersion"])
	gvr, err := resourceFor(apiVersion, s.kind)
	if err != nil {
		return Undo{}, err
	}
	cur, err := e.Cluster.get(ctx, gvr, s.ns, s.name)
	if err != nil {
		return Undo{}, fmt.Errorf("read %s: %w", s.target, err)
	}
	u := Undo{APIVersion: apiVersion}
	if cur != nil {
		u.Existed, u.Prior = true, Clean(cur.Object)
		if err := captureOwnership(&u, s.ns, s.target, cur); err != nil {
			return Undo{}, err
		}
	}
	return u, nil
}

// recorded reads the object an apply or delete record names, as it is now
// (nil when it does not exist), with its resource and name.
func (c *Cluster) recorded(ctx context.Context, ns string, r Record) (schema.GroupVersionResource, string, *unstructured.Unstructured, error) {
	kind, name := splitTarget(r.Target)
	gvr, err := resourceFor(r.Undo.APIVersion, kind)
	if err != nil {
		return gvr, name, nil, err
	}
	cur, err := c.get(ctx, gvr, ns, name)
	return gvr, name, cur, err
}

// do applies the manifest and records the UID and digest of what it
// wrote: rollback restores or deletes only an object still exactly so.
func (applyAction) do(ctx context.Context, e *Executor, s stepRef, rec *Record) (*rollout, error) {
	obj := s.p.Manifest(s.st)
	gvr, err := resourceFor(fmt.Sprint(obj["apiVersion"]), s.kind)
	if err != nil {
		return nil, err
	}
	written, err := e.Cluster.apply(ctx, gvr, s.ns, obj)
	if err != nil {
		return nil, fmt.Errorf("apply %s: %w", s.target, err)
	}
	rec.Undo.UID, rec.Undo.Digest = string(written.GetUID()), Digest(written.Object)
	e.stepDone(s, "applied %s", s.target)
	return nil, nil
}

// undo deletes an object the plan created, or applies back the prior
// content of one it changed, and gives its fields back to their managers.
func (applyAction) undo(ctx context.Context, e *Executor, ns string, r Record) (*rollout, error) {
	gvr, name, cur, err := e.Cluster.recorded(ctx, ns, r)
	if err != nil {
		return nil, err
	}
	// The object must still be as this step wrote it. A record whose
	// change was never confirmed (a crash right after the write) has no
	// digest: the object is then either as before (nothing to do) or as
	// the step left it.
	switch {
	case cur == nil && !r.Undo.Existed:
		return nil, nil
	case cur == nil:
		return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: "it was deleted since this plan changed it: not re-created"}
	case r.Undo.Existed && Digest(cur.Object) == Digest(r.Undo.Prior):
		return nil, e.restoreOwnership(ctx, gvr, ns, r, cur)
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
		e.undone(ns, r, "deleted %s (created by plan %s)", r.Target, r.PlanID)
		return nil, nil
	}
	// Nobody else changed it since: applying the prior content back sets
	// what the plan changed to its prior value and drops the fields only
	// the plan added.
	return nil, e.restorePrior(ctx, gvr, ns, r, "restored %s as it was")
}

// restorePrior applies the record's prior content back (restore says what
// was done, with the target) and gives its fields back to their managers.
func (e *Executor) restorePrior(ctx context.Context, gvr schema.GroupVersionResource, ns string, r Record, restore string) error {
	restored, err := e.Cluster.apply(ctx, gvr, ns, r.Undo.Prior)
	if err != nil {
		return fmt.Errorf("restore %s: %w", r.Target, err)
	}
	e.undone(ns, r, restore, r.Target)
	return e.restoreOwnership(ctx, gvr, ns, r, restored)
}

func (applyAction) check(ns string, r Record) error {
	u := r.Undo
	kind, _ := splitTarget(r.Target)
	if err := plan.CheckAPIVersion(kind, u.APIVersion); err != nil {
		return err
	}
	if u.Existed && u.Prior == nil {
		return fmt.Errorf("the object existed but no prior object is recorded")
	}
	if u.Prior == nil {
		return nil
	}
	if err := plan.CheckObject(ns, r.Target, u.Prior); err != nil {
		return fmt.Errorf("its prior %v", err)
	}
	if v := u.Prior["apiVersion"]; v != u.APIVersion {
		return fmt.Errorf("its prior object apiVersion %q, but the record's %q", v, u.APIVersion)
	}
	return nil
}

func (applyAction) made(r Record, m *plan.Made) { m.Objects[strings.ToLower(r.Target)] = true }

func (applyAction) restarts() bool { return false }
