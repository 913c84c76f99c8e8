package phases

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/managedfields"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

var peerAuthGVR = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}

// newOwnedCluster is a FAKE API server that keeps field ownership as a real
// one does: the dynamic client is served by client-go's field-managed
// object tracker, whose writes go through the API server's own field
// manager (k8s.io/apimachinery managedfields), with a deduced type
// converter for the unstructured Istio kinds. The typed clientset holds the
// checkpoint and the Lease.
func newOwnedCluster(t *testing.T) (*Cluster, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "Namespace"},
		{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"},
		{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"},
	} {
		scheme.AddKnownTypeWithName(gvk, &unstructured.Unstructured{})
		scheme.AddKnownTypeWithName(gvk.GroupVersion().WithKind(gvk.Kind+"List"), &unstructured.UnstructuredList{})
	}
	tracker := k8stesting.NewFieldManagedObjectTracker(scheme, serializer.NewCodecFactory(scheme).UniversalDecoder(), managedfields.NewDeducedTypeConverter())
	dyn := dynamicfake.NewSimpleDynamicClient(scheme)
	dyn.PrependReactor("*", "*", k8stesting.ObjectReaction(tracker))
	return &Cluster{Kube: fake.NewClientset(), Dynamic: dyn}, dyn
}

// seed creates obj as manager would: kubectl create, or an owner's apply.
func seed(t *testing.T, dyn *dynamicfake.FakeDynamicClient, gvr schema.GroupVersionResource, manager string, apply bool, obj map[string]any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	res := dyn.Resource(gvr).Namespace(u.GetNamespace())
	var err error
	if apply {
		_, err = res.Apply(context.Background(), u.GetName(), u, metav1.ApplyOptions{FieldManager: manager, Force: true})
	} else {
		_, err = res.Create(context.Background(), u, metav1.CreateOptions{FieldManager: manager})
	}
	if err != nil {
		t.Fatalf("%s %s: %v", manager, u.GetName(), err)
	}
}

func shopNamespace(t *testing.T, dyn *dynamicfake.FakeDynamicClient) {
	t.Helper()
	if _, err := dyn.Resource(kinds["Namespace"]).Create(context.Background(), namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}), metav1.CreateOptions{FieldManager: "kubectl-create"}); err != nil {
		t.Fatal(err)
	}
}

func peerAuth(mode string, annotations map[string]any) map[string]any {
	md := map[string]any{"name": "default", "namespace": "shop"}
	if annotations != nil {
		md["annotations"] = annotations
	}
	return map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": md,
		"spec": map[string]any{"mtls": map[string]any{"mode": mode}}}
}

// argoTracking is what Argo CD's annotation tracking puts on what it syncs.
var argoTracking = map[string]any{cluster.AnnotationArgoTrackingID: "shop-mesh:security.istio.io/PeerAuthentication:shop/default"}

func getPA(t *testing.T, dyn *dynamicfake.FakeDynamicClient) *unstructured.Unstructured {
	t.Helper()
	pa, err := dyn.Resource(peerAuthGVR).Namespace("shop").Get(context.Background(), "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pa
}

func fieldManagers(obj *unstructured.Unstructured) []string {
	var out []string
	for _, f := range obj.GetManagedFields() {
		out = append(out, f.Manager)
	}
	return out
}

// owns tells whether manager's entry holds spec.mtls.mode.
func owns(t *testing.T, obj *unstructured.Unstructured, manager string) bool {
	t.Helper()
	for _, f := range obj.GetManagedFields() {
		if f.Manager != manager || f.FieldsV1 == nil {
			continue
		}
		var set map[string]any
		if err := json.Unmarshal(f.FieldsV1.GetRawBytes(), &set); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := unstructured.NestedFieldNoCopy(set, "f:spec", "f:mtls", "f:mode"); ok {
			return true
		}
	}
	return false
}

func TestApplyRefusesAtCaptureAPolicyAnOwnerTookSincePlanning(t *testing.T) {
	c, dyn := newOwnedCluster(t)
	shopNamespace(t, dyn)
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	// Since the plan was made, the policy went into an Argo CD application.
	seed(t, dyn, peerAuthGVR, "argocd-controller", true, peerAuth("DISABLE", argoTracking))

	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatal(err)
	}
	want := "PeerAuthentication shop/default is managed by Argo CD (application shop-mesh): the next sync would revert this change; make it in Git instead (kubectl meshmigrate plan --out-dir renders the manifests), or remove it from the application"
	if len(res.Stops) != 1 || res.Stops[0].Phase != plan.PhasePermissive || res.Stops[0].Reason != want {
		t.Fatalf("stops = %+v, want the permissive phase stopped with\n%s\n%s", res.Stops, want, out.String())
	}
	pa := getPA(t, dyn)
	if mode, _, _ := unstructured.NestedString(pa.Object, "spec", "mtls", "mode"); mode != "DISABLE" || slices.Contains(fieldManagers(pa), FieldManager) {
		t.Errorf("the policy was written over its owner: mode %s, managers %v", mode, fieldManagers(pa))
	}
	cp, _ := c.LoadCheckpoint(context.Background(), "shop")
	for _, r := range cp.Records {
		if r.Target == "PeerAuthentication/default" {
			t.Errorf("a record for a refused step: %+v", r)
		}
	}
	if st := cp.Phase(plan.PhasePermissive).State; st != StateStopped {
		t.Errorf("permissive is %s, want stopped", st)
	}
}

