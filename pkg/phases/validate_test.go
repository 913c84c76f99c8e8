package phases

import (
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// goodRecords are records as apply writes them in namespace shop.
func goodRecords() []Record {
	pa := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
		"metadata": map[string]any{"name": "default", "namespace": "shop"}, "spec": map[string]any{"mtls": map[string]any{"mode": "DISABLE"}}}
	return []Record{
		{Seq: 1, PlanID: "p1", Phase: plan.PhaseInject, Action: plan.ActionLabelNamespace, Target: "Namespace/shop", State: StateDone, StartedAt: t0,
			Undo: Undo{Existed: true, Labels: map[string]*string{"istio-injection": nil, "istio.io/rev": str("1-29")},
				After: map[string]*string{"istio-injection": str("enabled"), "istio.io/rev": nil}}},
		{Seq: 2, PlanID: "p1", Phase: plan.PhaseInject, Step: 1, Action: plan.ActionRestartWorkload, Target: "Deployment/web", State: StateStarted, StartedAt: t0,
			Undo: Undo{Existed: true, APIVersion: "apps/v1", Set: "2026-03-01T12:00:00Z"}},
		{Seq: 3, PlanID: "p1", Phase: plan.PhasePermissive, Action: plan.ActionApply, Target: "PeerAuthentication/default", State: StateDone, StartedAt: t0,
			Undo: Undo{APIVersion: "security.istio.io/v1", Existed: true, Prior: pa}},
		{Seq: 4, PlanID: "p1", Phase: plan.PhaseAuthz, Action: plan.ActionApply, Target: "AuthorizationPolicy/meshmigrate-allow-nothing", State: StateDone, StartedAt: t0,
			Undo: Undo{APIVersion: "security.istio.io/v1beta1"}},
	}
}

