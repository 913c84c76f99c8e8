//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

// run runs a command with the plugin (and kubectl) first on PATH and the
// suite's kubeconfig, and returns its output and exit code.
func run(t *testing.T, c *envconf.Config, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(),
		"PATH="+strings.Join(append(append([]string{}, pathDirs...), os.Getenv("PATH")), string(os.PathListSeparator)),
		"KUBECONFIG="+c.KubeconfigFile(), "NO_COLOR=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out.String(), errOut.String(), code
}

// meshmigrate runs `kubectl meshmigrate ARGS`, the way a user does.
func meshmigrate(t *testing.T, c *envconf.Config, args ...string) (string, string, int) {
	t.Helper()
	return run(t, c, kubectl, append([]string{"meshmigrate"}, withBake(args)...)...)
}

// withBake turns the post-change guard off (--bake=0) for an apply that
// does not name --bake: the stories other than the guard's own judge
// other things, and its 5-minute default would hold each STRICT step.
// The guard's stories (guard_test.go) pass --bake.
func withBake(args []string) []string {
	if len(args) == 0 || args[0] != "apply" {
		return args
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--bake") {
			return args
		}
	}
	return append(append([]string{}, args...), "--bake=0")
}

func auditJSON(t *testing.T, c *envconf.Config, args ...string) (*audit.Report, int) {
	t.Helper()
	out, stderr, code := meshmigrate(t, c, append([]string{"audit", "-o", "json"}, args...)...)
	var r audit.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("audit %v: exit %d, not a JSON report: %v\nstdout: %s\nstderr: %s", args, code, err, out, stderr)
	}
	matchesSchema(t, contract.AuditReport, out)
	return &r, code
}

