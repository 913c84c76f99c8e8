package phases

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// Cluster is the executor's access to the API server. Every change goes
// through server-side apply with FieldManager, except two that apply cannot
// express, each documented where it is made: removing a label another
// manager owns (a JSON patch with a test of the value) and the Lease's
// compare-and-swap.
type Cluster struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// DryRun is DryRunClient (no write is sent) or DryRunServer (every
	// write is sent with dryRun=All); empty or DryRunNone writes.
	DryRun DryRunMode

	// fence, while a run holds its locks (AcquireAll to Release), must
	// pass before each write: a run that lost its lock writes nothing more.
	fence atomic.Pointer[Locks]
}

// write sends one write, retried as onTransient does, each attempt only
// while the fence passes (the caller names the object in its error). The
// lock's own Lease writes are not fenced.
func (c *Cluster) write(ctx context.Context, fn func() error) error {
	return onTransient(ctx, func() error {
		if ls := c.fence.Load(); ls != nil {
			if err := ls.fenced(); err != nil {
				return fmt.Errorf("write refused: %w; nothing more was written", err)
			}
		}
		return fn()
	})
}

// kinds maps the kinds a plan touches to their resources.
var kinds = map[string]schema.GroupVersionResource{
	"Namespace":           {Version: "v1", Resource: "namespaces"},
	"Deployment":          {Group: "apps", Version: "v1", Resource: "deployments"},
	"StatefulSet":         {Group: "apps", Version: "v1", Resource: "statefulsets"},
	"DaemonSet":           {Group: "apps", Version: "v1", Resource: "daemonsets"},
	"PeerAuthentication":  {Group: "security.istio.io", Resource: "peerauthentications"},
	"AuthorizationPolicy": {Group: "security.istio.io", Resource: "authorizationpolicies"},
	"Gateway":             {Group: cluster.GatewayGroup, Resource: "gateways"},
}

// resourceFor returns the resource of kind at apiVersion (for the Istio
// kinds, whose version the plan chose).
func resourceFor(apiVersion, kind string) (schema.GroupVersionResource, error) {
	gvr, ok := kinds[kind]
	if !ok {
		return gvr, fmt.Errorf("the plan names a %s, which apply does not handle", kind)
	}
	if gvr.Version == "" {
		gv, err := schema.ParseGroupVersion(apiVersion)
		if err != nil || gv.Group != gvr.Group {
			return gvr, fmt.Errorf("%s has apiVersion %q, want %s/VERSION", kind, apiVersion, gvr.Group)
		}
		gvr.Version = gv.Version
	}
	return gvr, nil
}

func (c *Cluster) resource(gvr schema.GroupVersionResource, ns string) dynamic.ResourceInterface {
	if gvr.Resource == "namespaces" {
		return c.Dynamic.Resource(gvr)
	}
	return c.Dynamic.Resource(gvr).Namespace(ns)
}

func (c *Cluster) dryRun() []string {
	if c.DryRun == DryRunServer {
		return []string{metav1.DryRunAll}
	}
	return nil
}

// writes is false when no write may reach the server (--dry-run=client).
func (c *Cluster) writes() bool { return c.DryRun != DryRunClient }

// persists is true when writes take effect (no dry run).
func (c *Cluster) persists() bool { return c.DryRun == "" || c.DryRun == DryRunNone }

// get returns the object, or nil when it does not exist.
func (c *Cluster) get(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	var obj *unstructured.Unstructured
	err := onTransient(ctx, func() error {
		var err error
		obj, err = c.resource(gvr, ns).Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return obj, err
}

// apply server-side applies obj, taking over the fields it sets from other
// managers (the plan was reviewed: its values win, and the prior ones are in
// the undo record).
func (c *Cluster) apply(ctx context.Context, gvr schema.GroupVersionResource, ns string, obj map[string]any) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{Object: obj}
	if !c.writes() {
		return u, nil
	}
	var out *unstructured.Unstructured
	err := c.write(ctx, func() error {
		var err error
		out, err = c.resource(gvr, ns).Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true, DryRun: c.dryRun()})
		return err
	})
	return out, err
}

// patchLabels moves namespace labels from their current values cur to
// the values in to (nil: removed), each only if it still has its current
// value. Server-side apply can only drop fields its manager owns, and these
// labels were set by someone else (kubectl label, a GitOps tool) or must
// return to exactly what they were, so this is a JSON patch whose test
// operations make every change conditional.
func (c *Cluster) patchLabels(ctx context.Context, ns string, cur map[string]string, to map[string]*string) error {
	var ops []string
	for _, k := range slices.Sorted(maps.Keys(to)) {
		path := "/metadata/labels/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
		v, has := cur[k]
		if has {
			ops = append(ops, fmt.Sprintf(`{"op":"test","path":%q,"value":%q}`, path, v))
		}
		switch want := to[k]; {
		case want == nil && has:
			ops = append(ops, fmt.Sprintf(`{"op":"remove","path":%q}`, path))
		case want != nil && has:
			ops = append(ops, fmt.Sprintf(`{"op":"replace","path":%q,"value":%q}`, path, *want))
		case want != nil:
			ops = append(ops, fmt.Sprintf(`{"op":"add","path":%q,"value":%q}`, path, *want))
		}
	}
	if len(ops) == 0 || !c.writes() {
		return nil
	}
	patch := []byte("[" + strings.Join(ops, ",") + "]")
	err := c.write(ctx, func() error {
		_, err := c.resource(kinds["Namespace"], "").Patch(ctx, ns, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: FieldManager, DryRun: c.dryRun()})
		return err
	})
	if apierrors.IsInvalid(err) || apierrors.IsConflict(err) {
		return fmt.Errorf("change labels %s of namespace %s: a label changed since it was read: %w", strings.Join(slices.Sorted(maps.Keys(to)), ", "), ns, err)
	}
	if err != nil {
		return fmt.Errorf("change labels %s of namespace %s: %w", strings.Join(slices.Sorted(maps.Keys(to)), ", "), ns, err)
	}
	return nil
}

