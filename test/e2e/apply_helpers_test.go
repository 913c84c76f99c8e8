//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/yaml"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

// newEstate creates a fresh estate for one story (internal/e2e/estate.go).
func newEstate(ctx context.Context, t *testing.T, c *envconf.Config, prefix string, minReady int32) *e2e.Estate {
	t.Helper()
	rc := c.Client().RESTConfig()
	sc := &e2e.Scenario{Kube: kubernetes.NewForConfigOrDie(rc), Istio: istioclient.NewForConfigOrDie(rc)}
	est, err := sc.NewEstate(ctx, prefix, minReady)
	if err != nil {
		t.Fatalf("create the %s estate: %v", prefix, err)
	}
	return est
}

// planEstate plans the estate from its recorded graph and returns the plan
// file; the plan must have no blocked step.
func planEstate(t *testing.T, c *envconf.Config, est *e2e.Estate, dir string, extra ...string) (string, *plan.Plan) {
	t.Helper()
	return planGraph(t, c, est, dir, est.Graph(), extra...)
}

// planGraph is planEstate from another recorded graph.
func planGraph(t *testing.T, c *envconf.Config, est *e2e.Estate, dir, recorded string, extra ...string) (string, *plan.Plan) {
	t.Helper()
	graph := filepath.Join(dir, "traffic.yaml")
	if err := os.WriteFile(graph, []byte(recorded), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"plan", "-n", est.Front + "," + est.Back, "--traffic-file", graph, "-o", "yaml", "--min-verify-window", "5s"}, extra...)
	out, stderr, code := meshmigrate(t, c, args...)
	if code != 0 {
		t.Fatalf("plan: exit %d\nstderr: %s\nplan: %s", code, stderr, out)
	}
	matchesSchema(t, contract.MigrationPlan, out)
	file := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := plan.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	return file, p
}

// telemetry starts the sidecar-telemetry stand-in with series and a real
// Prometheus scraping it, stopped when the test ends.
func telemetry(ctx context.Context, t *testing.T, c *envconf.Config, series ...e2e.Series) (*e2e.Exporter, *e2e.Prometheus) {
	t.Helper()
	exp, err := e2e.StartExporter()
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
	exp.Pods = func(ns, app string) []string {
		list, err := kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return nil
		}
		var names []string
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				names = append(names, p.Name)
			}
		}
		return names
	}
	exp.Report(series...)
	prom, err := e2e.StartPrometheus(ctx, t.TempDir(), exp.Addr, false)
	if err != nil {
		exp.Close()
		t.Fatal(err)
	}
	// StartPrometheus returns after two scrapes: the series exist before
	// anything is meshed.
	t.Cleanup(func() { prom.Stop(); exp.Close() })
	return exp, prom
}

// checkpoint reads a namespace's checkpoint (nil when there is none).
func checkpoint(ctx context.Context, t *testing.T, c *envconf.Config, ns string) *phases.Checkpoint {
	t.Helper()
	cp, err := (&phases.Cluster{Kube: kubernetes.NewForConfigOrDie(c.Client().RESTConfig())}).LoadCheckpoint(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if cp.PlanID == "" && len(cp.Records) == 0 {
		return nil
	}
	return cp
}

// checkRecords fails unless every record of plan id is done and no step
// was recorded twice.
func checkRecords(t *testing.T, cp *phases.Checkpoint, id string) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range cp.Records {
		key := fmt.Sprintf("%s %s step %d %s", r.PlanID, r.Phase, r.Step, r.Target)
		if seen[key] {
			t.Errorf("%s: step recorded twice: %s", cp.Namespace, key)
		}
		seen[key] = true
		if r.PlanID == id && r.State != phases.StateDone {
			t.Errorf("%s: record %d (%s %s) is %s, want done", cp.Namespace, r.Seq, r.Action, r.Target, r.State)
		}
	}
}

var (
	gvrPeerAuth = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
	gvrAuthz    = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}
	gvrDeploy   = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
)

// touched is what a user compares before and after a rollback: the
// namespaces' labels and annotations, the workloads' pod templates, and
// every PeerAuthentication and AuthorizationPolicy, without the fields the
// server manages (resourceVersion, managedFields, the deployment revision).
func touched(ctx context.Context, t *testing.T, c *envconf.Config, namespaces ...string) map[string]any {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(c.Client().RESTConfig())
	kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
	out := map[string]any{}
	meta := func(u *unstructured.Unstructured) map[string]any {
		ann := u.GetAnnotations()
		delete(ann, "deployment.kubernetes.io/revision")
		return map[string]any{"labels": u.GetLabels(), "annotations": ann}
	}
	for _, ns := range namespaces {
		n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out["Namespace/"+ns] = map[string]any{"labels": n.Labels, "annotations": n.Annotations}
		for _, gvr := range []schema.GroupVersionResource{gvrDeploy, gvrPeerAuth, gvrAuthz} {
			list, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range list.Items {
				spec := u.Object["spec"]
				if gvr == gvrDeploy {
					spec, _, _ = unstructured.NestedFieldCopy(u.Object, "spec", "template")
				}
				out[gvr.Resource+"/"+ns+"/"+u.GetName()] = map[string]any{"meta": meta(&u), "spec": spec}
			}
		}
	}
	// Through JSON, so values compare by content.
	raw, _ := json.Marshal(out)
	var norm map[string]any
	_ = json.Unmarshal(raw, &norm)
	return norm
}

// background runs `kubectl meshmigrate ARGS` without waiting, collecting
// its output line by line.
type background struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func startMeshmigrate(t *testing.T, c *envconf.Config, args ...string) *background {
	t.Helper()
	cmd := exec.Command(kubectl, append([]string{"meshmigrate"}, withBake(args)...)...)
	cmd.Env = append(os.Environ(),
		"PATH="+strings.Join(append(append([]string{}, pathDirs...), os.Getenv("PATH")), string(os.PathListSeparator)),
		"KUBECONFIG="+c.KubeconfigFile(), "NO_COLOR=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &background{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			b.mu.Lock()
			b.lines = append(b.lines, sc.Text())
			b.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-b.done; _ = cmd.Wait() })
	return b
}

// waitFor waits until a line contains s.
func (b *background) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		for _, l := range b.lines {
			if strings.Contains(l, s) {
				b.mu.Unlock()
				return
			}
		}
		b.mu.Unlock()
		select {
		case <-b.done:
			t.Fatalf("the run ended before printing %q:\n%s", s, b.output())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("no %q within %s:\n%s", s, timeout, b.output())
}

// exit waits for the run to end and returns its exit code.
func (b *background) exit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(timeout):
		t.Fatalf("the run did not end within %s:\n%s", timeout, b.output())
	}
	err := b.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func (b *background) output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// bindShippedClusterRole creates the ClusterRole of deploy/rbac/file, a
// ServiceAccount default/NAME for each name, and binds the role to the
// first one only (the others hold nothing). What exists already (another
// story bound it) is kept.
func bindShippedClusterRole(ctx context.Context, t *testing.T, c *envconf.Config, file string, serviceAccounts ...string) {
	t.Helper()
	kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())
	root, _ := e2e.RepoRoot()
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "rbac", file))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(raw, &role); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, sa := range serviceAccounts {
		if _, err := kube.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "meshmigrate-" + serviceAccounts[0]},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccounts[0], Namespace: "default"}}}
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}
