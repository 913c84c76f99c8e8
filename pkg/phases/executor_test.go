package phases

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/clock"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// fakeObserver is a FAKE of the cluster reader and telemetry: it returns
// the report the test sets, with every pod meshed and the namespace's own
// PeerAuthentication in force unless the test says otherwise.
type fakeObserver struct {
	report *audit.Report
	audits int
	// snap, when set, is the snapshot returned (else one with only the
	// cluster's UID); shadow the dry-run decisions (else 10 for web-1).
	snap   *cluster.Snapshot
	shadow []traffic.ShadowCount
	// shadowSince is where the last shadow query's window started.
	shadowSince time.Time
	// health answers the guard (nil: no data at all); healthCalls counts
	// its reads.
	health      func(since, until time.Time) (traffic.Health, error)
	healthCalls int
}

func (f *fakeObserver) Health(_ context.Context, _ string, since, until time.Time) (traffic.Health, string, error) {
	f.healthCalls++
	if f.health == nil {
		return traffic.Health{}, "fake", nil
	}
	h, err := f.health(since, until)
	return h, "fake", err
}

func (f *fakeObserver) Audit(context.Context, []string, time.Time) (*cluster.Snapshot, *audit.Report, error) {
	f.audits++
	if f.snap != nil {
		return f.snap, f.report, nil
	}
	return &cluster.Snapshot{ClusterUID: "uid-1"}, f.report, nil
}

func (f *fakeObserver) ShadowDecisions(_ context.Context, _ string, since time.Time) ([]traffic.ShadowCount, string, error) {
	f.shadowSince = since
	if f.shadow != nil {
		return f.shadow, "1m", nil
	}
	return []traffic.ShadowCount{{Pod: "web-1", Protocol: traffic.HTTP, Decisions: 10}}, "1m", nil
}

// newFakeCluster is a FAKE API server: the typed fake clientset (with
// server-side apply) for the checkpoint and the Lease, and the dynamic fake
// for the objects the plan touches, where apply is played as a JSON merge
// patch that creates a missing object (no field ownership: enough to see
// what was written, not how fields are shared).
func newFakeCluster(t *testing.T, objs ...runtime.Object) (*Cluster, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	lists := map[schema.GroupVersionResource]string{
		{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}:   "PeerAuthenticationList",
		{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}: "AuthorizationPolicyList",
		{Group: "apps", Version: "v1", Resource: "deployments"}:                        "DeploymentList",
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, lists, objs...)
	dyn.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		if pa.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		gvr, ns, name := pa.GetResource(), pa.GetNamespace(), pa.GetName()
		cur, err := dyn.Tracker().Get(gvr, ns, name)
		if apierrors.IsNotFound(err) {
			u := &unstructured.Unstructured{}
			if err := json.Unmarshal(pa.GetPatch(), &u.Object); err != nil {
				return true, nil, err
			}
			return true, u, dyn.Tracker().Create(gvr, u, ns)
		}
		if err != nil {
			return true, nil, err
		}
		old, _ := json.Marshal(cur)
		merged, err := jsonpatch.MergePatch(old, pa.GetPatch())
		if err != nil {
			return true, nil, err
		}
		u := &unstructured.Unstructured{}
		if err := json.Unmarshal(merged, &u.Object); err != nil {
			return true, nil, err
		}
		return true, u, dyn.Tracker().Update(gvr, u, ns)
	})
	return &Cluster{Kube: fake.NewClientset(), Dynamic: dyn}, dyn
}

func namespaceObj(name string, labels map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": name, "labels": labels}}}
}

