package phases

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/kubectl/pkg/polymorphichelpers"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// Observer reads what the gates and the stale check judge.
type Observer interface {
	// Audit re-reads the namespaces and audits them, with the traffic
	// since `since` (the zero time: without traffic).
	Audit(ctx context.Context, namespaces []string, since time.Time) (*cluster.Snapshot, *audit.Report, error)
	// ShadowDecisions returns the dry-run authorization decisions in ns
	// since `since`, per pod and protocol; window describes it.
	ShadowDecisions(ctx context.Context, ns string, since time.Time) (counts []traffic.ShadowCount, window string, err error)
}

// Dry-run modes (--dry-run).
const (
	DryRunNone   = "none"
	DryRunClient = "client"
	DryRunServer = "server"
)

// Options are what an apply run does.
type Options struct {
	// Namespaces restricts the run (empty: every namespace of the plan).
	Namespaces []string
	// Phase runs only that phase; Through runs every phase up to it.
	Phase, Through string
	DryRun         string
	// Timeout bounds each rollout and each polled gate.
	Timeout time.Duration
	// Concurrency bounds the namespaces (and, within one, the rollouts)
	// handled at once.
	Concurrency int
	// LockWait is how long to wait for another run's lock.
	LockWait      time.Duration
	LeaseDuration time.Duration
	// VerifyWindow overrides the window the traffic gates read (zero:
	// since the namespace and its callers were meshed, at most the plan's
	// traffic window).
	VerifyWindow time.Duration
	// AllowShortWindow lets the traffic gates judge a window under the
	// plan's minVerifyWindow (--allow-short-verify-window); each use is
	// recorded in the checkpoint.
	AllowShortWindow bool
	// BreakDependents lets rollback remove a namespace's sidecars while
	// namespaces it calls are STRICT (--break-dependents).
	BreakDependents bool
	// AcceptRestarts lets rollback pass over a workload restarted again
	// since the plan restarted it (--accept-restarts).
	AcceptRestarts bool
	// Identity names this run in the lock and the checkpoint.
	Identity string
}

// Executor applies plans and rolls them back.
type Executor struct {
	Cluster  *Cluster
	Observer Observer
	Out      io.Writer
	Now      func() time.Time
	Options  Options

	outMu sync.Mutex
	cpMu  sync.Mutex
	cps   map[string]*Checkpoint
	// peers is what each namespace's checkpoint said when the current
	// wave-phase started: namespaces running concurrently read each
	// other's progress from it, never from a checkpoint being written.
	peers map[string]peer
	// verified are the namespaces whose verify gate passed in this run.
	verified map[string]bool
	// inRun are the namespaces this run holds the locks of.
	inRun map[string]bool
}

// peer is the progress of a namespace others depend on.
type peer struct {
	injected bool
	meshedAt *time.Time
}

// snapshotPeers records every loaded checkpoint's progress (between
// wave-phases, when no namespace is running).
func (e *Executor) snapshotPeers() {
	e.peers = map[string]peer{}
	for ns, cp := range e.cps {
		pr := peer{injected: cp.PhaseDone(plan.PhaseInject)}
		if cp.MeshedAt != nil {
			t := *cp.MeshedAt
			pr.meshedAt = &t
		}
		e.peers[ns] = pr
	}
}

// Stop is where a run stopped short: a gate did not pass or a step is
// blocked. The checkpoint records it; re-running apply resumes there.
type Stop struct {
	Namespace string      `json:"namespace"`
	Phase     string      `json:"phase"`
	Reason    string      `json:"reason"`
	Gate      *GateResult `json:"gate,omitempty"`
}

// Outcome is what a run did.
type Outcome struct {
	Changes int    `json:"changes"`
	Stops   []Stop `json:"stops,omitempty"`
	// Leftovers are what a rollback could not restore by itself, each with
	// the command that does (pods that keep a sidecar).
	Leftovers []string `json:"leftovers,omitempty"`
	mu        sync.Mutex
}

func (o *Outcome) stop(s Stop) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.Stops = append(o.Stops, s)
}

func (o *Outcome) changed() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.Changes++
}

// StaleError lists how the cluster moved since the plan was made.
type StaleError struct {
	PlanID  string
	Changes []string
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("plan %s is stale: the cluster changed since it was made:\n  %s\nmake a new plan (kubectl meshmigrate plan) and review it", e.PlanID, strings.Join(e.Changes, "\n  "))
}

// Preview is what Prepare found: the namespaces to run, in order, and
// those a run of this plan already started.
type Preview struct {
	Namespaces []string
	Phases     []string
	Resuming   []string
	// Pending counts the changes left to make in the selection.
	Pending int
}

func (e *Executor) now() time.Time { return e.Now().UTC() }

func (e *Executor) logf(ns, format string, args ...any) {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	fmt.Fprintf(e.Out, "%s: %s\n", ns, fmt.Sprintf(format, args...))
}

// selection returns the namespaces (in wave order) and phases to run.
func (e *Executor) selection(p *plan.Plan) ([]string, []string, error) {
	phases := plan.Phases
	switch o := e.Options; {
	case o.Phase != "" && o.Through != "":
		return nil, nil, errors.New("--phase and --through exclude each other")
	case o.Phase != "":
		i := phaseIndex(o.Phase)
		if i == len(plan.Phases) {
			return nil, nil, fmt.Errorf("--phase %q: want one of %s", o.Phase, strings.Join(plan.Phases, ", "))
		}
		phases = plan.Phases[i : i+1]
	case o.Through != "":
		i := phaseIndex(o.Through)
		if i == len(plan.Phases) {
			return nil, nil, fmt.Errorf("--through %q: want one of %s", o.Through, strings.Join(plan.Phases, ", "))
		}
		phases = plan.Phases[:i+1]
	}
	want := map[string]bool{}
	for _, ns := range e.Options.Namespaces {
		if _, ok := p.Namespace(ns); !ok {
			var names []string
			for _, n := range p.Namespaces {
				names = append(names, n.Name)
			}
			return nil, nil, fmt.Errorf("namespace %s is not in plan %s (it holds %s)", ns, p.ID, strings.Join(names, ", "))
		}
		want[ns] = true
	}
	var out []string
	for _, w := range p.Waves {
		for _, ns := range w.Namespaces {
			if len(want) == 0 || want[ns] {
				out = append(out, ns)
			}
		}
	}
	return out, phases, nil
}

