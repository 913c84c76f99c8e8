// Package phases executes a MigrationPlan against a cluster: it runs each
// namespace's steps in wave and phase order, checks the gates, holds a Lease
// per namespace so two runs never touch one namespace at once, and records
// every change in a checkpoint in the namespace before making it
// (write-ahead), so a run can be resumed from any machine and rolled back to
// exactly the state before. docs/apply.md documents the checkpoint.
package phases

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// Names of the objects the tool keeps in each namespace it migrates.
const (
	// CheckpointName is the ConfigMap holding the namespace's Checkpoint.
	CheckpointName = "meshmigrate-checkpoint"
	// CheckpointKey is the ConfigMap data key holding it, as JSON.
	CheckpointKey = "checkpoint.json"
	// LeaseName is the Lease that locks the namespace during a run.
	LeaseName = "meshmigrate-lock"
	// FieldManager owns every field the tool writes.
	FieldManager = "kubectl-meshmigrate"
	// LabelComponent tells the checkpoint and the lock apart from the
	// objects a plan creates.
	LabelComponent = "app.kubernetes.io/component"
	// AnnotationRestartedAt is what `kubectl rollout restart` sets on the
	// pod template; changing it rolls the workload.
	AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
)

// State is where a phase or a change stands in the checkpoint.
type State string

// Phase and record states.
const (
	StateRunning State = "running"
	StateDone    State = "done"
	StateStopped State = "stopped" // a gate did not pass, a step is blocked, or the guard undid the change
	// StateUnverified: the change was made and stays, but the guard saw
	// no data to judge it by (or could not read the telemetry); the next
	// apply watches it again.
	StateUnverified State = "unverified"
	StateSkipped    State = "skipped"
	StateStarted    State = "started" // a step's change may or may not have been made
)

// Verdict is a gate's result.
type Verdict string

// The verdicts: a gate passes only on evidence.
const (
	GatePassed    Verdict = "passed"
	GateFailed    Verdict = "failed"
	GateUnsettled Verdict = "inconclusive"
)

// Checkpoint is the state of one namespace's migration, stored in the
// namespace (ConfigMap CheckpointName) so any machine can resume or roll
// back. It survives re-plans: Records keep every change of every plan, in
// order, so `rollback --all` returns to the state before the first one.
// None is dropped, not even one whose object a later plan re-applied: each
// record's prior state is what the next one back must find (its digest),
// --to may keep one and undo the other, and the newest-first order is what
// keeps a deny-all from outliving the allows it covers. Encode bounds the
// size instead (docs/apply.md, "Size").
type Checkpoint struct {
	Namespace string `json:"namespace"`
	// PlanID and PlanHash name the plan the Phases belong to.
	PlanID   string `json:"planID"`
	PlanHash string `json:"planHash"`
	// Phases is the progress of PlanID's phases, in plan order.
	Phases []PhaseRecord `json:"phases"`
	// Records are the changes made, oldest first, each written before
	// its change was made.
	Records []Record `json:"records"`
	// PlanCreatedAt is when PlanID was made: apply refuses an older plan,
	// whose steps come from older traffic, once a newer one has run here.
	PlanCreatedAt *time.Time `json:"planCreatedAt,omitempty"`
	// CalledBy are the namespaces whose calls this namespace's STRICT and
	// authz phases rely on arriving over mTLS (the plan's calledBy).
	CalledBy []string `json:"calledBy,omitempty"`
	// Callees are the planned namespaces that rely on this one's
	// sidecars: rollback refuses to remove them while those are STRICT.
	Callees []string `json:"callees,omitempty"`
	// Overrides record each safety floor a user lifted for this
	// namespace, and by whom (e.g. --allow-short-verify-window).
	Overrides []string `json:"overrides,omitempty"`
	// MeshedAt is when the last injection change (label or restart) was
	// made: plaintext seen before it says nothing about the meshed state.
	MeshedAt *time.Time `json:"meshedAt,omitempty"`
	// UpdatedAt and UpdatedBy name the last writer.
	UpdatedAt time.Time `json:"updatedAt"`
	UpdatedBy string    `json:"updatedBy"`

	// resourceVersion of the ConfigMap this was read from: the next write
	// is conditional on it.
	resourceVersion string
	// stored is true for a checkpoint read from (or written to) the
	// cluster, false for a namespace never migrated.
	stored bool
	// encodedSeq is the highest seq read or last encoded: a record above
	// it is new. size is the length of what was read or last encoded;
	// warned is set once a run has warned about it.
	encodedSeq int
	size       int
	warned     bool
}