// onePlan plans namespace shop: label it, pin it PERMISSIVE, then a
// blocked strict (so a run stops there).
func onePlan(t *testing.T, obs *fakeObserver) *plan.Plan {
	t.Helper()
	pa := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
		"metadata": map[string]any{"name": "default", "namespace": "shop"},
		"spec":     map[string]any{"mtls": map[string]any{"mode": "PERMISSIVE"}}}
	snap := &cluster.Snapshot{ClusterUID: "uid-1"}
	nr := &obs.report.Namespaces[0]
	p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, ID: "mp-000000000001", Hash: "sha256:1",
		Cluster: plan.Cluster{UID: "uid-1"}, Mesh: plan.Mesh{Fingerprint: plan.MeshFingerprint(obs.report)},
		Waves: []plan.Wave{{Number: 1, Namespaces: []string{"shop"}}},
		Namespaces: []plan.Namespace{{Name: "shop", Wave: 1, Fingerprint: plan.NamespaceFingerprint(snap, nr), Phases: []plan.Phase{
			{Name: plan.PhaseInject, Status: plan.StatusPending, Steps: []plan.Step{
				{Action: plan.ActionLabelNamespace, Target: "Namespace/shop", Status: plan.StatusPending, Labels: map[string]string{"istio-injection": "enabled"}, Remove: []string{"istio.io/rev"}}},
				Gate: &plan.Gate{Name: plan.GateSidecars}},
			{Name: plan.PhasePermissive, Status: plan.StatusPending, Steps: []plan.Step{
				{Action: plan.ActionApply, Target: "PeerAuthentication/default", Status: plan.StatusPending, Object: pa}}},
			{Name: plan.PhaseVerify, Status: plan.StatusBlocked, Reason: "plaintext from legacy/client"},
		}}},
	}
	return p
}

func shopReport(mode, source string) *audit.Report {
	return &audit.Report{Namespaces: []audit.NamespaceReport{{Name: "shop",
		Pods: audit.Pods{Total: 1, Meshed: 1, Items: []audit.Pod{{Name: "web-1", Workload: "Deployment/web", State: audit.PodMeshed}}},
		MTLS: audit.MTLS{Mode: mode, Source: source, Policy: "shop/default"}}}}
}

func newExecutor(c *Cluster, obs *fakeObserver, out *bytes.Buffer) *Executor {
	return &Executor{Cluster: c, Observer: obs, Events: textTo(out), Clock: clock.RealClock{}, Options: Options{
		Timeout: time.Second, Concurrency: 2, LeaseDuration: DefaultLeaseDuration, Identity: "test run"}}
}

func writes(dyn *dynamicfake.FakeDynamicClient) []string {
	var out []string
	for _, a := range dyn.Actions() {
		if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" {
			out = append(out, v+" "+a.GetResource().Resource)
		}
	}
	return out
}

