//go:build e2e

// Package e2e runs kubectl-meshmigrate, as a kubectl plugin on PATH, against
// a real Kubernetes API server.
//
// E2E_PROVIDER picks the cluster:
//
//	kwok (default)  real etcd, kube-apiserver, controller manager and scheduler
//	                built from their Go modules (hack/e2e-tools.sh), kwok fake
//	                nodes, no Docker; Istio's CRDs, and a STAND-IN for istiod's
//	                sidecar injector (internal/e2e/injector) on 127.0.0.1.
//	kind            a kind cluster (needs Docker) with Istio installed by
//	                istioctl (needs istioctl on PATH): real istiod injection.
//
// Both providers run the same tests over the same scenario
// (internal/e2e/scenario.go).
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"
	"sigs.k8s.io/e2e-framework/support/kind"
	"sigs.k8s.io/e2e-framework/support/kwok"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e/injector"
)

const clusterPrefix = "meshmigrate-e2e"

var (
	testenv env.Environment
	// pathDirs go first on PATH when the plugin runs: the plugin binary and,
	// for kwok, the kubectl built with the control plane.
	pathDirs []string
	kubectl  = "kubectl"
)

func TestMain(m *testing.M) {
	cfg, err := envconf.NewFromFlags()
	if err != nil {
		klog.Fatal(err)
	}
	testenv = env.NewWithConfig(cfg)
	ctx := context.Background()
	work, err := os.MkdirTemp("", "meshmigrate-e2e-")
	if err != nil {
		klog.Fatal(err)
	}
	defer os.RemoveAll(work)

	pluginDir := filepath.Join(work, "bin")
	root, err := e2e.RepoRoot()
	if err != nil {
		klog.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "kubectl-meshmigrate"), "./cmd/kubectl-meshmigrate")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		klog.Fatalf("build the plugin: %v", err)
	}
	// kubectl's plugin completion runs this helper from PATH, as after install.
	helper, err := os.ReadFile(filepath.Join(root, "hack", "kubectl_complete-meshmigrate"))
	if err == nil {
		err = os.WriteFile(filepath.Join(pluginDir, "kubectl_complete-meshmigrate"), helper, 0o755)
	}
	if err != nil {
		klog.Fatalf("install the completion helper: %v", err)
	}
	pathDirs = []string{pluginDir}

	name := envconf.RandomName(clusterPrefix, 24)
	var nodes int
	switch provider := os.Getenv("E2E_PROVIDER"); provider {
	case "", "kwok":
		bin, err := e2e.Tools(ctx)
		if err != nil {
			klog.Fatal(err)
		}
		kubectl = filepath.Join(bin, "kubectl")
		pathDirs = append(pathDirs, bin)
		e2e.DeleteStaleClusters(ctx, bin, clusterPrefix)
		kwokCfg, err := e2e.KwokConfig(bin, work)
		if err != nil {
			klog.Fatal(err)
		}
		nodes = 2
		var srv *injector.Server
		testenv.Setup(
			envfuncs.CreateClusterWithConfig(kwok.NewProvider().WithVersion(e2e.KwokVersion), name, kwokCfg, kwok.WithPath(filepath.Join(bin, "kwokctl"))),
			func(ctx context.Context, c *envconf.Config) (context.Context, error) {
				_, err := e2e.Kwokctl(ctx, bin, "scale", "node", "--replicas", fmt.Sprint(nodes), "--name", name)
				return ctx, err
			},
			func(ctx context.Context, c *envconf.Config) (context.Context, error) {
				return ctx, e2e.InstallIstioCRDs(ctx, c.Client().RESTConfig())
			},
			func(ctx context.Context, c *envconf.Config) (context.Context, error) {
				srv, err = injector.Start("127.0.0.1:0", e2e.Revisions...)
				if err != nil {
					return ctx, err
				}
				return ctx, srv.Register(ctx, kubernetes.NewForConfigOrDie(c.Client().RESTConfig()), e2e.Installs...)
			},
		)
		testenv.Finish(func(ctx context.Context, c *envconf.Config) (context.Context, error) {
			if srv != nil {
				return ctx, srv.Close()
			}
			return ctx, nil
		})
	case "kind":
		nodes = 1
		testenv.Setup(
			envfuncs.CreateCluster(kind.NewProvider(), name),
			installIstio,
		)
	default:
		klog.Fatalf("E2E_PROVIDER=%q: use kwok or kind", provider)
	}
	testenv.Setup(func(ctx context.Context, c *envconf.Config) (context.Context, error) {
		rc := c.Client().RESTConfig()
		sc := &e2e.Scenario{Kube: kubernetes.NewForConfigOrDie(rc), Istio: istioclient.NewForConfigOrDie(rc), Nodes: nodes}
		applyCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		return ctx, sc.Apply(applyCtx)
	})
	testenv.Finish(envfuncs.DestroyCluster(name))
	os.Exit(testenv.Run(m))
}

// installIstio installs real Istio with the scenario's revisions and tag
// (kind provider only): 1-30 as the default with classic sidecars, 1-31 with
// native sidecars behind the tag "canary".
func installIstio(ctx context.Context, c *envconf.Config) (context.Context, error) {
	kubeconfig := c.KubeconfigFile()
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "istioctl", append(args, "--kubeconfig", kubeconfig)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	steps := [][]string{
		{"install", "-y", "--set", "revision=1-30", "--set", "values.pilot.env.ENABLE_NATIVE_SIDECARS=false"},
		{"install", "-y", "--set", "revision=1-31", "--set", "values.pilot.env.ENABLE_NATIVE_SIDECARS=true"},
		{"tag", "set", "default", "--revision", "1-30", "--overwrite"},
		{"tag", "set", "canary", "--revision", "1-31", "--overwrite"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return ctx, fmt.Errorf("istioctl %v: %w", s, err)
		}
	}
	return ctx, nil
}
