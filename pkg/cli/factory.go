package cli

import (
	"fmt"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
)

// Factory builds the clients a command works through, from the kubectl
// flags (kubectl's cmdutil.Factory, small): one is made on the root command
// and handed to every command's options. Tests make one over client-go's
// fakes (newTestFactory).
type Factory struct {
	configFlags *genericclioptions.ConfigFlags
	// reader, kube and connect, when set, stand in for what the flags
	// would reach (tests).
	reader  snapshotReader
	kube    kubernetes.Interface
	connect connector
	config  *rest.Config
}

// NewFactory reaches the cluster configFlags name.
func NewFactory(configFlags *genericclioptions.ConfigFlags) *Factory {
	return &Factory{configFlags: configFlags}
}

// Reader reads snapshots of the cluster (audit, plan, verify).
func (f *Factory) Reader() (snapshotReader, error) {
	if f.reader != nil {
		return f.reader, nil
	}
	r, err := f.newReader()
	if err != nil {
		return nil, err
	}
	f.reader = r
	return r, nil
}

// newReader builds the cluster reader over the factory's config and typed
// client (one client, one rate limit, for reads and writes alike).
func (f *Factory) newReader() (*cluster.Reader, error) {
	cfg, err := f.RESTConfig()
	if err != nil {
		return nil, err
	}
	kube, err := f.Kube()
	if err != nil {
		return nil, err
	}
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build the Istio client: %w", err)
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build the metadata client: %w", err)
	}
	r := cluster.NewReader(cluster.Clients{Kube: kube, Istio: ic, Metadata: md})
	r.Server = cfg.Host
	if raw, err := f.configFlags.ToRawKubeConfigLoader().RawConfig(); err == nil {
		r.Context = raw.CurrentContext
		if f.configFlags.Context != nil && *f.configFlags.Context != "" {
			r.Context = *f.configFlags.Context
		}
	}
	return r, nil
}

// RESTConfig is the cluster config the kubectl flags name, with the
// plugin's user agent (the Prometheus service proxy goes through it).
func (f *Factory) RESTConfig() (*rest.Config, error) {
	if f.config == nil {
		cfg, err := restConfig(f.configFlags)
		if err != nil {
			return nil, err
		}
		f.config = cfg
	}
	return rest.CopyConfig(f.config), nil
}

// Kube is the typed client (status, unlock, completion, finding
// Prometheus).
func (f *Factory) Kube() (kubernetes.Interface, error) {
	if f.kube != nil {
		return f.kube, nil
	}
	cfg, err := f.RESTConfig()
	if err != nil {
		return nil, err
	}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build the Kubernetes client: %w", err)
	}
	f.kube = k
	return k, nil
}

// Executor reaches the cluster the executor writes to, and the observer
// its gates read (apply, rollback).
func (f *Factory) Executor(flags *ExecFlags) (*phases.Cluster, phases.Observer, error) {
	if f.connect != nil {
		return f.connect(flags)
	}
	reader, err := f.Reader()
	if err != nil {
		return nil, nil, err
	}
	cfg, err := f.RESTConfig()
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("build the dynamic client: %w", err)
	}
	kube, err := f.Kube()
	if err != nil {
		return nil, nil, err
	}
	return &phases.Cluster{Kube: kube, Dynamic: dyn}, &clusterObserver{reader: reader, traffic: flags.Traffic, factory: f}, nil
}