func TestApplyRecordsBeforeChangingAndStopsAtABlockedPhase(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30", "team": "shop"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
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
	if len(res.Stops) != 1 || res.Stops[0].Phase != plan.PhaseVerify || !strings.Contains(res.Stops[0].Reason, "plaintext from legacy/client") {
		t.Fatalf("stops = %+v", res.Stops)
	}
	if res.Changes != 2 {
		t.Errorf("changes = %d, want 2 (label, PeerAuthentication)", res.Changes)
	}
	ns, _ := dyn.Resource(kinds["Namespace"]).Get(context.Background(), "shop", metav1.GetOptions{})
	if l := ns.GetLabels(); l["istio-injection"] != "enabled" || l["istio.io/rev"] != "" || l["team"] != "shop" {
		t.Errorf("namespace labels = %v", l)
	}
	pa, err := dyn.Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}).Namespace("shop").Get(context.Background(), "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pa.GetLabels()[plan.LabelPlanID] != p.ID || pa.GetLabels()[plan.LabelManagedBy] != plan.ManagedBy {
		t.Errorf("the created PeerAuthentication lacks the plan's labels: %v", pa.GetLabels())
	}
	cp, err := c.LoadCheckpoint(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(cp.Records) != 2 || cp.Records[0].State != StateDone || cp.Records[1].State != StateDone {
		t.Fatalf("records = %+v", cp.Records)
	}
	if prior := cp.Records[0].Undo.Labels; prior["istio.io/rev"] == nil || *prior["istio.io/rev"] != "1-30" || prior["istio-injection"] != nil {
		t.Errorf("the label undo record = %v", prior)
	}
	if cp.Records[1].Undo.Existed {
		t.Errorf("the PeerAuthentication did not exist before: %+v", cp.Records[1].Undo)
	}
	if !cp.PhaseDone(plan.PhaseInject) || !cp.PhaseDone(plan.PhasePermissive) || cp.Phase(plan.PhaseVerify).State != StateStopped {
		t.Errorf("phases = %+v", cp.Phases)
	}
	if lk, _ := c.LockState(context.Background(), "shop"); lk == nil || lk.Held {
		t.Errorf("the lock is still held after the run: %+v", lk)
	}

	// Again: nothing is written but the checkpoint, no record is added.
	before := len(writes(dyn))
	ex = newExecutor(c, obs, &out)
	if pv, err = ex.Prepare(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if len(pv.Resuming) != 1 || pv.Pending != 0 {
		t.Errorf("preview of a re-run = %+v", pv)
	}
	if res, err = ex.Apply(context.Background(), p, pv); err != nil || res.Changes != 0 {
		t.Fatalf("re-run: %+v, %v", res, err)
	}
	if w := writes(dyn)[before:]; len(w) != 0 {
		t.Errorf("a re-run wrote %v", w)
	}
	if cp, _ = c.LoadCheckpoint(context.Background(), "shop"); len(cp.Records) != 2 {
		t.Errorf("a re-run added records: %+v", cp.Records)
	}
}

func TestApplyResumesAStartedStepKeepingItsPriorState(t *testing.T) {
	// A crash left the label step started: the label may or may not be set.
	c, _ := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled", "team": "shop"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	rev := "1-30"
	cp := &Checkpoint{Namespace: "shop", PlanID: p.ID, PlanHash: p.Hash,
		Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateRunning}},
		Records: []Record{{Seq: 1, PlanID: p.ID, Phase: plan.PhaseInject, Step: 0, Action: plan.ActionLabelNamespace, Target: "Namespace/shop", State: StateStarted,
			Undo: Undo{Existed: true, Labels: map[string]*string{"istio.io/rev": &rev, "istio-injection": nil}}}}}
	if err := c.SaveCheckpoint(context.Background(), cp, "crashed run", time.Now()); err != nil {
		t.Fatal(err)
	}
	applyOnce(t, c, obs, p)
	got, _ := c.LoadCheckpoint(context.Background(), "shop")
	var labelRecords []Record
	for _, r := range got.Records {
		if r.Action == plan.ActionLabelNamespace {
			labelRecords = append(labelRecords, r)
		}
	}
	if len(labelRecords) != 1 || labelRecords[0].State != StateDone {
		t.Fatalf("label records = %+v", labelRecords)
	}
	// The prior state is the one recorded before the crash, not the
	// half-changed state the resumed run found.
	if v := labelRecords[0].Undo.Labels["istio.io/rev"]; v == nil || *v != "1-30" {
		t.Errorf("the resumed step replaced its undo record: %v", labelRecords[0].Undo.Labels)
	}
}

func TestPrepareRefusesAnotherClusterAndAStalePlan(t *testing.T) {
	c, _ := newFakeCluster(t, namespaceObj("shop", nil))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	var out bytes.Buffer

	other := *p
	other.Cluster.UID = "uid-2"
	if _, err := newExecutor(c, obs, &out).Prepare(context.Background(), &other); err == nil || !strings.Contains(err.Error(), "made for cluster uid-2") {
		t.Errorf("another cluster: %v", err)
	}

	obs.report = shopReport("STRICT", "namespace")
	obs.report.Namespaces[0].Pods.Items[0].State = audit.PodNeedsRestart
	_, err := newExecutor(c, obs, &out).Prepare(context.Background(), p)
	var stale *StaleError
	if !errors.As(err, &stale) || !strings.Contains(err.Error(), "namespace shop: workload Deployment/web: \"meshed\" -> \"needs-restart\"") {
		t.Errorf("stale: %v", err)
	}
}

