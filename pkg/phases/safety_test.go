package phases

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

var paGVR = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}

func peerAuthObj(ns, mode string) map[string]any {
	return map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
		"metadata": map[string]any{"name": "default", "namespace": ns},
		"spec":     map[string]any{"mtls": map[string]any{"mode": mode}}}
}

// callerReport is an audit where front/ui calls shop/web over mTLS, every
// pod meshed, shop PERMISSIVE and ready for STRICT.
func callerReport() *audit.Report {
	shop := shopReport("PERMISSIVE", "namespace").Namespaces[0]
	shop.Pods.Items[0].Sidecar = "classic"
	shop.Readiness = audit.Readiness{Next: audit.PhaseStrict, Reason: "all inbound traffic is mTLS"}
	shop.Traffic = audit.Traffic{Status: audit.TrafficObserved, Edges: []traffic.Edge{{Source: traffic.Endpoint{Namespace: "front", Workload: "ui"},
		Destination: traffic.Endpoint{Namespace: "shop", Workload: "web"}, Protocol: traffic.HTTP, Security: traffic.MutualTLS, Count: 5}}}
	front := audit.NamespaceReport{Name: "front", Pods: audit.Pods{Total: 1, Meshed: 1,
		Items: []audit.Pod{{Name: "ui-1", Workload: "Deployment/ui", State: audit.PodMeshed, Sidecar: "classic"}}}}
	return &audit.Report{Namespaces: []audit.NamespaceReport{shop, front}}
}

// callerPlan: front (wave 1) calls shop (wave 2) in plaintext at plan time;
// the plan meshes front, then takes shop through verify to STRICT.
func callerPlan(obs *fakeObserver) *plan.Plan {
	snap := &cluster.Snapshot{ClusterUID: "uid-1"}
	skipped := func(name plan.PhaseName) plan.Phase {
		return plan.Phase{Name: name, Status: plan.StatusSkipped, Reason: "not in this test"}
	}
	return &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, ID: "mp-000000000002", Hash: "sha256:2",
		Cluster: plan.Cluster{UID: "uid-1"}, Mesh: plan.Mesh{Fingerprint: plan.MeshFingerprint(obs.report)},
		Waves: []plan.Wave{{Number: 1, Namespaces: []string{"front"}}, {Number: 2, Namespaces: []string{"shop"}}},
		Namespaces: []plan.Namespace{
			{Name: "front", Wave: 1, Fingerprint: plan.NamespaceFingerprint(snap, &obs.report.Namespaces[1]), Phases: []plan.Phase{
				{Name: plan.PhaseInject, Status: plan.StatusPending, Steps: []plan.Step{
					{Action: plan.ActionLabelNamespace, Target: "Namespace/front", Status: plan.StatusPending, Labels: map[string]string{"istio-injection": "enabled"}}}},
				skipped(plan.PhasePermissive), skipped(plan.PhaseVerify), skipped(plan.PhaseStrict), skipped(plan.PhaseAuthz)}},
			{Name: "shop", Wave: 2, CalledBy: []string{"front"}, Fingerprint: plan.NamespaceFingerprint(snap, &obs.report.Namespaces[0]), Phases: []plan.Phase{
				{Name: plan.PhaseInject, Status: plan.StatusDone}, {Name: plan.PhasePermissive, Status: plan.StatusDone},
				{Name: plan.PhaseVerify, Status: plan.StatusPending, Gate: &plan.Gate{Name: plan.GateNoPlaintext, Callers: []string{"front/ui"}, Inbound: []string{"web"}}},
				{Name: plan.PhaseStrict, Status: plan.StatusPending, Steps: []plan.Step{
					{Action: plan.ActionApply, Target: "PeerAuthentication/default", Status: plan.StatusPending, Object: peerAuthObj("shop", "STRICT")}}},
				skipped(plan.PhaseAuthz)}},
		}}
}

func saveCheckpoint(t *testing.T, c *Cluster, cp *Checkpoint) {
	t.Helper()
	if err := c.SaveCheckpoint(context.Background(), cp, "earlier run", time.Now()); err != nil {
		t.Fatal(err)
	}
}

