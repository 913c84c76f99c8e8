package phases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// Objects that Argo CD, Flux, Helm or another controller manage are theirs:
// server-side apply with force would take the fields they set, and their
// next sync would silently put them back while the checkpoint says done.
// The plan blocks such steps; apply checks again at capture (an owner may
// have appeared since), checks after each phase that what it applied is
// still as written, and rollback gives every field back to the manager
// that held it.

// refusal is a step apply will not make. runPhase stops there, as before a
// step the plan blocks: recorded, exit 2, resumable once it is resolved.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

// refused tells whether err is a refusal, and why.
func refused(err error) (string, bool) {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason, true
	}
	return "", false
}

// objectName is "PeerAuthentication shop/default" for target
// "PeerAuthentication/default" in namespace shop.
func objectName(ns, target string) string {
	kind, name, _ := strings.Cut(target, "/")
	return kind + " " + ns + "/" + name
}

func ownershipOf(obj *unstructured.Unstructured) cluster.Ownership {
	return cluster.OwnershipOf(obj.GetLabels(), obj.GetAnnotations(), obj.GetManagedFields())
}

// captureOwnership refuses to apply over cur, the live object of target,
// when someone else manages it, with the plan's own words; else it records
// cur's managedFields in u for rollback to give the fields back.
func captureOwnership(u *Undo, ns, target string, cur *unstructured.Unstructured) error {
	if owners := ownershipOf(cur).Owners(); len(owners) > 0 {
		return &refusal{reason: cluster.TakeoverRefusal(objectName(ns, target), owners)}
	}
	u.PriorManagedFields = cur.GetManagedFields()
	return nil
}

// stopIfReverted stops ns at its current phase when an object this plan
// applied is no longer as the plan's last write of it left it: an owner's
// sync put its own version back, or someone edited it. The phase is never
// reported done then, since the checkpoint would say what the cluster is not.
func (e *Executor) stopIfReverted(ctx context.Context, p *plan.Plan, ns string, rec *PhaseRecord, out *Outcome) (bool, error) {
	reason, err := e.revertedSince(ctx, p, ns)
	if err != nil || reason == "" {
		return false, err
	}
	return true, e.stopPhase(ctx, ns, rec, reason, out)
}

// revertedSince says how the first object this plan applied in ns differs
// from the plan's last write of it (its digest and UID), or "".
func (e *Executor) revertedSince(ctx context.Context, p *plan.Plan, ns string) (string, error) {
	for _, r := range e.cps[ns].Records {
		// An L7 policy moved to the waypoint must stay deleted: ztunnel
		// would enforce it (an owner's sync may have put it back).
		if r.PlanID != p.ID || r.Action != plan.ActionDelete || r.State != StateDone || !r.Undo.Existed {
			continue
		}
		kind, name, _ := strings.Cut(r.Target, "/")
		gvr, err := resourceFor(r.Undo.APIVersion, kind)
		if err != nil {
			return "", err
		}
		cur, err := e.Cluster.get(ctx, gvr, ns, name)
		if err != nil {
			return "", fmt.Errorf("read %s to check it stays deleted: %w", r.Target, err)
		}
		if cur != nil {
			return fmt.Sprintf("%s, which phase %s of this plan deleted (a copy is on the waypoint), exists again%s: ztunnel enforces it and denies what it allows; delete it where it comes from (its copy stays), and apply again",
				objectName(ns, r.Target), r.Phase, lastWriter(cur)), nil
		}
	}
	last := map[string]Record{}
	var targets []string
	for _, r := range e.cps[ns].Records {
		if r.PlanID != p.ID || r.Action != plan.ActionApply || r.State != StateDone || r.Undo.Digest == "" {
			continue
		}
		if _, ok := last[r.Target]; !ok {
			targets = append(targets, r.Target)
		}
		last[r.Target] = r // records are oldest first: the last write wins
	}
	for _, target := range targets {
		r := last[target]
		kind, name, _ := strings.Cut(target, "/")
		gvr, err := resourceFor(r.Undo.APIVersion, kind)
		if err != nil {
			return "", err
		}
		cur, err := e.Cluster.get(ctx, gvr, ns, name)
		if err != nil {
			return "", fmt.Errorf("read %s to check it is as phase %s wrote it: %w", target, r.Phase, err)
		}
		var change string
		switch {
		case cur == nil:
			change = "it was deleted"
		case r.Undo.UID != "" && string(cur.GetUID()) != r.Undo.UID:
			change = "it was deleted and made again" + lastWriter(cur)
		case Digest(cur.Object) != r.Undo.Digest:
			change = "changed" + lastWriter(cur)
		default:
			continue
		}
		object := objectName(ns, target)
		reason := fmt.Sprintf("%s is no longer as phase %s of this plan wrote it: %s", object, r.Phase, change)
		if cur != nil {
			if owners := ownershipOf(cur).Owners(); len(owners) > 0 {
				reason += ". " + cluster.TakeoverRefusal(object, owners)
			}
		}
		return reason + "; then roll back (" + rollbackBefore(ns, r.Phase, e.cps[ns].dataplane()) + ") and apply again", nil
	}
	return "", nil
}

