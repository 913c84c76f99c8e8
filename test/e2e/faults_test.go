//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// TestApplyThroughAPIFaults runs apply through a proxy that fails or drops
// every third write: each run either finishes or stops with an error and a
// checkpoint it resumes from, and re-running converges on the planned
// state with every step recorded once.
func TestApplyThroughAPIFaults(t *testing.T) {
	f := features.New("apply converges through API faults").
		Assess("429, 500, 409 and dropped responses", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est := newEstate(ctx, t, c, "faults", 0)
			_, prom := telemetry(ctx, t, c, est.Series()...)
			file, p := planEstate(t, c, est, t.TempDir())
			proxy, err := e2e.StartFaultProxy(c.Client().RESTConfig(), 3, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
			if err := proxy.Kubeconfig(kubeconfig); err != nil {
				t.Fatal(err)
			}
			var runs []string
			done := false
			for i := 0; i < 12 && !done; i++ {
				out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--kubeconfig", kubeconfig,
					"--prometheus-url", prom.URL, "--verify-window", "30s", "--wait-for-lock", "2m")
				runs = append(runs, out+stderr)
				switch code {
				case 0:
					done = true
				case 1:
					// A clean stop says how to go on, and leaves no step
					// half-recorded: each record is started or done.
					if !strings.Contains(stderr, "run the same command again") {
						t.Errorf("run %d stopped without saying how to resume:\n%s", i+1, stderr)
					}
				default:
					t.Fatalf("run %d: exit %d\n%s\n%s", i+1, code, out, stderr)
				}
			}
			if !done {
				t.Fatalf("apply never converged in %d runs:\n%s", len(runs), strings.Join(runs, "\n----\n"))
			}
			injected := proxy.Injected()
			if len(injected) < 3 {
				t.Errorf("the proxy injected too few kinds of fault to prove anything: %v", injected)
			}
			t.Logf("converged after %d runs; faults injected: %v", len(runs), injected)
			for _, ns := range []string{est.Front, est.Back} {
				cp := checkpoint(ctx, t, c, ns)
				if cp == nil || !cp.PhaseDone(plan.PhaseAuthz) {
					t.Fatalf("%s: not migrated: %+v", ns, cp)
				}
				checkRecords(t, cp, p.ID)
				r, _ := auditJSON(t, c, "-n", ns, "--no-traffic")
				n := namespace(t, r, ns)
				if n.MTLS.Mode != "STRICT" || n.Pods.Meshed != n.Pods.Total || !n.Authz.AllowNothing {
					t.Errorf("%s: mTLS %s, %d/%d meshed, allow-nothing %t", ns, n.MTLS.Mode, n.Pods.Meshed, n.Pods.Total, n.Authz.AllowNothing)
				}
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
