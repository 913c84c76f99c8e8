package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/utils/clock"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/nonnil"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

const applyExample = `  # See what the plan would do, without changing anything
  kubectl meshmigrate apply -f plan.yaml --dry-run=client

  # Inject and pin PERMISSIVE in one namespace, in a script
  kubectl meshmigrate apply -f plan.yaml -n shop --through permissive --yes

  # Everything, with the verify gate reading Prometheus directly
  kubectl meshmigrate apply -f plan.yaml --yes --prometheus-url http://127.0.0.1:9090

  # Exit codes: 0 done, 1 error, 2 stopped at a gate or a blocked step (re-run
  # to resume), 3 the plan is stale (make a new one)`

// ExecFlags are the flags of the commands that change the cluster (apply,
// rollback).
type ExecFlags struct {
	DryRun      string
	Yes         bool
	Timeout     time.Duration
	Concurrency int
	LockWait    time.Duration
	// LeaseDuration is how long another run must watch this run's lock
	// unrenewed before it takes it over; it is renewed every third of it.
	LeaseDuration time.Duration
	VerifyWindow  time.Duration
	// AllowShortWindow lifts the plan's minVerifyWindow floor.
	AllowShortWindow bool
	Traffic          TrafficFlags
}

// AddFlags registers the flags.
func (f *ExecFlags) AddFlags(fs *pflag.FlagSet, gates bool) {
	fs.StringVar(&f.DryRun, "dry-run", string(phases.DryRunNone), `"none" changes the cluster; "client" only prints what it would do; "server" also sends each change with dryRun=All, so the API server validates it`)
	fs.Lookup("dry-run").NoOptDefVal = string(phases.DryRunClient)
	fs.BoolVar(&f.Yes, "yes", false, "Do not ask for confirmation (scripts)")
	fs.DurationVar(&f.Timeout, "timeout", 5*time.Minute, "How long to wait for each rollout and each gate to settle")
	fs.DurationVar(&f.LockWait, "wait-for-lock", 0, "How long to wait for another run's lock on a namespace (0: fail at once, naming the holder); a dead run's lock is taken over once this run has watched it unrenewed for its lease duration")
	fs.DurationVar(&f.LeaseDuration, "lease-duration", phases.DefaultLeaseDuration, "How long another run must watch this run's lock unrenewed before it takes it over (renewed every third of it); at least 3s")
	fs.IntVar(&f.Concurrency, "concurrency", 4, "How many namespaces, and rollouts within one, to handle at once")
	if gates {
		fs.StringVar(&f.Traffic.PrometheusURL, "prometheus-url", "", "Prometheus the traffic gates read (default: a Prometheus service found in the cluster, through the API server's service proxy)")
		fs.StringVar(&f.Traffic.PrometheusService, "prometheus-service", "", "The in-cluster Prometheus service as NAMESPACE/NAME[:PORT]")
		fs.DurationVar(&f.VerifyWindow, "verify-window", 0, "The window the traffic gates read (default: since the namespace and its callers were meshed, at most the plan's traffic window); never under the plan's minVerifyWindow")
		fs.BoolVar(&f.AllowShortWindow, "allow-short-verify-window", false, "Let the traffic gates judge a window under the plan's minVerifyWindow (each use is recorded in the checkpoint): one request in a short window can pass a gate")
	}
}

// Validate rejects bad flag values.
func (f *ExecFlags) Validate() error {
	switch phases.DryRunMode(f.DryRun) {
	case phases.DryRunNone, phases.DryRunClient, phases.DryRunServer:
	default:
		return fmt.Errorf("--dry-run=%q: want none, client or server", f.DryRun)
	}
	switch {
	case f.Timeout <= 0:
		return fmt.Errorf("--timeout must be positive, got %s", f.Timeout)
	case f.Concurrency < 1:
		return fmt.Errorf("--concurrency must be at least 1, got %d", f.Concurrency)
	case f.LockWait < 0:
		return fmt.Errorf("--wait-for-lock must not be negative, got %s", f.LockWait)
	case f.LeaseDuration < minLeaseDuration:
		// Renewed every third of it: shorter, one slow API call loses it.
		return fmt.Errorf("--lease-duration must be at least %s, got %s", minLeaseDuration, f.LeaseDuration)
	case f.LeaseDuration%time.Second != 0:
		return fmt.Errorf("--lease-duration must be whole seconds (the Lease stores seconds), got %s", f.LeaseDuration)
	case f.VerifyWindow < 0:
		return fmt.Errorf("--verify-window must not be negative, got %s", f.VerifyWindow)
	case f.Traffic.PrometheusURL != "" && f.Traffic.PrometheusService != "":
		return errors.New("--prometheus-url and --prometheus-service exclude each other: pick one")
	}
	return nil
}

