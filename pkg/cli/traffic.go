package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// DefaultTrafficWindow is long enough to see daily callers; use days where
// Prometheus retention allows, so weekly CronJobs show up too.
const DefaultTrafficWindow = 24 * time.Hour

// TrafficFlags are the traffic flags every command that judges traffic takes.
type TrafficFlags struct {
	PrometheusURL     string
	PrometheusService string
	Window            time.Duration
	NoTraffic         bool
	File              string
}

// AddFlags registers the flags.
func (f *TrafficFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.PrometheusURL, "prometheus-url", "", "Prometheus to read Istio telemetry from (default: a Prometheus service found in the cluster, reached through the API server's service proxy)")
	fs.StringVar(&f.PrometheusService, "prometheus-service", "", "The in-cluster Prometheus service as NAMESPACE/NAME[:PORT], reached through the API server's service proxy")
	fs.DurationVar(&f.Window, "traffic-window", DefaultTrafficWindow, "How far back to look for traffic; rare callers (weekly CronJobs) need days")
	fs.BoolVar(&f.NoTraffic, "no-traffic", false, "Do not read telemetry: traffic is then unknown, and nothing past verify is called safe")
	fs.StringVar(&f.File, "traffic-file", "", "Read the traffic graph from a file saved by `kubectl meshmigrate traffic export`")
}

// Validate rejects contradictory flags.
func (f *TrafficFlags) Validate() error {
	sources := 0
	for _, set := range []bool{f.PrometheusURL != "", f.PrometheusService != "", f.File != "", f.NoTraffic} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return errors.New("--prometheus-url, --prometheus-service, --traffic-file and --no-traffic exclude each other: pick one")
	}
	if f.Window <= 0 {
		return fmt.Errorf("--traffic-window must be positive, got %s", f.Window)
	}
	return nil
}

// prometheus returns the reader the flags point at.
func (f *TrafficFlags) prometheus(ctx context.Context, factory *Factory) (*traffic.Prometheus, error) {
	if f.PrometheusURL != "" {
		return traffic.NewPrometheus(f.PrometheusURL, nil)
	}
	cfg, err := factory.RESTConfig()
	if err != nil {
		return nil, err
	}
	kube, err := factory.Kube()
	if err != nil {
		return nil, err
	}
	return traffic.Discover(ctx, kube, cfg, f.PrometheusService)
}

// Observe reads the traffic the flags ask for. Not finding a Prometheus in
// the cluster is not an error (the audit says traffic is unknown, with a
// finding); a Prometheus the user named that cannot be read is.
func (f *TrafficFlags) Observe(ctx context.Context, factory *Factory) (audit.Observation, error) {
	switch {
	case f.NoTraffic:
		return audit.Observation{Reason: "--no-traffic: telemetry was not read"}, nil
	case f.File != "":
		g, err := traffic.Load(f.File)
		if err != nil {
			return audit.Observation{}, err
		}
		return audit.Observation{Graph: g}, nil
	}
	p, err := f.prometheus(ctx, factory)
	if errors.Is(err, traffic.ErrNoPrometheus) {
		return audit.Observation{Reason: err.Error(), Failed: true}, nil
	}
	if err != nil {
		return audit.Observation{}, err
	}
	g, err := p.Read(ctx, f.Window)
	if err != nil {
		return audit.Observation{}, err
	}
	return audit.Observation{Graph: g}, nil
}

// NewCmdTraffic builds `kubectl meshmigrate traffic`.
func NewCmdTraffic(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdTraffic(streams, NewFactory(configFlags))
}

func newCmdTraffic(streams genericiooptions.IOStreams, f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "traffic",
		Short: "Work with the observed traffic graph",
	}
	cmd.AddCommand(newCmdTrafficExport(streams, f))
	return cmd
}

// TrafficExportOptions are the options of `traffic export`.
type TrafficExportOptions struct {
	factory *Factory
	genericiooptions.IOStreams
	Traffic TrafficFlags
	Output  string
}

func newCmdTrafficExport(streams genericiooptions.IOStreams, f *Factory) *cobra.Command {
	o := &TrafficExportOptions{factory: f, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "export [-o FILE]",
		Short: "Save the observed traffic graph, to audit and plan from it offline (--traffic-file)",
		Example: `  # Save a week of traffic, then audit from the file
  kubectl meshmigrate traffic export --traffic-window 168h -o traffic.yaml
  kubectl meshmigrate audit -A --traffic-file traffic.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.Traffic.AddFlags(cmd.Flags())
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "File to write (.json for JSON, else YAML); default standard output")
	return cmd
}

// Validate rejects flags that make no sense for an export.
func (o *TrafficExportOptions) Validate() error {
	if o.Traffic.NoTraffic || o.Traffic.File != "" {
		return errors.New("traffic export reads Prometheus: --no-traffic and --traffic-file do not apply")
	}
	return o.Traffic.Validate()
}

// Run reads the graph and writes it.
func (o *TrafficExportOptions) Run(ctx context.Context) error {
	p, err := o.Traffic.prometheus(ctx, o.factory)
	if err != nil {
		return err
	}
	g, err := p.Read(ctx, o.Traffic.Window)
	if err != nil {
		return err
	}
	if o.Output != "" {
		if err := g.Save(o.Output); err != nil {
			return err
		}
		fmt.Fprintf(o.ErrOut, "Wrote %s over %s to %s\n", count(len(g.Edges), "edge"), g.Describe(), o.Output)
		return nil
	}
	return printObject(o.Out, g, "yaml")
}