func TestDryRunClientWritesNothing(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	c.DryRun = DryRunClient
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	ex.Options.DryRun = DryRunClient
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatal(err)
	}
	if w := writes(dyn); len(w) != 0 {
		t.Errorf("a client dry run wrote %v", w)
	}
	for _, a := range c.Kube.(*fake.Clientset).Actions() {
		if v := a.GetVerb(); v != "get" && v != "list" {
			t.Errorf("a client dry run did %s %s", v, a.GetResource().Resource)
		}
	}
	if res.Changes != 2 || !strings.Contains(out.String(), "labelled istio-injection=enabled istio.io/rev- (dry run: client)") {
		t.Errorf("changes %d, output:\n%s", res.Changes, out.String())
	}
}

func TestRollbackRestoresAndRefusesToClobber(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30", "team": "shop"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	out := applyOnce(t, c, obs, p)

	// Someone relabels the namespace since: rollback stops at it, after
	// undoing the newer PeerAuthentication.
	nsRes := dyn.Resource(kinds["Namespace"])
	ns, _ := nsRes.Get(context.Background(), "shop", metav1.GetOptions{})
	ns.SetLabels(map[string]string{"istio-injection": "disabled", "team": "shop"})
	if _, err := nsRes.Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := newExecutor(c, obs, out).Rollback(context.Background(), []string{"shop"}, "")
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), `label istio-injection is now "disabled", not the "enabled" this plan set`) {
		t.Fatalf("rollback over a changed label: %v", err)
	}
	paRes := dyn.Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}).Namespace("shop")
	if _, err := paRes.Get(context.Background(), "default", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the PeerAuthentication the plan created was not deleted: %v", err)
	}
	cp, _ := c.LoadCheckpoint(context.Background(), "shop")
	if len(cp.Records) != 1 || cp.Records[0].Action != plan.ActionLabelNamespace {
		t.Fatalf("after a stopped rollback the checkpoint holds %+v", cp.Records)
	}
	// Its phases are no longer done: an apply now would redo them, not
	// skip them as done.
	if cp.PhaseDone(plan.PhaseInject) || cp.PhaseDone(plan.PhasePermissive) {
		t.Errorf("a stopped full rollback left phases done: %+v", cp.Phases)
	}

	// Put the label back as the plan left it: the rollback finishes and
	// nothing of the tool remains.
	ns, _ = nsRes.Get(context.Background(), "shop", metav1.GetOptions{})
	ns.SetLabels(map[string]string{"istio-injection": "enabled", "team": "shop"})
	if _, err := nsRes.Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := newExecutor(c, obs, out).Rollback(context.Background(), []string{"shop"}, ""); err != nil {
		t.Fatal(err)
	}
	ns, _ = nsRes.Get(context.Background(), "shop", metav1.GetOptions{})
	if l := ns.GetLabels(); len(l) != 2 || l["istio.io/rev"] != "1-30" || l["team"] != "shop" {
		t.Errorf("labels after rollback = %v, want the original istio.io/rev=1-30 team=shop", l)
	}
	if _, err := c.Kube.CoreV1().ConfigMaps("shop").Get(context.Background(), CheckpointName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the checkpoint outlived a full rollback: %v", err)
	}
}

func TestApplyChecksStalenessAgainOnceLocked(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	// Another run changes the namespace while this one waits for the lock
	// (or for its confirmation).
	obs.report = shopReport("PERMISSIVE", "namespace")
	obs.report.Namespaces[0].Pods.Items[0].State = audit.PodNeedsRestart
	_, err = ex.Apply(context.Background(), p, pv)
	var stale *StaleError
	if !errors.As(err, &stale) {
		t.Fatalf("apply after the namespace changed: %v", err)
	}
	if w := writes(dyn); len(w) != 0 {
		t.Errorf("a stale plan wrote %v", w)
	}
}

func TestApplyAddsTheNewInjectionLabelBeforeRemovingTheOld(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	applyOnce(t, c, obs, p)
	var order []types.PatchType
	for _, a := range dyn.Actions() {
		if pa, ok := a.(k8stesting.PatchAction); ok && a.GetResource().Resource == "namespaces" {
			order = append(order, pa.GetPatchType())
		}
	}
	// Between the two writes the namespace carries both labels (and is
	// injected), never neither.
	if len(order) != 2 || order[0] != types.ApplyPatchType || order[1] != types.JSONPatchType {
		t.Errorf("namespace writes %v, want the apply adding istio-injection, then the patch removing istio.io/rev", order)
	}
}