func namespace(t *testing.T, r *audit.Report, name string) audit.NamespaceReport {
	t.Helper()
	for _, n := range r.Namespaces {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("namespace %s missing from the report", name)
	return audit.NamespaceReport{}
}

func findingObjects(n audit.NamespaceReport, code string) []string {
	var out []string
	for _, f := range n.Findings {
		if f.Code == code {
			out = append(out, f.Object)
		}
	}
	return out
}

func TestAuditEstate(t *testing.T) {
	f := features.New("audit -A reports where each namespace of a mid-migration estate stands").
		Assess("every namespace, with injection, pods, mTLS and findings", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			r, code := auditJSON(t, c, "-A")
			if code != 2 {
				t.Errorf("exit code = %d, want 2: the estate has findings", code)
			}
			if r.APIVersion != audit.APIVersion || r.Kind != audit.Kind {
				t.Errorf("report is %s %s", r.APIVersion, r.Kind)
			}
			if r.Mesh.MTLS.Mode != "PERMISSIVE" || r.Mesh.MTLS.Policy != "istio-system/default" {
				t.Errorf("mesh mTLS = %+v", r.Mesh.MTLS)
			}

			legacy := namespace(t, r, "legacy")
			if legacy.Injection.Mode != "none" || legacy.Pods.Total != 2 || legacy.Pods.Meshed != 0 || legacy.Readiness.Next != "inject" {
				t.Errorf("legacy = %+v %+v %+v", legacy.Injection, legacy.Pods, legacy.Readiness)
			}
			if len(findingObjects(legacy, audit.CodeNamespaceNotSelected)) != 1 {
				t.Errorf("legacy findings = %+v", legacy.Findings)
			}

			shop := namespace(t, r, "shop")
			p := shop.Pods
			if shop.Injection.Mode != "enabled" || shop.Injection.Revision != "1-30" {
				t.Errorf("shop injection = %+v", shop.Injection)
			}
			// web (2) and cache (1) predate the label; cart (2) is meshed;
			// batch opted out; node-agent runs on hostNetwork on each node.
			if p.Meshed != 2 || p.NeedRestart != 3 || p.NotInjectable != 1+nodeCount(t, c) {
				t.Errorf("shop pods = total %d meshed %d needRestart %d notInjectable %d", p.Total, p.Meshed, p.NeedRestart, p.NotInjectable)
			}
			if got := strings.Join(findingObjects(shop, audit.CodePodNeedsRestart), ","); got != "Deployment/web,StatefulSet/cache" {
				t.Errorf("restart findings name %q", got)
			}
			if got := strings.Join(findingObjects(shop, audit.CodePodNotInjectable), ","); got != "DaemonSet/node-agent,Deployment/batch" {
				t.Errorf("not-injectable findings name %q", got)
			}

			payments := namespace(t, r, "payments")
			if payments.Injection.Mode != "revision" || payments.Injection.Tag != "canary" || payments.Injection.Revision != "1-31" {
				t.Errorf("payments injection = %+v: the tag must resolve to its revision", payments.Injection)
			}
			if payments.Pods.WrongRevision != 2 || payments.Pods.Meshed != 3 {
				t.Errorf("payments pods = %+v", payments.Pods)
			}
			for _, pod := range payments.Pods.Items {
				if strings.HasPrefix(pod.Name, "ledger-") && (pod.Sidecar != "native" || pod.Revision != "1-31" || pod.State != "meshed") {
					t.Errorf("ledger pod = %+v: want a native 1-31 sidecar", pod)
				}
			}

			orders := namespace(t, r, "orders")
			if orders.MTLS.Mode != "PERMISSIVE" || orders.MTLS.Source != "namespace" || orders.Readiness.Next != "verify" || orders.Readiness.Safe {
				t.Errorf("orders = %+v %+v", orders.MTLS, orders.Readiness)
			}
			if len(orders.MTLS.Workloads) != 1 || orders.MTLS.Workloads[0].Ports[9090] != "DISABLE" || orders.MTLS.Workloads[0].Pods != 2 {
				t.Errorf("orders workload policies = %+v", orders.MTLS.Workloads)
			}
			if got := findingObjects(orders, audit.CodeDestinationRuleTLSDisabled); len(got) != 1 || got[0] != "DestinationRule/legacy/orders-plaintext" {
				t.Errorf("orders DR findings = %v", got)
			}
			if orders.Traffic.Status != "unknown" {
				t.Errorf("traffic = %+v: never claim none without telemetry", orders.Traffic)
			}

			if sys := namespace(t, r, "istio-system"); sys.Excluded == "" || len(sys.Findings) != 0 {
				t.Errorf("istio-system must be excluded, not judged: %+v", sys)
			}
			return ctx
		}).
		Assess("the table names the next phase, exit code 2", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "audit", "-n", "orders")
			if code != 2 || !strings.Contains(out, "verify (blocked)") || !strings.Contains(out, "DestinationRuleTLSDisabled") {
				t.Errorf("exit %d\n%s\n%s", code, out, stderr)
			}
			return ctx
		}).
		Assess("-l selects namespaces by label", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			r, _ := auditJSON(t, c, "-l", "team in (shop,orders)")
			if len(r.Namespaces) != 2 || r.Namespaces[0].Name != "orders" || r.Namespaces[1].Name != "shop" {
				t.Errorf("namespaces = %+v", r.Summary)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

func nodeCount(t *testing.T, c *envconf.Config) int {
	nodes, err := kubernetes.NewForConfigOrDie(c.Client().RESTConfig()).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(nodes.Items)
}

func TestAuditErrors(t *testing.T) {
	f := features.New("bad input fails clearly with exit code 1").
		Assess("a namespace that does not exist", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "audit", "-n", "does-not-exist")
			if code != 1 || !strings.Contains(stderr, `namespace "does-not-exist" not found`) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
			return ctx
		}).
		Assess("an unknown output format", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			_, stderr, code := meshmigrate(t, c, "audit", "-A", "-o", "xml")
			if code != 1 || !strings.Contains(stderr, `unknown output format "xml"`) {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestAuditUnderShippedRBAC runs the audit as a ServiceAccount bound only to
// deploy/rbac/audit-clusterrole.yaml: it must see everything it needs, and a
// ServiceAccount without it must be told which verb on which resource is
// missing.
func TestAuditUnderShippedRBAC(t *testing.T) {
	f := features.New("audit runs under exactly the shipped ClusterRole").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			bindShippedClusterRole(ctx, t, c, "audit-clusterrole.yaml", "auditor", "nobody")
			return ctx
		}).
		Assess("the auditor sees the same report as an admin", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			admin, _ := auditJSON(t, c, "-A")
			var asAuditor *audit.Report
			// RBAC bindings take a moment to reach the authorizer's cache.
			err := wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Second, true, func(context.Context) (bool, error) {
				out, _, code := meshmigrate(t, c, "audit", "-A", "-o", "json", "--as", "system:serviceaccount:default:auditor")
				if code == 1 {
					return false, nil
				}
				var r audit.Report
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					return false, err
				}
				matchesSchema(t, contract.AuditReport, out)
				asAuditor = &r
				return true, nil
			})
			if err != nil {
				_, stderr, _ := meshmigrate(t, c, "audit", "-A", "--as", "system:serviceaccount:default:auditor")
				t.Fatalf("audit under the shipped ClusterRole failed: %s", stderr)
			}
			if asAuditor.Summary.Namespaces != admin.Summary.Namespaces || asAuditor.Summary.Findings[audit.SeverityWarning] != admin.Summary.Findings[audit.SeverityWarning] {
				t.Errorf("auditor summary %+v != admin summary %+v", asAuditor.Summary, admin.Summary)
			}
			return ctx
		}).
		Assess("without the role, the error names the verb and resource", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			_, stderr, code := meshmigrate(t, c, "audit", "-A", "--as", "system:serviceaccount:default:nobody")
			if code != 1 || !strings.Contains(stderr, "forbidden: cannot list namespaces") {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestRestartClearsFinding restarts a workload the way the audit's finding
// says to, and checks the audit sees its new pods meshed.
func TestRestartClearsFinding(t *testing.T) {
	f := features.New("following the PodNeedsRestart advice meshes the workload").
		Assess("rollout restart deployment/web", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			if out, stderr, code := run(t, c, kubectl, "rollout", "restart", "deployment/web", "-n", "shop"); code != 0 {
				t.Fatalf("rollout restart: %s %s", out, stderr)
			}
			if out, stderr, code := run(t, c, kubectl, "rollout", "status", "deployment/web", "-n", "shop", "--timeout=2m"); code != 0 {
				t.Fatalf("rollout status: %s %s", out, stderr)
			}
			var shop audit.NamespaceReport
			err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(context.Context) (bool, error) {
				r, _ := auditJSON(t, c, "-n", "shop")
				shop = namespace(t, r, "shop")
				return len(findingObjects(shop, audit.CodePodNeedsRestart)) == 1, nil
			})
			if err != nil {
				t.Fatalf("after the restart: %+v, findings %+v", shop.Pods, shop.Findings)
			}
			if shop.Pods.Meshed != 4 || shop.Pods.NeedRestart != 1 {
				t.Errorf("shop pods after restart = %+v", shop.Pods)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestCompletion completes `kubectl meshmigrate audit -n sh<TAB>` through
// kubectl's own plugin completion, which runs kubectl_complete-meshmigrate.
func TestCompletion(t *testing.T) {
	f := features.New("kubectl completes the plugin's flags from the cluster").
		Assess("namespaces for -n", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := run(t, c, kubectl, "__complete", "meshmigrate", "audit", "-n", "sh")
			if code != 0 || !strings.Contains(out, "shop\n") || strings.Contains(out, "orders") {
				t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
			return ctx
		}).
		Assess("subcommands", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, _, _ := run(t, c, kubectl, "__complete", "meshmigrate", "au")
			if !strings.HasPrefix(out, "audit") {
				t.Errorf("stdout %q", out)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
