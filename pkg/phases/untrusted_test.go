package phases

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// plant adds r to ns's stored checkpoint the way anyone who may write
// ConfigMaps there could: by editing its JSON.
func plant(t *testing.T, c *Cluster, ns string, r Record) {
	t.Helper()
	cms := c.Kube.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(context.Background(), CheckpointName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cp Checkpoint
	if err := json.Unmarshal([]byte(cm.Data[CheckpointKey]), &cp); err != nil {
		t.Fatal(err)
	}
	cp.Records = append(cp.Records, r)
	b, err := json.Marshal(&cp)
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[CheckpointKey] = string(b)
	if _, err := cms.Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// kubeWrites lists what was written through the typed client (checkpoint,
// lease) after the first `from` actions.
func kubeWritesSince(c *Cluster, from int) []string {
	var out []string
	for _, a := range c.Kube.(*fake.Clientset).Actions()[from:] {
		if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" {
			out = append(out, v+" "+a.GetResource().Resource+" "+a.GetNamespace())
		}
	}
	return out
}

// touched lists every action, reads too, that reached namespace or object
// name ns through the dynamic client.
func touched(dyn *dynamicfake.FakeDynamicClient, ns string) []string {
	var out []string
	for _, a := range dyn.Actions() {
		name := ""
		if n, ok := a.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
		if a.GetNamespace() == ns || name == ns {
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource+" "+a.GetNamespace()+"/"+name)
		}
	}
	return out
}

var kubeSystemPrior = map[string]any{"apiVersion": "v1", "kind": "Namespace",
	"metadata": map[string]any{"name": "kube-system", "labels": map[string]any{"pwned": "yes"}}}

// migrated is namespace shop after onePlan (its label, its
// PeerAuthentication), next to a kube-system namespace.
func migrated(t *testing.T) (*Cluster, *dynamicfake.FakeDynamicClient, *fakeObserver, *plan.Plan) {
	t.Helper()
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}), namespaceObj("kube-system", nil), deploymentObj("web"))
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := onePlan(t, obs)
	applyOnce(t, c, obs, p)
	return c, dyn, obs, p
}

func TestRollbackRefusesRecordOutsideNamespace(t *testing.T) {
	c, dyn, obs, _ := migrated(t)
	plant(t, c, "shop", Record{Seq: 7, PlanID: "mp-000000000001", Phase: plan.PhaseAuthz, Action: plan.ActionApply, Target: "Namespace/kube-system",
		State: StateDone, Undo: Undo{APIVersion: "security.istio.io/v1", Existed: true, Prior: kubeSystemPrior}})
	dynBefore, kubeBefore := len(writes(dyn)), len(c.Kube.(*fake.Clientset).Actions())

	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	_, err := ex.Rollback(context.Background(), []string{"shop"}, "")
	if err == nil {
		t.Error("rollback undid a record that labels kube-system")
		err = errors.New("(none)")
	}
	for _, w := range []string{"checkpoint meshmigrate-checkpoint in namespace shop holds record 7 (authz apply Namespace/kube-system) that this tool never writes",
		"may only touch namespace shop", "edited by someone", "nothing was applied or rolled back", "kubectl get configmap meshmigrate-checkpoint -n shop -o yaml"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if got := touched(dyn, "kube-system"); len(got) != 0 {
		t.Errorf("rollback reached kube-system: %v", got)
	}
	// Nothing was rolled back either: the valid records stay undone.
	if w := writes(dyn)[dynBefore:]; len(w) != 0 {
		t.Errorf("a refused rollback wrote %v", w)
	}
	if w := kubeWritesSince(c, kubeBefore); len(w) != 0 {
		t.Errorf("a refused rollback wrote %v", w)
	}
	pa := schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
	if _, err := dyn.Resource(pa).Namespace("shop").Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Errorf("the PeerAuthentication was rolled back by a refused rollback: %v", err)
	}
}