// strictRun prepares shop's strict phase (verify passed in an earlier run),
// lets between() act while this run waits (for its lock or its prompt),
// and runs it.
func strictRun(t *testing.T, c *Cluster, obs *fakeObserver, p *plan.Plan, between func()) (*Outcome, string) {
	t.Helper()
	done := time.Now().Add(-time.Hour)
	saveCheckpoint(t, c, &Checkpoint{Namespace: "shop", PlanID: p.ID, PlanHash: p.Hash, Phases: []PhaseRecord{
		{Name: plan.PhaseInject, State: StateDone, FinishedAt: &done}, {Name: plan.PhasePermissive, State: StateDone, FinishedAt: &done},
		{Name: plan.PhaseVerify, State: StateDone, FinishedAt: &done}}})
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	ex.Options.Namespaces, ex.Options.Phase = []string{"shop"}, plan.PhaseStrict
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	between()
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatal(err)
	}
	return res, out.String()
}

// The caller front was meshed when this plan verified shop, then a
// concurrent run rolled it back: STRICT must not go on, or front's calls,
// now plaintext, fail.
func TestSafetyStrictRefusedWhenACallerWasRolledBackMeanwhile(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}), namespaceObj("front", nil))
	obs := &fakeObserver{report: callerReport()}
	p := callerPlan(obs)
	saveCheckpoint(t, c, &Checkpoint{Namespace: "front", PlanID: p.ID, PlanHash: p.Hash, Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}}})
	res, out := strictRun(t, c, obs, p, func() {
		if err := c.DeleteCheckpoint(context.Background(), "front"); err != nil { // rollback -n front --all
			t.Fatal(err)
		}
	})
	if len(res.Stops) != 1 || res.Stops[0].Phase != plan.PhaseStrict || !strings.Contains(res.Stops[0].Reason, "front call this namespace in plaintext and are not meshed") {
		t.Fatalf("stops = %+v\n%s", res.Stops, out)
	}
	if w := writes(dyn); len(w) != 0 {
		t.Errorf("STRICT went on while its caller was unmeshed: %v", w)
	}
}

// front's checkpoint still says injected, but its pods carry no sidecar
// (restarted after its labels were reverted by hand): judged by the pods.
func TestSafetyStrictRefusedWhenACallersPodsLostTheirSidecars(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}), namespaceObj("front", nil))
	obs := &fakeObserver{report: callerReport()}
	p := callerPlan(obs)
	saveCheckpoint(t, c, &Checkpoint{Namespace: "front", PlanID: p.ID, PlanHash: p.Hash, Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}}})
	res, out := strictRun(t, c, obs, p, func() {
		obs.report.Namespaces[1].Pods.Items[0] = audit.Pod{Name: "ui-2", Workload: "Deployment/ui", State: audit.PodNotSelected}
	})
	if len(res.Stops) != 1 || !strings.Contains(res.Stops[0].Reason, "1 pod without a sidecar: front/ui-2 (Deployment/ui)") {
		t.Fatalf("stops = %+v\n%s", res.Stops, out)
	}
	if w := writes(dyn); len(w) != 0 {
		t.Errorf("STRICT went on while its caller's pods had no sidecar: %v", w)
	}
}

func TestSafetyStrictGoesOnWhenCallersAreMeshed(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}), namespaceObj("front", nil))
	obs := &fakeObserver{report: callerReport()}
	p := callerPlan(obs)
	saveCheckpoint(t, c, &Checkpoint{Namespace: "front", PlanID: p.ID, PlanHash: p.Hash, Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}}})
	obs.report.Namespaces[0].MTLS.Mode = cluster.ModeStrict // the policy in force once applied
	res, out := strictRun(t, c, obs, p, func() {})
	if len(res.Stops) != 0 || !strings.Contains(strings.Join(writes(dyn), ","), "patch peerauthentications") {
		t.Fatalf("stops %+v, writes %v\n%s", res.Stops, writes(dyn), out)
	}
}

