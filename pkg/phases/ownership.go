package phases

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// Objects that Argo CD, Flux, Helm or another controller manage are theirs:
// server-side apply with force would take the fields they set, and their
// next sync would silently put them back while the checkpoint says done.
// The plan blocks such steps; apply checks again at capture (an owner may
// have appeared since), and checks after each phase that what it applied
// is still as written.

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
// when someone else manages it, with the plan's own words.
func captureOwnership(u *Undo, ns, target string, cur *unstructured.Unstructured) error {
	if owners := ownershipOf(cur).Owners(); len(owners) > 0 {
		return &refusal{reason: cluster.TakeoverRefusal(objectName(ns, target), owners)}
	}
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
		return reason + "; then roll back (" + rollbackBefore(ns, r.Phase) + ") and apply again", nil
	}
	return "", nil
}

// rollbackBefore is the command that undoes phase and the ones after it.
func rollbackBefore(ns, phase string) string {
	if i := phaseIndex(phase); i > 0 && i < len(plan.Phases) {
		return fmt.Sprintf("kubectl meshmigrate rollback -n %s --to %s", ns, plan.Phases[i-1])
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