func deploymentObj(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": "shop", "generation": int64(1)},
		"spec":     map[string]any{"replicas": int64(1)},
		"status":   map[string]any{"observedGeneration": int64(1), "replicas": int64(1), "updatedReplicas": int64(1), "availableReplicas": int64(1)}}}
}

func TestApplyMarksEveryRestartDone(t *testing.T) {
	c, _ := newFakeCluster(t, namespaceObj("shop", nil), deploymentObj("web"), deploymentObj("cart"), deploymentObj("api"))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	inject := &p.Namespaces[0].Phases[0]
	for _, w := range []string{"web", "cart", "api"} {
		inject.Steps = append(inject.Steps, plan.Step{Action: plan.ActionRestartWorkload, Target: "Deployment/" + w, Status: plan.StatusPending})
	}
	applyOnce(t, c, obs, p)
	cp, _ := c.LoadCheckpoint(context.Background(), "shop")
	restarts := 0
	for _, r := range cp.Records {
		if r.Action != plan.ActionRestartWorkload {
			continue
		}
		restarts++
		if r.State != StateDone || r.Undo.Set == "" {
			t.Errorf("restart record %d (%s) is %s with set %q, want done", r.Seq, r.Target, r.State, r.Undo.Set)
		}
	}
	if restarts != 3 {
		t.Errorf("%d restart records, want 3", restarts)
	}
	if cp.MeshedAt == nil || cp.MeshedAt.Before(cp.Records[len(cp.Records)-2].StartedAt) {
		t.Errorf("meshedAt %v must be the end of the rollouts, not the first change", cp.MeshedAt)
	}
}

func TestRollbackRefusesAnObjectChangedSince(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	out := applyOnce(t, c, obs, p)
	// The team takes the policy over and makes it STRICT by hand.
	paRes := dyn.Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}).Namespace("shop")
	pa, _ := paRes.Get(context.Background(), "default", metav1.GetOptions{})
	_ = unstructured.SetNestedField(pa.Object, "STRICT", "spec", "mtls", "mode")
	if _, err := paRes.Update(context.Background(), pa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := newExecutor(c, obs, out).Rollback(context.Background(), []string{"shop"}, plan.PhaseInject)
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "PeerAuthentication/default: its labels, annotations or spec changed since this plan wrote it") {
		t.Fatalf("rollback over a changed policy: %v", err)
	}
	if pa, _ = paRes.Get(context.Background(), "default", metav1.GetOptions{}); pa == nil {
		t.Fatal("rollback deleted a policy the team changed")
	}
	if mode, _, _ := unstructured.NestedString(pa.Object, "spec", "mtls", "mode"); mode != "STRICT" {
		t.Errorf("rollback overwrote the team's change: mode %s", mode)
	}
}

