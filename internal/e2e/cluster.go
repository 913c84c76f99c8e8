// Package e2e holds what the e2e suite and `make demo` share: building and
// starting a real local control plane (kwok's binary runtime, no Docker),
// installing Istio's CRDs, and the mid-migration scenario. See
// docs/e2e-cluster.md. Nothing here talks to anything but 127.0.0.1.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// Versions of the local control plane (hack/e2e-tools.sh builds them).
const (
	KubeVersion = "v1.37.2"
	KwokVersion = "v0.8.0"
)

// RepoRoot finds the repository root (the folder with go.mod) from the
// working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Tools builds (or finds cached) etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kubectl, kwok and kwokctl, and returns their folder.
func Tools(ctx context.Context) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "e2e-tools.sh"))
	cmd.Env = append(os.Environ(), "KUBE_VERSION="+KubeVersion, "KWOK_VERSION="+KwokVersion)
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the e2e tools (hack/e2e-tools.sh): %w", err)
	}
	return strings.TrimSpace(out.String()), nil
}

// KwokConfig writes a KwokctlConfiguration that runs the real control plane
// binaries from bin with kwok's binary runtime (no Docker, no downloads),
// with RBAC authorization on, and returns its path. disable names
// components left out (e.g. kube-controller-manager, for an estate whose
// objects are all made by hand).
func KwokConfig(bin, dir string, disable ...string) (string, error) {
	var off strings.Builder
	if len(disable) > 0 {
		off.WriteString("  disable:\n")
		for _, c := range disable {
			fmt.Fprintf(&off, "  - %s\n", c)
		}
	}
	cfg := fmt.Sprintf(`apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
%[3]s  kubeVersion: %[2]s
  kubeAuthorization: true
  kubeApiserverBinary: %[1]s/kube-apiserver
  kubeControllerManagerBinary: %[1]s/kube-controller-manager
  kubeSchedulerBinary: %[1]s/kube-scheduler
  kwokControllerBinary: %[1]s/kwok
  etcdBinary: %[1]s/etcd
  kubectlBinary: %[1]s/kubectl
componentsPatches:
  - name: kube-apiserver
    extraArgs:
      - key: service-cluster-ip-range
        value: 10.96.0.0/16
`, bin, KubeVersion, off.String())
	path := filepath.Join(dir, "kwokctl.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// Kwokctl runs kwokctl from bin.
func Kwokctl(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kwokctl"), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kwokctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// DeleteStaleClusters removes clusters left by earlier runs that were killed
// before they could clean up (names starting with prefix).
func DeleteStaleClusters(ctx context.Context, bin, prefix string) {
	out, err := Kwokctl(ctx, bin, "get", "clusters")
	if err != nil {
		return
	}
	for _, name := range strings.Fields(out) {
		if strings.HasPrefix(name, prefix) {
			_, _ = Kwokctl(ctx, bin, "delete", "cluster", "--name", name)
		}
	}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallIstioCRDs applies Istio's CRDs from the istio.io/api module of
// go.mod (kubernetes/customresourcedefinitions.gen.yaml) with server-side
// apply, and waits until the API server serves them.
func InstallIstioCRDs(ctx context.Context, cfg *rest.Config) error {
	return installCRDs(ctx, cfg, "istio.io/api", []string{"kubernetes/customresourcedefinitions.gen.yaml"},
		"security.istio.io/v1", "networking.istio.io/v1")
}

// InstallGatewayAPICRDs applies the Gateway API's standard CRDs from the
// sigs.k8s.io/gateway-api module of go.mod (config/crd/standard), as
// Istio's ambient guide has users install them, and waits until the API
// server serves gateways.
func InstallGatewayAPICRDs(ctx context.Context, cfg *rest.Config) error {
	return installCRDs(ctx, cfg, "sigs.k8s.io/gateway-api", []string{
		"config/crd/standard/gateway.networking.k8s.io_gatewayclasses.yaml",
		"config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
		"config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
	}, "gateway.networking.k8s.io/v1")
}

// installCRDs applies the CustomResourceDefinitions in files of module
// (its version in go.mod) and waits until groupVersions are served.
func installCRDs(ctx context.Context, cfg *rest.Config, module string, files []string, groupVersions ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = root
	dirOut, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("locate the %s module: %w", module, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, file := range files {
		raw, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dirOut)), file))
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			obj := &unstructured.Unstructured{}
			if err := dec.Decode(&obj.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return fmt.Errorf("decode %s: %w", file, err)
			}
			if obj.GetKind() != "CustomResourceDefinition" {
				continue
			}
			if _, err := dyn.Resource(crdGVR).Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "meshmigrate-e2e", Force: true}); err != nil {
				return fmt.Errorf("apply CRD %s: %w", obj.GetName(), err)
			}
		}
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		for _, gv := range groupVersions {
			if _, err := dc.ServerResourcesForGroupVersion(gv); err != nil {
				return false, nil // not served yet
			}
		}
		return true, nil
	})
}
