package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
)

// VerifyOptions are the options of `kubectl meshmigrate verify`.
type VerifyOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	AllNamespaces bool
	Selector      string
	Output        string
	Traffic       TrafficFlags

	factory *Factory
}

// NewVerifyOptions returns options with their defaults.
func NewVerifyOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *VerifyOptions {
	return &VerifyOptions{configFlags: configFlags, IOStreams: streams, Output: "table"}
}

func newCmdVerify(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, f *Factory) *cobra.Command {
	o := NewVerifyOptions(configFlags, streams)
	o.factory = f
	cmd := &cobra.Command{
		Use:   "verify [-n NS[,NS...] | -A | -l SELECTOR] [traffic flags]",
		Short: "Run the verify gate alone: may these namespaces go STRICT now?",
		Long: `Verify evaluates the gate apply runs before STRICT, on live telemetry, and
changes nothing: real inbound traffic over the window and none of it
plaintext, every pod meshed, no DestinationRule turning TLS off toward the
namespace. No traffic at all is inconclusive, never a pass. When the gate is
closed it names the culprits: which client workload, from which namespace.

Exit codes: 0 every namespace passes, 1 error, 2 some namespace does not pass
(failed or inconclusive).`,
		Example: `  kubectl meshmigrate verify -n shop --traffic-window 72h
  kubectl meshmigrate verify -A -o json | jq '.[] | select(.result != "passed")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			scope, err := resolveScope(cmd, o.configFlags, o.AllNamespaces, o.Selector)
			if err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), scope)
		},
	}
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "Every namespace")
	cmd.Flags().StringVarP(&o.Selector, "selector", "l", "", "Namespaces by label selector")
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "Output format: table or json")
	o.Traffic.AddFlags(cmd.Flags())
	return cmd
}

// Validate rejects bad input.
func (o *VerifyOptions) Validate() error {
	if err := checkOutput(o.Output, "table", "json"); err != nil {
		return err
	}
	if o.Traffic.NoTraffic || o.Traffic.File != "" {
		return errors.New("verify judges live telemetry: --no-traffic and --traffic-file cannot pass its gate")
	}
	return o.Traffic.Validate()
}

// VerifyResult is one namespace's gate result.
type VerifyResult struct {
	Namespace string `json:"namespace"`
	phases.GateResult
}

// Run evaluates the gate.
func (o *VerifyOptions) Run(ctx context.Context, scope cluster.Scope) error {
	reader, err := o.factory.Reader()
	if err != nil {
		return err
	}
	_, report, _, err := readAndAudit(ctx, reader, scope, &o.Traffic, o.factory)
	if err != nil {
		return err
	}
	var results []VerifyResult
	pass := true
	for i := range report.Namespaces {
		nr := &report.Namespaces[i]
		if nr.Excluded != "" {
			continue
		}
		g := phases.VerifyGate(nr, phases.Expect{}, time.Now().UTC())
		pass = pass && g.Result == phases.GatePassed
		results = append(results, VerifyResult{Namespace: nr.Name, GateResult: g})
	}
	if len(results) == 0 {
		return errors.New("no namespace to verify: the scope matched none, or only namespaces Istio never injects (check -n, -l or -A)")
	}
	if o.Output == "json" {
		if err := printObject(o.Out, &results, "json"); err != nil {
			return err
		}
	} else {
		var rows [][]string
		for _, r := range results {
			rows = append(rows, []string{r.Namespace, strings.ToUpper(string(r.Result)), r.Message})
		}
		if err := renderRows(o.Out, []string{"NAMESPACE", "GATE", "REASON"}, rows); err != nil {
			return err
		}
		for _, r := range results {
			for _, c := range r.Culprits {
				fmt.Fprintf(o.Out, "%s: %s\n", r.Namespace, c)
			}
		}
	}
	if !pass {
		return errNeedsAttention
	}
	return nil
}