// Stored reports whether the checkpoint exists in the cluster.
func (c *Checkpoint) Stored() bool { return c.stored }

// PhaseRecord is the progress of one phase.
type PhaseRecord struct {
	Name       plan.PhaseName `json:"name"`
	State      State          `json:"state"`
	Message    string         `json:"message,omitempty"`
	StartedAt  *time.Time     `json:"startedAt,omitempty"`
	FinishedAt *time.Time     `json:"finishedAt,omitempty"`
	Gate       *GateResult    `json:"gate,omitempty"`
	// Guard is the post-change guard's verdict (strict and authz).
	Guard *GuardResult `json:"guard,omitempty"`
}

// GateResult is the last evaluation of a gate.
type GateResult struct {
	Name   plan.GateName `json:"name"`
	Result Verdict       `json:"result"` // passed, failed, inconclusive
	// Message says what was seen, over which window.
	Message string `json:"message"`
	// Culprits name what keeps the gate closed (plaintext clients, pods).
	Culprits []string  `json:"culprits,omitempty"`
	At       time.Time `json:"at"`
}

// Record is one change: written with State started before the change is
// made, set to done after. Undo says how to revert it.
type Record struct {
	Seq    int            `json:"seq"`
	PlanID string         `json:"planID"`
	Phase  plan.PhaseName `json:"phase"`
	// Step is the index of the step within its plan phase.
	Step      int         `json:"step"`
	Action    plan.Action `json:"action"`
	Target    string      `json:"target"`
	State     State       `json:"state"`
	StartedAt time.Time   `json:"startedAt"`
	DoneAt    *time.Time  `json:"doneAt,omitempty"`
	Undo      Undo        `json:"undo"`
}

// Undo is what an object looked like before a change.
type Undo struct {
	// Labels (label-namespace): the prior value of every label the step
	// sets or removes; null for a label that was absent.
	Labels map[string]*string `json:"labels,omitempty"`
	// After are the values the step gives those labels (null: removed):
	// rollback restores a label only if it still has that value.
	After map[string]*string `json:"after,omitempty"`
	// RestartedAt (restart-workload): the pod template's prior
	// restartedAt annotation (null when absent), and the value the step
	// sets, so a resumed step sets the same one.
	RestartedAt *string `json:"restartedAt,omitempty"`
	Set         string  `json:"set,omitempty"`
	// APIVersion of the object (apply).
	APIVersion string `json:"apiVersion,omitempty"`
	// Existed is false when the step creates the object: rollback deletes
	// it, and only if it still carries the plan's label.
	Existed bool `json:"existed"`
	// Prior is the object before the change, without server-managed
	// fields (apply, when Existed).
	Prior map[string]any `json:"prior,omitempty"`
	// PriorManagedFields are its managedFields then: rollback gives each
	// field back to its manager, so the tool keeps none it did not own.
	PriorManagedFields []metav1.ManagedFieldsEntry `json:"priorManagedFields,omitempty"`
	// UID and Digest name the object as the step wrote it (apply): the
	// digest covers its labels, annotations and spec. Rollback restores
	// or deletes only an object still exactly so.
	UID    string `json:"uid,omitempty"`
	Digest string `json:"digest,omitempty"`
}

// Phase returns the record of phase name, adding a pending one.
func (c *Checkpoint) Phase(name plan.PhaseName) *PhaseRecord {
	for i := range c.Phases {
		if c.Phases[i].Name == name {
			return &c.Phases[i]
		}
	}
	c.Phases = append(c.Phases, PhaseRecord{Name: name})
	return &c.Phases[len(c.Phases)-1]
}

// PhaseDone reports whether phase name of the checkpoint's plan is done.
func (c *Checkpoint) PhaseDone(name plan.PhaseName) bool {
	for _, p := range c.Phases {
		if p.Name == name {
			return p.State == StateDone || p.State == StateSkipped
		}
	}
	return false
}