func encoded(t *testing.T, cp *Checkpoint) string {
	t.Helper()
	data, err := cp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDecodeCheckpointRefusesWhatThisToolNeverWrites(t *testing.T) {
	good := &Checkpoint{Namespace: "shop", PlanID: "p1", Records: goodRecords(),
		Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}, {Name: plan.PhasePermissive, State: StateRunning}}}
	if _, err := DecodeCheckpoint("shop", encoded(t, good)); err != nil {
		t.Fatalf("a checkpoint as apply writes it: %v", err)
	}
	kubeSystem := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "kube-system", "labels": map[string]any{"pwned": "yes"}}}
	for _, c := range []struct {
		name   string
		change func(cp *Checkpoint)
		want   []string
	}{
		{"apply to another namespace", func(cp *Checkpoint) {
			cp.Records = append(cp.Records, Record{Seq: 7, PlanID: "p1", Phase: plan.PhaseAuthz, Action: plan.ActionApply, Target: "Namespace/kube-system",
				State: StateDone, Undo: Undo{APIVersion: "security.istio.io/v1", Existed: true, Prior: kubeSystem}})
		}, []string{"record 7 (authz apply Namespace/kube-system)", "an apply step writes only a PeerAuthentication, AuthorizationPolicy or Gateway"}},
		{"label another namespace", func(cp *Checkpoint) { cp.Records[0].Target = "Namespace/kube-system" },
			[]string{"record 1 (inject label-namespace Namespace/kube-system)", "labels its own namespace only, Namespace/shop"}},
		{"label with no label", func(cp *Checkpoint) { cp.Records[0].Undo.Labels, cp.Records[0].Undo.After = nil, nil },
			[]string{"record 1 (inject label-namespace Namespace/shop)", "it records no label"}},
		{"a label key that is a JSON pointer", func(cp *Checkpoint) { cp.Records[0].Undo.Labels["team/../../spec"] = str("x") },
			[]string{"record 1", `label "team/../../spec" is not a label key`}},
		{"a label after but not before", func(cp *Checkpoint) { cp.Records[0].Undo.After["team"] = str("x") },
			[]string{"record 1", "label team has a value after the step but none before"}},
		{"restart a Namespace", func(cp *Checkpoint) { cp.Records[1].Target = "Namespace/kube-system" },
			[]string{"record 2 (inject restart-workload Namespace/kube-system)", "restarts only a Deployment, StatefulSet or DaemonSet"}},
		{"restart a Pod", func(cp *Checkpoint) { cp.Records[1].Target = "Pod/web-1" }, []string{"record 2", `target "Pod/web-1"`}},
		{"restart in another API", func(cp *Checkpoint) { cp.Records[1].Undo.APIVersion = "v1" }, []string{"record 2", `apiVersion "v1", want apps/v1`}},
		{"restart with no value set", func(cp *Checkpoint) { cp.Records[1].Undo.Set = "" }, []string{"record 2", "no restartedAt value set"}},
		{"restart a bad name", func(cp *Checkpoint) { cp.Records[1].Target = "Deployment/web/../x" }, []string{"record 2", "not a valid name"}},
		{"apply a Deployment", func(cp *Checkpoint) {
			cp.Records[2].Target, cp.Records[2].Undo.APIVersion = "Deployment/web", "apps/v1"
		}, []string{"record 3 (permissive apply Deployment/web)", "writes only a PeerAuthentication, AuthorizationPolicy or Gateway"}},
		{"apply in another API group", func(cp *Checkpoint) { cp.Records[3].Undo.APIVersion = "apps/v1" },
			[]string{"record 4", `apiVersion "apps/v1", want security.istio.io/VERSION`}},
		{"a prior in another namespace", func(cp *Checkpoint) {
			cp.Records[2].Undo.Prior["metadata"] = map[string]any{"name": "default", "namespace": "kube-system"}
		}, []string{"record 3", `prior object metadata.namespace "kube-system", want shop`}},
		{"a prior of another name", func(cp *Checkpoint) {
			cp.Records[2].Undo.Prior["metadata"] = map[string]any{"name": "other", "namespace": "shop"}
		}, []string{"record 3", `prior object metadata.name "other", but target "PeerAuthentication/default"`}},
		{"a prior of another kind", func(cp *Checkpoint) { cp.Records[2].Undo.Prior["kind"] = "AuthorizationPolicy" },
			[]string{"record 3", `prior object kind "AuthorizationPolicy"`}},
		{"a prior of another version", func(cp *Checkpoint) { cp.Records[2].Undo.Prior["apiVersion"] = "security.istio.io/v1beta1" },
			[]string{"record 3", `prior object apiVersion "security.istio.io/v1beta1", but the record's "security.istio.io/v1"`}},
		{"existed without a prior", func(cp *Checkpoint) { cp.Records[2].Undo.Prior = nil }, []string{"record 3", "no prior object"}},
		{"an unknown action", func(cp *Checkpoint) { cp.Records[3].Action = "exec" }, []string{"record 4 (authz exec ", `unknown action "exec"`}},
		{"a record of an unknown phase", func(cp *Checkpoint) { cp.Records[3].Phase = "deploy" }, []string{"record 4 (deploy apply", `unknown phase "deploy"`}},
		{"a record of an unknown state", func(cp *Checkpoint) { cp.Records[3].State = "undone" }, []string{"record 4", `unknown state "undone"`}},
		{"a repeated seq", func(cp *Checkpoint) { cp.Records[3].Seq = 3 }, []string{"record 3 (authz apply", "another record has the same seq"}},
		{"seq zero", func(cp *Checkpoint) { cp.Records[0].Seq = 0 }, []string{"record 0", "seq must be positive"}},
		{"no plan", func(cp *Checkpoint) { cp.Records[0].PlanID = "" }, []string{"record 1", "names no plan"}},
		{"an unknown phase", func(cp *Checkpoint) { cp.Phases[1].Name = "deploy" }, []string{`phase entry 1 ("deploy", state "running")`, "unknown phase"}},
		{"a phase twice", func(cp *Checkpoint) { cp.Phases[1].Name = plan.PhaseInject }, []string{"phase entry 1", "listed twice"}},
		{"an unknown phase state", func(cp *Checkpoint) { cp.Phases[0].State = "half" }, []string{"phase entry 0", "unknown state"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cp := &Checkpoint{Namespace: "shop", PlanID: "p1", Records: goodRecords(),
				Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}, {Name: plan.PhasePermissive, State: StateRunning}}}
			c.change(cp)
			got, err := DecodeCheckpoint("shop", encoded(t, cp))
			if err == nil {
				t.Fatalf("decoded %+v, want an error", got)
			}
			want := append(c.want, "checkpoint meshmigrate-checkpoint in namespace shop holds", "that this tool never writes",
				"may only touch namespace shop", "edited by someone", "kubectl get configmap meshmigrate-checkpoint -n shop -o yaml")
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