// rollbackFixture: front was injected by plan p (a label record) and shop,
// which front calls, went STRICT (a PeerAuthentication the plan created).
func rollbackFixture(t *testing.T, recordCallees bool) (*Cluster, *dynamicfake.FakeDynamicClient, *fakeObserver) {
	t.Helper()
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}),
		namespaceObj("front", map[string]any{"istio-injection": "enabled"}))
	obs := &fakeObserver{report: callerReport()}
	p := callerPlan(obs)
	pa := &unstructured.Unstructured{Object: peerAuthObj("shop", "STRICT")}
	pa.SetLabels(map[string]string{plan.LabelPlanID: p.ID, plan.LabelManagedBy: plan.ManagedBy})
	if _, err := dyn.Resource(paGVR).Namespace("shop").Create(context.Background(), pa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	enabled := "enabled"
	front := &Checkpoint{Namespace: "front", PlanID: p.ID, PlanHash: p.Hash, Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}},
		Records: []Record{{Seq: 1, PlanID: p.ID, Phase: plan.PhaseInject, Action: plan.ActionLabelNamespace, Target: "Namespace/front", State: StateDone,
			StartedAt: time.Now(), Undo: Undo{Existed: true, Labels: map[string]*string{"istio-injection": nil}, After: map[string]*string{"istio-injection": &enabled}}}}}
	if recordCallees {
		front.Callees = []string{"shop"}
	}
	saveCheckpoint(t, c, front)
	saveCheckpoint(t, c, &Checkpoint{Namespace: "shop", PlanID: p.ID, PlanHash: p.Hash, CalledBy: []string{"front"},
		Phases: []PhaseRecord{{Name: plan.PhaseStrict, State: StateDone}},
		Records: []Record{{Seq: 1, PlanID: p.ID, Phase: plan.PhaseStrict, Action: plan.ActionApply, Target: "PeerAuthentication/default", State: StateDone,
			StartedAt: time.Now(), Undo: Undo{APIVersion: "security.istio.io/v1"}}}})
	dyn.ClearActions()
	return c, dyn, obs
}

func TestSafetyRollbackRefusesToUnmeshACallerOfAStrictNamespace(t *testing.T) {
	for _, recorded := range []bool{true, false} {
		c, dyn, obs := rollbackFixture(t, recorded)
		var out bytes.Buffer
		_, err := newExecutor(c, obs, &out).Rollback(context.Background(), []string{"front"}, "")
		var deps *DependentsError
		if !errors.As(err, &deps) || !strings.Contains(err.Error(), "shop (STRICT since") || !strings.Contains(err.Error(), "called by front") ||
			!strings.Contains(err.Error(), "rollback -n front,NS --all") || !strings.Contains(err.Error(), "--break-dependents") {
			t.Fatalf("callees recorded %t: %v", recorded, err)
		}
		if w := writes(dyn); len(w) != 0 {
			t.Errorf("callees recorded %t: a refused rollback wrote %v", recorded, w)
		}
		if cp, _ := c.LoadCheckpoint(context.Background(), "front"); len(cp.Records) != 1 {
			t.Errorf("a refused rollback changed front's checkpoint: %+v", cp.Records)
		}
	}
}

func TestSafetyRollbackTogetherUndoesTheStrictCalleeFirst(t *testing.T) {
	c, dyn, obs := rollbackFixture(t, true)
	var out bytes.Buffer
	if _, err := newExecutor(c, obs, &out).Rollback(context.Background(), []string{"front", "shop"}, ""); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	w := strings.Join(writes(dyn), ",")
	if w != "delete peerauthentications,patch namespaces" {
		t.Errorf("writes %s: shop's STRICT must go before front's sidecars", w)
	}
	for _, ns := range []string{"front", "shop"} {
		if _, err := c.Kube.CoreV1().ConfigMaps(ns).Get(context.Background(), CheckpointName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s's checkpoint outlived the full rollback: %v", ns, err)
		}
	}
}

func TestSafetyRollbackBreakDependentsSaysWhatBreaks(t *testing.T) {
	c, _, obs := rollbackFixture(t, true)
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	ex.Options.BreakDependents = true
	if _, err := ex.Rollback(context.Background(), []string{"front"}, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "FORCED by --break-dependents: shop (STRICT since") {
		t.Errorf("output does not say what breaks:\n%s", out.String())
	}
}

