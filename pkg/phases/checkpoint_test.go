package phases

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func str(s string) *string { return &s }

func rec(seq int, planID string, phase plan.PhaseName, action plan.Action, target string) Record {
	return Record{Seq: seq, PlanID: planID, Phase: phase, Action: action, Target: target, State: StateDone, StartedAt: t0}
}

// history is a namespace migrated through every phase by plan p1: the
// injection label, two restarts, then a policy per later phase.
func history() []Record {
	return []Record{
		rec(1, "p1", plan.PhaseInject, plan.ActionLabelNamespace, "Namespace/shop"),
		rec(2, "p1", plan.PhaseInject, plan.ActionRestartWorkload, "Deployment/web"),
		rec(3, "p1", plan.PhaseInject, plan.ActionRestartWorkload, "StatefulSet/db"),
		rec(4, "p1", plan.PhasePermissive, plan.ActionApply, "PeerAuthentication/default"),
		rec(5, "p1", plan.PhaseStrict, plan.ActionApply, "PeerAuthentication/default"),
		rec(6, "p1", plan.PhaseAuthz, plan.ActionApply, "AuthorizationPolicy/meshmigrate-allow-web"),
		rec(7, "p1", plan.PhaseAuthz, plan.ActionApply, "AuthorizationPolicy/meshmigrate-allow-nothing"),
	}
}

func seqs(rs []Record) []int {
	out := []int{}
	for _, r := range rs {
		out = append(out, r.Seq)
	}
	return out
}

func TestUndoOrder(t *testing.T) {
	for _, tc := range []struct {
		to   plan.PhaseName
		want []int
	}{
		// Newest first, but the restarts after the label: the namespace's
		// injection is restored before the workloads roll.
		{"", []int{7, 6, 5, 4, 1, 3, 2}},
		{plan.PhaseInject, []int{7, 6, 5, 4}},
		// Back to PERMISSIVE: inject and permissive stay.
		{plan.PhasePermissive, []int{7, 6, 5}},
		{plan.PhaseVerify, []int{7, 6, 5}},
		{plan.PhaseStrict, []int{7, 6}},
		{plan.PhaseAuthz, []int{}},
	} {
		got := seqs(UndoOrder(history(), tc.to))
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("UndoOrder(to %q) = %v, want %v", tc.to, got, tc.want)
		}
	}
}

func TestUndoOrderSpansPlans(t *testing.T) {
	// A re-plan relabelled the namespace (revision upgrade) and restarted
	// web again: a full rollback undoes the newer plan's changes first and
	// still rolls every workload after every label is back.
	rs := append(history()[:4],
		rec(8, "p2", plan.PhaseInject, plan.ActionLabelNamespace, "Namespace/shop"),
		rec(9, "p2", plan.PhaseInject, plan.ActionRestartWorkload, "Deployment/web"))
	got := UndoOrder(rs, "")
	if want := []int{8, 4, 1, 9, 3, 2}; !reflect.DeepEqual(seqs(got), want) {
		t.Fatalf("UndoOrder = %v, want %v", seqs(got), want)
	}
	if got[0].PlanID != "p2" {
		t.Errorf("first undone record is from plan %s, want the newest plan p2", got[0].PlanID)
	}
}

func TestUndoOrderLeavesInputAlone(t *testing.T) {
	rs := history()
	UndoOrder(rs, "")
	if !reflect.DeepEqual(seqs(rs), []int{1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("UndoOrder reordered the checkpoint's records: %v", seqs(rs))
	}
}

func TestCheckpointStarted(t *testing.T) {
	empty := &Checkpoint{Namespace: "shop"}
	if empty.Started("p1") {
		t.Error("a namespace never migrated counts as started")
	}

	pending := &Checkpoint{Namespace: "shop", PlanID: "p1"}
	pending.Phase(plan.PhaseInject) // looked at, not run
	if pending.Started("p1") {
		t.Error("a pending phase record counts as started")
	}

	running := &Checkpoint{Namespace: "shop", PlanID: "p1", Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateRunning}}}
	if !running.Started("p1") {
		t.Error("plan p1 ran inject: Started(p1) = false")
	}
	if running.Started("p2") {
		t.Error("plan p2 never ran here: Started(p2) = true")
	}

	// Another plan now owns the phases, but p0's records are still here.
	older := &Checkpoint{Namespace: "shop", PlanID: "p1", Records: []Record{rec(1, "p0", plan.PhaseInject, plan.ActionLabelNamespace, "Namespace/shop")}}
	if !older.Started("p0") {
		t.Error("p0 made a change here: Started(p0) = false")
	}
}