// rollbackBefore is the command that undoes phase and the ones after it,
// among the phases of a namespace on dataplane.
func rollbackBefore(ns string, phase plan.PhaseName, dataplane string) string {
	phases := plan.PhasesOf(dataplane)
	if i := slices.Index(phases, phase); i > 0 {
		return fmt.Sprintf("kubectl meshmigrate rollback -n %s --to %s", ns, phases[i-1])
	}
	return "kubectl meshmigrate rollback -n " + ns + " --all"
}

// lastWriter names the latest writer of obj but this tool, from its
// managedFields: ` by "argocd-controller" at 2026-08-01T10:00:00Z`. Their
// times have a second's precision: of two in one second, one that
// re-applies what it manages (an owner) is the likelier cause.
func lastWriter(obj *unstructured.Unstructured) string {
	var last *metav1.ManagedFieldsEntry
	owner := func(f *metav1.ManagedFieldsEntry) bool {
		return len(cluster.OwnershipOf(nil, nil, []metav1.ManagedFieldsEntry{*f}).Owners()) > 0
	}
	fields := obj.GetManagedFields()
	for i := range fields {
		f := &fields[i]
		switch {
		case f.Manager == FieldManager || f.Subresource != "":
		case last == nil || last.Time == nil:
			last = f
		case f.Time == nil:
		case f.Time.After(last.Time.Time) || (f.Time.Equal(last.Time) && owner(f) && !owner(last)):
			last = f
		}
	}
	if last == nil {
		return ""
	}
	s := fmt.Sprintf(" by %q", last.Manager)
	if last.Time != nil {
		s += " at " + last.Time.UTC().Format(time.RFC3339)
	}
	return s
}

// restoreOwnership gives the fields of obj, which rollback restored (or
// found as it was), back to the managers that held them before the change:
// the plan's apply, and rollback's apply of the prior content, made this
// tool their co-owner, and it must not keep fields it did not own before.
// The managedFields recorded at capture are written back as they were; a
// record made before they were recorded just loses this tool's entries.
func (e *Executor) restoreOwnership(ctx context.Context, gvr schema.GroupVersionResource, ns string, r Record, obj *unstructured.Unstructured) error {
	live := obj.GetManagedFields()
	if !slices.ContainsFunc(live, isOurs) {
		return nil
	}
	prior := r.Undo.PriorManagedFields
	if len(prior) == 0 {
		prior = slices.DeleteFunc(slices.Clone(live), isOurs)
	}
	if e.dry() {
		e.undone(ns, r, "would give the fields of %s back to %s", r.Target, managerList(prior))
		return nil
	}
	if err := e.Cluster.resetManagedFields(ctx, gvr, ns, obj.GetName(), obj.GetResourceVersion(), prior); err != nil {
		return fmt.Errorf("give the fields of %s back to %s: %w", r.Target, managerList(prior), err)
	}
	e.undone(ns, r, "gave the fields of %s back to %s", r.Target, managerList(prior))
	return nil
}

func isOurs(f metav1.ManagedFieldsEntry) bool { return f.Manager == FieldManager }

func managerList(fields []metav1.ManagedFieldsEntry) string {
	var names []string
	for _, f := range fields {
		if !slices.Contains(names, f.Manager) {
			names = append(names, f.Manager)
		}
	}
	if len(names) == 0 {
		return "no manager"
	}
	return strings.Join(names, ", ")
}

// resetManagedFields sets the object's managedFields to entries, with the
// JSON patch kubectl's own migration to server-side apply sends (client-go
// util/csaupgrade UpgradeManagedFieldsPatch): managedFields replaced, and
// the resourceVersion read, so that a change since is a 409 conflict. The
// API server takes the managedFields a write sets as given on every write
// but apply, and a write that changes no other field adds no entry of its
// own (k8s.io/apimachinery managedfields: decodeLiveOrNew; structured-merge-diff
// drops an empty field set); client-go's field-managed fake runs the same
// code. [{}] clears them: an empty list would read as "leave them".
func (c *Cluster) resetManagedFields(ctx context.Context, gvr schema.GroupVersionResource, ns, name, resourceVersion string, entries []metav1.ManagedFieldsEntry) error {
	if !c.writes() {
		return nil
	}
	var value any = entries
	if len(entries) == 0 {
		value = []map[string]any{{}}
	}
	ops := []map[string]any{{"op": "replace", "path": "/metadata/managedFields", "value": value}}
	if resourceVersion != "" {
		ops = append(ops, map[string]any{"op": "replace", "path": "/metadata/resourceVersion", "value": resourceVersion})
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	err = c.write(ctx, func() error {
		_, err := c.resource(gvr, ns).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: FieldManager, DryRun: c.dryRun()})
		return err
	})
	if apierrors.IsInvalid(err) || apierrors.IsConflict(err) {
		return fmt.Errorf("it changed since it was restored: %w", err)
	}
	return err
}