// Prepare checks, before anything changes, that the plan is for this
// cluster and still matches it, and loads the checkpoints. A namespace this
// plan already changed is judged by its checkpoint instead: its state moved
// because of the plan itself.
func (e *Executor) Prepare(ctx context.Context, p *plan.Plan) (*Preview, error) {
	names, phases, err := e.selection(p)
	if err != nil {
		return nil, err
	}
	if w, floor := e.Options.VerifyWindow, p.VerifyFloor(); w > 0 && w < floor && !e.Options.AllowShortWindow {
		return nil, fmt.Errorf("--verify-window %s is under plan %s's minimum of %s (options.minVerifyWindow): over a shorter window one request can pass a gate; use a longer window, re-plan with --min-verify-window, or pass --allow-short-verify-window (recorded in the checkpoint)", w, p.ID, floor)
	}
	snap, report, err := e.Observer.Audit(ctx, names, time.Time{})
	if err != nil {
		return nil, err
	}
	if err := p.ForCluster(snap.ClusterUID, snap.Server); err != nil {
		return nil, err
	}
	pv := &Preview{Namespaces: names, Phases: phases}
	e.cps = map[string]*Checkpoint{}
	for _, ns := range names {
		cp, err := e.Cluster.LoadCheckpoint(ctx, ns)
		if err != nil {
			return nil, err
		}
		e.cps[ns] = cp
		if cp.Started(p.ID) {
			pv.Resuming = append(pv.Resuming, ns)
		}
		pn, _ := p.Namespace(ns)
		for _, ph := range pn.Phases {
			if !slices.Contains(phases, ph.Name) {
				continue
			}
			for i, st := range ph.Steps {
				if r := cp.Record(p.ID, ph.Name, i); r != nil && r.State == StateDone {
					continue
				}
				if st.Status == plan.StatusPending && st.Action != plan.ActionReport && st.Action != plan.ActionGate {
					pv.Pending++
				}
			}
		}
	}
	// The callers of the selected namespaces, when left out of the run,
	// are judged by their checkpoints (read only).
	for _, ns := range names {
		pn, _ := p.Namespace(ns)
		for _, caller := range pn.CalledBy {
			if _, ok := e.cps[caller]; ok {
				continue
			}
			cp, err := e.Cluster.LoadCheckpoint(ctx, caller)
			if err != nil {
				return nil, err
			}
			e.cps[caller] = cp
		}
	}
	if changes := e.staleness(p, snap, report, names); len(changes) > 0 {
		return nil, &StaleError{PlanID: p.ID, Changes: changes}
	}
	return pv, nil
}

// staleness lists how the selected namespaces moved away from plan p. A
// namespace whose checkpoint follows a newer plan is stale for p outright.
// One this plan already changed is checked for every change the plan did
// not make itself (its checkpoint's records say which it made).
func (e *Executor) staleness(p *plan.Plan, snap *cluster.Snapshot, report *audit.Report, names []string) []string {
	var out []string
	made := map[string]plan.Made{}
	for _, ns := range names {
		cp := e.cps[ns]
		if why := cp.NewerPlan(p); why != "" {
			out = append(out, "namespace "+ns+": "+why)
		}
		if cp.Started(p.ID) {
			made[ns] = cp.Made(p.ID)
		}
	}
	return append(out, p.ChangesSince(snap, report, names, made)...)
}

// Apply runs the selected phases, wave by wave and, within a wave, phase
// by phase across its namespaces, so namespaces that call each other in a
// cycle are all meshed before any of them is verified. It stops after the
// first wave-phase where a gate did not pass or a step is blocked.
func (e *Executor) Apply(ctx context.Context, p *plan.Plan, pv *Preview) (*Outcome, error) {
	out := &Outcome{}
	e.inRun = map[string]bool{}
	for _, ns := range pv.Namespaces {
		e.inRun[ns] = true
	}
	if !e.dry() {
		runCtx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		locks, err := e.Cluster.AcquireAll(runCtx, pv.Namespaces, e.Options.Identity, e.Options.LeaseDuration, e.Options.LockWait, e.Now, func(err error) { cancel(err) })
		if err != nil {
			return nil, err
		}
		for _, lk := range locks.Held() {
			if lk.TookOver != "" {
				e.logf(lk.ns, "took over the expired lock of %q (that run stopped without releasing it)", lk.TookOver)
			}
		}
		defer func() {
			if err := locks.Release(context.WithoutCancel(ctx)); err != nil {
				e.logf(strings.Join(pv.Namespaces, ","), "warning: %v", err)
			}
		}()
		ctx = runCtx
		if err := e.reload(ctx, p, pv); err != nil {
			return nil, err
		}
	}
	byWave := map[int][]string{}
	var waves []int
	for _, ns := range pv.Namespaces {
		pn, _ := p.Namespace(ns)
		if byWave[pn.Wave] == nil {
			waves = append(waves, pn.Wave)
		}
		byWave[pn.Wave] = append(byWave[pn.Wave], ns)
	}
	sort.Ints(waves)
	for _, w := range waves {
		for _, phase := range pv.Phases {
			e.snapshotPeers()
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(max(1, e.Options.Concurrency))
			for _, ns := range byWave[w] {
				g.Go(func() error { return e.runPhase(gctx, p, ns, phase, out) })
			}
			if err := g.Wait(); err != nil {
				if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
					err = fmt.Errorf("%w (%v)", err, cause)
				}
				return out, err
			}
			if len(out.Stops) > 0 {
				sort.Slice(out.Stops, func(i, j int) bool { return out.Stops[i].Namespace < out.Stops[j].Namespace })
				return out, nil
			}
		}
	}
	return out, nil
}