func TestRollbackRefusesUnknownKind(t *testing.T) {
	// A record that "restores" the Deployment to another image would run
	// any pod under the workload's service account.
	c, dyn, obs, _ := migrated(t)
	evil := map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "web", "namespace": "shop"},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "web", "image": "evil"}}}}}}
	plant(t, c, "shop", Record{Seq: 7, PlanID: "mp-000000000001", Phase: plan.PhasePermissive, Action: plan.ActionApply, Target: "Deployment/web",
		State: StateDone, Undo: Undo{APIVersion: "apps/v1", Existed: true, Prior: evil}})
	before := len(writes(dyn))
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	_, err := ex.Rollback(context.Background(), []string{"shop"}, "")
	if err == nil || !strings.Contains(err.Error(), "record 7 (permissive apply Deployment/web) that this tool never writes") ||
		!strings.Contains(err.Error(), "an apply step writes only a PeerAuthentication, AuthorizationPolicy or Gateway") {
		t.Fatalf("rollback over an apply of a Deployment: %v", err)
	}
	if w := writes(dyn)[before:]; len(w) != 0 {
		t.Errorf("a refused rollback wrote %v", w)
	}
}

func TestRollbackChecksEveryRecordBeforeUndoingAny(t *testing.T) {
	// The bad record is undone last (restarts come after every label and
	// object): checking records one at a time would roll the namespace back
	// halfway before meeting it.
	c, dyn, obs, _ := migrated(t)
	plant(t, c, "shop", Record{Seq: 7, PlanID: "mp-000000000001", Phase: "deploy", Action: plan.ActionRestartWorkload, Target: "Deployment/web",
		State: StateDone, Undo: Undo{Existed: true, APIVersion: "apps/v1", Set: "2026-03-01T12:00:00Z"}})
	before := len(writes(dyn))
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	_, err := ex.Rollback(context.Background(), []string{"shop"}, "")
	if err == nil || !strings.Contains(err.Error(), `record 7 (deploy restart-workload Deployment/web) that this tool never writes (unknown phase "deploy"`) {
		t.Fatalf("rollback over a record of an unknown phase: %v", err)
	}
	if w := writes(dyn)[before:]; len(w) != 0 {
		t.Errorf("rollback undid %v before refusing", w)
	}
}

func TestUndoRefusesRecordOutsideNamespace(t *testing.T) {
	// Defence in depth: undo itself, whatever handed it the record, writes
	// nothing outside the checkpoint's namespace and kinds.
	c, dyn := newFakeCluster(t, namespaceObj("shop", nil), namespaceObj("kube-system", nil))
	var out bytes.Buffer
	ex := newExecutor(c, &fakeObserver{}, &out)
	for _, r := range []Record{
		{Seq: 7, PlanID: "p1", Phase: plan.PhaseAuthz, Action: plan.ActionApply, Target: "Namespace/kube-system", State: StateDone,
			Undo: Undo{APIVersion: "security.istio.io/v1", Existed: true, Prior: kubeSystemPrior}},
		{Seq: 8, PlanID: "p1", Phase: plan.PhaseAuthz, Action: plan.ActionApply, Target: "PeerAuthentication/default", State: StateDone,
			Undo: Undo{APIVersion: "security.istio.io/v1", Existed: true, Prior: map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
				"metadata": map[string]any{"name": "default", "namespace": "kube-system"}, "spec": map[string]any{"mtls": map[string]any{"mode": "DISABLE"}}}}},
		{Seq: 9, PlanID: "p1", Phase: plan.PhaseInject, Action: plan.ActionRestartWorkload, Target: "Namespace/kube-system", State: StateDone,
			Undo: Undo{Existed: true, RestartedAt: str("x"), Set: "y"}},
	} {
		name := fmt.Sprintf("record %d (%s %s %s)", r.Seq, r.Phase, r.Action, r.Target)
		if _, err := ex.undo(context.Background(), "shop", r); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("undo of %s: %v, want a refusal naming it", name, err)
		}
	}
	if got := touched(dyn, "kube-system"); len(got) != 0 {
		t.Errorf("undo reached kube-system: %v", got)
	}
	if w := writes(dyn); len(w) != 0 {
		t.Errorf("undo wrote %v", w)
	}
}

func TestApplyRefusesPlantedRecord(t *testing.T) {
	c, dyn, obs, p := migrated(t)
	plant(t, c, "shop", Record{Seq: 7, PlanID: "mp-000000000001", Phase: plan.PhaseAuthz, Action: plan.ActionApply, Target: "Namespace/kube-system",
		State: StateDone, Undo: Undo{APIVersion: "security.istio.io/v1", Existed: true, Prior: kubeSystemPrior}})
	before := len(writes(dyn))
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	_, err := ex.Prepare(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "record 7 (authz apply Namespace/kube-system) that this tool never writes") {
		t.Fatalf("apply over a planted record: %v", err)
	}
	if w := writes(dyn)[before:]; len(w) != 0 {
		t.Errorf("a refused apply wrote %v", w)
	}
}
