package phases

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// CheckpointError is a checkpoint the tool refuses to use: unreadable,
// copied from another namespace, or holding what this tool never writes.
// Anyone who may write ConfigMaps in a namespace may edit its checkpoint,
// so it is untrusted input: apply and rollback refuse it before changing
// anything, and status shows it against its namespace.
type CheckpointError struct {
	Namespace string
	msg       string
}

func (e *CheckpointError) Error() string { return e.msg }

func badCheckpoint(ns, format string, args ...any) *CheckpointError {
	return &CheckpointError{Namespace: ns, msg: fmt.Sprintf(format, args...)}
}

// edited says what an edited checkpoint means and what to do about it.
func edited(ns, what, why string) *CheckpointError {
	return badCheckpoint(ns, "checkpoint %s in namespace %s holds %s that this tool never writes (%s): "+
		"a record may only touch namespace %s and the kinds a plan produces; the checkpoint was edited by someone: nothing was applied or rolled back; "+
		"inspect it (kubectl get configmap %s -n %s -o yaml) and delete the bad record or the checkpoint (its undo records are then lost)",
		CheckpointName, ns, what, why, ns, CheckpointName, ns)
}

var (
	phaseStates  = []State{"", StateRunning, StateDone, StateStopped, StateSkipped, StateUnverified}
	recordStates = []State{StateStarted, StateDone}
)

// validate checks the whole checkpoint, so that a bad record is refused
// before the first undo rather than halfway through a rollback.
func (c *Checkpoint) validate() error {
	seen := map[plan.PhaseName]bool{}
	for i, p := range c.Phases {
		what := fmt.Sprintf("phase entry %d (%q, state %q)", i, p.Name, p.State)
		switch {
		case !slices.Contains(plan.AllPhases, p.Name):
			return edited(c.Namespace, what, fmt.Sprintf("unknown phase, want one of %s", plan.PhaseList()))
		case seen[p.Name]:
			return edited(c.Namespace, what, "the phase is listed twice")
		case !slices.Contains(phaseStates, p.State):
			return edited(c.Namespace, what, fmt.Sprintf("unknown state, want one of %s", joinStates(phaseStates[1:], ", ")))
		}
		seen[p.Name] = true
	}
	// calledBy and callees name the namespaces rollback reads to judge
	// who relies on whom: namespace names, nothing else.
	for _, ns := range append(append([]string{}, c.CalledBy...), c.Callees...) {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return edited(c.Namespace, fmt.Sprintf("calledBy/callees entry %q", ns), "not a namespace name: "+strings.Join(errs, "; "))
		}
	}
	seqs := map[int]bool{}
	for _, r := range c.Records {
		if err := checkRecord(c.Namespace, r); err != nil {
			return err
		}
		if seqs[r.Seq] {
			return edited(c.Namespace, recordName(r), "another record has the same seq")
		}
		seqs[r.Seq] = true
	}
	return nil
}

func recordName(r Record) string {
	return fmt.Sprintf("record %d (%s %s %s)", r.Seq, r.Phase, r.Action, r.Target)
}

// checkRecord holds one undo record to what a plan's step in namespace ns
// records: rollback writes what a record says, so a record outside these
// rules would let whoever wrote it steer rollback to another namespace or
// to objects no plan touches.
func checkRecord(ns string, r Record) error {
	bad := func(format string, args ...any) error {
		return edited(ns, recordName(r), fmt.Sprintf(format, args...))
	}
	switch {
	case r.Seq < 1:
		return bad("seq must be positive")
	case r.PlanID == "":
		return bad("it names no plan")
	case !slices.Contains(plan.AllPhases, r.Phase):
		return bad("unknown phase %q, want one of %s", r.Phase, plan.PhaseList())
	case r.Step < 0:
		return bad("step %d is negative", r.Step)
	case !slices.Contains(recordStates, r.State):
		return bad("unknown state %q, want %s", r.State, joinStates(recordStates, " or "))
	}
	act, err := actionFor(r.Action)
	if err != nil {
		return bad("unknown action %q", r.Action)
	}
	if err := plan.CheckTarget(r.Action, ns, r.Target); err != nil {
		return bad("%v", err)
	}
	if err := act.check(ns, r); err != nil {
		return bad("%v", err)
	}
	return nil
}

func joinStates(states []State, sep string) string {
	parts := make([]string, len(states))
	for i, s := range states {
		parts[i] = string(s)
	}
	return strings.Join(parts, sep)
}