// reload reads the checkpoints again once the locks are held, and checks
// again that the namespaces this plan has not started still match it:
// while this run waited for a lock (or for its confirmation) another run
// may have changed them.
func (e *Executor) reload(ctx context.Context, p *plan.Plan, pv *Preview) error {
	for _, ns := range pv.Namespaces {
		cp, err := e.Cluster.LoadCheckpoint(ctx, ns)
		if err != nil {
			return err
		}
		e.cps[ns] = cp
	}
	snap, report, err := e.Observer.Audit(ctx, pv.Namespaces, time.Time{})
	if err != nil {
		return err
	}
	if changes := e.staleness(p, snap, report, pv.Namespaces); len(changes) > 0 {
		return &StaleError{PlanID: p.ID, Changes: changes}
	}
	for _, ns := range pv.Namespaces {
		e.cps[ns].ForPlan(p)
	}
	return nil
}

// save writes ns's checkpoint (serialized: one writer per namespace).
func (e *Executor) save(ctx context.Context, ns string) error {
	if e.dry() {
		return nil
	}
	e.cpMu.Lock()
	cp := e.cps[ns]
	e.cpMu.Unlock()
	// A cancelled run (Ctrl-C) still records what it did.
	if err := e.Cluster.SaveCheckpoint(context.WithoutCancel(ctx), cp, e.Options.Identity, e.now()); err != nil {
		return err
	}
	if w := cp.sizeWarning(); w != "" {
		e.logf(ns, "warning: %s", w)
	}
	return nil
}

func (e *Executor) dry() bool { return e.Options.DryRun != "" && e.Options.DryRun != DryRunNone }

// runPhase runs one phase of one namespace: its steps, then its gate.
func (e *Executor) runPhase(ctx context.Context, p *plan.Plan, ns, phase string, out *Outcome) error {
	pn, _ := p.Namespace(ns)
	ph, ok := pn.Phase(phase)
	if !ok {
		return nil
	}
	cp := e.cps[ns]
	rec := cp.Phase(phase)
	if !e.dry() && (rec.State == StateDone || rec.State == StateSkipped) {
		e.logf(ns, "%s: already %s (%s)", phase, rec.State, stamp(rec.FinishedAt))
		return nil
	}
	// The phases before this one must be done: --phase cannot skip ahead.
	if !e.dry() {
		for _, prev := range plan.Phases[:phaseIndex(phase)] {
			if !cp.PhaseDone(prev) {
				out.stop(Stop{Namespace: ns, Phase: phase, Reason: fmt.Sprintf("phase %s is not done yet: run it first (apply --through %s)", prev, prev)})
				return nil
			}
		}
	}
	switch ph.Status {
	case plan.StatusSkipped, plan.StatusDone:
		e.logf(ns, "%s: %s in the plan: %s", phase, ph.Status, ph.Reason)
		return e.finishPhase(ctx, ns, rec, StateSkipped, "the plan has it "+ph.Status+": "+ph.Reason, nil)
	case plan.StatusBlocked:
		reason := "blocked in the plan: " + ph.Reason
		return e.stopPhase(ctx, ns, rec, reason, out)
	}
	if phase == plan.PhaseVerify || phase == plan.PhaseStrict && !strictStepsDone(cp, p.ID, ph) {
		reason, err := e.callerStop(ctx, p, pn)
		if err != nil {
			return err
		}
		if reason != "" {
			return e.stopPhase(ctx, ns, rec, reason, out)
		}
	}
	if phase == plan.PhaseStrict && !strictStepsDone(cp, p.ID, ph) {
		g, err := e.verifyAgain(ctx, p, pn)
		if err != nil {
			return err
		}
		if g != nil && g.Result != GatePassed {
			return e.gateStop(ctx, ns, rec, *g, out)
		}
	}
	if !e.dry() {
		if rec.StartedAt == nil {
			t := e.now()
			rec.StartedAt = &t
		}
		rec.State, rec.Message = StateRunning, ""
		if err := e.save(ctx, ns); err != nil {
			return err
		}
	}
	e.logf(ns, "%s: start", phase)
	var rollouts []*rollout
	for i, st := range ph.Steps {
		if st.Action != plan.ActionRestartWorkload && len(rollouts) > 0 {
			if err := e.rolledOut(ctx, ns, rollouts); err != nil {
				return e.stopOnTimeout(ctx, ns, rec, err, out)
			}
			rollouts = nil
		}
		switch {
		case st.Status == plan.StatusDone || st.Status == plan.StatusSkipped:
			e.logf(ns, "%s: %s %s: %s (%s)", phase, st.Action, st.Target, st.Status, st.Reason)
			continue
		case st.Status == plan.StatusBlocked:
			reason := fmt.Sprintf("%s %s is blocked: %s", st.Action, st.Target, st.Reason)
			return e.stopPhase(ctx, ns, rec, reason, out)
		case st.Action == plan.ActionReport:
			e.logf(ns, "%s: note: %s: %s", phase, st.Target, st.Reason)
			continue
		case st.Action == plan.ActionGate:
			g, err := e.shadowGate(ctx, p, ns, phase, i)
			if err != nil {
				return err
			}
			if g != nil && g.Result != GatePassed {
				return e.gateStop(ctx, ns, rec, *g, out)
			}
			continue
		}
		if st.Forced {
			e.logf(ns, "%s: FORCED by --force-strict over: %s", phase, st.Reason)
		}
		r, err := e.runStep(ctx, p, ns, phase, i, st, out)
		if reason, ok := refused(err); ok {
			return e.stopPhase(ctx, ns, rec, reason, out)
		}
		if err != nil {
			return fmt.Errorf("%s %s %s: %w", ns, phase, st.Target, err)
		}
		if r != nil {
			rollouts = append(rollouts, r)
		}
	}
	if len(rollouts) > 0 {
		if err := e.rolledOut(ctx, ns, rollouts); err != nil {
			return e.stopOnTimeout(ctx, ns, rec, err, out)
		}
	}
	check := ph.Gate
	if check == nil {
		check = effectCheck(phase)
	}
	if e.dry() {
		if check != nil {
			e.logf(ns, "%s: gate %s would be checked here (%s)", phase, check.Name, check.Description)
		}
		return nil
	}
	if stopped, err := e.stopIfReverted(ctx, p, ns, rec, out); stopped || err != nil {
		return err
	}
	var gate *GateResult
	if check != nil {
		g, err := e.phaseGate(ctx, p, pn, phase, check, ph.Steps)
		if err != nil {
			return err
		}
		gate = &g
		if g.Result != GatePassed {
			return e.gateStop(ctx, ns, rec, g, out)
		}
		e.logf(ns, "%s: gate %s passed: %s", phase, g.Name, g.Message)
		if phase == plan.PhaseVerify {
			e.markVerified(ns)
		}
	}
	if stopped, err := e.stopIfReverted(ctx, p, ns, rec, out); stopped || err != nil {
		return err
	}
	e.logf(ns, "%s: done", phase)
	return e.finishPhase(ctx, ns, rec, StateDone, "", gate)
}

