package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

const planExample = `  # Review the plan for two namespaces
  kubectl meshmigrate plan -n shop,payments

  # Save it for a pull request, from a week of traffic
  kubectl meshmigrate plan -A --traffic-window 168h -o yaml > plan.yaml

  # Stop at PERMISSIVE, and write each phase's manifests for a GitOps repository
  kubectl meshmigrate plan -n shop --target permissive --out-dir migration/

  # A metrics port scraped by an unmeshed Prometheus keeps accepting plaintext
  kubectl meshmigrate plan -n shop --port-exception shop/web:9090

  # Exit code: 0 nothing blocked, 1 error, 2 some step is blocked (see its reason)`

// PlanOptions are the options of `kubectl meshmigrate plan`.
type PlanOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	AllNamespaces bool
	Selector      string
	Output        string
	OutDir        string
	Traffic       TrafficFlags
	Plan          plan.Options
	// MinVerifyWindow fills Plan.MinVerifyWindow.
	MinVerifyWindow time.Duration

	scope   cluster.Scope
	factory *Factory
	reader  snapshotReader
	color   bool
}

// NewPlanOptions returns options with their defaults.
func NewPlanOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *PlanOptions {
	return &PlanOptions{configFlags: configFlags, IOStreams: streams,
		Plan: plan.Options{Target: plan.TargetStrict, Authz: plan.AuthzEnforce}, MinVerifyWindow: plan.DefaultMinVerifyWindow}
}

func newCmdPlan(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, factory *Factory) *cobra.Command {
	o := NewPlanOptions(configFlags, streams)
	o.factory = factory
	cmd := &cobra.Command{
		Use:   "plan [-n NS[,NS...] | -A | -l SELECTOR] [-o table|yaml|json] [--out-dir DIR]",
		Short: "Make a reviewable, ordered migration plan: inject, PERMISSIVE, verify, STRICT, authorization",
		Long: `Plan reads the cluster and the observed traffic (never changing anything) and
writes a MigrationPlan: per namespace the phases inject, permissive, verify,
strict and authz, with the exact objects and changes of each step and the gates
between them. Namespaces are grouped into waves so that none goes STRICT before
the namespaces that call it in plaintext are meshed. A step that cannot be done
safely is marked blocked with its reason, never dropped.

The plan carries a hash and the state it was made against; apply refuses a plan
that was edited, or made for another cluster or an older state. The file format
is documented in docs/plan.md.

Output: a table on a terminal, else YAML. Exit codes: 0 nothing blocked,
1 error, 2 the plan holds blocked steps.`,
		Example: planExample,
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
	f := cmd.Flags()
	f.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "Plan every namespace (Istio's own and the system namespaces are listed as skipped)")
	f.StringVarP(&o.Selector, "selector", "l", "", "Plan the namespaces whose labels match this selector")
	f.StringVarP(&o.Output, "output", "o", "", "Output format: table, yaml, json, or a kubectl template (jsonpath=..., go-template=...) (default: table on a terminal, else yaml)")
	f.StringVar(&o.OutDir, "out-dir", "", "Also write the manifests of each phase, one file per phase per namespace, under this directory")
	f.StringVar(&o.Plan.Target, "target", o.Plan.Target, "Where the migration ends: strict, or permissive (stop before STRICT)")
	f.StringVar(&o.Plan.Authz, "authz", o.Plan.Authz, "Authorization policies from observed callers: off, dry-run (leave them in dry-run) or enforce (after a gate sees no shadow denials)")
	f.StringVar(&o.Plan.Revision, "revision", "", "Inject this Istio revision or revision tag (sets istio.io/rev, removes istio-injection)")
	f.StringSliceVar(&o.Plan.ExcludeWorkloads, "exclude-workload", nil, "NAMESPACE/WORKLOAD not to restart (repeatable); it keeps no sidecar, which blocks STRICT")
	f.StringSliceVar(&o.Plan.PortExceptions, "port-exception", nil, "NAMESPACE/WORKLOAD:PORT that keeps accepting plaintext under STRICT (repeatable), e.g. a metrics port scraped from outside the mesh")
	f.StringSliceVar(&o.Plan.AllowNoCallers, "allow-no-callers", nil, "Acknowledge that NAMESPACE/WORKLOAD (or NAMESPACE/*) had no observed caller and may be denied everything by allow-nothing (repeatable)")
	f.StringSliceVar(&o.Plan.ForceStrict, "force-strict", nil, "Plan STRICT for NAMESPACE despite its blockers (repeatable); the plan says it was forced")
	f.DurationVar(&o.MinVerifyWindow, "min-verify-window", plan.DefaultMinVerifyWindow, "The shortest window apply's traffic gates may judge (recorded in the plan): a gate over less traffic time is inconclusive, and apply --verify-window under it is refused; keep it many scrape intervals long")
	f.StringVar(&o.Plan.Dataplane, "dataplane", plan.DataplaneSidecar, "What the namespaces move to: sidecar, or ambient (ztunnel, with waypoints for L7; docs/ambient.md)")
	o.Traffic.AddFlags(f)
	_ = cmd.RegisterFlagCompletionFunc("dataplane", fixedCompletion(plan.DataplaneSidecar, plan.DataplaneAmbient))
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("table", "yaml", "json"))
	_ = cmd.RegisterFlagCompletionFunc("target", fixedCompletion(plan.TargetStrict, plan.TargetPermissive))
	_ = cmd.RegisterFlagCompletionFunc("authz", fixedCompletion(plan.AuthzOff, plan.AuthzDryRun, plan.AuthzEnforce))
	cmd.AddCommand(newCmdPlanValidate(streams))
	return cmd
}

