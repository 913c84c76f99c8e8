package phases

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/utils/clock"

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
	// Health returns the guard's signals for ns between since and until;
	// window describes it.
	Health(ctx context.Context, ns string, since, until time.Time) (h traffic.Health, window string, err error)
}

// DryRunMode is --dry-run: whether writes reach the cluster.
type DryRunMode string

// The dry-run modes.
const (
	DryRunNone   DryRunMode = "none"   // every write is made
	DryRunClient DryRunMode = "client" // no write is sent
	DryRunServer DryRunMode = "server" // every write is sent with dryRun=All
)

// Options are what an apply run does.
type Options struct {
	// Namespaces restricts the run (empty: every namespace of the plan).
	Namespaces []string
	// Phase runs only that phase; Through runs every phase up to it.
	Phase, Through plan.PhaseName
	DryRun         DryRunMode
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
	// Bake is how long the guard watches a namespace after STRICT and
	// after enforcement (0: not at all, recorded as off).
	Bake time.Duration
	// BakeMaxErrorRatio is the callers' error ratio over which the guard
	// undoes a change; negative: the baseline plus DefaultErrorRatioMargin.
	BakeMaxErrorRatio float64
	// KeepGoing lets the namespaces that do not depend on a stopped one go
	// on (--keep-going).
	KeepGoing bool
}

// Executor applies plans and rolls them back.
type Executor struct {
	Cluster  *Cluster
	Observer Observer
	// Events receives what the run does, one event at a time (nil: none).
	Events func(Event)
	// Clock times the run: its records, windows and every wait.
	Clock   clock.Clock
	Options Options

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
		pr := peer{injected: cp.meshed()}
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
	Namespace string         `json:"namespace"`
	Phase     plan.PhaseName `json:"phase"`
	// Result says how it stopped: stopped (a gate, a blocked step),
	// undone (the guard reverted the phase), unverified (the guard had no
	// data) or held-back (--keep-going: a namespace it depends on stopped).
	Result Result       `json:"result"`
	Reason string       `json:"reason"`
	Gate   *GateResult  `json:"gate,omitempty"`
	Guard  *GuardResult `json:"guard,omitempty"`
}

// Result is where a run left a namespace.
type Result string

// The results of a namespace in a run.
const (
	ResultDone       Result = "done"
	ResultStopped    Result = "stopped"
	ResultUndone     Result = "undone"
	ResultUnverified Result = "unverified"
	ResultHeldBack   Result = "held-back"
)

// NamespaceResult is one namespace's line of a run's summary.
type NamespaceResult struct {
	Namespace string         `json:"namespace"`
	Result    Result         `json:"result"`
	Phase     plan.PhaseName `json:"phase,omitempty"`
	Reason    string         `json:"reason,omitempty"`
}

// Outcome is what a run did.
type Outcome struct {
	Changes int    `json:"changes"`
	Stops   []Stop `json:"stops,omitempty"`
	// Leftovers are what a rollback could not restore by itself, each with
	// the command that does (pods that keep a sidecar).
	Leftovers []string `json:"leftovers,omitempty"`
	// Results are, for apply, where the run left each namespace.
	Results []NamespaceResult `json:"results,omitempty"`
	mu      sync.Mutex
}

func (o *Outcome) stop(s Stop) {
	if s.Result == "" {
		s.Result = ResultStopped
	}
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
	Phases     []plan.PhaseName
	Resuming   []string
	// Pending counts the changes left to make in the selection.
	Pending int
}

func (e *Executor) now() time.Time { return e.Clock.Now().UTC() }

