package phases

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// preload stores in namespace shop, as an earlier run of an earlier plan
// would have, a checkpoint of AuthorizationPolicies it changed, with large
// prior objects, encoding to exactly size bytes; the policies are as before
// (the plan wrote what they already were). It returns how many records it
// holds.
func preload(t *testing.T, c *Cluster, dyn *dynamicfake.FakeDynamicClient, size int) int {
	t.Helper()
	cp := &Checkpoint{Namespace: "shop", PlanID: "mp-000000000000", UpdatedAt: t0, UpdatedBy: "preload"}
	pad := func(i, n int) map[string]any {
		return map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
			"metadata": map[string]any{"name": fmt.Sprintf("p%03d", i), "namespace": "shop", "annotations": map[string]any{"note": strings.Repeat("x", n)}},
			"spec":     map[string]any{}}
	}
	encode := func() []byte {
		b, err := json.Marshal(cp)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	add := func(n int) {
		i := len(cp.Records)
		cp.Records = append(cp.Records, Record{Seq: i + 1, PlanID: cp.PlanID, Phase: plan.PhaseAuthz, Step: i, Action: plan.ActionApply,
			Target: fmt.Sprintf("AuthorizationPolicy/p%03d", i), State: StateDone, StartedAt: t0,
			Undo: Undo{APIVersion: "security.istio.io/v1", Existed: true, Prior: pad(i, n)}})
	}
	for len(encode())+2*10000 < size {
		add(10000)
	}
	// The last record's note makes up the rest, byte for byte.
	add(0)
	last := len(cp.Records) - 1
	cp.Records[last].Undo.Prior = pad(last, size-len(encode()))
	data := encode()
	if len(data) != size {
		t.Fatalf("fixture: checkpoint of %d bytes, want %d", len(data), size)
	}
	cm := checkpointCM("shop", string(data))
	if _, err := c.Kube.CoreV1().ConfigMaps("shop").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ap := schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}
	for _, r := range cp.Records {
		if err := dyn.Tracker().Create(ap, &unstructured.Unstructured{Object: r.Undo.Prior}, "shop"); err != nil {
			t.Fatal(err)
		}
	}
	return len(cp.Records)
}

// laterPlan is onePlan, made after the preloaded plan ran.
func laterPlan(t *testing.T, obs *fakeObserver) *plan.Plan {
	p := onePlan(t, obs)
	p.CreatedAt = t0.Add(time.Hour)
	return p
}

func TestCheckpointSizeWarning(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	preload(t, c, dyn, 800<<10)
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	out := applyOnce(t, c, obs, laterPlan(t, obs))
	warnings := 0
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "warning:") {
			warnings++
			for _, w := range []string{"shop: warning: the checkpoint meshmigrate-checkpoint is 800 KiB (8", "of the 1 MiB a ConfigMap holds",
				"refuses to add a record past 1000000 bytes", "rollback"} {
				if !strings.Contains(l, w) {
					t.Errorf("warning %q does not say %q", l, w)
				}
			}
		}
	}
	// Once per run, not once per write.
	if warnings != 1 {
		t.Errorf("%d size warnings, want 1:\n%s", warnings, out)
	}

	// A checkpoint far from the limit gets none.
	c, dyn = newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	preload(t, c, dyn, 700<<10)
	if out := applyOnce(t, c, obs, laterPlan(t, obs)); strings.Contains(out.String(), "warning") {
		t.Errorf("a checkpoint of 700 KiB warned:\n%s", out)
	}
}

func TestCheckpointSizeLimit(t *testing.T) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"istio.io/rev": "1-30"}))
	n := preload(t, c, dyn, 999_900)
	obs := &fakeObserver{report: shopReport("PERMISSIVE", "namespace")}
	p := laterPlan(t, obs)
	var out bytes.Buffer
	ex := newExecutor(c, obs, &out)
	pv, err := ex.Prepare(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ex.Apply(context.Background(), p, pv)
	if err == nil {
		t.Fatal("apply grew the checkpoint past 1,000,000 bytes")
	}
	for _, w := range []string{"checkpoint meshmigrate-checkpoint of namespace shop would be 1000", fmt.Sprintf("record %d (inject label-namespace Namespace/shop)", n+1),
		"past the 1000000 bytes this tool writes (a ConfigMap holds at most 1 MiB)", "the change was not made", "rollback"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	// Write-ahead: the record was refused, so its change was never made.
	if w := writes(dyn); len(w) != 0 {
		t.Errorf("apply changed %v without its record", w)
	}
	stored, err := c.LoadCheckpoint(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.Records) != n {
		t.Errorf("the checkpoint holds %d records, want the %d it had: the refused one was written", len(stored.Records), n)
	}

	// A checkpoint already past the limit (an older version wrote it) still
	// rolls back: rollback adds no record, so it is never refused.
	c, dyn = newFakeCluster(t, namespaceObj("shop", nil))
	preload(t, c, dyn, 1_000_100)
	if _, err := newExecutor(c, obs, &out).Rollback(context.Background(), []string{"shop"}, ""); err != nil {
		t.Fatalf("rollback of a checkpoint past the limit: %v", err)
	}
	if _, err := c.Kube.CoreV1().ConfigMaps("shop").Get(context.Background(), CheckpointName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the checkpoint outlived a full rollback: %v", err)
	}
}
