// Package cli wires the kubectl-meshmigrate commands: flags, option
// validation and printing. The work itself lives in pkg/cluster and
// pkg/audit, which know nothing of flags.
package cli

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// NewRootCommand builds `kubectl meshmigrate` with its subcommands. The
// standard kubectl flags (--kubeconfig, --context, -n, --as, ...) come from
// cli-runtime's ConfigFlags, shared by every subcommand.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	return newRootCommand(streams, nil)
}

// newRootCommand lets tests hand in a fake cluster reader, and a fake
// cluster for apply; nil reaches the cluster the flags point at.
func newRootCommand(streams genericiooptions.IOStreams, f *Factory) *cobra.Command {
	configFlags := genericclioptions.NewConfigFlags(true)
	if f == nil {
		f = NewFactory(configFlags)
	} else {
		f.configFlags = configFlags
	}
	root := &cobra.Command{
		Use:   "kubectl-meshmigrate",
		Short: "Move namespaces safely into the Istio mesh: audit, plan, STRICT mTLS, deny-by-default",
		Long: `kubectl meshmigrate takes namespaces from "no sidecars, plaintext traffic" to
"every pod meshed, STRICT mTLS, deny-by-default authorization" without breaking live traffic.

Start with an audit:  kubectl meshmigrate audit -A
Then review a plan:   kubectl meshmigrate plan -A -o yaml > plan.yaml
Execute it:           kubectl meshmigrate apply -f plan.yaml
Follow it:            kubectl meshmigrate status -A`,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl meshmigrate",
		},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	configFlags.AddFlags(root.PersistentFlags())
	registerCompletions(root, f)
	root.AddCommand(newCmdAudit(configFlags, streams, f))
	root.AddCommand(newCmdPlan(configFlags, streams, f))
	root.AddCommand(newCmdApply(configFlags, streams, f))
	root.AddCommand(newCmdStatus(configFlags, streams, f))
	root.AddCommand(newCmdVerify(configFlags, streams, f))
	root.AddCommand(newCmdRollback(configFlags, streams, f))
	root.AddCommand(newCmdUnlock(configFlags, streams, f))
	root.AddCommand(newCmdTraffic(streams, f))
	root.AddCommand(NewCmdVersion(streams))
	return root
}
