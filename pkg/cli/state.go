package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// RollbackOptions are the options of `kubectl meshmigrate rollback`.
type RollbackOptions struct {
	configFlags *genericclioptions.ConfigFlags
	factory     *Factory
	genericiooptions.IOStreams

	To   string
	All  bool
	Exec ExecFlags
	// BreakDependents and AcceptRestarts lift two of rollback's refusals.
	BreakDependents bool
	AcceptRestarts  bool

	namespaces []string
}

// NewRollbackOptions returns options with their defaults.
func NewRollbackOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *RollbackOptions {
	return &RollbackOptions{configFlags: configFlags, IOStreams: streams}
}

func newCmdRollback(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, f *Factory) *cobra.Command {
	o := NewRollbackOptions(configFlags, streams)
	o.factory = f
	cmd := &cobra.Command{
		Use:   "rollback -n NS[,NS...] (--to PHASE | --all) [--dry-run=none|client|server] [--yes]",
		Short: "Undo namespaces' migration, from the undo records in their checkpoints",
		Long: `Rollback undoes what apply changed in one namespace, newest change first, from
the undo records in its checkpoint: labels and objects return to exactly what
they were, objects the plan created are deleted (only if they still carry the
plan's label), and workloads restarted for injection are rolled back onto
their prior pod template once the namespace's injection labels are restored.

--to PHASE keeps that phase and the ones before it; --all undoes every change
of every plan applied to the namespace and removes the checkpoint and lock.
A change someone else made since stops the rollback, named, untouched.

--all removes sidecars, so it is refused while a namespace that this one calls
is STRICT (or enforces authorization) and would then receive plaintext: roll
that one back first, or both together (-n frontend,backend: every namespace
named goes back to the end of its inject phase first, then the rest), or pass
--break-dependents. A workload restarted again since the plan restarted it
stops the rollback unless --accept-restarts. Pods that still carry a sidecar
afterwards (created while the namespace was labelled) are listed with the
command that restarts them.`,
		Example: `  # What would a full rollback do?
  kubectl meshmigrate rollback -n shop --all --dry-run=client

  # Back to PERMISSIVE (undo strict and authz)
  kubectl meshmigrate rollback -n shop --to permissive --yes

  # A caller and the STRICT namespace it calls, together
  kubectl meshmigrate rollback -n frontend,backend --all --yes`,
		Args: cobra.NoArgs,
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
	cmd.Flags().StringVar(&o.To, "to", "", "Keep this phase and those before it; undo the ones after")
	cmd.Flags().BoolVar(&o.All, "all", false, "Undo every change")
	cmd.Flags().BoolVar(&o.BreakDependents, "break-dependents", false, "Remove the sidecars even though STRICT namespaces this one calls rely on them: their calls from it fail from then on")
	cmd.Flags().BoolVar(&o.AcceptRestarts, "accept-restarts", false, "Leave a workload restarted again since the plan restarted it (kubectl rollout restart, a GitOps restart) as it is, and finish")
	o.Exec.AddFlags(cmd.Flags(), false)
	_ = cmd.RegisterFlagCompletionFunc("to", cobra.FixedCompletions(plan.PhaseNames(plan.AllPhases), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Complete takes the namespaces, which must be named explicitly.
func (o *RollbackOptions) Complete(cmd *cobra.Command) error {
	o.namespaces = namespacesFlag(cmd)
	if len(o.namespaces) == 0 {
		return errors.New("rollback needs its namespaces named explicitly: -n NS[,NS...]")
	}
	return nil
}

// Validate rejects bad input.
func (o *RollbackOptions) Validate() error {
	switch {
	case o.All == (o.To != ""):
		return errors.New("say how far to roll back: --to PHASE or --all (one of them)")
	case o.To != "" && !isPhase(o.To):
		return fmt.Errorf("--to %q: want one of %s", o.To, plan.PhaseList())
	}
	return o.Exec.Validate()
}

// Run rolls back.
func (o *RollbackOptions) Run(ctx context.Context) error {
	ex, err := newExecutor(o.factory.Executor, textEvents(o.Out), &o.Exec, phases.Options{BreakDependents: o.BreakDependents, AcceptRestarts: o.AcceptRestarts})
	if err != nil {
		return err
	}
	for _, ns := range o.namespaces {
		if _, err := ex.Cluster.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	names := strings.Join(o.namespaces, ", ")
	what := "every change"
	if o.To != "" {
		what = "the phases after " + o.To
	}
	if !o.Exec.dry() {
		if err := confirm(ctx, o.In, o.Out, o.Exec.Yes, fmt.Sprintf("Roll back %s in namespace %s", what, names)); err != nil {
			return err
		}
	}
	out, err := ex.Rollback(ctx, o.namespaces, plan.PhaseName(o.To))
	if err != nil {
		return err
	}
	if o.Exec.dry() {
		fmt.Fprintf(o.Out, "Dry run (%s): %s would be undone; nothing was changed\n", o.Exec.DryRun, count(out.Changes, "change"))
		return nil
	}
	fmt.Fprintf(o.Out, "Rolled back %s in %s\n", count(out.Changes, "change"), names)
	if len(out.Leftovers) > 0 {
		fmt.Fprintf(o.Out, "%s still carry sidecars the restored labels no longer give; restart them:\n", count(len(out.Leftovers), "workload"))
		for _, l := range out.Leftovers {
			fmt.Fprintf(o.Out, "  %s\n", l)
		}
	}
	return nil
}

// StatusOptions are the options of `kubectl meshmigrate status`.
type StatusOptions struct {
	configFlags *genericclioptions.ConfigFlags
	factory     *Factory
	genericiooptions.IOStreams

	AllNamespaces bool
	Output        string

	namespaces []string
}

// NewStatusOptions returns options with their defaults.
func NewStatusOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *StatusOptions {
	return &StatusOptions{configFlags: configFlags, IOStreams: streams, Output: "table"}
}

func newCmdStatus(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, f *Factory) *cobra.Command {
	o := NewStatusOptions(configFlags, streams)
	o.factory = f
	cmd := &cobra.Command{
		Use:   "status [-n NS[,NS...] | -A] [-o table|yaml|json]",
		Short: "Show where each namespace's migration stands: phase, last gate, lock holder",
		Example: `  kubectl meshmigrate status -A
  kubectl meshmigrate status -n shop -o yaml   # the whole checkpoint, with its undo records`,
		Args: cobra.NoArgs,
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
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "Every namespace with a checkpoint")
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format: table, yaml or json")
	return cmd
}

// Complete resolves the namespaces as kubectl does.
func (o *StatusOptions) Complete(cmd *cobra.Command) error {
	scope, err := resolveScope(cmd, o.configFlags, o.AllNamespaces, "")
	o.namespaces = scope.Namespaces
	return err
}

// Validate rejects bad input.
func (o *StatusOptions) Validate() error {
	return checkOutput(o.Output, "table", "yaml", "json")
}

// Run prints the status.
func (o *StatusOptions) Run(ctx context.Context) error {
	kube, err := o.factory.Kube()
	if err != nil {
		return err
	}
	c := &phases.Cluster{Kube: kube}
	sts, err := c.Status(ctx, o.namespaces, o.AllNamespaces)
	if err != nil {
		return err
	}
	if o.Output != "table" {
		if err := printObject(o.Out, &sts, o.Output); err != nil {
			return err
		}
		return invalidCheckpoints(sts)
	}
	if len(sts) == 0 {
		fmt.Fprintln(o.ErrOut, "No migration checkpoints found.")
		return nil
	}
	if err := o.printStatus(sts); err != nil {
		return err
	}
	for _, s := range sts {
		if s.Error != "" {
			fmt.Fprintf(o.ErrOut, "%s: %s\n", s.Namespace, s.Error)
		}
	}
	return invalidCheckpoints(sts)
}

// invalidCheckpoints ends status with exit 1 when a checkpoint cannot be
// used, after every namespace was shown: apply and rollback fail (exit 1)
// on those namespaces for the same reason, so a script sees one code.
func invalidCheckpoints(sts []phases.NamespaceStatus) error {
	var bad []string
	for _, s := range sts {
		if s.Error != "" {
			bad = append(bad, s.Namespace)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d checkpoints cannot be used (%s): apply and rollback refuse those namespaces until they are fixed", len(bad), len(sts), strings.Join(bad, ", "))
}

func (o *StatusOptions) printStatus(sts []phases.NamespaceStatus) error {
	rows := [][]string{}
	for _, s := range sts {
		gate := "-"
		if s.Gate != nil {
			gate = string(s.Gate.Name) + " " + string(s.Gate.Result) + " at " + s.Gate.At.Format(time.RFC3339)
		}
		lock := "free"
		if s.Lock != nil && s.Lock.Held {
			// The times are the holder's clock: a past expiry on this one
			// may be a dead holder or clocks that differ, so it is not
			// called expired (a waiting run watches the lease to tell).
			lock = fmt.Sprintf("held by %q (renewed %s, expires %s unless renewed)", s.Lock.Holder, s.Lock.Renewed.Format(time.RFC3339), s.Lock.Expires.Format(time.RFC3339))
			if time.Now().After(s.Lock.Expires) {
				lock = fmt.Sprintf("held by %q (renewed %s, by its clock; past its expiry %s by this one: a dead holder, or clocks that differ)", s.Lock.Holder, s.Lock.Renewed.Format(time.RFC3339), s.Lock.Expires.Format(time.RFC3339))
			}
		}
		updated := "-"
		if !s.UpdatedAt.IsZero() {
			updated = s.UpdatedAt.Format(time.RFC3339)
		}
		plan := s.PlanID
		if plan == "" {
			plan = "-"
		}
		records := fmt.Sprint(s.Records)
		if s.Error != "" {
			records = "-" // unknown: the records could not be read
		}
		guard := "-"
		if g := s.Guard; g != nil {
			guard = string(g.Result)
			if g.Undone {
				guard += ", undone"
			}
			if g.Result != phases.GuardOff {
				guard += " (" + g.Since.Format(time.RFC3339) + " to " + g.Until.Format(time.RFC3339) + ")"
			}
		}
		rows = append(rows, []string{s.Namespace, plan, string(s.Phase), string(s.State), gate, guard, records, lock, updated})
	}
	return renderRows(o.Out, []string{"NAMESPACE", "PLAN", "PHASE", "STATE", "LAST GATE", "GUARD", "UNDO RECORDS", "LOCK", "UPDATED"}, rows)
}

// UnlockOptions are the options of `kubectl meshmigrate unlock`.
type UnlockOptions struct {
	configFlags *genericclioptions.ConfigFlags
	factory     *Factory
	genericiooptions.IOStreams
	namespace string
}

func newCmdUnlock(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, f *Factory) *cobra.Command {
	o := &UnlockOptions{configFlags: configFlags, IOStreams: streams, factory: f}
	return &cobra.Command{
		Use:   "unlock -n NS",
		Short: "Release a namespace's lock whose holder you know is dead",
		Long: `A run renews its lock while it works; a crashed run's lock is taken over by
the next apply once that has watched it unrenewed for its lease duration
(30s by default). Unlock releases it at once, for the operator
who knows the holder is dead. Releasing the lock of a live run lets a second
run in beside it: check "kubectl meshmigrate status" first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns := namespacesFlag(cmd)
			if len(ns) != 1 {
				return errors.New("unlock needs exactly one namespace, named explicitly: -n NS")
			}
			o.namespace = ns[0]
			return o.Run(cmd.Context())
		},
	}
}

// Run releases the lock.
func (o *UnlockOptions) Run(ctx context.Context) error {
	kube, err := o.factory.Kube()
	if err != nil {
		return err
	}
	before, err := (&phases.Cluster{Kube: kube}).Unlock(ctx, o.namespace)
	switch {
	case err != nil:
		return err
	case before == nil || !before.Held:
		fmt.Fprintf(o.Out, "namespace %s is not locked\n", o.namespace)
	default:
		fmt.Fprintf(o.Out, "released the lock of %q on namespace %s (renewed %s)\n", before.Holder, o.namespace, before.Renewed.Format(time.RFC3339))
	}
	return nil
}
