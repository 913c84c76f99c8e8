package cli

import (
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"

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
	r, err := newReader(f.configFlags)
	if err != nil {
		return nil, err
	}
	f.reader = r
	return r, nil
}

// Kube is the typed client (status, unlock).
func (f *Factory) Kube() (kubernetes.Interface, error) {
	if f.kube != nil {
		return f.kube, nil
	}
	k, err := kubeClient(f.configFlags)
	if err != nil {
		return nil, err
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
	return connectTo(f.configFlags)(flags)
}