func TestSafetyOlderPlanRefusedOnceANewerOneRan(t *testing.T) {
	c, _ := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	old := onePlan(t, obs)
	old.CreatedAt = time.Now().Add(-48 * time.Hour)
	newer := time.Now().Add(-24 * time.Hour)
	for _, stamped := range []bool{true, false} {
		cp := &Checkpoint{Namespace: "shop", PlanID: "mp-00000000000n", PlanHash: "sha256:n", Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}},
			Records: []Record{
				{Seq: 1, PlanID: old.ID, Phase: plan.PhaseInject, Action: plan.ActionLabelNamespace, Target: "Namespace/shop", State: StateDone, StartedAt: newer.Add(-time.Hour),
					Undo: Undo{Existed: true, Labels: map[string]*string{"istio-injection": nil}}},
				{Seq: 2, PlanID: "mp-00000000000n", Phase: plan.PhasePermissive, Action: plan.ActionApply, Target: "PeerAuthentication/default", State: StateDone, StartedAt: newer.Add(time.Hour),
					Undo: Undo{APIVersion: "security.istio.io/v1"}}}}
		if stamped {
			cp.PlanCreatedAt = &newer
		}
		if stored, err := c.LoadCheckpoint(context.Background(), "shop"); err == nil && stored.Stored() {
			cp.resourceVersion = stored.resourceVersion
		}
		saveCheckpoint(t, c, cp)
		var out bytes.Buffer
		_, err := newExecutor(c, obs, &out).Prepare(context.Background(), old)
		var stale *StaleError
		if !errors.As(err, &stale) || !strings.Contains(err.Error(), "its checkpoint follows plan mp-00000000000n") || !strings.Contains(err.Error(), "newer than plan "+old.ID) {
			t.Errorf("createdAt recorded %t: %v", stamped, err)
		}
	}
}

func TestSafetyResumedNamespaceStillCheckedForChangesThePlanDidNotMake(t *testing.T) {
	c, _ := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	applyOnce(t, c, obs, p) // label and PeerAuthentication, then stops at verify
	// What the plan itself changed (its label, its policy) is no change.
	obs.snap = &cluster.Snapshot{ClusterUID: "uid-1", Namespaces: []cluster.Namespace{{Name: "shop", Labels: map[string]string{"istio-injection": "enabled"}}},
		PeerAuthentications: []cluster.PeerAuthentication{{Namespace: "shop", Name: "default", Mode: cluster.ModePermissive}}}
	var out bytes.Buffer
	if _, err := newExecutor(c, obs, &out).Prepare(context.Background(), p); err != nil {
		t.Fatalf("the plan's own changes made it stale: %v", err)
	}
	// A workload added since, and a label someone else set, are changes.
	nr := &obs.report.Namespaces[0]
	nr.Pods.Items = append(nr.Pods.Items, audit.Pod{Name: "intruder-1", Workload: "Deployment/intruder", State: audit.PodMeshed})
	obs.snap.Namespaces[0].Labels["team"] = "other"
	_, err := newExecutor(c, obs, &out).Prepare(context.Background(), p)
	var stale *StaleError
	if !errors.As(err, &stale) || !strings.Contains(err.Error(), `workload Deployment/intruder: (absent) -> "meshed"`) || !strings.Contains(err.Error(), `label team: (absent) -> "other"`) {
		t.Errorf("resumed namespace: %v", err)
	}
}

func restartPlan(t *testing.T, obs *fakeObserver) *plan.Plan {
	t.Helper()
	p := onePlan(t, obs)
	inject := &p.Namespaces[0].Phases[0]
	inject.Steps = append(inject.Steps, plan.Step{Action: plan.ActionRestartWorkload, Target: "Deployment/web", Status: plan.StatusPending})
	return p
}