func TestCheckpointForPlan(t *testing.T) {
	cp := &Checkpoint{Namespace: "shop", PlanID: "p1", PlanHash: "sha256:1",
		Phases:  []PhaseRecord{{Name: plan.PhaseInject, State: StateDone}},
		Records: history()}

	cp.ForPlan(&plan.Plan{ID: "p1", Hash: "sha256:1"})
	if len(cp.Phases) != 1 || !cp.PhaseDone(plan.PhaseInject) {
		t.Errorf("the same plan lost its progress: %+v", cp.Phases)
	}

	cp.ForPlan(&plan.Plan{ID: "p2", Hash: "sha256:2"})
	if cp.PlanID != "p2" || cp.PlanHash != "sha256:2" {
		t.Errorf("plan = %s %s, want p2 sha256:2", cp.PlanID, cp.PlanHash)
	}
	if len(cp.Phases) != 0 || cp.PhaseDone(plan.PhaseInject) {
		t.Errorf("a new plan inherited the old plan's phases: %+v", cp.Phases)
	}
	if len(cp.Records) != 7 {
		t.Errorf("a new plan dropped undo records: %d left, want 7 (rollback --all needs them)", len(cp.Records))
	}
}

func TestCheckpointPhase(t *testing.T) {
	cp := &Checkpoint{Namespace: "shop"}
	r := cp.Phase(plan.PhaseInject)
	if r.Name != plan.PhaseInject || r.State != "" {
		t.Fatalf("new phase record = %+v, want a pending inject", r)
	}
	r.State = StateDone
	if again := cp.Phase(plan.PhaseInject); again.State != StateDone || len(cp.Phases) != 1 {
		t.Errorf("Phase returned a second record instead of the first: %+v", cp.Phases)
	}
	for state, done := range map[State]bool{StateDone: true, StateSkipped: true, StateStopped: false, StateRunning: false, "": false} {
		cp := &Checkpoint{Phases: []PhaseRecord{{Name: plan.PhaseVerify, State: state}}}
		if got := cp.PhaseDone(plan.PhaseVerify); got != done {
			t.Errorf("PhaseDone with state %q = %v, want %v", state, got, done)
		}
	}
	if (&Checkpoint{}).PhaseDone(plan.PhaseInject) {
		t.Error("a phase never run is done")
	}
}

func TestCheckpointRecord(t *testing.T) {
	cp := &Checkpoint{Records: history()}
	cp.Records[2].Step = 1 // StatefulSet/db is inject step 1
	r := cp.Record("p1", plan.PhaseInject, 1)
	if r == nil || r.Target != "StatefulSet/db" {
		t.Fatalf("Record(p1, inject, 1) = %+v, want StatefulSet/db", r)
	}
	r.State = StateStarted
	if cp.Records[2].State != StateStarted {
		t.Error("Record returned a copy: marking it done would not reach the checkpoint")
	}
	if r := cp.Record("p2", plan.PhaseInject, 1); r != nil {
		t.Errorf("Record of another plan = %+v, want none (its step must run)", r)
	}
	if r := cp.Record("p1", plan.PhaseStrict, 5); r != nil {
		t.Errorf("Record of a step never started = %+v", r)
	}
}

