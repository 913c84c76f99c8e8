// Command meshmigrate-demo starts a local Kubernetes control plane (real
// etcd, kube-apiserver, controller manager, scheduler; kwok fake nodes; no
// Docker) with Istio's CRDs, a STAND-IN for istiod's sidecar injector and a
// STAND-IN for the sidecars' telemetry scraped by a real Prometheus (there is
// no istiod or Envoy here: see internal/e2e), and an estate mid-migration
// (internal/e2e/scenario.go). `make demo` runs it, then audits
// the cluster with the plugin.
//
//	meshmigrate-demo up      start (replacing an earlier demo cluster)
//	meshmigrate-demo down    stop the injector stand-in and delete the cluster
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e/injector"
)

const clusterName = "meshmigrate-demo"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: meshmigrate-demo up|down")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := e2e.RepoRoot()
	if err == nil {
		dir := filepath.Join(root, ".cache", "demo")
		switch os.Args[1] {
		case "up":
			err = up(ctx, dir)
		case "down":
			err = down(ctx, dir)
		case "injector":
			err = serveInjector(ctx, dir)
		default:
			err = fmt.Errorf("unknown command %q: use up or down", os.Args[1])
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Fprintf(os.Stderr, "==> "+format+"\n", a...) }

func up(ctx context.Context, dir string) error {
	step("building the control plane binaries (cached under ~/.cache/kubectl-meshmigrate)")
	bin, err := e2e.Tools(ctx)
	if err != nil {
		return err
	}
	_ = down(ctx, dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg, err := e2e.KwokConfig(bin, dir)
	if err != nil {
		return err
	}
	step("starting cluster %s (kwok, binary runtime)", clusterName)
	if _, err := e2e.Kwokctl(ctx, bin, "create", "cluster", "--name", clusterName, "--config", cfg, "--wait", "2m"); err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	out, err := e2e.Kwokctl(ctx, bin, "get", "kubeconfig", "--name", clusterName)
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfig, []byte(out), 0o600); err != nil {
		return err
	}
	if _, err := e2e.Kwokctl(ctx, bin, "scale", "node", "--replicas", "2", "--name", clusterName); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	step("installing Istio's CRDs from the istio.io/api module")
	if err := e2e.InstallIstioCRDs(ctx, rc); err != nil {
		return err
	}
	step("starting the injector stand-in on 127.0.0.1 (a stand-in for istiod's injector)")
	srv, err := startInjectorProcess(dir)
	if err != nil {
		return err
	}
	kube := kubernetes.NewForConfigOrDie(rc)
	if err := srv.Register(ctx, kube, e2e.Installs...); err != nil {
		return err
	}
	step("creating the mid-migration scenario")
	sc := &e2e.Scenario{Kube: kube, Istio: istioclient.NewForConfigOrDie(rc), Nodes: 2}
	if err := sc.Apply(ctx); err != nil {
		return err
	}
	step("starting Prometheus on 127.0.0.1, scraping the telemetry stand-in (a stand-in for the sidecars)")
	prom, err := e2e.StartPrometheus(ctx, dir, srv.TelemetryAddr, true)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus-url"), []byte(prom.URL), 0o600); err != nil {
		return err
	}
	// increase() needs a few scrapes inside the window.
	time.Sleep(8 * time.Second)
	fmt.Println(kubeconfig)
	return nil
}

// standIns are the demo's background stand-ins: the injector (registered
// as webhooks) and the sidecar telemetry exporter (scraped by Prometheus).
type standIns struct {
	*injector.Server
	TelemetryAddr string
}

// startInjectorProcess runs this program's "injector" command detached, so
// the stand-ins outlive `up` for as long as the demo cluster lives, and
// returns a handle to register the webhooks and scrape the telemetry.
func startInjectorProcess(dir string) (*standIns, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "injector.ready")
	_ = os.Remove(ready)
	logf, err := os.Create(filepath.Join(dir, "injector.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(self, "injector")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "injector.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		return nil, err
	}
	_ = cmd.Process.Release()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(ready); err == nil {
			lines := strings.SplitN(string(b), "\n", 3)
			if len(lines) == 3 {
				h := &standIns{Server: injector.Handle(lines[0], []byte(lines[2]), e2e.Revisions...), TelemetryAddr: lines[1]}
				return h, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, errors.New("the injector stand-in did not start: see " + filepath.Join(dir, "injector.log"))
}

func serveInjector(ctx context.Context, dir string) error {
	srv, err := injector.Start("127.0.0.1:0", e2e.Revisions...)
	if err != nil {
		return err
	}
	defer srv.Close()
	exp, err := e2e.StartExporter()
	if err != nil {
		return err
	}
	defer exp.Close()
	exp.Report(e2e.DemoTraffic...)
	if err := os.WriteFile(filepath.Join(dir, "injector.ready"), []byte(srv.URL+"\n"+exp.Addr+"\n"+string(srv.CABundle)), 0o600); err != nil {
		return err
	}
	fmt.Println("injector stand-in serving on", srv.URL, "; telemetry stand-in on", exp.Addr)
	<-ctx.Done()
	return nil
}

func down(ctx context.Context, dir string) error {
	for _, pidFile := range []string{"injector.pid", "prometheus.pid"} {
		if b, err := os.ReadFile(filepath.Join(dir, pidFile)); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
			_ = os.Remove(filepath.Join(dir, pidFile))
		}
	}
	_ = os.RemoveAll(filepath.Join(dir, "data"))
	bin, err := e2e.Tools(ctx)
	if err != nil {
		return err
	}
	e2e.DeleteStaleClusters(ctx, bin, clusterName)
	_ = os.Remove(filepath.Join(dir, "kubeconfig"))
	return nil
}
