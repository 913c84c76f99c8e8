//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
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

// TestApplyThroughReadFaults runs apply through a proxy that faults every
// fourth read (503, a dropped connection, 500, 429 in turn) and no write.
// Every snapshot the run reads (the stale-plan check before and after the
// lock, each poll of sidecars-current, no-plaintext and the other gates)
// is some twenty GETs, so each meets several faults, and so does the wait
// for a dead run's lock. Reads are retried, so ONE run finishes with exit
// 0, every step recorded once and each Deployment restarted once.
func TestApplyThroughReadFaults(t *testing.T) {
	f := features.New("apply polls on through read faults").
		Assess("503, 500, 429 and dropped reads", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est := newEstate(ctx, t, c, "readfaults", 0)
			_, prom := telemetry(ctx, t, c, est.Series()...)
			file, p := planEstate(t, c, est, t.TempDir())
			kube := kubernetes.NewForConfigOrDie(c.Client().RESTConfig())

			// A run that died holding the front namespace's lock: this run
			// must watch the Lease, through the faults, for its 10 s.
			holder, secs, now := "crashed@ci pid 1 run dead00", int32(10), metav1.NewMicroTime(time.Now())
			lease := &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: phases.LeaseName, Namespace: est.Front,
					Labels: map[string]string{plan.LabelManagedBy: plan.ManagedBy, phases.LabelComponent: "lock"}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now}}
			if _, err := kube.CoordinationV1().Leases(est.Front).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}

			proxy, err := e2e.StartFaultProxy(c.Client().RESTConfig(), 0, 4)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			// Every 4th read is faulted; these reads always meet one (the
			// version check, the gates' pod lists, the lock wait).
			mustFault := []string{
				"/version",
				"/api/v1/namespaces/" + est.Front + "/pods",
				"/apis/coordination.k8s.io/v1/namespaces/" + est.Front + "/leases/" + phases.LeaseName,
			}
			proxy.FaultFirst = mustFault
			kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
			if err := proxy.Kubeconfig(kubeconfig); err != nil {
				t.Fatal(err)
			}
			// In the background: a run through the faults may take longer
			// than meshmigrate()'s 3 minutes.
			run := startMeshmigrate(t, c, "apply", "-f", file, "--yes", "--kubeconfig", kubeconfig,
				"--prometheus-url", prom.URL, "--verify-window", "30s", "--wait-for-lock", "2m")
			select {
			case <-run.done:
			case <-time.After(10 * time.Minute):
				t.Fatalf("apply still running after 10 minutes:\n%s", run.output())
			}
			_ = run.cmd.Wait()
			out := run.output()
			injected := proxy.Injected()
			t.Logf("apply: exit %d; faults injected: %v; faulted reads by path: %v", run.cmd.ProcessState.ExitCode(), injected, proxy.FaultedReads())
			if code := run.cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("apply through read faults: exit %d, want 0 in one run:\n%s", code, out)
			}
			if !strings.Contains(out, "took over the expired lock") {
				t.Errorf("the run did not wait for the dead run's lock:\n%s", out)
			}

			// Every kind of read fault, and no write fault, was met; the
			// lock wait's reads and the snapshots' were among them.
			for _, kind := range []string{"read 503", "read 500", "read 429", "read drop-before"} {
				if injected[kind] == 0 {
					t.Errorf("no %q injected: %v", kind, injected)
				}
			}
			for kind := range injected {
				if !strings.HasPrefix(kind, "read ") {
					t.Errorf("a write was faulted (%s): this test is about reads", kind)
				}
			}
			faulted := proxy.FaultedReads()
			for _, path := range mustFault {
				if faulted[path] == 0 {
					t.Errorf("no read of %s was faulted", path)
				}
			}

			for _, w := range []struct{ ns, app string }{{est.Front, "web"}, {est.Back, "api"}} {
				cp := checkpoint(ctx, t, c, w.ns)
				if cp == nil || !cp.PhaseDone(plan.PhaseAuthz) {
					t.Fatalf("%s: not migrated: %+v", w.ns, cp)
				}
				checkRecords(t, cp, p.ID)
				// One restart, one new ReplicaSet.
				rss, err := kube.AppsV1().ReplicaSets(w.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + w.app})
				if err != nil {
					t.Fatal(err)
				}
				if len(rss.Items) != 2 {
					t.Errorf("%s/%s has %d ReplicaSets, want 2 (restarted exactly once)", w.ns, w.app, len(rss.Items))
				}
				r, _ := auditJSON(t, c, "-n", w.ns, "--no-traffic")
				n := namespace(t, r, w.ns)
				if n.MTLS.Mode != "STRICT" || n.Pods.Meshed != n.Pods.Total || !n.Authz.AllowNothing {
					t.Errorf("%s: mTLS %s, %d/%d meshed, allow-nothing %t", w.ns, n.MTLS.Mode, n.Pods.Meshed, n.Pods.Total, n.Authz.AllowNothing)
				}
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
