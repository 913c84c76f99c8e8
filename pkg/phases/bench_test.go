package phases

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// bigCheckpoint is a namespace migrated by two plans: 60 workloads
// restarted, 60 ALLOW policies applied dry-run and then enforced, each with
// a prior object, as a large namespace would record.
func bigCheckpoint() *Checkpoint {
	cp := &Checkpoint{Namespace: "shop", PlanID: "mp-000000000002"}
	prior := "2026-01-01T00:00:00Z"
	seq := 0
	add := func(r Record) {
		seq++
		r.Seq, r.State, r.StartedAt = seq, StateDone, time.Unix(1700000000, 0).UTC()
		cp.Records = append(cp.Records, r)
	}
	for p := 1; p <= 2; p++ {
		id := fmt.Sprintf("mp-%012d", p)
		add(Record{PlanID: id, Phase: plan.PhaseInject, Action: plan.ActionLabelNamespace, Target: "Namespace/shop",
			Undo: Undo{Existed: true, Labels: map[string]*string{"istio-injection": nil}}})
		for w := 0; w < 60; w++ {
			add(Record{PlanID: id, Phase: plan.PhaseInject, Step: w + 1, Action: plan.ActionRestartWorkload,
				Target: fmt.Sprintf("Deployment/w%02d", w), Undo: Undo{Existed: true, RestartedAt: &prior, Set: prior}})
		}
		for w := 0; w < 120; w++ {
			obj := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
				"metadata": map[string]any{"name": fmt.Sprintf("meshmigrate-allow-w%02d", w%60), "namespace": "shop",
					"labels": map[string]any{plan.LabelManagedBy: plan.ManagedBy, plan.LabelPlanID: id}},
				"spec": map[string]any{"action": "ALLOW", "selector": map[string]any{"matchLabels": map[string]any{"app": fmt.Sprintf("w%02d", w%60)}},
					"rules": []any{map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/front/sa/default", "cluster.local/ns/batch/sa/runner"}}}}}}}}
			add(Record{PlanID: id, Phase: plan.PhaseAuthz, Step: w, Action: plan.ActionApply,
				Target: fmt.Sprintf("AuthorizationPolicy/meshmigrate-allow-w%02d", w%60), Undo: Undo{APIVersion: "security.istio.io/v1", Existed: w >= 60, Prior: obj}})
		}
	}
	return cp
}

// BenchmarkCheckpointWrite measures what every write-ahead record costs:
// encoding the whole checkpoint. It reports the checkpoint's size against
// the ConfigMap's 1 MiB.
func BenchmarkCheckpointWrite(b *testing.B) {
	cp := bigCheckpoint()
	data, err := cp.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cp.Encode(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data)), "bytes/checkpoint")
	b.ReportMetric(float64(len(cp.Records)), "records")
}

// BenchmarkRollbackOrder measures reading a checkpoint back and ordering
// its records for a full rollback.
func BenchmarkRollbackOrder(b *testing.B) {
	data, err := bigCheckpoint().Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cp, err := DecodeCheckpoint("shop", data)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(UndoOrder(cp.Records, "")); n != len(cp.Records) {
			b.Fatalf("ordered %d of %d records", n, len(cp.Records))
		}
	}
}
