package phases

import (
	"fmt"
	"slices"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// TaskKind is what one task of a run's queue does.
type TaskKind string

// The kinds of task, as a run meets them within a namespace's phase.
const (
	// TaskSkip needs nothing: a phase or step the plan has done or
	// skipped, or a phase an earlier run finished.
	TaskSkip TaskKind = "skip"
	// TaskBlocked stops the namespace: the plan blocks this phase or step.
	TaskBlocked TaskKind = "blocked"
	// TaskCheckCallers re-reads the namespaces that call this one in
	// plaintext (before verify and STRICT).
	TaskCheckCallers TaskKind = "check-callers"
	// TaskVerifyAgain judges the verify gate again before STRICT unless it
	// passed in this run.
	TaskVerifyAgain TaskKind = "verify-again"
	// TaskChange makes one step's change, write-ahead.
	TaskChange TaskKind = "change"
	// TaskWaitRollouts waits for the restarts before it to roll out.
	TaskWaitRollouts TaskKind = "wait-rollouts"
	// TaskGate judges a gate: the phase's, or one between its steps.
	TaskGate TaskKind = "gate"
	// TaskNote changes nothing: the user must act (a report step).
	TaskNote TaskKind = "note"
	// TaskGuard watches the namespace after STRICT or enforcement for
	// --bake, and undoes the phase's change (its steps from Step on) when
	// callers break.
	TaskGuard TaskKind = "guard"
)

// Task is one thing a run does, in the order it does them.
type Task struct {
	Wave      int            `json:"wave"`
	Namespace string         `json:"namespace"`
	Phase     plan.PhaseName `json:"phase"`
	Kind      TaskKind       `json:"kind"`
	// Step is the task's step in the plan phase; -1 for a task of the
	// phase as a whole.
	Step   int           `json:"step"`
	Action plan.Action   `json:"action,omitempty"`
	Target string        `json:"target,omitempty"`
	Gate   plan.GateName `json:"gate,omitempty"`
	// Done marks a change a run of this plan already made (the checkpoint
	// says so): the run only checks it.
	Done   bool   `json:"done,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// String is the task as the queue prints it, after its namespace.
func (t Task) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wave %d %s: %s", t.Wave, t.Phase, t.Kind)
	switch {
	case t.Gate != "":
		b.WriteString(" " + string(t.Gate))
	case t.Action != "":
		b.WriteString(" " + string(t.Action) + " " + t.Target)
	case t.Target != "":
		b.WriteString(" " + t.Target)
	}
	if t.Done {
		b.WriteString(" (done by an earlier run)")
	}
	if t.Reason != "" {
		b.WriteString(": " + t.Reason)
	}
	return b.String()
}

// BuildQueue turns plan p, the namespaces and phases a run selects
// (namespaces in wave order), and what the checkpoints say is done into the
// ordered tasks of the run: wave by wave, within a wave phase by phase
// across its namespaces. It is pure: a dry run prints it, and the runner
// runs it.
func BuildQueue(p *plan.Plan, namespaces []string, phases []plan.PhaseName, cps map[string]*Checkpoint) []Task {
	byWave := map[int][]string{}
	var waves []int
	for _, ns := range namespaces {
		pn, ok := p.Namespace(ns)
		if !ok {
			continue
		}
		if byWave[pn.Wave] == nil {
			waves = append(waves, pn.Wave)
		}
		byWave[pn.Wave] = append(byWave[pn.Wave], ns)
	}
	var out []Task
	slices.Sort(waves)
	for _, w := range waves {
		for _, phase := range phases {
			for _, ns := range byWave[w] {
				out = append(out, phaseTasks(p, ns, phase, cps[ns])...)
			}
		}
	}
	return out
}

// phaseTasks are the tasks of one namespace's phase.
func phaseTasks(p *plan.Plan, ns string, phase plan.PhaseName, cp *Checkpoint) []Task {
	pn, _ := p.Namespace(ns)
	ph, ok := pn.Phase(phase)
	if !ok {
		return nil
	}
	if cp == nil {
		cp = &Checkpoint{Namespace: ns}
	}
	task := func(kind TaskKind, step int) Task {
		return Task{Wave: pn.Wave, Namespace: ns, Phase: phase, Kind: kind, Step: step}
	}
	if cp.PlanID == p.ID && cp.PhaseDone(phase) {
		t := task(TaskSkip, -1)
		t.Reason = "already " + string(cp.Phase(phase).State)
		return []Task{t}
	}
	switch ph.Status {
	case plan.StatusSkipped, plan.StatusDone:
		t := task(TaskSkip, -1)
		t.Reason = string(ph.Status) + " in the plan: " + ph.Reason
		return []Task{t}
	case plan.StatusBlocked:
		t := task(TaskBlocked, -1)
		t.Reason = "blocked in the plan: " + ph.Reason
		return []Task{t}
	}
	var out []Task
	strictLeft := phase == plan.PhaseStrict && !strictStepsDone(cp, p.ID, ph)
	if (phase == plan.PhaseVerify || strictLeft) && len(pn.CalledBy) > 0 {
		t := task(TaskCheckCallers, -1)
		t.Target = strings.Join(pn.CalledBy, ",")
		out = append(out, t)
	}
	if vp, ok := pn.Phase(plan.PhaseVerify); strictLeft && ok && vp.Status == plan.StatusPending && vp.Gate != nil {
		t := task(TaskVerifyAgain, -1)
		t.Gate = vp.Gate.Name
		out = append(out, t)
	}
	restarts := 0
	waitRollouts := func() {
		if restarts > 0 {
			t := task(TaskWaitRollouts, -1)
			t.Reason = fmt.Sprintf("%d restarted", restarts)
			out = append(out, t)
			restarts = 0
		}
	}
	for i, st := range ph.Steps {
		act, err := actionFor(st.Action)
		rolls := err == nil && act.restarts()
		if !rolls {
			waitRollouts()
		}
		t := task(TaskChange, i)
		t.Action, t.Target = st.Action, st.Target
		switch {
		case st.Status == plan.StatusDone || st.Status == plan.StatusSkipped:
			t.Kind, t.Reason = TaskSkip, string(st.Status)+" in the plan: "+st.Reason
		case st.Status == plan.StatusBlocked:
			t.Kind, t.Reason = TaskBlocked, st.Reason
		case st.Action == plan.ActionReport:
			t.Kind, t.Action, t.Reason = TaskNote, "", st.Reason
		case st.Action == plan.ActionGate:
			t.Kind, t.Action, t.Target, t.Gate = TaskGate, "", "", plan.GateName(st.Target)
		default:
			if r := cp.Record(p.ID, phase, i); r != nil && r.State == StateDone {
				t.Done = true
			}
			if st.Forced {
				t.Reason = "FORCED by --force-strict over: " + st.Reason
			}
			if rolls {
				restarts++
			}
		}
		out = append(out, t)
	}
	waitRollouts()
	if g := phaseGate(phase, ph); g != nil {
		t := task(TaskGate, -1)
		t.Gate, t.Reason = g.Name, g.Description
		out = append(out, t)
	}
	if from, ok := guardFrom(phase, ph); ok {
		t := task(TaskGuard, from)
		t.Reason = "plaintext calls, denials and callers' errors over --bake; undoes this phase's change when they break"
		out = append(out, t)
	}
	return out
}

// guardFrom tells whether the guard watches after phase, and the index of
// the first step whose change it would undo: every STRICT step; in authz,
// the enforced policies after its gate (undoing them leaves the dry-run
// ones).
func guardFrom(phase plan.PhaseName, ph *plan.Phase) (int, bool) {
	from := -1
	switch phase {
	case plan.PhaseStrict:
		from = 0
	case plan.PhaseAuthz:
		for i, st := range ph.Steps {
			if st.Action == plan.ActionGate {
				from = i + 1
			}
		}
	}
	if from < 0 {
		return 0, false
	}
	for _, st := range ph.Steps[from:] {
		if st.Status == plan.StatusPending && st.Action != plan.ActionGate && st.Action != plan.ActionReport {
			return from, true
		}
	}
	return 0, false
}

// phaseGate is the gate after a phase: the plan's, or the check that the
// PeerAuthentication it applied is the one in force.
func phaseGate(phase plan.PhaseName, ph *plan.Phase) *plan.Gate {
	if ph.Gate != nil {
		return ph.Gate
	}
	return effectCheck(phase)
}