// delete deletes the object if it still has uid.
func (c *Cluster) delete(ctx context.Context, gvr schema.GroupVersionResource, ns, name string, uid types.UID) error {
	if !c.writes() {
		return nil
	}
	err := c.write(ctx, func() error {
		return c.resource(gvr, ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, DryRun: c.dryRun()})
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// LoadCheckpoint reads the namespace's checkpoint; a namespace never
// migrated gets an empty one.
func (c *Cluster) LoadCheckpoint(ctx context.Context, ns string) (*Checkpoint, error) {
	var data string
	var rv string
	err := onTransient(ctx, func() error {
		cm, err := c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, CheckpointName, metav1.GetOptions{})
		if err == nil {
			data, rv = cm.Data[CheckpointKey], cm.ResourceVersion
		}
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		return &Checkpoint{Namespace: ns}, nil
	case err != nil:
		return nil, fmt.Errorf("read the checkpoint %s/%s: %w", ns, CheckpointName, err)
	}
	cp, err := DecodeCheckpoint(ns, data)
	if err != nil {
		return nil, err
	}
	cp.resourceVersion, cp.stored = rv, true
	return cp, nil
}

// SaveCheckpoint writes the checkpoint, conditional on the version read or
// last written: a write that finds it changed by someone else fails rather
// than losing their records.
func (c *Cluster) SaveCheckpoint(ctx context.Context, cp *Checkpoint, by string, now time.Time) error {
	if !c.persists() {
		return nil
	}
	cp.UpdatedAt, cp.UpdatedBy = now.UTC().Truncate(time.Second), by
	data, err := cp.Encode()
	if err != nil {
		return err
	}
	ac := corev1ac.ConfigMap(CheckpointName, cp.Namespace).
		WithLabels(map[string]string{plan.LabelManagedBy: plan.ManagedBy, LabelComponent: "checkpoint", plan.LabelPlanID: cp.PlanID}).
		WithData(map[string]string{CheckpointKey: data})
	if cp.resourceVersion != "" {
		ac = ac.WithResourceVersion(cp.resourceVersion)
	}
	err = c.write(ctx, func() error {
		out, err := c.Kube.CoreV1().ConfigMaps(cp.Namespace).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if err == nil {
			cp.resourceVersion, cp.stored = out.ResourceVersion, true
			return nil
		}
		if !apierrors.IsConflict(err) || cp.resourceVersion == "" {
			return err
		}
		// A conflict: look at what is stored. Our own data (a lost
		// response of this very write) is a success; the version we read,
		// unchanged, means nobody else wrote and the write can be tried
		// again; anything else is another writer.
		stored, rerr := c.LoadCheckpoint(ctx, cp.Namespace)
		if rerr != nil {
			return err
		}
		if mine, _ := stored.Encode(); mine == data {
			cp.resourceVersion = stored.resourceVersion
			return nil
		}
		if stored.resourceVersion == cp.resourceVersion {
			return apierrors.NewServiceUnavailable("retry the checkpoint write: the conflict was not another writer")
		}
		return err
	})
	if apierrors.IsConflict(err) {
		return fmt.Errorf("write the checkpoint %s/%s: it was changed by another writer since this run read it (another run after a lock takeover?): %w", cp.Namespace, CheckpointName, err)
	}
	if err != nil {
		return fmt.Errorf("write the checkpoint %s/%s: %w", cp.Namespace, CheckpointName, err)
	}
	return nil
}

// DeleteCheckpoint removes the checkpoint once a full rollback has
// restored the namespace: nothing of the tool remains.
func (c *Cluster) DeleteCheckpoint(ctx context.Context, ns string) error {
	if !c.persists() {
		return nil
	}
	err := c.write(ctx, func() error {
		return c.Kube.CoreV1().ConfigMaps(ns).Delete(ctx, CheckpointName, metav1.DeleteOptions{})
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the checkpoint %s/%s: %w", ns, CheckpointName, err)
	}
	return nil
}

// onTransient is the tool's one retry policy (cluster.OnTransient), the
// same for the executor's writes and the reader's reads.
func onTransient(ctx context.Context, fn func() error) error {
	return cluster.OnTransient(ctx, fn)
}

// ListCheckpoints reads every checkpoint in the cluster, by label, in
// pages: those that decode, and the error of each one that does not (it is
// untrusted input: one bad checkpoint is its namespace's problem, never the
// whole list's).
func (c *Cluster) ListCheckpoints(ctx context.Context) (map[string]*Checkpoint, map[string]error, error) {
	cps, bad := map[string]*Checkpoint{}, map[string]error{}
	err := paged(ctx, LabelComponent+"=checkpoint", func(opts metav1.ListOptions) (string, error) {
		list, err := c.Kube.CoreV1().ConfigMaps("").List(ctx, opts)
		if err != nil {
			return "", err
		}
		for _, cm := range list.Items {
			if cm.Name != CheckpointName {
				continue
			}
			cp, err := DecodeCheckpoint(cm.Namespace, cm.Data[CheckpointKey])
			if err != nil {
				bad[cm.Namespace] = err
				continue
			}
			cp.resourceVersion, cp.stored = cm.ResourceVersion, true
			cps[cm.Namespace] = cp
		}
		return list.Continue, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list checkpoints: %w", err)
	}
	return cps, bad, nil
}
