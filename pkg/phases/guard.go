package phases

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// The guard watches a namespace after its STRICT step and after its
// authorization enforcement (the bake window, --bake) for signs that the
// change broke a caller the gates before it could not see (one silent in
// the verify window, a nightly job), and undoes that one phase when it
// did. docs/apply.md, "The guard".

// GuardOff is the guard's verdict with --bake 0: the change was not watched.
const GuardOff Verdict = "off"

// DefaultErrorRatioMargin is how far the callers' error ratio may rise over
// its baseline before the guard undoes the change (--bake-max-error-ratio
// unset): one percentage point.
const DefaultErrorRatioMargin = 0.01

// GuardResult is the guard's verdict on one change.
type GuardResult struct {
	Result  Verdict `json:"result"` // passed, failed, inconclusive, off
	Message string  `json:"message"`
	// Culprits are the callers that broke (or the pods that denied them).
	Culprits []string `json:"culprits,omitempty"`
	// Since is when the change was made, Until the end of the window last
	// judged.
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Baseline is the callers' error ratio before the change (over the
	// plan's minimum verify window up to it), ErrorRatio the one after,
	// and MaxErrorRatio the threshold between them.
	Baseline      *float64 `json:"baselineErrorRatio,omitempty"`
	ErrorRatio    *float64 `json:"errorRatio,omitempty"`
	MaxErrorRatio *float64 `json:"maxErrorRatio,omitempty"`
	// Undone is true when the guard reverted the change.
	Undone bool `json:"undone,omitempty"`
}

// GuardLimits are the thresholds the guard judges by.
type GuardLimits struct {
	// MaxErrorRatio is --bake-max-error-ratio; negative: the baseline
	// plus DefaultErrorRatioMargin.
	MaxErrorRatio float64
	// Enforced is true after authorization enforcement: any denial
	// counts.
	Enforced bool
}

// GuardVerdict judges one window of telemetry after a change. Any
// plaintext call to the namespace fails it (after STRICT it was refused),
// so does any denial after enforcement, and a callers' error ratio over
// the limit. No data at all is inconclusive, never a pass.
func GuardVerdict(ns string, h traffic.Health, baseline float64, lim GuardLimits) GuardResult {
	limit := lim.MaxErrorRatio
	if limit < 0 {
		limit = baseline + DefaultErrorRatioMargin
	}
	g := GuardResult{Baseline: &baseline, MaxErrorRatio: &limit}
	requests, errs := traffic.Total(h.Requests), traffic.Total(h.Errors)
	if requests > 0 {
		r := errs / requests
		g.ErrorRatio = &r
	}
	var why []string
	if len(h.Plaintext) > 0 {
		why = append(why, fmt.Sprintf("%s plaintext calls arrived (refused under STRICT) from %s", count(traffic.Total(h.Plaintext)), callers(h.Plaintext)))
		g.Culprits = append(g.Culprits, names(h.Plaintext, "plaintext")...)
	}
	if lim.Enforced && len(h.Denied) > 0 {
		why = append(why, fmt.Sprintf("%s calls were denied since enforcement, from %s", count(traffic.Total(h.Denied)), callers(h.Denied)))
		g.Culprits = append(g.Culprits, names(h.Denied, "denied")...)
	}
	if g.ErrorRatio != nil && *g.ErrorRatio > limit {
		why = append(why, fmt.Sprintf("the callers' error ratio is %.1f%% (%s of %s requests), over the limit of %.1f%% (baseline %.1f%%)",
			100**g.ErrorRatio, count(errs), count(requests), 100*limit, 100*baseline))
		perCaller := map[string]float64{}
		for _, c := range h.Requests {
			perCaller[c.Caller] = c.Count
		}
		for _, c := range h.Errors {
			if n := perCaller[c.Caller]; n > 0 && c.Count/n > limit {
				g.Culprits = append(g.Culprits, fmt.Sprintf("errors: %s (%s of %s requests failed)", c.Caller, count(c.Count), count(n)))
			}
		}
	}
	switch {
	case len(why) > 0:
		g.Result, g.Message = GateFailed, strings.Join(why, "; ")
	case requests == 0 && h.Inbound == 0:
		g.Result, g.Message = GateUnsettled, "no traffic to "+ns+" at all in the window: zero calls are not a pass; the change stays, unverified"
	default:
		g.Result = GatePassed
		g.Message = fmt.Sprintf("no plaintext call, no denial, error ratio %s", ratio(g.ErrorRatio))
	}
	return g
}

func ratio(r *float64) string {
	if r == nil {
		return "unknown (no caller-side requests)"
	}
	return fmt.Sprintf("%.1f%%", 100**r)
}

func count(n float64) string { return fmt.Sprintf("%.0f", n) }

func callers(cs []traffic.CallerCount) string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = fmt.Sprintf("%s (%s)", c.Caller, count(c.Count))
	}
	return strings.Join(out, ", ")
}

func names(cs []traffic.CallerCount, what string) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = fmt.Sprintf("%s: %s (%s)", what, c.Caller, count(c.Count))
	}
	return out
}

// guardPoll is how often the guard reads the telemetry during a bake.
func guardPoll(bake time.Duration) time.Duration {
	return min(15*time.Second, max(time.Second, bake/5))
}