// minLeaseDuration is the shortest --lease-duration.
const minLeaseDuration = 3 * time.Second

func (f *ExecFlags) dry() bool { return phases.DryRunMode(f.DryRun) != phases.DryRunNone }

// connector reaches the cluster the executor works on: its clients, and
// the observer its gates read. Tests hand in fakes.
type connector func(f *ExecFlags) (*phases.Cluster, phases.Observer, error)

// newExecutor builds the executor over the connected cluster; events get
// what it does.
func newExecutor(connect connector, events func(phases.Event), f *ExecFlags, opts phases.Options) (*phases.Executor, error) {
	c, obs, err := connect(f)
	if err != nil {
		return nil, err
	}
	c.DryRun = phases.DryRunMode(f.DryRun)
	opts.DryRun, opts.Timeout, opts.Concurrency, opts.LockWait = c.DryRun, f.Timeout, f.Concurrency, f.LockWait
	opts.VerifyWindow, opts.LeaseDuration, opts.Identity = f.VerifyWindow, f.LeaseDuration, identity()
	opts.AllowShortWindow = f.AllowShortWindow
	return &phases.Executor{Cluster: c, Observer: obs, Events: events, Clock: clock.RealClock{}, Options: opts}, nil
}

// textEvents prints each event as the lines people read.
func textEvents(w io.Writer) func(phases.Event) {
	return func(ev phases.Event) {
		for _, l := range ev.Lines() {
			// Lines name what the cluster holds (pods, policies): escaped
			// for the terminal, as kubectl escapes table cells.
			fmt.Fprintln(w, printers.EscapeTerminal(l))
		}
	}
}

// jsonEvents prints each event as one JSON object on its own line
// (schema/applyevent.json), for CI to read as the run goes.
func jsonEvents(w io.Writer) func(phases.Event) {
	enc := json.NewEncoder(w)
	return func(ev phases.Event) {
		nonnil.Fill(&ev)
		_ = enc.Encode(ev)
	}
}

// identity names this run in locks and checkpoints: who, where, which
// process, and a random part so two runs never share one.
func identity() string {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s@%s pid %d run %s", who, host, os.Getpid(), hex.EncodeToString(b))
}

// clusterObserver reads the cluster and live telemetry for the gates.
type clusterObserver struct {
	reader  snapshotReader
	traffic TrafficFlags
	factory *Factory
}

func (o *clusterObserver) Audit(ctx context.Context, namespaces []string, since time.Time) (*cluster.Snapshot, *audit.Report, error) {
	snap, err := o.reader.Read(ctx, cluster.Scope{Namespaces: namespaces})
	if err != nil {
		return nil, nil, err
	}
	obs := audit.Observation{Reason: "not read for this check"}
	if !since.IsZero() {
		tf := o.traffic
		tf.Window = windowSince(since)
		if obs, err = tf.Observe(ctx, o.factory); err != nil {
			return nil, nil, err
		}
	}
	return snap, audit.Audit(snap, obs), nil
}

func (o *clusterObserver) Health(ctx context.Context, ns string, since, until time.Time) (traffic.Health, string, error) {
	p, err := o.traffic.prometheus(ctx, o.factory)
	if err != nil {
		return traffic.Health{}, "", err
	}
	w := max(until.Sub(since).Round(time.Second), time.Second)
	h, err := p.Health(ctx, ns, w, until)
	return h, fmt.Sprintf("%s until %s (%s)", model.Duration(w), until.UTC().Format(time.RFC3339), p.URL), err
}