func TestStrictVerifiesAgainWhenTheGatePassedInAnEarlierRun(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	strictPA := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
		"metadata": map[string]any{"name": "default", "namespace": "shop"},
		"spec":     map[string]any{"mtls": map[string]any{"mode": "STRICT"}}}
	ns := &p.Namespaces[0]
	ns.Phases[2] = plan.Phase{Name: plan.PhaseVerify, Status: plan.StatusPending, Gate: &plan.Gate{Name: plan.GateNoPlaintext}}
	ns.Phases = append(ns.Phases, plan.Phase{Name: plan.PhaseStrict, Status: plan.StatusPending, Steps: []plan.Step{
		{Action: plan.ActionApply, Target: "PeerAuthentication/default", Status: plan.StatusPending, Object: strictPA}}})
	// An earlier run passed verify (then strict was rolled back, or failed).
	done := time.Now().Add(-72 * time.Hour)
	cp := &Checkpoint{Namespace: "shop", PlanID: p.ID, PlanHash: p.Hash, Phases: []PhaseRecord{
		{Name: plan.PhaseInject, State: StateDone, FinishedAt: &done}, {Name: plan.PhasePermissive, State: StateDone, FinishedAt: &done},
		{Name: plan.PhaseVerify, State: StateDone, FinishedAt: &done}}}
	if err := c.SaveCheckpoint(context.Background(), cp, "earlier run", done); err != nil {
		t.Fatal(err)
	}
	// Now a weekly job sends plaintext again.
	nr := &obs.report.Namespaces[0]
	nr.Readiness = audit.Readiness{Next: audit.PhaseVerify, Reason: "PERMISSIVE and meshed", Blockers: []string{"plaintext from batch/report"}}
	nr.Traffic = audit.Traffic{Status: audit.TrafficObserved, PlaintextClients: []audit.Client{{Namespace: "batch", Workload: "report", Meshed: "no", Destinations: []string{"web"}, Count: 3}}}
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	ex.Options.Phase = plan.PhaseStrict
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stops) != 1 || res.Stops[0].Phase != plan.PhaseStrict || res.Stops[0].Gate == nil || res.Stops[0].Gate.Name != plan.GateNoPlaintext {
		t.Fatalf("stops = %+v\n%s", res.Stops, out.String())
	}
	if !strings.Contains(out.String(), "batch/report") {
		t.Errorf("the stop does not name the plaintext client:\n%s", out.String())
	}
	if w := writes(dyn); len(w) != 0 {
		t.Errorf("STRICT went on over a failed gate: %v", w)
	}
}

// applyOnce prepares and runs p, failing the test on an error.
func applyOnce(t *testing.T, c *Cluster, obs *fakeObserver, p *plan.Plan) *bytes.Buffer {
	t.Helper()
	var out bytes.Buffer
	runApply(t, newExecutor(c, obs, &out), p)
	return &out
}

// runApply prepares and runs p with ex, failing the test on an error.
func runApply(t *testing.T, ex *Executor, p *plan.Plan) *Outcome {
	t.Helper()
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestApplyPutsTheAllowsBeforeTheAllowNothing(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
	obs := &fakeObserver{report: shopReport("STRICT", "namespace")}
	p := onePlan(t, obs)
	ap := func(name string, spec map[string]any) map[string]any {
		return map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
			"metadata": map[string]any{"name": name, "namespace": "shop"}, "spec": spec}
	}
	ns := &p.Namespaces[0]
	ns.Phases = []plan.Phase{
		{Name: plan.PhaseInject, Status: plan.StatusDone}, {Name: plan.PhasePermissive, Status: plan.StatusDone},
		{Name: plan.PhaseVerify, Status: plan.StatusDone}, {Name: plan.PhaseStrict, Status: plan.StatusDone},
		{Name: plan.PhaseAuthz, Status: plan.StatusPending, Steps: []plan.Step{
			{Action: plan.ActionApply, Target: "AuthorizationPolicy/meshmigrate-allow-web", Status: plan.StatusPending,
				Object: ap("meshmigrate-allow-web", map[string]any{"action": "ALLOW"})},
			{Action: plan.ActionApply, Target: "AuthorizationPolicy/meshmigrate-allow-cart", Status: plan.StatusPending,
				Object: ap("meshmigrate-allow-cart", map[string]any{"action": "ALLOW"})},
			{Action: plan.ActionApply, Target: "AuthorizationPolicy/meshmigrate-allow-nothing", Status: plan.StatusPending,
				Object: ap("meshmigrate-allow-nothing", map[string]any{})},
		}}}
	applyOnce(t, c, obs, p)
	var order []string
	for _, a := range dyn.Actions() {
		if pa, ok := a.(k8stesting.PatchAction); ok && a.GetResource().Resource == "authorizationpolicies" {
			order = append(order, pa.GetName())
		}
	}
	if strings.Join(order, ",") != "meshmigrate-allow-web,meshmigrate-allow-cart,meshmigrate-allow-nothing" {
		t.Errorf("AuthorizationPolicies written in the order %v: the allow-nothing must come after every ALLOW", order)
	}
}

// textTo renders events as the lines people read, for tests that look at
// them whole.
func textTo(w io.Writer) func(Event) {
	return func(ev Event) {
		for _, l := range ev.Lines() {
			fmt.Fprintln(w, l)
		}
	}
}