// markVerified notes that ns passed its verify gate in this run.
func (e *Executor) markVerified(ns string) {
	e.cpMu.Lock()
	defer e.cpMu.Unlock()
	if e.verified == nil {
		e.verified = map[string]bool{}
	}
	e.verified[ns] = true
}

func (e *Executor) verifiedNow(ns string) bool {
	e.cpMu.Lock()
	defer e.cpMu.Unlock()
	return e.verified[ns]
}

// verifyAgain judges the verify gate again before STRICT when it did not
// pass in this run: a pass from an earlier run (before a rollback to
// verify, or days before a resumed strict phase) says nothing about the
// traffic now.
func (e *Executor) verifyAgain(ctx context.Context, p *plan.Plan, pn *plan.Namespace) (*GateResult, error) {
	vp, ok := pn.Phase(plan.PhaseVerify)
	if !ok || vp.Status != plan.StatusPending || vp.Gate == nil || e.dry() || e.verifiedNow(pn.Name) {
		return nil, nil
	}
	g, err := e.phaseGate(ctx, p, pn, plan.PhaseVerify, vp.Gate, nil)
	if err != nil {
		return nil, err
	}
	if g.Result == GatePassed {
		e.logf(pn.Name, "strict: gate %s passed again: %s", g.Name, g.Message)
		e.markVerified(pn.Name)
	}
	return &g, nil
}