// revertingObserver plays an owner that reverts the policy once the plan
// has written it: its sync lands while apply checks the phase's gate.
type revertingObserver struct {
	*fakeObserver
	dyn    *dynamicfake.FakeDynamicClient
	t      *testing.T
	change map[string]any
	done   bool
}

func (o *revertingObserver) Audit(ctx context.Context, ns []string, since time.Time) (*cluster.Snapshot, *audit.Report, error) {
	if pa, err := o.dyn.Resource(peerAuthGVR).Namespace("shop").Get(ctx, "default", metav1.GetOptions{}); err == nil && !o.done && pa.GetLabels()[plan.LabelPlanID] != "" {
		seed(o.t, o.dyn, peerAuthGVR, "argocd-controller", true, o.change)
		o.done = true
	}
	return o.fakeObserver.Audit(ctx, ns, since)
}

func TestAnOwnersRevertBetweenPhasesStopsTheRunNamingTheManager(t *testing.T) {
	c, dyn := newOwnedCluster(t)
	shopNamespace(t, dyn)
	// Made by hand: the plan may change it.
	seed(t, dyn, peerAuthGVR, "kubectl-create", false, peerAuth("DISABLE", nil))
	obs := &revertingObserver{fakeObserver: &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}, dyn: dyn, t: t,
		// Argo CD adopts it with self-heal on, and syncs Git's DISABLE back.
		change: peerAuth("DISABLE", argoTracking)}
	p := onePlan(t, obs.fakeObserver)

	var out bytes.Buffer
	ex := newExecutor(c, obs.fakeObserver, &out)
	ex.Observer = obs
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatal(err)
	}
	if !obs.done {
		t.Fatal("the owner never reverted the policy")
	}
	if len(res.Stops) != 1 || res.Stops[0].Phase != plan.PhasePermissive {
		t.Fatalf("stops = %+v, want the permissive phase stopped\n%s", res.Stops, out.String())
	}
	reason := res.Stops[0].Reason
	for _, want := range []string{
		`PeerAuthentication shop/default is no longer as phase permissive of this plan wrote it: changed by "argocd-controller" at `,
		"managed by Argo CD (application shop-mesh): the next sync would revert this change",
		"kubectl meshmigrate rollback -n shop --to inject",
	} {
		if !strings.Contains(reason, want) {
			t.Errorf("the stop does not say %q:\n%s", want, reason)
		}
	}
	cp, _ := c.LoadCheckpoint(context.Background(), "shop")
	if cp.PhaseDone(plan.PhasePermissive) || cp.Phase(plan.PhasePermissive).State != StateStopped {
		t.Errorf("a reverted phase is %s, want stopped", cp.Phase(plan.PhasePermissive).State)
	}
}

func TestRollbackGivesAKubectlMadePolicyBackToItsManager(t *testing.T) {
	c, dyn := newOwnedCluster(t)
	shopNamespace(t, dyn)
	seed(t, dyn, peerAuthGVR, "kubectl-create", false, peerAuth("DISABLE", map[string]any{"owner": "platform"}))
	before := getPA(t, dyn).GetManagedFields()
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	out := applyOnce(t, c, obs, p)

	pa := getPA(t, dyn)
	if mode, _, _ := unstructured.NestedString(pa.Object, "spec", "mtls", "mode"); mode != "PERMISSIVE" || !owns(t, pa, FieldManager) {
		t.Fatalf("after apply: mode %s, managers %v, want PERMISSIVE written by %s", mode, fieldManagers(pa), FieldManager)
	}
	if _, err := newExecutor(c, obs, out).Rollback(context.Background(), []string{"shop"}, ""); err != nil {
		t.Fatal(err)
	}
	pa = getPA(t, dyn)
	if mode, _, _ := unstructured.NestedString(pa.Object, "spec", "mtls", "mode"); mode != "DISABLE" || pa.GetAnnotations()["owner"] != "platform" || len(pa.GetLabels()) != 0 {
		t.Errorf("content after rollback: mode %s, labels %v, annotations %v", mode, pa.GetLabels(), pa.GetAnnotations())
	}
	if m := fieldManagers(pa); slices.Contains(m, FieldManager) {
		t.Errorf("rollback left %s co-owning the policy: managers %v", FieldManager, m)
	}
	if !owns(t, pa, "kubectl-create") {
		t.Errorf("kubectl-create no longer owns spec.mtls.mode after rollback: %+v", pa.GetManagedFields())
	}
	if after := pa.GetManagedFields(); !reflect.DeepEqual(after, before) {
		t.Errorf("managedFields after rollback\n%+v\nwant them as before\n%+v", after, before)
	}
	if !strings.Contains(out.String(), "rollback: gave the fields of PeerAuthentication/default back to kubectl-create") {
		t.Errorf("rollback does not say it gave the fields back:\n%s", out.String())
	}
}

