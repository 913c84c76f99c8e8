package phases

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// deleteAction deletes an L7 AuthorizationPolicy that the plan copied onto
// a waypoint (docs/ambient.md). The whole object is recorded first, and
// rollback re-creates it as it was, with its managers.
type deleteAction struct{}

func (deleteAction) capture(ctx context.Context, e *Executor, s stepRef) (Undo, error) {
	apiVersion := fmt.Sprint(s.st.Object["apiVersion"])
	gvr, err := resourceFor(apiVersion, s.kind)
	if err != nil {
		return Undo{}, err
	}
	cur, err := e.Cluster.get(ctx, gvr, s.ns, s.name)
	if err != nil {
		return Undo{}, fmt.Errorf("read %s: %w", s.target, err)
	}
	u := Undo{APIVersion: apiVersion}
	if cur == nil {
		return u, nil // gone already: nothing to delete, nothing to restore
	}
	if err := captureOwnership(&u, s.ns, s.target, cur); err != nil {
		return Undo{}, err
	}
	// The copy on the waypoint was made from the spec the plan saw: a
	// policy changed since would be replaced by an older one.
	spec, _ := s.st.Object["spec"].(map[string]any)
	liveSpec, _ := cur.Object["spec"].(map[string]any)
	if same, err := samePolicySpec(spec, liveSpec); err != nil || !same {
		why := "its spec changed since the plan was made, and the plan's copy on the waypoint holds the old one"
		if err != nil {
			why = "its spec cannot be compared with the plan's: " + err.Error()
		}
		return Undo{}, &refusal{reason: fmt.Sprintf("%s: %s; re-plan", objectName(s.ns, s.target), why)}
	}
	if err := e.waypointTargetsStill(ctx, s); err != nil {
		return Undo{}, err
	}
	u.Existed, u.Prior, u.UID = true, Clean(cur.Object), string(cur.GetUID())
	return u, nil
}

// waypointTargetsStill refuses to delete the original when a Service its
// copy on the waypoint targets selects, now, a pod the original's selector
// does not: the copy would reach that pod too (an ALLOW policy then denies
// its other callers). The plan checked this when it was made; Services
// are not in its fingerprint, so it is checked again here, right before
// the copy starts to count.
func (e *Executor) waypointTargetsStill(ctx context.Context, s stepRef) error {
	sel, _, _ := unstructured.NestedStringMap(s.st.Object, "spec", "selector", "matchLabels")
	if len(sel) == 0 {
		return nil // namespace-wide: the copy targets the waypoint itself
	}
	pn, _ := s.p.Namespace(s.ns)
	wp, _ := pn.Phase(plan.PhaseWaypoint)
	for _, st := range wp.Steps {
		if st.Target != s.target+plan.WaypointSuffix || st.Object == nil {
			continue
		}
		refs, _, _ := unstructured.NestedSlice(st.Object, "spec", "targetRefs")
		for _, ref := range refs {
			m, _ := ref.(map[string]any)
			if m["kind"] != "Service" {
				continue
			}
			name := fmt.Sprint(m["name"])
			svc, err := e.Cluster.Kube.CoreV1().Services(s.ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return &refusal{reason: fmt.Sprintf("Service %s/%s, which %s on the waypoint targets, no longer exists: the copy would enforce nothing; re-plan", s.ns, name, st.Target)}
			}
			if err != nil {
				return fmt.Errorf("read Service %s, which %s targets: %w", name, st.Target, err)
			}
			if len(svc.Spec.Selector) == 0 {
				return &refusal{reason: fmt.Sprintf("Service %s/%s, which %s targets, selects no pods by label now: re-plan", s.ns, name, st.Target)}
			}
			pods, err := e.Cluster.Kube.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
			if err != nil {
				return fmt.Errorf("list the pods of Service %s: %w", name, err)
			}
			var wider []string
			for _, p := range pods.Items {
				if !matches(p.Labels, sel) {
					wider = append(wider, p.Name)
				}
			}
			if len(wider) > 0 {
				return &refusal{reason: fmt.Sprintf("Service %s/%s, which %s on the waypoint targets, now also selects pods %s does not (%s): the copy would reach them too; re-plan",
					s.ns, name, st.Target, objectName(s.ns, s.target), strings.Join(wider, ", "))}
			}
		}
	}
	return nil
}

// samePolicySpec compares two AuthorizationPolicy specs as Istio reads
// them: a field set to its default (action: ALLOW) equals one left out.
func samePolicySpec(a, b map[string]any) (bool, error) {
	parse := func(m map[string]any) (*securityv1beta1.AuthorizationPolicy, error) {
		raw, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		out := &securityv1beta1.AuthorizationPolicy{}
		return out, out.UnmarshalJSON(raw)
	}
	pa, err := parse(a)
	if err != nil {
		return false, err
	}
	pb, err := parse(b)
	if err != nil {
		return false, err
	}
	return proto.Equal(pa, pb), nil
}

// do deletes the object the capture recorded, by its UID: one made again
// since is not this one.
func (deleteAction) do(ctx context.Context, e *Executor, s stepRef, rec *Record) (*rollout, error) {
	if !rec.Undo.Existed {
		e.stepDone(s, "%s does not exist: nothing to delete", s.target)
		return nil, nil
	}
	gvr, err := resourceFor(rec.Undo.APIVersion, s.kind)
	if err != nil {
		return nil, err
	}
	if err := e.Cluster.delete(ctx, gvr, s.ns, s.name, types.UID(rec.Undo.UID)); err != nil {
		return nil, fmt.Errorf("delete %s: %w", s.target, err)
	}
	e.stepDone(s, "deleted %s (recorded for rollback)", s.target)
	return nil, nil
}

// undo re-creates the deleted object as it was and gives its fields back
// to the managers that held them, unless one was made again since.
func (deleteAction) undo(ctx context.Context, e *Executor, ns string, r Record) (*rollout, error) {
	if !r.Undo.Existed {
		return nil, nil
	}
	gvr, _, cur, err := e.Cluster.recorded(ctx, ns, r)
	if err != nil {
		return nil, err
	}
	switch {
	case cur != nil && string(cur.GetUID()) == r.Undo.UID:
		return nil, nil // the delete never happened (a crash before it)
	case cur != nil && Digest(cur.Object) == Digest(r.Undo.Prior):
		return nil, nil // someone made it again as it was
	case cur != nil:
		return nil, &ConflictError{Namespace: ns, Target: r.Target, Detail: "it was made again, differently, since this plan deleted it: not overwritten"}
	}
	return nil, e.restorePrior(ctx, gvr, ns, r, "re-created %s as it was before the plan deleted it")
}

func (deleteAction) check(ns string, r Record) error {
	u := r.Undo
	kind, _ := splitTarget(r.Target)
	if err := plan.CheckAPIVersion(kind, u.APIVersion); err != nil {
		return err
	}
	if !u.Existed {
		return nil
	}
	if u.Prior == nil || u.UID == "" {
		return fmt.Errorf("the object existed but its prior content or UID is not recorded")
	}
	if err := plan.CheckObject(ns, r.Target, u.Prior); err != nil {
		return fmt.Errorf("its prior %v", err)
	}
	return nil
}

func (deleteAction) made(r Record, m *plan.Made) { m.Objects[strings.ToLower(r.Target)] = true }

func (deleteAction) restarts() bool { return false }