// strictStepsDone is true when a run of this plan already made the
// strict phase's changes (its gate is all that is left).
func strictStepsDone(cp *Checkpoint, planID string, ph *plan.Phase) bool {
	made := false
	for i, st := range ph.Steps {
		if st.Status != plan.StatusPending {
			continue
		}
		if r := cp.Record(planID, ph.Name, i); r == nil || r.State != StateDone {
			return false
		}
		made = true
	}
	return made
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func (e *Executor) finishPhase(ctx context.Context, ns string, rec *PhaseRecord, state, msg string, gate *GateResult) error {
	if e.dry() {
		return nil
	}
	rec.State, rec.Message = state, msg
	if gate != nil {
		rec.Gate = gate
	}
	if state == StateDone || state == StateSkipped {
		t := e.now()
		rec.FinishedAt = &t
	}
	return e.save(ctx, ns)
}

func (e *Executor) gateStop(ctx context.Context, ns string, rec *PhaseRecord, g GateResult, out *Outcome) error {
	e.logf(ns, "%s: STOP: gate %s %s: %s", rec.Name, g.Name, g.Result, g.Message)
	for _, c := range g.Culprits {
		e.logf(ns, "%s:   %s", rec.Name, c)
	}
	out.stop(Stop{Namespace: ns, Phase: rec.Name, Reason: "gate " + g.Name + " " + g.Result + ": " + g.Message, Gate: &g})
	return e.finishPhase(ctx, ns, rec, StateStopped, "gate "+g.Name+" "+g.Result, &g)
}

type timeoutError struct{ msg string }

func (t *timeoutError) Error() string { return t.msg }

func (e *Executor) stopOnTimeout(ctx context.Context, ns string, rec *PhaseRecord, err error, out *Outcome) error {
	var te *timeoutError
	if !errors.As(err, &te) {
		return err
	}
	return e.stopPhase(ctx, ns, rec, te.msg, out)
}

// stopPhase ends the run's work on ns at this phase: said, recorded in
// the outcome (exit 2) and in the checkpoint, for a later run to resume.
func (e *Executor) stopPhase(ctx context.Context, ns string, rec *PhaseRecord, reason string, out *Outcome) error {
	e.logf(ns, "%s: STOP: %s", rec.Name, reason)
	out.stop(Stop{Namespace: ns, Phase: rec.Name, Reason: reason})
	return e.finishPhase(ctx, ns, rec, StateStopped, reason, nil)
}

// callerStop re-reads, before verify and before STRICT, every namespace
// this one waits for (the plan's calledBy). Its checkpoint: a concurrent
// rollback may have undone its inject phase since this run loaded it (the
// namespaces of this run are locked, so their progress is read from the
// last snapshot). And its pods: each caller workload the plan expects to
// clear must carry a sidecar now. It returns why the phase must not start,
// or "" when every caller is meshed.
func (e *Executor) callerStop(ctx context.Context, p *plan.Plan, pn *plan.Namespace) (string, error) {
	if e.dry() || len(pn.CalledBy) == 0 {
		return "", nil
	}
	var waiting []string
	for _, caller := range pn.CalledBy {
		if cn, ok := p.Namespace(caller); ok {
			if ph, ok := cn.Phase(plan.PhaseInject); ok && ph.Status == plan.StatusDone {
				continue // meshed before the plan: its pods are checked below
			}
		}
		injected := e.peers[caller].injected
		if !e.inRun[caller] {
			cp, err := e.Cluster.LoadCheckpoint(ctx, caller)
			if err != nil {
				return "", fmt.Errorf("check the callers of %s: %w", pn.Name, err)
			}
			injected = cp.PhaseDone(plan.PhaseInject)
		}
		if !injected {
			waiting = append(waiting, caller)
		}
	}
	if len(waiting) > 0 {
		return "wave order: " + strings.Join(waiting, ", ") + " call this namespace in plaintext and are not meshed (their inject phase is not done, or was rolled back since): apply their inject phase first", nil
	}
	_, r, err := e.Observer.Audit(ctx, pn.CalledBy, time.Time{})
	if err != nil {
		return "", fmt.Errorf("check the callers of %s: %w", pn.Name, err)
	}
	expected := map[string]map[string]bool{}
	if vp, ok := pn.Phase(plan.PhaseVerify); ok && vp.Gate != nil {
		for _, c := range vp.Gate.Callers {
			ns, w, _ := strings.Cut(c, "/")
			if expected[ns] == nil {
				expected[ns] = map[string]bool{}
			}
			expected[ns][w] = true
		}
	}
	var bare []string
	for _, caller := range pn.CalledBy {
		for _, pod := range namespaceOf(r, caller).Pods.Items {
			_, w, _ := strings.Cut(pod.Workload, "/")
			switch {
			case pod.Sidecar != "":
				continue
			case expected[caller] != nil && !expected[caller][w]:
				continue // not a caller the plan counts on
			case expected[caller] == nil && pod.State != audit.PodNeedsRestart && pod.State != audit.PodNotSelected:
				continue // a plan without named callers: judge what should be meshed
			}
			bare = append(bare, fmt.Sprintf("%s/%s (%s)", caller, pod.Name, pod.Workload))
		}
	}
	if len(bare) > 0 {
		sort.Strings(bare)
		return fmt.Sprintf("callers this namespace relies on are not meshed now (rolled back, or scaled up without injection, since): %s without a sidecar: %s; STRICT would refuse their calls: mesh them again (apply their inject phase) first",
			plural(len(bare), "pod", "pods"), strings.Join(bare, ", ")), nil
	}
	return "", nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// rollout is a restarted workload to wait for.
type rollout struct {
	ns, target string
	// what names the rollout's cause in progress lines.
	what string
	gvr  schema.GroupVersionResource
	// seq is the restart's checkpoint record.
	seq int
}

// runStep makes one change, write-ahead: the record of what the object
// looked like before is saved first, the change made, the record marked
// done. A record left "started" by a crash is completed by the next run,
// which makes the same change again (all of them are idempotent) and keeps
// the first prior state.
func (e *Executor) runStep(ctx context.Context, p *plan.Plan, ns, phase string, idx int, st plan.Step, out *Outcome) (*rollout, error) {
	cp := e.cps[ns]
	rec := cp.Record(p.ID, phase, idx)
	if rec != nil && (rec.Action != st.Action || rec.Target != st.Target) {
		// The checkpoint is untrusted input: a record that claims this
		// step must be this step, or it could make apply skip one (an
		// ALLOW before the allow-nothing).
		return nil, fmt.Errorf("the checkpoint of %s holds record %d (%s %s) for step %d of phase %s, which is %s %s in plan %s: it was edited, or belongs to another plan with this id; inspect it (kubectl get configmap %s -n %s -o yaml)",
			ns, rec.Seq, rec.Action, rec.Target, idx, phase, st.Action, st.Target, p.ID, CheckpointName, ns)
	}
	if rec != nil && rec.State == StateDone {
		e.logf(ns, "%s: %s %s: done by an earlier run", phase, st.Action, st.Target)
		return nil, nil
	}
	kind, name, _ := strings.Cut(st.Target, "/")
	if rec == nil {
		undo, err := e.capture(ctx, p, ns, st, kind, name)
		if err != nil {
			return nil, err
		}
		if !e.dry() {
			cp.Records = append(cp.Records, Record{Seq: cp.next(), PlanID: p.ID, Phase: phase, Step: idx, Action: st.Action,
				Target: st.Target, State: StateStarted, StartedAt: e.now(), Undo: undo})
			rec = &cp.Records[len(cp.Records)-1]
			if err := e.save(ctx, ns); err != nil {
				return nil, err
			}
		} else {
			rec = &Record{Undo: undo}
		}
	}
	var r *rollout
	switch st.Action {
	case plan.ActionLabelNamespace:
		if err := e.labelNamespace(ctx, ns, st); err != nil {
			return nil, err
		}
		e.logf(ns, "%s: labelled %s%s", phase, labelList(st.Labels, st.Remove), e.dryNote())
	case plan.ActionRestartWorkload:
		gvr, err := resourceFor("apps/v1", kind)
		if err != nil {
			return nil, err
		}
		// An apply of the annotation alone would try to create a deleted
		// workload: say what happened instead.
		if cur, err := e.Cluster.get(ctx, gvr, ns, name); err != nil {
			return nil, err
		} else if cur == nil {
			return nil, fmt.Errorf("%s no longer exists (deleted since the plan was made): make a new plan", st.Target)
		}
		obj := map[string]any{"apiVersion": "apps/v1", "kind": kind, "metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationRestartedAt: rec.Undo.Set}}}}}
		if _, err := e.Cluster.apply(ctx, gvr, ns, obj); err != nil {
			return nil, fmt.Errorf("restart %s: %w", st.Target, err)
		}
		e.logf(ns, "%s: restarted %s%s", phase, st.Target, e.dryNote())
		if !e.dry() {
			r = &rollout{ns: ns, target: st.Target, what: phase, gvr: gvr, seq: rec.Seq}
		}
	case plan.ActionApply:
		obj := p.Manifest(st)
		gvr, err := resourceFor(fmt.Sprint(obj["apiVersion"]), kind)
		if err != nil {
			return nil, err
		}
		written, err := e.Cluster.apply(ctx, gvr, ns, obj)
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", st.Target, err)
		}
		rec.Undo.UID, rec.Undo.Digest = string(written.GetUID()), Digest(written.Object)
		e.logf(ns, "%s: applied %s%s", phase, st.Target, e.dryNote())
	default:
		return nil, fmt.Errorf("unknown step action %q", st.Action)
	}
	out.changed()
	if st.Action == plan.ActionLabelNamespace {
		t := e.now()
		cp.MeshedAt = &t
	}
	if r != nil || e.dry() {
		return r, nil // a restart is done once its rollout is
	}
	return nil, e.markDone(ctx, ns, rec.Seq)
}

func (e *Executor) dryNote() string {
	if e.dry() {
		return " (dry run: " + e.Options.DryRun + ")"
	}
	return ""
}

// markDone marks record seq done. Records are found by their sequence
// number, never held by pointer: appending a record may move the others.
func (e *Executor) markDone(ctx context.Context, ns string, seq int) error {
	cp := e.cps[ns]
	for i := range cp.Records {
		if cp.Records[i].Seq == seq {
			t := e.now()
			cp.Records[i].State, cp.Records[i].DoneAt = StateDone, &t
			return e.save(ctx, ns)
		}
	}
	return fmt.Errorf("checkpoint of %s lost record %d", ns, seq)
}

// capture reads what the step is about to change.
func (e *Executor) capture(ctx context.Context, p *plan.Plan, ns string, st plan.Step, kind, name string) (Undo, error) {
	switch st.Action {
	case plan.ActionLabelNamespace:
		obj, err := e.Cluster.get(ctx, kinds["Namespace"], "", ns)
		if err != nil || obj == nil {
			return Undo{}, fmt.Errorf("read namespace %s: %w", ns, orNotFound(err, "namespace "+ns))
		}
		cur := obj.GetLabels()
		u := Undo{Existed: true, Labels: map[string]*string{}, After: map[string]*string{}}
		for _, k := range append(slices.Sorted(maps.Keys(st.Labels)), st.Remove...) {
			u.Labels[k], u.After[k] = nil, nil
			if v, ok := cur[k]; ok {
				u.Labels[k] = &v
			}
			if v, ok := st.Labels[k]; ok {
				u.After[k] = &v
			}
		}
		return u, nil
	case plan.ActionRestartWorkload:
		gvr, err := resourceFor("apps/v1", kind)
		if err != nil {
			return Undo{}, err
		}
		obj, err := e.Cluster.get(ctx, gvr, ns, name)
		if err != nil || obj == nil {
			return Undo{}, fmt.Errorf("read %s: %w", st.Target, orNotFound(err, st.Target))
		}
		u := Undo{Existed: true, APIVersion: "apps/v1", Set: e.now().Format(time.RFC3339)}
		if v, ok, _ := unstructured.NestedString(obj.Object, "spec", "template", "metadata", "annotations", AnnotationRestartedAt); ok {
			u.RestartedAt = &v
		}
		return u, nil
	case plan.ActionApply:
		obj := p.Manifest(st)
		apiVersion := fmt.Sprint(obj["apiVersion"])
		gvr, err := resourceFor(apiVersion, kind)
		if err != nil {
			return Undo{}, err
		}
		cur, err := e.Cluster.get(ctx, gvr, ns, name)
		if err != nil {
			return Undo{}, fmt.Errorf("read %s: %w", st.Target, err)
		}
		u := Undo{APIVersion: apiVersion}
		if cur != nil {
			u.Existed, u.Prior = true, Clean(cur.Object)
			if err := captureOwnership(&u, ns, st.Target, cur); err != nil {
				return Undo{}, err
			}
		}
		return u, nil
	}
	return Undo{}, fmt.Errorf("unknown step action %q", st.Action)
}

func orNotFound(err error, what string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s no longer exists", what)
}

// Clean drops what the server manages from an object, leaving what rollback
// restores: labels, annotations, spec and the rest.
func Clean(obj map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range obj {
		if k != "status" {
			out[k] = v
		}
	}
	if md, ok := obj["metadata"].(map[string]any); ok {
		m := map[string]any{}
		for k, v := range md {
			switch k {
			case "resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds":
			default:
				m[k] = v
			}
		}
		out["metadata"] = m
	}
	return out
}

// Digest is what rollback compares to tell an object left as the tool
// wrote it from one changed since: its labels, annotations and spec.
func Digest(obj map[string]any) string {
	md, _ := obj["metadata"].(map[string]any)
	b, _ := json.Marshal([]any{md["labels"], md["annotations"], obj["spec"]})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// labelNamespace sets the step's labels (server-side apply) and removes the
// ones it removes (a conditional JSON patch: see patchLabels).
//
// The new label goes on before the old one comes off: with both present
// istio-injection decides and pods are still injected, whereas a failure
// between the two writes in the other order would leave the namespace
// selecting no injector, and every pod created until a resume would start
// without a sidecar.
func (e *Executor) labelNamespace(ctx context.Context, ns string, st plan.Step) error {
	if len(st.Labels) > 0 {
		labels := map[string]any{}
		for k, v := range st.Labels {
			labels[k] = v
		}
		obj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns, "labels": labels}}
		if _, err := e.Cluster.apply(ctx, kinds["Namespace"], "", obj); err != nil {
			return fmt.Errorf("label namespace %s: %w", ns, err)
		}
	}
	if len(st.Remove) == 0 {
		return nil
	}
	obj, err := e.Cluster.get(ctx, kinds["Namespace"], "", ns)
	if err != nil || obj == nil {
		return fmt.Errorf("read namespace %s: %w", ns, orNotFound(err, "namespace "+ns))
	}
	remove := map[string]*string{}
	for _, k := range st.Remove {
		remove[k] = nil
	}
	return e.Cluster.patchLabels(ctx, ns, obj.GetLabels(), remove)
}

func labelList(set map[string]string, remove []string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		parts = append(parts, k+"="+set[k])
	}
	for _, k := range remove {
		parts = append(parts, k+"-")
	}
	return strings.Join(parts, " ")
}