// Record returns the record of plan planID's step, if one was written.
func (c *Checkpoint) Record(planID string, phase plan.PhaseName, step int) *Record {
	for i := range c.Records {
		r := &c.Records[i]
		if r.PlanID == planID && r.Phase == phase && r.Step == step {
			return r
		}
	}
	return nil
}

// Started reports whether plan planID made or began any change here.
func (c *Checkpoint) Started(planID string) bool {
	if c.PlanID == planID {
		for _, p := range c.Phases {
			if p.State != "" {
				return true
			}
		}
	}
	for _, r := range c.Records {
		if r.PlanID == planID {
			return true
		}
	}
	return false
}

// ForPlan makes the checkpoint follow plan p: a new plan starts with fresh
// phase progress but keeps the records of the ones before it.
func (c *Checkpoint) ForPlan(p *plan.Plan) {
	if pn, ok := p.Namespace(c.Namespace); ok {
		c.CalledBy, c.Callees = pn.CalledBy, p.Callees(c.Namespace)
	}
	if c.PlanID == p.ID {
		return
	}
	t := p.CreatedAt.UTC()
	c.PlanID, c.PlanHash, c.Phases, c.PlanCreatedAt = p.ID, p.Hash, nil, &t
}

// NewerPlan names the plan this checkpoint follows when it is newer than
// p and has made progress here ("" otherwise): applying p would run steps
// planned from older traffic over the newer plan's work. A checkpoint
// written before PlanCreatedAt existed is judged by when its plan first
// changed something, which is never before that plan was made.
func (c *Checkpoint) NewerPlan(p *plan.Plan) string {
	if c.PlanID == "" || c.PlanID == p.ID || !c.Started(c.PlanID) {
		return ""
	}
	made := c.PlanCreatedAt
	if made == nil {
		for _, r := range c.Records {
			if r.PlanID == c.PlanID && (made == nil || r.StartedAt.Before(*made)) {
				t := r.StartedAt
				made = &t
			}
		}
	}
	if made == nil || !p.CreatedAt.Before(*made) {
		return ""
	}
	return fmt.Sprintf("its checkpoint follows plan %s (made %s), newer than plan %s (made %s): apply that plan's file, or make a new plan",
		c.PlanID, made.UTC().Format(time.RFC3339), p.ID, p.CreatedAt.UTC().Format(time.RFC3339))
}

// Made is what the checkpoint records plan planID changed: the staleness
// check of a resumed namespace does not count those changes.
func (c *Checkpoint) Made(planID string) plan.Made {
	m := plan.Made{Labels: map[string]bool{}, Objects: map[string]bool{}}
	for _, r := range c.Records {
		if act, err := actionFor(r.Action); err == nil && r.PlanID == planID {
			act.made(r, &m)
		}
	}
	return m
}

// next returns the sequence number for a new record.
func (c *Checkpoint) next() int {
	n := 0
	for _, r := range c.Records {
		if r.Seq > n {
			n = r.Seq
		}
	}
	return n + 1
}

// UndoOrder returns the records to revert to undo every phase after phase
// `to` ("" for all of them), in the order to revert them: newest first,
// except that workload restarts come last, after the namespace's injection
// label is restored, so the pods they roll come back as they were (without
// a sidecar when injection was off before).
func UndoOrder(records []Record, to plan.PhaseName) []Record {
	keep := -1
	if to != "" {
		keep = phaseIndex(to)
	}
	var changes, restarts []Record
	for i := len(records) - 1; i >= 0; i-- {
		r := records[i]
		if phaseIndex(r.Phase) <= keep {
			continue
		}
		if act, err := actionFor(r.Action); err == nil && act.restarts() {
			restarts = append(restarts, r)
		} else {
			changes = append(changes, r)
		}
	}
	return append(changes, restarts...)
}

// phaseIndex is where phase name runs among all phases (sidecar and
// ambient ones in one order); len(plan.AllPhases) for an unknown name.
func phaseIndex(name plan.PhaseName) int {
	if i := slices.Index(plan.AllPhases, name); i >= 0 {
		return i
	}
	return len(plan.AllPhases)
}