// liveObserver reports the namespace's mode as the live policy has it, so
// the policy gates see what apply wrote.
type liveObserver struct {
	*fakeObserver
	dyn *dynamicfake.FakeDynamicClient
}

func (o *liveObserver) Audit(ctx context.Context, ns []string, since time.Time) (*cluster.Snapshot, *audit.Report, error) {
	if pa, err := o.dyn.Resource(peerAuthGVR).Namespace("shop").Get(ctx, "default", metav1.GetOptions{}); err == nil {
		mode, _, _ := unstructured.NestedString(pa.Object, "spec", "mtls", "mode")
		o.report = shopReport(mode, "namespace")
	}
	return o.fakeObserver.Audit(ctx, ns, since)
}

func TestAPolicyALaterPhaseRewroteIsNoRevert(t *testing.T) {
	c, dyn := newOwnedCluster(t)
	shopNamespace(t, dyn)
	seed(t, dyn, peerAuthGVR, "kubectl-create", false, peerAuth("DISABLE", nil))
	obs := &liveObserver{fakeObserver: &fakeObserver{report: shopReport("DISABLE", "namespace")}, dyn: dyn}
	p := onePlan(t, obs.fakeObserver)
	ns := &p.Namespaces[0]
	ns.Phases[2] = plan.Phase{Name: plan.PhaseVerify, Status: plan.StatusDone, Reason: "judged elsewhere"}
	ns.Phases = append(ns.Phases, plan.Phase{Name: plan.PhaseStrict, Status: plan.StatusPending, Steps: []plan.Step{
		{Action: plan.ActionApply, Target: "PeerAuthentication/default", Status: plan.StatusPending, Object: peerAuth("STRICT", nil)}}})

	var out bytes.Buffer
	ex := newExecutor(c, obs.fakeObserver, &out)
	ex.Observer = obs
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatal(err)
	}
	// The permissive record no longer matches the policy, which strict
	// rewrote: only the last write of this plan counts.
	cp, _ := c.LoadCheckpoint(context.Background(), "shop")
	if len(res.Stops) != 0 || !cp.PhaseDone(plan.PhaseStrict) {
		t.Errorf("stops %+v, strict %s\n%s", res.Stops, cp.Phase(plan.PhaseStrict).State, out.String())
	}
}

func TestRollbackOfAnOlderRecordDropsOnlyTheToolsFields(t *testing.T) {
	c, dyn := newOwnedCluster(t)
	shopNamespace(t, dyn)
	seed(t, dyn, peerAuthGVR, "kubectl-create", false, peerAuth("DISABLE", nil))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	out := applyOnce(t, c, obs, p)
	// A record written before the prior managedFields were recorded.
	cp, _ := c.LoadCheckpoint(context.Background(), "shop")
	for i := range cp.Records {
		cp.Records[i].Undo.PriorManagedFields = nil
	}
	if err := c.SaveCheckpoint(context.Background(), cp, "older version", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := newExecutor(c, obs, out).Rollback(context.Background(), []string{"shop"}, ""); err != nil {
		t.Fatal(err)
	}
	pa := getPA(t, dyn)
	if m := fieldManagers(pa); slices.Contains(m, FieldManager) || !slices.Contains(m, "kubectl-create") {
		t.Errorf("managers after rollback = %v, want kubectl-create without %s", m, FieldManager)
	}
}

// The ownership rule tells the tool's own writes apart by these names.
func TestTheToolHasOneName(t *testing.T) {
	if FieldManager != cluster.Self || plan.ManagedBy != cluster.Self || plan.LabelManagedBy != cluster.LabelManagedBy {
		t.Errorf("field manager %q, managed-by %s=%q; the ownership rule knows the tool as %q (%s)", FieldManager, plan.LabelManagedBy, plan.ManagedBy, cluster.Self, cluster.LabelManagedBy)
	}
}
