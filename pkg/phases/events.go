package phases

import (
	"strings"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// EventType says what an Event reports.
type EventType string

// The events a run reports, in the order they typically come.
const (
	EventLock         EventType = "lock"          // a lock taken over from a dead run
	EventQueue        EventType = "queue"         // a task of the run's queue (dry runs print them)
	EventPhaseStarted EventType = "phase-started" // a phase of a namespace starts
	EventStepDone     EventType = "step-done"     // a change was made (or, in a dry run, would be)
	EventStepSkipped  EventType = "step-skipped"  // a step needs no change: done in the plan or by an earlier run
	EventRollout      EventType = "rollout"       // a restarted workload's rollout moved
	EventGate         EventType = "gate"          // a gate was judged (Gate holds the verdict)
	EventPhaseDone    EventType = "phase-done"    // a phase finished
	EventPhaseSkipped EventType = "phase-skipped" // a phase needs nothing: skipped or done in the plan, or already done
	EventGuard        EventType = "guard"         // the guard judged a change after its bake window (Guard holds the verdict)
	EventStop         EventType = "stop"          // the namespace stops here: a gate did not pass, a step is blocked, the guard undid a change
	EventHeldBack     EventType = "held-back"     // --keep-going: a namespace does not start, as one it depends on stopped
	EventUndone       EventType = "undone"        // rollback reverted a change
	EventRolledBack   EventType = "rolled-back"   // rollback finished a namespace
	EventWarning      EventType = "warning"       // something the user must know: a forced step, a lifted floor
	EventNote         EventType = "note"          // anything else worth a line
)

// Event is one thing a run did or saw. pkg/cli renders it as the line
// people read (Lines) or as one JSON object per line (apply -o json); tests
// assert on its fields.
type Event struct {
	Type      EventType      `json:"type"`
	Time      time.Time      `json:"time"`
	Namespace string         `json:"namespace,omitempty"`
	Phase     plan.PhaseName `json:"phase,omitempty"`
	Action    plan.Action    `json:"action,omitempty"`
	Target    string         `json:"target,omitempty"`
	Gate      *GateResult    `json:"gate,omitempty"`
	Guard     *GuardResult   `json:"guard,omitempty"`
	// Task is the queued task a dry run prints (EventQueue).
	Task *Task `json:"task,omitempty"`
	// Message is the line as people read it, after "namespace: ".
	Message string `json:"message"`
	// Details are lines under it (a stopped gate's culprits).
	Details []string `json:"details,omitempty"`
}

// Lines is the event as text: "namespace: message", then its details.
func (ev Event) Lines() []string {
	prefix := ""
	if ev.Namespace != "" {
		prefix = ev.Namespace + ": "
	}
	out := []string{prefix + ev.Message}
	for _, d := range ev.Details {
		out = append(out, prefix+string(ev.Phase)+":   "+d)
	}
	return out
}

func (ev Event) String() string { return strings.Join(ev.Lines(), "\n") }

// emit reports ev to the run's sink, one at a time (namespaces run
// concurrently).
func (e *Executor) emit(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = e.now()
	}
	e.outMu.Lock()
	defer e.outMu.Unlock()
	if e.Events != nil {
		e.Events(ev)
	}
}

func (e *Executor) note(ns, format string, args ...any) {
	e.emit(Event{Type: EventNote, Namespace: ns, Message: sprintf(format, args...)})
}

func (e *Executor) warn(ns, format string, args ...any) {
	e.emit(Event{Type: EventWarning, Namespace: ns, Message: "warning: " + sprintf(format, args...)})
}