// meshed is true when the namespace's mesh phase (inject, or enroll for
// ambient) is done.
func (c *Checkpoint) meshed() bool {
	return c.PhaseDone(plan.PhaseInject) || c.PhaseDone(plan.PhaseEnroll)
}

// dataplane is ambient when the checkpoint follows a namespace enrolled
// in ambient, else "" (sidecars).
func (c *Checkpoint) dataplane() string {
	for _, p := range c.Phases {
		if p.Name == plan.PhaseEnroll || p.Name == plan.PhaseWaypoint {
			return plan.DataplaneAmbient
		}
	}
	for _, r := range c.Records {
		if r.Phase == plan.PhaseEnroll {
			return plan.DataplaneAmbient
		}
	}
	return ""
}

// Sizes of the encoded checkpoint. A ConfigMap holds at most 1 MiB
// (1,048,576 bytes) of data; the tool stops short of it, leaving room for
// the object's metadata, with a clear error instead of the API server's.
const (
	// CheckpointWarnBytes is where a run starts warning.
	CheckpointWarnBytes = 768 << 10
	// CheckpointMaxBytes is the most a write that adds a record may write.
	CheckpointMaxBytes = 1_000_000
)

// Encode serializes the checkpoint for the ConfigMap. It refuses to add a
// record past CheckpointMaxBytes: the record is written before its change
// is made, so the change is then not made either. A write that adds no
// record (progress, rollback) is never refused: it grows the checkpoint by
// a few bytes at most, and refusing it would leave a namespace whose
// checkpoint is already that big unable to roll back.
func (c *Checkpoint) Encode() (string, error) {
	sort.SliceStable(c.Records, func(i, j int) bool { return c.Records[i].Seq < c.Records[j].Seq })
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode the checkpoint of %s: %w", c.Namespace, err)
	}
	last := c.next() - 1
	if len(b) > CheckpointMaxBytes && last > c.encodedSeq {
		return "", fmt.Errorf("the checkpoint %s of namespace %s would be %d bytes with %s, past the %d bytes this tool writes (a ConfigMap holds at most 1 MiB): "+
			"the record was not written and the change was not made; roll back what this namespace no longer needs (kubectl meshmigrate rollback -n %s --to PHASE or --all), "+
			"or delete the checkpoint once you will not roll back (its undo records are then lost)",
			CheckpointName, c.Namespace, len(b), recordName(c.Records[len(c.Records)-1]), CheckpointMaxBytes, c.Namespace)
	}
	c.encodedSeq, c.size = last, len(b)
	return string(b), nil
}

// sizeWarning says, once per checkpoint read, that its last encoding came
// near the ConfigMap's limit.
func (c *Checkpoint) sizeWarning() string {
	if c.size < CheckpointWarnBytes || c.warned {
		return ""
	}
	c.warned = true
	return fmt.Sprintf("the checkpoint %s is %d KiB (%d bytes) of the 1 MiB a ConfigMap holds, and every plan applied here adds to it: "+
		"this tool refuses to add a record past %d bytes; roll back what this namespace no longer needs (kubectl meshmigrate rollback -n %s --to PHASE or --all)",
		CheckpointName, c.size>>10, c.size, CheckpointMaxBytes, c.Namespace)
}

// DecodeCheckpoint parses a checkpoint read from the ConfigMap and checks
// it whole (validate). Every reader goes through it (apply, rollback,
// status, the write's conflict check), so none uses a record it has not
// checked.
func DecodeCheckpoint(ns, data string) (*Checkpoint, error) {
	c := &Checkpoint{}
	if err := json.Unmarshal([]byte(data), c); err != nil {
		return nil, badCheckpoint(ns, "the checkpoint ConfigMap %s/%s is not readable (%v): it was edited by hand; restore it or delete it knowing that its undo records are lost", ns, CheckpointName, err)
	}
	if c.Namespace != ns {
		return nil, badCheckpoint(ns, "the checkpoint ConfigMap %s/%s belongs to namespace %q: it was copied by hand; delete it", ns, CheckpointName, c.Namespace)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	c.encodedSeq, c.size = c.next()-1, len(data)
	return c, nil
}