// guard watches ns after phase's change (its steps from index from on)
// for --bake. It returns true when it stopped the namespace: the change
// was undone (the guard failed), or it stays unverified (no data, or the
// telemetry could not be read). The verdict goes into rec.
func (e *Executor) guard(ctx context.Context, p *plan.Plan, ns string, phase plan.PhaseName, from int, rec *PhaseRecord, out *Outcome) (bool, error) {
	if e.dry() {
		e.emit(Event{Type: EventNote, Namespace: ns, Phase: phase, Message: fmt.Sprintf("%s: the guard would watch the namespace here for %s", phase, e.Options.Bake)})
		return false, nil
	}
	since := e.changedAt(ns, phase, from)
	if e.Options.Bake <= 0 {
		g := GuardResult{Result: GuardOff, Message: "--bake 0: the change was not watched", Since: since, Until: since}
		rec.Guard = &g
		e.guardEvent(ns, phase, g, "%s: guard off (--bake 0): the change is not watched", phase)
		return false, nil
	}
	lim := GuardLimits{MaxErrorRatio: e.Options.BakeMaxErrorRatio, Enforced: phase == plan.PhaseAuthz}
	baseline := 0.0
	if h, _, err := e.Observer.Health(ctx, ns, since.Add(-p.VerifyFloor()), since); err != nil {
		e.warn(ns, "guard: the error ratio before the change could not be read (%v): the baseline is 0", err)
	} else if r, n := traffic.Total(h.Errors), traffic.Total(h.Requests); n > 0 {
		baseline = r / n
	}
	e.note(ns, "%s: guard: watching for %s (plaintext calls, denials, callers' errors over a baseline of %.1f%%)", phase, e.Options.Bake, 100*baseline)
	var g GuardResult
	err := poll(ctx, e.Clock, guardPoll(e.Options.Bake), e.Options.Bake, func(ctx context.Context) (bool, error) {
		until := e.now()
		h, window, err := e.Observer.Health(ctx, ns, since, until)
		if err != nil {
			// Never a pass: without telemetry nothing says the callers
			// are well.
			g = GuardResult{Result: GateUnsettled, Message: fmt.Sprintf("the telemetry could not be read (%v): the change stays, unverified", err)}
			return false, nil
		}
		g = GuardVerdict(ns, h, baseline, lim)
		g.Message += "; window: " + window
		return g.Result == GateFailed, nil
	})
	if err != nil && err != errTimedOut {
		return false, err
	}
	g.Since, g.Until = since, e.now()
	rec.Guard = &g
	switch g.Result {
	case GateFailed:
		what := "STRICT (PeerAuthentication back to what it was before)"
		if phase == plan.PhaseAuthz {
			what = "enforcement (the policies back to dry-run)"
			if e.cps[ns].dataplane() == plan.DataplaneAmbient {
				what = "enforcement (the policies removed: ztunnel has no dry-run)"
			}
		}
		e.guardEvent(ns, phase, g, "%s: GUARD FAILED: %s; undoing %s", phase, g.Message, what)
		if err := e.guardUndo(ctx, ns, phase, from, out); err != nil {
			return true, fmt.Errorf("%s: the guard failed (%s) and undoing %s failed: %w; roll back by hand: %s", ns, g.Message, what, err, rollbackBefore(ns, phase, e.cps[ns].dataplane()))
		}
		g.Undone = true
		rec.Guard = &g
		reason := fmt.Sprintf("guard undid %s: %s", what, g.Message)
		e.emit(Event{Type: EventStop, Namespace: ns, Phase: phase, Details: g.Culprits, Message: fmt.Sprintf("%s: STOP: %s", phase, reason)})
		out.stop(Stop{Namespace: ns, Phase: phase, Reason: reason, Result: ResultUndone, Guard: &g})
		return true, e.finishPhase(ctx, ns, rec, StateStopped, reason, nil)
	case GateUnsettled:
		reason := "unverified after change: " + g.Message
		e.emit(Event{Type: EventStop, Namespace: ns, Phase: phase, Message: fmt.Sprintf("%s: STOP: %s", phase, reason)})
		out.stop(Stop{Namespace: ns, Phase: phase, Reason: reason, Result: ResultUnverified, Guard: &g})
		return true, e.finishPhase(ctx, ns, rec, StateUnverified, reason, nil)
	}
	e.guardEvent(ns, phase, g, "%s: guard passed after %s: %s", phase, e.Options.Bake, g.Message)
	return false, nil
}

func (e *Executor) guardEvent(ns string, phase plan.PhaseName, g GuardResult, format string, args ...any) {
	e.emit(Event{Type: EventGuard, Namespace: ns, Phase: phase, Guard: &g, Details: g.Culprits, Message: fmt.Sprintf(format, args...)})
}

// changedAt is when phase's change in ns was made: the latest record of
// its steps from index from on (the run just made them, or a run before
// this resumed one did).
func (e *Executor) changedAt(ns string, phase plan.PhaseName, from int) time.Time {
	var at time.Time
	cp := e.cps[ns]
	for _, r := range cp.Records {
		if r.PlanID == cp.PlanID && r.Phase == phase && r.Step >= from && r.DoneAt != nil && r.DoneAt.After(at) {
			at = *r.DoneAt
		}
	}
	if at.IsZero() {
		return e.now()
	}
	return at
}

// guardUndo reverts phase's changes in ns from step index from on, newest
// first, with the records rollback uses: each is dropped from the
// checkpoint once undone, so a crash halfway leaves the rest for rollback
// or the next apply.
func (e *Executor) guardUndo(ctx context.Context, ns string, phase plan.PhaseName, from int, out *Outcome) error {
	cp := e.cps[ns]
	var undo []Record
	for i := len(cp.Records) - 1; i >= 0; i-- {
		if r := cp.Records[i]; r.PlanID == cp.PlanID && r.Phase == phase && r.Step >= from {
			undo = append(undo, r)
		}
	}
	for _, r := range undo {
		if _, err := e.undo(ctx, ns, r); err != nil {
			return err
		}
		out.changed()
		cp.Records = dropRecord(cp.Records, r.Seq)
		if err := e.save(ctx, ns); err != nil {
			return err
		}
	}
	return nil
}