func TestSafetyRollbackAcceptsARestartSinceAndListsLeftoverSidecars(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}), deploymentObj("web"))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := restartPlan(t, obs)
	out := applyOnce(t, c, obs, p)
	// A routine `kubectl rollout restart` since.
	depRes := dyn.Resource(kinds["Deployment"]).Namespace("shop")
	d, _ := depRes.Get(context.Background(), "web", metav1.GetOptions{})
	_ = unstructured.SetNestedField(d.Object, "2030-01-01T00:00:00Z", "spec", "template", "metadata", "annotations", AnnotationRestartedAt)
	if _, err := depRes.Update(context.Background(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := newExecutor(c, obs, out).Rollback(context.Background(), []string{"shop"}, "")
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "pass --accept-restarts") {
		t.Fatalf("rollback over a restart: %v", err)
	}
	// The scale-up pod created while labelled keeps its sidecar.
	obs.report.Namespaces[0].Pods.Items[0].State = audit.PodSidecarNotExpected
	ex := newExecutor(c, obs, out)
	ex.Options.AcceptRestarts = true
	res, err := ex.Rollback(context.Background(), []string{"shop"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kube.CoreV1().ConfigMaps("shop").Get(context.Background(), CheckpointName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the checkpoint outlived the rollback: %v", err)
	}
	if len(res.Leftovers) != 1 || !strings.Contains(res.Leftovers[0], "kubectl rollout restart deployment/web -n shop") {
		t.Errorf("leftovers %q", res.Leftovers)
	}
}

// authzPlan: STRICT done; authz: a dry-run ALLOW for web, the gate, then
// the enforced ALLOW.
func authzPlan(t *testing.T, obs *fakeObserver) *plan.Plan {
	t.Helper()
	p := onePlan(t, obs)
	ap := func(dryRun bool) map[string]any {
		md := map[string]any{"name": "meshmigrate-allow-web", "namespace": "shop"}
		if dryRun {
			md["annotations"] = map[string]any{plan.AnnotationDryRun: "true"}
		}
		return map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": md,
			"spec": map[string]any{"action": "ALLOW", "selector": map[string]any{"matchLabels": map[string]any{"app": "web"}}}}
	}
	p.Namespaces[0].Phases = []plan.Phase{
		{Name: plan.PhaseInject, Status: plan.StatusDone}, {Name: plan.PhasePermissive, Status: plan.StatusDone},
		{Name: plan.PhaseVerify, Status: plan.StatusDone}, {Name: plan.PhaseStrict, Status: plan.StatusDone},
		{Name: plan.PhaseAuthz, Status: plan.StatusPending, Steps: []plan.Step{
			{Action: plan.ActionApply, Target: "AuthorizationPolicy/meshmigrate-allow-web", Status: plan.StatusPending, Object: ap(true)},
			{Action: plan.ActionGate, Target: string(plan.GateNoShadowDenials), Status: plan.StatusPending},
			{Action: plan.ActionApply, Target: "AuthorizationPolicy/meshmigrate-allow-web", Status: plan.StatusPending, Object: ap(false)}}}}
	obs.snap = &cluster.Snapshot{ClusterUID: "uid-1", Pods: []cluster.Pod{
		{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web"}, Owner: cluster.WorkloadRef{Kind: "Deployment", Name: "web"}},
		{Namespace: "shop", Name: "api-1", Labels: map[string]string{"app": "api"}, Owner: cluster.WorkloadRef{Kind: "Deployment", Name: "api"}}}}
	return p
}

// With --verify-window the shadow window still starts when the dry-run
// policies went on: decisions before them judged nothing.
func TestSafetyShadowWindowStartsAtTheDryRunPolicies(t *testing.T) {
	c, _ := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
	obs := &fakeObserver{report: shopReport("STRICT", "namespace")}
	p := authzPlan(t, obs)
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	ex.Options.VerifyWindow, ex.Options.AllowShortWindow = time.Hour, true
	start := time.Now()
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Apply(context.Background(), p, pv); err != nil {
		t.Fatal(err)
	}
	if obs.shadowSince.Before(start) {
		t.Errorf("the shadow window starts %s, before the dry-run policies were applied (%s)", obs.shadowSince, start)
	}
}

// Decisions for a busy workload do not pass the gate for one whose ALLOW
// policy was never exercised.
func TestSafetyShadowGateNamesTheSilentWorkload(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
	obs := &fakeObserver{report: shopReport("STRICT", "namespace")}
	p := authzPlan(t, obs)
	obs.shadow = []traffic.ShadowCount{{Pod: "api-1", Protocol: traffic.HTTP, Decisions: 900}}
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	ex.Options.AllowShortWindow = true
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ex.Apply(context.Background(), p, pv)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stops) != 1 || res.Stops[0].Gate == nil || res.Stops[0].Gate.Result != GateUnsettled ||
		!strings.Contains(strings.Join(res.Stops[0].Gate.Culprits, "|"), "Deployment/web: no dry-run decision") {
		t.Fatalf("stops %+v\n%s", res.Stops, out.String())
	}
	if n := strings.Count(strings.Join(writes(dyn), ","), "patch authorizationpolicies"); n != 1 {
		t.Errorf("%d policy writes, want only the dry-run one", n)
	}
}

// Meshed two minutes ago: under the plan's floor the verify gate does not
// judge (one request in two minutes proves nothing); with
// --allow-short-verify-window it does, and the checkpoint says so.
func TestSafetyVerifyGateWindowUnderTheFloor(t *testing.T) {
	for _, allow := range []bool{false, true} {
		c, _ := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio-injection": "enabled"}))
		obs := &fakeObserver{report: callerReport()}
		obs.report.Namespaces[0].Traffic.Edges = obs.report.Namespaces[0].Traffic.Edges[:1]
		p := callerPlan(obs)
		meshed := time.Now().Add(-2 * time.Minute)
		saveCheckpoint(t, c, &Checkpoint{Namespace: "front", PlanID: p.ID, PlanHash: p.Hash, Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}}, MeshedAt: &meshed})
		var out bytes.Buffer
		ex := newExecutor(c, obs, &out)
		ex.Options.Namespaces, ex.Options.Through, ex.Options.AllowShortWindow = []string{"shop"}, plan.PhaseVerify, allow
		pv, err := ex.Prepare(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		res, err := ex.Apply(context.Background(), p, pv)
		if err != nil {
			t.Fatal(err)
		}
		cp, _ := c.LoadCheckpoint(context.Background(), "shop")
		if !allow {
			if len(res.Stops) != 1 || res.Stops[0].Gate == nil || res.Stops[0].Gate.Result != GateUnsettled || !strings.Contains(res.Stops[0].Reason, "under the plan's minimum of 10m0s") {
				t.Errorf("under the floor: stops %+v", res.Stops)
			}
			continue
		}
		if len(res.Stops) != 0 || !cp.PhaseDone(plan.PhaseVerify) {
			t.Errorf("with --allow-short-verify-window: stops %+v\n%s", res.Stops, out.String())
		}
		if len(cp.Overrides) != 1 || !strings.Contains(cp.Overrides[0], "--allow-short-verify-window by test run") {
			t.Errorf("the override is not recorded: %q", cp.Overrides)
		}
	}
}

// A record that claims a step must be that step: a planted "done" record
// for the ALLOW policy must not make apply skip it and enforce the
// allow-nothing alone.
func TestSafetyApplyRefusesARecordThatIsNotItsStep(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	rev := "1-30"
	saveCheckpoint(t, c, &Checkpoint{Namespace: "shop", PlanID: p.ID, PlanHash: p.Hash,
		Records: []Record{{Seq: 1, PlanID: p.ID, Phase: plan.PhasePermissive, Step: 0, Action: plan.ActionLabelNamespace, Target: "Namespace/shop", State: StateDone,
			StartedAt: time.Now(), Undo: Undo{Existed: true, Labels: map[string]*string{"istio.io/rev": &rev}}}}})
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ex.Apply(context.Background(), p, pv)
	if err == nil || !strings.Contains(err.Error(), "holds record 1 (label-namespace Namespace/shop) for step 0 of phase permissive, which is apply PeerAuthentication/default") {
		t.Fatalf("apply over a record that is not its step: %v", err)
	}
	for _, w := range writes(dyn) {
		if strings.Contains(w, "peerauthentications") {
			t.Errorf("the step was skipped or made: %v", writes(dyn))
		}
	}
}