func TestCheckpointNext(t *testing.T) {
	if n := (&Checkpoint{}).next(); n != 1 {
		t.Errorf("first seq = %d, want 1", n)
	}
	// Rollback drops records from the middle: next follows the highest.
	cp := &Checkpoint{Records: []Record{{Seq: 3}, {Seq: 9}, {Seq: 5}}}
	if n := cp.next(); n != 10 {
		t.Errorf("next = %d, want 10", n)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	done := t0.Add(time.Minute)
	cp := &Checkpoint{
		Namespace: "shop", PlanID: "mp-1", PlanHash: "sha256:1",
		Phases: []PhaseRecord{{Name: plan.PhaseInject, State: StateDone, StartedAt: &t0, FinishedAt: &done,
			Gate: &GateResult{Name: plan.GateSidecars, Result: GatePassed, Message: "2 of 2 pods meshed", At: done}}},
		Records: []Record{
			{Seq: 2, PlanID: "mp-1", Phase: plan.PhaseInject, Step: 1, Action: plan.ActionRestartWorkload, Target: "Deployment/web",
				State: StateStarted, StartedAt: t0, Undo: Undo{Existed: true, Set: "2026-03-01T12:00:00Z"}},
			{Seq: 1, PlanID: "mp-1", Phase: plan.PhaseInject, Action: plan.ActionLabelNamespace, Target: "Namespace/shop",
				State: StateDone, StartedAt: t0, DoneAt: &done, Undo: Undo{Existed: true,
					Labels: map[string]*string{"istio-injection": nil, "istio.io/rev": str("1-29")},
					After:  map[string]*string{"istio-injection": str("enabled"), "istio.io/rev": nil}}},
			{Seq: 3, PlanID: "mp-1", Phase: plan.PhasePermissive, Action: plan.ActionApply, Target: "PeerAuthentication/default",
				State: StateDone, StartedAt: t0, Undo: Undo{APIVersion: "security.istio.io/v1", Existed: true,
					Prior: map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": map[string]any{"name": "default", "namespace": "shop"},
						"spec": map[string]any{"mtls": map[string]any{"mode": "DISABLE"}}}}},
		},
		MeshedAt: &done, UpdatedAt: done, UpdatedBy: "alice@laptop",
	}
	data, err := cp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCheckpoint("shop", data)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2, 3}; !reflect.DeepEqual(seqs(got.Records), want) {
		t.Errorf("records stored in order %v, want by seq %v", seqs(got.Records), want)
	}
	if !reflect.DeepEqual(got, cp) {
		t.Errorf("round trip changed the checkpoint:\n got %+v\nwant %+v", got, cp)
	}
	// An absent label is recorded as null, not dropped: rollback must
	// remove it again.
	prior, ok := got.Records[0].Undo.Labels["istio-injection"]
	if !ok || prior != nil {
		t.Errorf("prior istio-injection = %v (present %v), want an explicit null", prior, ok)
	}
	if !strings.Contains(data, `"istio-injection":null`) {
		t.Errorf("encoded checkpoint lacks the null prior label:\n%s", data)
	}
}

func TestDecodeCheckpointErrors(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       []string
	}{
		{"malformed", `{"namespace": "shop", "records": [`,
			[]string{"shop/meshmigrate-checkpoint", "not readable", "edited by hand", "restore it or delete it", "undo records are lost"}},
		{"empty", ``, []string{"shop/meshmigrate-checkpoint", "not readable"}},
		{"wrong type", `{"namespace": "shop", "records": {"seq": 1}}`, []string{"not readable"}},
		{"copied", `{"namespace": "payments", "planID": "mp-1"}`,
			[]string{"shop/meshmigrate-checkpoint", `belongs to namespace "payments"`, "copied by hand", "delete it"}},
	} {
		cp, err := DecodeCheckpoint("shop", tc.data)
		if err == nil {
			t.Errorf("%s: decoded %+v, want an error", tc.name, cp)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
	}
}