// waitRollouts waits for each restarted workload's rollout, as `kubectl
// rollout status` judges it, printing its progress.
func (e *Executor) waitRollouts(ctx context.Context, rs []*rollout) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, e.Options.Concurrency))
	for _, r := range rs {
		g.Go(func() error { return e.waitRollout(gctx, r) })
	}
	return g.Wait()
}

// rolledOut waits for the inject phase's restarts, then marks them done
// and the namespace meshed from now: its old pods, without a sidecar,
// served (and sent) plaintext until the rollout ended, and the verify
// window must not count that.
func (e *Executor) rolledOut(ctx context.Context, ns string, rs []*rollout) error {
	if err := e.waitRollouts(ctx, rs); err != nil {
		return err
	}
	t := e.now()
	e.cps[ns].MeshedAt = &t
	for _, r := range rs {
		if err := e.markDone(ctx, ns, r.seq); err != nil {
			return err
		}
	}
	return nil
}

func (e *Executor) waitRollout(ctx context.Context, r *rollout) error {
	kind, name, _ := strings.Cut(r.target, "/")
	viewer, err := polymorphichelpers.StatusViewerFor(schema.GroupKind{Group: "apps", Kind: kind})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(e.Options.Timeout)
	last := ""
	for {
		obj, err := e.Cluster.get(ctx, r.gvr, r.ns, name)
		if err != nil {
			return fmt.Errorf("watch the rollout of %s: %w", r.target, err)
		}
		if obj == nil {
			return fmt.Errorf("%s was deleted during its rollout", r.target)
		}
		msg, done, err := viewer.Status(obj, 0)
		if err != nil {
			return fmt.Errorf("rollout of %s: %w", r.target, err)
		}
		msg = strings.TrimSpace(msg)
		if msg != last {
			e.logf(r.ns, "%s: %s: %s", r.what, r.target, msg)
			last = msg
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return &timeoutError{msg: fmt.Sprintf("the rollout of %s did not finish within %s (%s): re-run apply to keep waiting, or roll back", r.target, e.Options.Timeout, last)}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// phaseGate evaluates a phase's gate. The sidecar and policy gates wait (up
// to the timeout) for the cluster to settle; the traffic gate is judged
// once, on the window since the namespace and its callers were meshed.
func (e *Executor) phaseGate(ctx context.Context, p *plan.Plan, pn *plan.Namespace, phase string, gate *plan.Gate, steps []plan.Step) (GateResult, error) {
	ns := pn.Name
	switch gate.Name {
	case plan.GateNoPlaintext:
		since := e.verifySince(p, pn)
		if short, err := e.shortWindow(ctx, p, ns, gate.Name, since); err != nil || short {
			return ShortWindowGate(gate.Name, e.now().Sub(since), p.VerifyFloor(), since, "when the namespace or a caller it waits for was meshed, or --verify-window", e.now()), err
		}
		_, r, err := e.Observer.Audit(ctx, []string{ns}, since)
		if err != nil {
			return GateResult{}, fmt.Errorf("gate %s of %s: %w", gate.Name, ns, err)
		}
		return VerifyGate(namespaceOf(r, ns), Expect{Callers: gate.Callers, Inbound: gate.Inbound}, e.now()), nil
	case plan.GateSidecars, plan.GatePinned:
		stayOut := map[string]bool{}
		for _, st := range steps {
			if st.Status == plan.StatusSkipped {
				stayOut[st.Target] = true
			}
		}
		deadline := time.Now().Add(e.Options.Timeout)
		for {
			_, r, err := e.Observer.Audit(ctx, []string{ns}, time.Time{})
			if err != nil {
				return GateResult{}, fmt.Errorf("gate %s of %s: %w", gate.Name, ns, err)
			}
			nr := namespaceOf(r, ns)
			var g GateResult
			switch {
			case gate.Name == plan.GateSidecars:
				g = SidecarsGate(nr, stayOut, e.now())
			case phase == plan.PhaseStrict:
				g = PinnedGate(nr, cluster.ModeStrict, e.now())
			default:
				g = PinnedGate(nr, cluster.ModePermissive, e.now())
			}
			if g.Result == GatePassed || time.Now().After(deadline) {
				return g, nil
			}
			select {
			case <-ctx.Done():
				return GateResult{}, ctx.Err()
			case <-time.After(2 * time.Second):
			}
		}
	}
	return GateResult{}, fmt.Errorf("the plan names gate %q, which this version does not know: use the version that made the plan", gate.Name)
}

// effectCheck is the check apply makes after a phase the plan gives no
// gate: that the PeerAuthentication it applied is the one in force, with
// its mode (a second namespace-wide policy that is older would win).
func effectCheck(phase string) *plan.Gate {
	switch phase {
	case plan.PhasePermissive, plan.PhaseStrict:
		return &plan.Gate{Name: plan.GatePinned, Description: "the namespace's PeerAuthentication decides its mode, " + strings.ToUpper(phase)}
	}
	return nil
}

func namespaceOf(r *audit.Report, ns string) *audit.NamespaceReport {
	for i := range r.Namespaces {
		if r.Namespaces[i].Name == ns {
			return &r.Namespaces[i]
		}
	}
	return &audit.NamespaceReport{Name: ns}
}

// verifySince is where the verify window starts: plaintext seen before the
// namespace and the callers the plan meshes were meshed says nothing about
// now. It is never earlier than the plan's own window.
func (e *Executor) verifySince(p *plan.Plan, pn *plan.Namespace) time.Time {
	now := e.now()
	if e.Options.VerifyWindow > 0 {
		return now.Add(-e.Options.VerifyWindow)
	}
	window := 24 * time.Hour
	if p.Traffic != nil {
		if d, err := time.ParseDuration(p.Traffic.Window); err == nil && d > 0 {
			window = d
		} else if !p.Traffic.Start.IsZero() {
			window = p.Traffic.End.Sub(p.Traffic.Start)
		}
	}
	since := now.Add(-window)
	for _, ns := range append([]string{pn.Name}, pn.CalledBy...) {
		if m := e.peers[ns].meshedAt; m != nil && m.After(since) {
			since = *m
		}
	}
	return since
}

// shortWindow tells whether a traffic gate's window, since `since`, is
// under the plan's floor and so cannot be judged. A window that reaches
// the floor within --timeout is waited for. With
// --allow-short-verify-window it is judged anyway, and the checkpoint
// records that it was.
func (e *Executor) shortWindow(ctx context.Context, p *plan.Plan, ns, gate string, since time.Time) (bool, error) {
	window, floor := e.now().Sub(since), p.VerifyFloor()
	switch {
	case window >= floor:
		return false, nil
	case e.Options.AllowShortWindow:
		note := fmt.Sprintf("%s gate %s judged over %s, under the plan's minimum of %s: --allow-short-verify-window by %s", e.now().Format(time.RFC3339), gate, window.Round(time.Second), floor, e.Options.Identity)
		e.logf(ns, "warning: %s", note)
		cp := e.cps[ns]
		cp.Overrides = append(cp.Overrides, note)
		return false, nil
	case floor-window > e.Options.Timeout:
		return true, nil
	}
	wait := floor - window
	e.logf(ns, "gate %s: waiting %s for its window to reach the plan's minimum of %s", gate, wait.Round(time.Second), floor)
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-time.After(wait):
	}
	return false, nil
}

// shadowGate evaluates the authz phase's no-shadow-denials gate over the
// window since the dry-run policies before it were applied (also with
// --verify-window: decisions made before them say nothing), per workload:
// each workload an ALLOW policy covers must have been judged.
func (e *Executor) shadowGate(ctx context.Context, p *plan.Plan, ns, phase string, idx int) (*GateResult, error) {
	if e.dry() {
		e.logf(ns, "%s: gate %s would be checked here", phase, plan.GateNoShadowDenials)
		return nil, nil
	}
	pn, _ := p.Namespace(ns)
	ph, _ := pn.Phase(phase)
	since := e.verifySince(p, pn)
	for i := 0; i < idx; i++ {
		if r := e.cps[ns].Record(p.ID, phase, i); r != nil && r.DoneAt != nil && r.DoneAt.After(since) {
			since = *r.DoneAt
		}
	}
	var g GateResult
	if short, err := e.shortWindow(ctx, p, ns, plan.GateNoShadowDenials, since); err != nil {
		return nil, err
	} else if short {
		g = ShortWindowGate(plan.GateNoShadowDenials, e.now().Sub(since), p.VerifyFloor(), since, "when the dry-run policies were applied", e.now())
		return &g, nil
	}
	counts, window, err := e.Observer.ShadowDecisions(ctx, ns, since)
	if err != nil {
		return nil, fmt.Errorf("gate %s of %s: %w", plan.GateNoShadowDenials, ns, err)
	}
	snap, _, err := e.Observer.Audit(ctx, []string{ns}, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("gate %s of %s: %w", plan.GateNoShadowDenials, ns, err)
	}
	tallies, covered := shadowTallies(snap, ns, counts, p, ph.Steps[:idx])
	g = ShadowGate(tallies, covered, window, e.now())
	if g.Result == GatePassed {
		e.logf(ns, "%s: gate %s passed: %s", phase, g.Name, g.Message)
		rec := e.cps[ns].Phase(phase)
		rec.Gate = &g
	}
	return &g, nil
}

// shadowTallies sums the dry-run decisions by workload (a pod gone since is
// its own entry), and lists the workloads the ALLOW policies among steps
// select: those the gate must see judged.
func shadowTallies(snap *cluster.Snapshot, ns string, counts []traffic.ShadowCount, p *plan.Plan, steps []plan.Step) (map[string]ShadowTally, []string) {
	owner := map[string]string{}
	for _, pod := range snap.Pods {
		if pod.Namespace == ns {
			owner[pod.Name] = pod.Owner.String()
		}
	}
	tallies := map[string]ShadowTally{}
	for _, c := range counts {
		w, ok := owner[c.Pod]
		if !ok {
			w = "pod " + c.Pod
		}
		t := tallies[w]
		t.Denied, t.Decisions = t.Denied+c.Denied, t.Decisions+c.Decisions
		if !slices.Contains(t.Protocols, c.Protocol) {
			t.Protocols = append(t.Protocols, c.Protocol)
			sort.Strings(t.Protocols)
		}
		tallies[w] = t
	}
	covered := map[string]bool{}
	for _, st := range steps {
		if st.Action != plan.ActionApply || !strings.HasPrefix(st.Target, "AuthorizationPolicy/") {
			continue
		}
		obj := p.Manifest(st)
		sel, _, _ := unstructured.NestedStringMap(obj, "spec", "selector", "matchLabels")
		action, _, _ := unstructured.NestedString(obj, "spec", "action")
		if len(sel) == 0 || action != "" && action != "ALLOW" {
			continue // the namespace-wide allow-nothing, or not an ALLOW
		}
		for _, pod := range snap.Pods {
			if pod.Namespace == ns && pod.Phase != "Succeeded" && pod.Phase != "Failed" && matches(pod.Labels, sel) {
				covered[pod.Owner.String()] = true
			}
		}
	}
	return tallies, slices.Sorted(maps.Keys(covered))
}

func matches(labels, sel map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