func (o *clusterObserver) ShadowDecisions(ctx context.Context, ns string, since time.Time) ([]traffic.ShadowCount, string, error) {
	p, err := o.traffic.prometheus(ctx, o.factory)
	if err != nil {
		return nil, "", err
	}
	w := windowSince(since)
	counts, err := p.ShadowDecisions(ctx, ns, w)
	return counts, fmt.Sprintf("%s since %s (%s)", model.Duration(w), since.UTC().Format(time.RFC3339), p.URL), err
}

// windowSince is the whole seconds since t, at least one.
func windowSince(t time.Time) time.Duration {
	w := time.Since(t).Round(time.Second)
	if w < time.Second {
		w = time.Second
	}
	return w
}

// ApplyOptions are the options of `kubectl meshmigrate apply`.
type ApplyOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	Filename       string
	Phase, Through string
	Output         string
	Exec           ExecFlags
	// Bake is how long the guard watches after STRICT and enforcement;
	// MaxErrorRatio its --bake-max-error-ratio (negative: baseline + 1pp).
	Bake          time.Duration
	MaxErrorRatio float64
	KeepGoing     bool

	namespaces []string
	plan       *plan.Plan
	connect    connector
}

// NewApplyOptions returns options with their defaults.
func NewApplyOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *ApplyOptions {
	return &ApplyOptions{configFlags: configFlags, IOStreams: streams, connect: NewFactory(configFlags).Executor,
		Bake: defaultBake, MaxErrorRatio: -1}
}

// ApplySummary is what `apply -o json` prints when a run ends done or
// stopped (schema/applysummary.json, docs/apply.md).
type ApplySummary struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	PlanID     string `json:"planID"`
	DryRun     string `json:"dryRun"`
	// Namespaces and Phases are what the run took, Resuming the
	// namespaces a run of this plan had already started.
	Namespaces []string         `json:"namespaces"`
	Phases     []plan.PhaseName `json:"phases"`
	Resuming   []string         `json:"resuming"`
	// Result is done, stopped (see Stops; exit 2) or dry-run.
	Result string `json:"result"`
	// Changes made, or in a dry run the changes that would be made.
	Changes int           `json:"changes"`
	Stops   []phases.Stop `json:"stops"`
	// Results are where the run left each namespace: done, stopped,
	// undone (by the guard), unverified or held-back.
	Results []phases.NamespaceResult `json:"results"`
}

// defaultBake is --bake's default: how long the guard watches.
const defaultBake = 5 * time.Minute

// The summary's identity; apiVersion is the plan's.
const (
	applySummaryKind = "ApplySummary"
	resultDone       = "done"
	resultStopped    = "stopped"
	resultDryRun     = "dry-run"
)