func (e *Executor) gateEvent(ns string, phase plan.PhaseName, g GateResult, format string, args ...any) {
	e.emit(Event{Type: EventGate, Namespace: ns, Phase: phase, Gate: &g, Message: fmt.Sprintf(format, args...)})
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// selection returns the namespaces (in wave order) and phases to run.
func (e *Executor) selection(p *plan.Plan) ([]string, []plan.PhaseName, error) {
	// In the order of every phase: a namespace runs those it has.
	phases := plan.AllPhases
	switch o := e.Options; {
	case o.Phase != "" && o.Through != "":
		return nil, nil, errors.New("--phase and --through exclude each other")
	case o.Phase != "":
		i := phaseIndex(o.Phase)
		if i == len(plan.AllPhases) {
			return nil, nil, fmt.Errorf("--phase %q: want one of %s", o.Phase, plan.PhaseList())
		}
		phases = plan.AllPhases[i : i+1]
	case o.Through != "":
		i := phaseIndex(o.Through)
		if i == len(plan.AllPhases) {
			return nil, nil, fmt.Errorf("--through %q: want one of %s", o.Through, plan.PhaseList())
		}
		phases = plan.AllPhases[:i+1]
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
	}
	for _, t := range BuildQueue(p, names, phases, e.cps) {
		if t.Kind == TaskChange && !t.Done {
			pv.Pending++
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
		locks, err := e.Cluster.AcquireAll(runCtx, pv.Namespaces, e.Options.Identity, e.Options.LeaseDuration, e.Options.LockWait, e.Clock, func(err error) { cancel(err) })
		if err != nil {
			return nil, err
		}
		for _, lk := range locks.Held() {
			if lk.TookOver != "" {
				e.emit(Event{Type: EventLock, Namespace: lk.ns, Message: fmt.Sprintf("took over the expired lock of %q (that run stopped without releasing it)", lk.TookOver)})
			}
		}
		defer func() {
			if err := locks.Release(context.WithoutCancel(ctx)); err != nil {
				e.warn(strings.Join(pv.Namespaces, ","), "%v", err)
			}
		}()
		ctx = runCtx
		if err := e.reload(ctx, p, pv); err != nil {
			return nil, err
		}
	}
	queue := BuildQueue(p, pv.Namespaces, pv.Phases, e.cps)
	if e.dry() {
		for _, t := range queue {
			e.emit(Event{Type: EventQueue, Namespace: t.Namespace, Phase: t.Phase, Action: t.Action, Target: t.Target, Task: &t, Message: "queue: " + t.String()})
		}
	}
	// Wave by wave, phase by phase: the namespaces of one wave-phase run
	// at once, each its own tasks in order. A stop ends the run after its
	// wave-phase; with --keep-going only the namespaces that depend on a
	// stopped one stop too, and the rest go on.
	stopped := map[string]bool{}
	defer func() { out.Results = results(pv.Namespaces, out.Stops) }()
	for _, group := range waveGroups(queue) {
		e.snapshotPeers()
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(max(1, e.Options.Concurrency))
		for _, tasks := range group {
			ns := tasks[0].Namespace
			if stopped[ns] {
				continue
			}
			if on := heldBackBy(p, ns, stopped); len(on) > 0 {
				reason := fmt.Sprintf("held back: it depends on %s, which stopped in this run (the plan's calledBy): resume once that is fixed", strings.Join(on, ", "))
				e.emit(Event{Type: EventHeldBack, Namespace: ns, Phase: tasks[0].Phase, Message: fmt.Sprintf("%s: %s", tasks[0].Phase, reason)})
				out.stop(Stop{Namespace: ns, Phase: tasks[0].Phase, Result: ResultHeldBack, Reason: reason})
				stopped[ns] = true
				continue
			}
			g.Go(func() error { return e.runPhase(gctx, p, tasks, out) })
		}
		if err := g.Wait(); err != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				err = fmt.Errorf("%w (%v)", err, cause)
			}
			return out, err
		}
		sort.Slice(out.Stops, func(i, j int) bool { return out.Stops[i].Namespace < out.Stops[j].Namespace })
		for _, s := range out.Stops {
			stopped[s.Namespace] = true
		}
		if len(out.Stops) > 0 && !e.Options.KeepGoing {
			return out, nil
		}
	}
	return out, nil
}

// heldBackBy lists the stopped namespaces ns depends on: those its
// calledBy names (they must be meshed, and stay so, before it goes
// STRICT). A namespace held back counts as stopped for those after it.
func heldBackBy(p *plan.Plan, ns string, stopped map[string]bool) []string {
	pn, _ := p.Namespace(ns)
	var on []string
	for _, c := range pn.CalledBy {
		if stopped[c] {
			on = append(on, c)
		}
	}
	return on
}

// results is the run's summary: each namespace's first stop, or done.
func results(namespaces []string, stops []Stop) []NamespaceResult {
	out := make([]NamespaceResult, 0, len(namespaces))
	for _, ns := range namespaces {
		r := NamespaceResult{Namespace: ns, Result: ResultDone}
		for _, s := range stops {
			if s.Namespace == ns {
				r = NamespaceResult{Namespace: ns, Result: s.Result, Phase: s.Phase, Reason: s.Reason}
				break
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace < out[j].Namespace })
	return out
}

// waveGroups splits the queue into its wave-phases, each into the tasks of
// one namespace, in order.
func waveGroups(queue []Task) [][][]Task {
	var out [][][]Task
	for i := 0; i < len(queue); {
		w, ph := queue[i].Wave, queue[i].Phase
		var group [][]Task
		for i < len(queue) && queue[i].Wave == w && queue[i].Phase == ph {
			ns, j := queue[i].Namespace, i
			for j < len(queue) && queue[j].Wave == w && queue[j].Phase == ph && queue[j].Namespace == ns {
				j++
			}
			group = append(group, queue[i:j])
			i = j
		}
		out = append(out, group)
	}
	return out
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
		e.warn(ns, "%s", w)
	}
	return nil
}

func (e *Executor) dry() bool { return e.Options.DryRun != "" && e.Options.DryRun != DryRunNone }

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