// newCmdPlanValidate builds `kubectl meshmigrate plan validate`: the checks
// apply -f makes of the file, without a cluster, for a CI job reviewing a
// plan in a pull request.
func newCmdPlanValidate(streams genericiooptions.IOStreams) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate -f PLAN",
		Short: "Check a plan file offline, as apply reads it: its format, and that it was not edited",
		Long: `Validate reads a plan file the way "apply -f" does, without contacting the
cluster: apiVersion and kind, no unknown field, the structure apply relies on
(five phases in order, known statuses and actions, the waves), and the hash,
so a plan edited after it was made is refused. Whether the cluster still
matches the plan needs the cluster: "apply -f PLAN --dry-run=client" checks
that (exit 3 when stale). The file's JSON Schema is schema/migrationplan.json
in the repository (docs/plan.md).

Exit codes: 0 valid, 1 not a valid plan, 2 valid but it holds blocked steps.`,
		Example: `  # In the CI job of a pull request that adds plan.yaml
  kubectl meshmigrate plan validate -f plan.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f PLAN is required")
			}
			p, err := plan.Load(file)
			if err != nil {
				return err
			}
			fmt.Fprintf(streams.Out, "%s: plan %s is valid: %s in %s, %s to apply, %d blocked\n", file, p.ID,
				count(p.Summary.Namespaces, "namespace"), count(p.Summary.Waves, "wave"), count(p.Summary.Steps, "step"), p.Summary.Blocked)
			if p.NeedsAttention() {
				return errNeedsAttention
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "The plan file (YAML or JSON)")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	return cmd
}

// Complete fills the options from flags and the kubeconfig.
func (o *PlanOptions) Complete(cmd *cobra.Command) error {
	var err error
	if o.scope, err = resolveScope(cmd, o.configFlags, o.AllNamespaces, o.Selector); err != nil {
		return err
	}
	o.color = colorEnabled(o.Out)
	o.Plan.MinVerifyWindow = o.MinVerifyWindow.String()
	// An ambient plan needs ztunnel and istio-cni read even for namespaces
	// not enrolled yet.
	o.scope.Ambient = o.Plan.Dataplane == plan.DataplaneAmbient
	if o.Output == "" {
		o.Output = "yaml"
		if isTerminal(o.Out) {
			o.Output = "table"
		}
	}
	if o.reader, err = o.factory.Reader(); err != nil {
		return err
	}
	return nil
}

// Validate rejects bad input before anything is read.
func (o *PlanOptions) Validate() error {
	if err := checkObjectOutput(o.Output, "table", "yaml", "json"); err != nil {
		return err
	}
	switch o.Plan.Target {
	case plan.TargetStrict, plan.TargetPermissive:
	default:
		return fmt.Errorf("--target %q: use strict or permissive", o.Plan.Target)
	}
	switch o.Plan.Authz {
	case plan.AuthzOff, plan.AuthzDryRun, plan.AuthzEnforce:
	default:
		return fmt.Errorf("--authz %q: use off, dry-run or enforce", o.Plan.Authz)
	}
	if o.Selector != "" {
		if _, err := labels.Parse(o.Selector); err != nil {
			return fmt.Errorf("invalid --selector %q: %w", o.Selector, err)
		}
	}
	for _, w := range append(append([]string{}, o.Plan.ExcludeWorkloads...), o.Plan.AllowNoCallers...) {
		if _, _, err := plan.ParseWorkload(w); err != nil {
			return err
		}
	}
	if d := o.Plan.Dataplane; d != plan.DataplaneSidecar && d != plan.DataplaneAmbient {
		return fmt.Errorf("--dataplane %q: want sidecar or ambient", d)
	}
	if o.MinVerifyWindow < time.Second {
		return fmt.Errorf("--min-verify-window %s: want at least 1s (and many scrape intervals: one request in a short window proves nothing)", o.MinVerifyWindow)
	}
	for _, pe := range o.Plan.PortExceptions {
		if _, _, _, err := plan.ParsePortException(pe); err != nil {
			return fmt.Errorf("--port-exception %w", err)
		}
	}
	if o.OutDir != "" {
		if fi, err := os.Stat(o.OutDir); err == nil && !fi.IsDir() {
			return fmt.Errorf("--out-dir %s exists and is not a directory", o.OutDir)
		}
	}
	return o.Traffic.Validate()
}

// Run reads the cluster and the traffic, makes the plan and prints it. It
// returns errNeedsAttention (exit 2) when a step is blocked.
func (o *PlanOptions) Run(ctx context.Context) error {
	snap, report, obs, err := readAndAudit(ctx, o.reader, o.scope, &o.Traffic, o.factory)
	if err != nil {
		return err
	}
	if len(report.Namespaces) == 0 {
		return errors.New("no namespace to plan: none matches the scope (-n, -l or -A)")
	}
	p, err := plan.Build(plan.Input{Snapshot: snap, Report: report, Graph: obs.Graph}, o.Plan)
	if err != nil {
		return err
	}
	if o.OutDir != "" {
		if err := writeManifests(o.OutDir, p); err != nil {
			return err
		}
		fmt.Fprintf(o.ErrOut, "Wrote the manifests of plan %s under %s\n", p.ID, o.OutDir)
	}
	switch {
	case o.Output == "table":
		err = printPlan(o.Out, p, o.color)
	case isTemplate(o.Output):
		err = printTemplate(o.Out, p, o.Output)
	default:
		var b []byte
		if b, err = p.Marshal(o.Output == "json"); err == nil {
			_, err = o.Out.Write(b)
		}
	}
	if err != nil {
		return err
	}
	if p.NeedsAttention() {
		return errNeedsAttention
	}
	return nil
}

// writeManifests writes the rendered files under dir, each one atomically
// (written beside its place, then renamed), so a reader never sees half a
// file.
func writeManifests(dir string, p *plan.Plan) error {
	files, err := p.Render()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create --out-dir: %w", err)
	}
	for _, name := range sortedNames(files) {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("write manifests: %w", err)
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, files[name], 0o644); err != nil {
			return fmt.Errorf("write manifests: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write manifests: %w", err)
		}
	}
	return nil
}

func sortedNames(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// printPlan prints the plan for a reviewer: the waves and each namespace's
// phases, then every blocked step with its reason.
func printPlan(w io.Writer, p *plan.Plan, color bool) error {
	fmt.Fprintf(w, "Plan %s for %s: target %s, authorization %s\n", p.ID, clusterName(p.Cluster), p.Options.Target, p.Options.Authz)
	if p.Traffic != nil {
		fmt.Fprintf(w, "Traffic: %s over %s since %s (%s)\n", count(p.Traffic.Edges, "edge"), p.Traffic.Window, p.Traffic.Start.Format("2006-01-02T15:04:05Z07:00"), p.Traffic.Source)
	} else {
		fmt.Fprintln(w, "Traffic: not read; STRICT waits for the verify gate and authorization cannot be planned")
	}
	fmt.Fprintln(w)
	t := newTable(w)
	header := []any{"WAVE", "NAMESPACE"}
	for _, ph := range plan.PhasesOf(p.Options.Dataplane) {
		header = append(header, strings.ToUpper(string(ph)))
	}
	t.Header(append(header, "AFTER")...)
	for _, ns := range p.Namespaces {
		row := []string{fmt.Sprint(ns.Wave), ns.Name}
		for _, ph := range ns.Phases {
			row = append(row, statusCell(ph, color))
		}
		row = append(row, dash(strings.Join(ns.CalledBy, ",")))
		if err := t.Append(row); err != nil {
			return err
		}
	}
	if err := t.Render(); err != nil {
		return err
	}
	if len(p.Summary.BlockedSteps) > 0 {
		fmt.Fprintf(w, "\n%s:\n", paint(color, ansiRed, "Blocked"))
		for _, b := range p.Summary.BlockedSteps {
			fmt.Fprintf(w, "  %s\n", b)
		}
	}
	var uncovered []string
	for _, ns := range p.Namespaces {
		uncovered = append(uncovered, ns.Uncovered...)
	}
	if len(uncovered) > 0 && p.Options.Authz != plan.AuthzOff {
		fmt.Fprintf(w, "\nNo observed caller (allow-nothing would deny all their inbound traffic):\n  %s\n", strings.Join(uncovered, ", "))
	}
	if len(p.Skipped) > 0 {
		fmt.Fprintln(w, "\nNot migrated:")
		for _, s := range p.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.Name, s.Reason)
		}
	}
	fmt.Fprintf(w, "\n%s in %s, %s to apply, %d blocked. Save for review with -o yaml > plan.yaml.\n",
		count(p.Summary.Namespaces, "namespace"), count(p.Summary.Waves, "wave"), count(p.Summary.Steps, "step"), p.Summary.Blocked)
	return nil
}

// statusCell shows a phase's status with the count of its pending steps.
func statusCell(ph plan.Phase, color bool) string {
	n := 0
	for _, st := range ph.Steps {
		if st.Status == plan.StatusPending && st.Action != plan.ActionGate {
			n++
		}
	}
	switch ph.Status {
	case plan.StatusBlocked:
		return paint(color, ansiRed, "blocked")
	case plan.StatusDone:
		return paint(color, ansiGreen, "done")
	case plan.StatusSkipped:
		return "skipped"
	}
	if ph.Name == plan.PhaseVerify {
		return "gate"
	}
	forced := ""
	for _, st := range ph.Steps {
		if st.Forced {
			forced = " FORCED"
		}
	}
	return paint(color, ansiYellow, fmt.Sprintf("%s%s", count(n, "step"), forced))
}

func clusterName(c plan.Cluster) string {
	switch {
	case c.Context != "" && c.UID != "":
		return fmt.Sprintf("context %s (cluster %s)", c.Context, c.UID)
	case c.Context != "":
		return "context " + c.Context
	}
	return c.Server
}
