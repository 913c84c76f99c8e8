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
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// rollout is a restarted workload to wait for.
type rollout struct {
	ns, target string
	// what names the rollout's cause in progress lines.
	what string
	gvr  schema.GroupVersionResource
	// seq is the restart's checkpoint record.
	seq int
}

// runStep makes one change, write-ahead: the record of what the object
// looked like before is saved first, the change made, the record marked
// done. A record left "started" by a crash is completed by the next run,
// which makes the same change again (all of them are idempotent) and keeps
// the first prior state.
func (e *Executor) runStep(ctx context.Context, p *plan.Plan, ns, phase string, idx int, st plan.Step, out *Outcome) (*rollout, error) {
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
		e.logf(ns, "%s: %s %s: done by an earlier run", phase, st.Action, st.Target)
		return nil, nil
	}
	kind, name, _ := strings.Cut(st.Target, "/")
	if rec == nil {
		undo, err := e.capture(ctx, p, ns, st, kind, name)
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
	var r *rollout
	switch st.Action {
	case plan.ActionLabelNamespace:
		if err := e.labelNamespace(ctx, ns, st); err != nil {
			return nil, err
		}
		e.logf(ns, "%s: labelled %s%s", phase, labelList(st.Labels, st.Remove), e.dryNote())
	case plan.ActionRestartWorkload:
		gvr, err := resourceFor("apps/v1", kind)
		if err != nil {
			return nil, err
		}
		// An apply of the annotation alone would try to create a deleted
		// workload: say what happened instead.
		if cur, err := e.Cluster.get(ctx, gvr, ns, name); err != nil {
			return nil, err
		} else if cur == nil {
			return nil, fmt.Errorf("%s no longer exists (deleted since the plan was made): make a new plan", st.Target)
		}
		obj := map[string]any{"apiVersion": "apps/v1", "kind": kind, "metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationRestartedAt: rec.Undo.Set}}}}}
		if _, err := e.Cluster.apply(ctx, gvr, ns, obj); err != nil {
			return nil, fmt.Errorf("restart %s: %w", st.Target, err)
		}
		e.logf(ns, "%s: restarted %s%s", phase, st.Target, e.dryNote())
		if !e.dry() {
			r = &rollout{ns: ns, target: st.Target, what: phase, gvr: gvr, seq: rec.Seq}
		}
	case plan.ActionApply:
		obj := p.Manifest(st)
		gvr, err := resourceFor(fmt.Sprint(obj["apiVersion"]), kind)
		if err != nil {
			return nil, err
		}
		written, err := e.Cluster.apply(ctx, gvr, ns, obj)
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", st.Target, err)
		}
		rec.Undo.UID, rec.Undo.Digest = string(written.GetUID()), Digest(written.Object)
		e.logf(ns, "%s: applied %s%s", phase, st.Target, e.dryNote())
	default:
		return nil, fmt.Errorf("unknown step action %q", st.Action)
	}
	out.changed()
	if st.Action == plan.ActionLabelNamespace {
		t := e.now()
		cp.MeshedAt = &t
	}
	if r != nil || e.dry() {
		return r, nil // a restart is done once its rollout is
	}
	return nil, e.markDone(ctx, ns, rec.Seq)
}

func (e *Executor) dryNote() string {
	if e.dry() {
		return " (dry run: " + e.Options.DryRun + ")"
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

// capture reads what the step is about to change.
func (e *Executor) capture(ctx context.Context, p *plan.Plan, ns string, st plan.Step, kind, name string) (Undo, error) {
	switch st.Action {
	case plan.ActionLabelNamespace:
		obj, err := e.Cluster.get(ctx, kinds["Namespace"], "", ns)
		if err != nil || obj == nil {
			return Undo{}, fmt.Errorf("read namespace %s: %w", ns, orNotFound(err, "namespace "+ns))
		}
		cur := obj.GetLabels()
		u := Undo{Existed: true, Labels: map[string]*string{}, After: map[string]*string{}}
		for _, k := range append(slices.Sorted(maps.Keys(st.Labels)), st.Remove...) {
			u.Labels[k], u.After[k] = nil, nil
			if v, ok := cur[k]; ok {
				u.Labels[k] = &v
			}
			if v, ok := st.Labels[k]; ok {
				u.After[k] = &v
			}
		}
		return u, nil
	case plan.ActionRestartWorkload:
		gvr, err := resourceFor("apps/v1", kind)
		if err != nil {
			return Undo{}, err
		}
		obj, err := e.Cluster.get(ctx, gvr, ns, name)
		if err != nil || obj == nil {
			return Undo{}, fmt.Errorf("read %s: %w", st.Target, orNotFound(err, st.Target))
		}
		u := Undo{Existed: true, APIVersion: "apps/v1", Set: e.now().Format(time.RFC3339)}
		if v, ok, _ := unstructured.NestedString(obj.Object, "spec", "template", "metadata", "annotations", AnnotationRestartedAt); ok {
			u.RestartedAt = &v
		}
		return u, nil
	case plan.ActionApply:
		obj := p.Manifest(st)
		apiVersion := fmt.Sprint(obj["apiVersion"])
		gvr, err := resourceFor(apiVersion, kind)
		if err != nil {
			return Undo{}, err
		}
		cur, err := e.Cluster.get(ctx, gvr, ns, name)
		if err != nil {
			return Undo{}, fmt.Errorf("read %s: %w", st.Target, err)
		}
		u := Undo{APIVersion: apiVersion}
		if cur != nil {
			u.Existed, u.Prior = true, Clean(cur.Object)
			if err := captureOwnership(&u, ns, st.Target, cur); err != nil {
				return Undo{}, err
			}
		}
		return u, nil
	}
	return Undo{}, fmt.Errorf("unknown step action %q", st.Action)
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

// labelNamespace sets the step's labels (server-side apply) and removes the
// ones it removes (a conditional JSON patch: see patchLabels).
//
// The new label goes on before the old one comes off: with both present
// istio-injection decides and pods are still injected, whereas a failure
// between the two writes in the other order would leave the namespace
// selecting no injector, and every pod created until a resume would start
// without a sidecar.
func (e *Executor) labelNamespace(ctx context.Context, ns string, st plan.Step) error {
	if len(st.Labels) > 0 {
		labels := map[string]any{}
		for k, v := range st.Labels {
			labels[k] = v
		}
		obj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns, "labels": labels}}
		if _, err := e.Cluster.apply(ctx, kinds["Namespace"], "", obj); err != nil {
			return fmt.Errorf("label namespace %s: %w", ns, err)
		}
	}
	if len(st.Remove) == 0 {
		return nil
	}
	obj, err := e.Cluster.get(ctx, kinds["Namespace"], "", ns)
	if err != nil || obj == nil {
		return fmt.Errorf("read namespace %s: %w", ns, orNotFound(err, "namespace "+ns))
	}
	remove := map[string]*string{}
	for _, k := range st.Remove {
		remove[k] = nil
	}
	return e.Cluster.patchLabels(ctx, ns, obj.GetLabels(), remove)
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