func newCmdApply(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, f *Factory) *cobra.Command {
	o := NewApplyOptions(configFlags, streams)
	o.connect = f.Executor
	cmd := &cobra.Command{
		Use:   "apply -f PLAN [--phase P | --through P] [-n NS[,NS...]] [--dry-run=none|client|server] [--yes] [-o json]",
		Short: "Execute a plan: phases in wave order, gates between them, checkpoints in the cluster",
		Long: `Apply executes a MigrationPlan made by "kubectl meshmigrate plan".

Before changing anything it refuses a plan made for another cluster, a plan
the cluster has moved away from (exit 3, naming each change), and runs
without confirmation (a prompt on a terminal, --yes in scripts).

Namespaces go wave by wave; within a wave, phase by phase: inject (label,
restart, wait for each rollout; gate: every injectable pod carries a current
sidecar), permissive (gate: the namespace's PeerAuthentication is in force),
verify (gate: real traffic and none of it plaintext, since the namespace and
its callers were meshed), strict, authz (dry-run policies; gate: no shadow
denials; then enforcement). Every change is server-side applied by field
manager kubectl-meshmigrate and recorded, with the object's prior state,
in the ConfigMap meshmigrate-checkpoint of its namespace before it is made.
A Lease (meshmigrate-lock) keeps two runs off one namespace.

Interrupted (Ctrl-C, a crash, a failed gate)? Run the same command again: it
resumes from the checkpoint and repeats no completed step.

-o json streams the run's events on stdout, one JSON object a line
(schema/applyevent.json), then an ApplySummary line when the run ends done or
stopped (exit 0 or 2); what a person reads goes to stderr. --dry-run first
prints the run's task queue.`,
		Example: applyExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(cmd); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Filename, "filename", "f", "", "The plan file (from kubectl meshmigrate plan -o yaml)")
	cmd.Flags().StringVar(&o.Phase, "phase", "", "Run only this phase (inject, permissive, verify, strict, authz); the ones before it must be done")
	cmd.Flags().StringVar(&o.Through, "through", "", "Run the phases up to and including this one")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "json: stream the events on stdout, one JSON object a line, and end with a summary (ApplySummary); the rest goes to stderr")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("json"))
	cmd.Flags().DurationVar(&o.Bake, "bake", o.Bake, "After STRICT and after enforcement, watch the namespace this long and undo that phase when callers break (plaintext calls, denials, errors over the baseline); 0 turns the guard off (recorded)")
	cmd.Flags().Float64Var(&o.MaxErrorRatio, "bake-max-error-ratio", o.MaxErrorRatio, "The callers' error ratio (0 to 1) over which the guard undoes a change (default: the ratio before the change plus 0.01)")
	cmd.Flags().BoolVar(&o.KeepGoing, "keep-going", false, "A namespace that stops (gate, blocked step, guard) stops alone: those that do not depend on it (by the plan's calledBy) go on; a per-namespace summary ends the run")
	o.Exec.AddFlags(cmd.Flags(), true)
	_ = cmd.RegisterFlagCompletionFunc("phase", cobra.FixedCompletions(plan.PhaseNames(plan.AllPhases), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("through", cobra.FixedCompletions(plan.PhaseNames(plan.AllPhases), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	return cmd
}

// Complete reads the namespaces flag and the plan file.
func (o *ApplyOptions) Complete(cmd *cobra.Command) error {
	o.namespaces = namespacesFlag(cmd)
	if o.Filename == "" {
		return errors.New("-f PLAN is required: make one with `kubectl meshmigrate plan -o yaml > plan.yaml`")
	}
	p, err := plan.Load(o.Filename)
	if err != nil {
		return err
	}
	o.plan = p
	return nil
}

// namespacesFlag is -n NS[,NS...] when given explicitly (apply's default is
// the whole plan, not the kubeconfig's namespace).
func namespacesFlag(cmd *cobra.Command) []string {
	f := cmd.Flags().Lookup("namespace")
	if f == nil || !f.Changed {
		return nil
	}
	var out []string
	for _, ns := range strings.Split(f.Value.String(), ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}

// Validate rejects bad input before anything is read.
func (o *ApplyOptions) Validate() error {
	if err := checkOutput(o.Output, "", "json"); err != nil {
		return err
	}
	if o.Phase != "" && o.Through != "" {
		return errors.New("--phase and --through exclude each other: pick one")
	}
	for _, p := range []string{o.Phase, o.Through} {
		if p != "" && !isPhase(p) {
			return fmt.Errorf("unknown phase %q: want one of %s", p, plan.PhaseList())
		}
	}
	if o.Bake < 0 {
		return fmt.Errorf("--bake %s: want a duration of 0 (no guard) or more, e.g. 5m", o.Bake)
	}
	if o.MaxErrorRatio != -1 && (o.MaxErrorRatio < 0 || o.MaxErrorRatio > 1) {
		return fmt.Errorf("--bake-max-error-ratio %g: want a ratio from 0 to 1 (0.05 is 5%% of the callers' requests failing)", o.MaxErrorRatio)
	}
	return o.Exec.Validate()
}

func isPhase(p string) bool { return slices.Contains(plan.AllPhases, plan.PhaseName(p)) }

// Run checks the plan against the cluster, asks for confirmation and runs it.
func (o *ApplyOptions) Run(ctx context.Context) error {
	// With -o json stdout holds the events, one JSON object a line, then
	// the summary; what a person reads goes to stderr.
	log, events := o.Out, textEvents(o.Out)
	if o.Output == "json" {
		log, events = o.ErrOut, jsonEvents(o.Out)
	}
	ex, err := newExecutor(o.connect, events, &o.Exec, phases.Options{Namespaces: o.namespaces, Phase: plan.PhaseName(o.Phase), Through: plan.PhaseName(o.Through),
		Bake: o.Bake, BakeMaxErrorRatio: o.MaxErrorRatio, KeepGoing: o.KeepGoing})
	if err != nil {
		return err
	}
	pv, err := ex.Prepare(ctx, o.plan)
	var stale *phases.StaleError
	if errors.As(err, &stale) {
		return &exitError{code: ExitStale, err: err}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "Plan %s: %s to make in %s (phases %s)\n", o.plan.ID, count(pv.Pending, "change"), strings.Join(pv.Namespaces, ", "), strings.Join(plan.PhaseNames(pv.Phases), ", "))
	if len(pv.Resuming) > 0 {
		fmt.Fprintf(log, "Resuming from the checkpoint in %s\n", strings.Join(pv.Resuming, ", "))
	}
	if !o.Exec.dry() {
		if err := confirm(ctx, o.In, log, o.Exec.Yes, fmt.Sprintf("Apply plan %s to %s", o.plan.ID, strings.Join(pv.Namespaces, ", "))); err != nil {
			return err
		}
	}
	out, err := ex.Apply(ctx, o.plan, pv)
	if errors.As(err, &stale) {
		return &exitError{code: ExitStale, err: err}
	}
	if err != nil {
		var locked *phases.LockedError
		if errors.As(err, &locked) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w; the checkpoint records every change made, run the same command again to resume", err)
		}
		return fmt.Errorf("%w\nthe checkpoint records every change made so far: fix the cause and run the same command again to resume, or roll back", err)
	}
	if o.Output == "json" {
		s := ApplySummary{APIVersion: plan.APIVersion, Kind: applySummaryKind, PlanID: o.plan.ID, DryRun: o.Exec.DryRun,
			Namespaces: pv.Namespaces, Phases: pv.Phases, Resuming: pv.Resuming, Result: resultDone, Changes: out.Changes, Stops: out.Stops, Results: out.Results}
		switch {
		case len(out.Stops) > 0:
			s.Result = resultStopped
		case o.Exec.dry():
			s.Result = resultDryRun
		}
		// One line, after the events: the stream stays one JSON object a line.
		nonnil.Fill(&s)
		if err := json.NewEncoder(o.Out).Encode(&s); err != nil {
			return err
		}
	}
	if o.KeepGoing && !o.Exec.dry() {
		rows := make([][]string, 0, len(out.Results))
		for _, r := range out.Results {
			rows = append(rows, []string{r.Namespace, string(r.Result), string(r.Phase), r.Reason})
		}
		fmt.Fprintln(log, "Summary:")
		if err := renderRows(log, []string{"NAMESPACE", "RESULT", "PHASE", "REASON"}, rows); err != nil {
			return err
		}
	}
	if len(out.Stops) > 0 {
		fmt.Fprintf(log, "Stopped (%s made):\n", count(out.Changes, "change"))
		for _, s := range out.Stops {
			fmt.Fprintf(log, "  %s %s: %s\n", s.Namespace, s.Phase, s.Reason)
		}
		fmt.Fprintln(log, "Run the same command again to resume once the cause is gone.")
		return errNeedsAttention
	}
	if o.Exec.dry() {
		fmt.Fprintf(log, "Dry run (%s): %s would be made; nothing was changed\n", o.Exec.DryRun, count(out.Changes, "change"))
		return nil
	}
	fmt.Fprintf(log, "Done: %s made\n", count(out.Changes, "change"))
	return nil
}

// confirm asks on a terminal; without one it needs --yes. Ctrl-C at the
// prompt ends the command without a change.
func confirm(ctx context.Context, in io.Reader, out io.Writer, yes bool, what string) error {
	if yes {
		return nil
	}
	if !isTerminal(in) {
		return errors.New("refusing to change the cluster without confirmation: pass --yes (scripts), or run it on a terminal; --dry-run=client shows what it would do")
	}
	fmt.Fprintf(out, "%s? [y/N] ", what)
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(in).ReadString('\n')
		answer <- line
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(out)
		return errors.New("interrupted at the prompt: nothing was changed")
	case line := <-answer:
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("not confirmed: nothing was changed")
		}
	}
	return nil
}
