//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

// mode is the namespace's effective mTLS mode, from a fresh audit.
func mode(t *testing.T, c *envconf.Config, ns string) string {
	t.Helper()
	r, _ := auditJSON(t, c, "-n", ns, "--no-traffic")
	return namespace(t, r, ns).MTLS.Mode
}

// dryRunPolicies counts the plan's AuthorizationPolicies in ns, and those
// of them in dry-run.
func dryRunPolicies(ctx context.Context, t *testing.T, c *envconf.Config, ns, planID string) (all, dry int) {
	t.Helper()
	aps, err := dynamic.NewForConfigOrDie(c.Client().RESTConfig()).Resource(gvrAuthz).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: plan.LabelPlanID + "=" + planID})
	if err != nil {
		t.Fatal(err)
	}
	for _, ap := range aps.Items {
		if ap.GetAnnotations()[plan.AnnotationDryRun] == "true" {
			dry++
		}
	}
	return len(aps.Items), dry
}

// TestGuardUndoesStrictThenEnforcement: a caller that shows up (in
// plaintext) only after STRICT makes the guard put STRICT back and name
// the caller, while the namespace beside it bakes clean; later a denial
// after enforcement sends the policies back to dry-run.
func TestGuardUndoesStrictThenEnforcement(t *testing.T) {
	var (
		est  *e2e.Estate
		exp  *e2e.Exporter
		prom *e2e.Prometheus
		file string
		p    *plan.Plan
	)
	plain := func(est *e2e.Estate) e2e.Series {
		return e2e.Edge("istio_requests_total", "", est.Back+"/api", "none", 2)
	}
	f := features.New("the guard undoes what broke callers after the change").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est = newEstate(ctx, t, c, "grd", 0)
			exp, prom = telemetry(ctx, t, c, est.Series()...)
			file, p = planEstate(t, c, est, t.TempDir())
			return ctx
		}).
		Assess("a plaintext caller after STRICT: the guard undoes STRICT and names it; a clean bake passes", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			b := startMeshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL, "--verify-window", "30s", "--bake", "20s")
			b.waitFor(t, est.Back+": strict: guard: watching for 20s", 3*time.Minute)
			// A nightly job without a sidecar wakes up and calls api.
			exp.Report(plain(est))
			code := b.exit(t, 2*time.Minute)
			out := b.output()
			if code != 2 {
				t.Fatalf("exit %d, want 2 (stopped)\n%s", code, out)
			}
			for _, want := range []string{
				est.Back + ": strict: GUARD FAILED: ",
				"plaintext calls arrived (refused under STRICT) from unknown",
				"undoing STRICT (PeerAuthentication back to what it was before)",
				est.Back + ": strict: STOP: guard undid STRICT",
				est.Front + ": strict: guard passed after 20s",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("the run does not say %q:\n%s", want, out)
				}
			}
			if m := mode(t, c, est.Back); m == "STRICT" {
				t.Errorf("%s is still STRICT after the guard failed", est.Back)
			}
			if m := mode(t, c, est.Front); m != "STRICT" {
				t.Errorf("%s is %s after a clean bake, want STRICT", est.Front, m)
			}
			cp := checkpoint(ctx, t, c, est.Back)
			rec := cp.Phase(plan.PhaseStrict)
			if rec.State != phases.StateStopped || rec.Guard == nil || !rec.Guard.Undone || rec.Guard.Result != phases.GateFailed {
				t.Errorf("%s strict record %+v guard %+v, want stopped, failed and undone", est.Back, rec, rec.Guard)
			}
			checkRecords(t, cp, p.ID)
			status, _, _ := meshmigrate(t, c, "status", "-n", est.Back)
			if !strings.Contains(status, "failed, undone (") {
				t.Errorf("status does not show the guard's verdict:\n%s", status)
			}
			js, _, _ := meshmigrate(t, c, "status", "-n", est.Back+","+est.Front, "-o", "json")
			matchesSchema(t, contract.Status, js, undoNulls...)
			return ctx
		}).
		Assess("a denial after enforcement: the guard sends the policies back to dry-run", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			// The job is fixed (meshed elsewhere): its plaintext stops, and
			// ages out of a 5 s verify window.
			exp.Stop(plain(est))
			time.Sleep(7 * time.Second)
			b := startMeshmigrate(t, c, "apply", "-f", file, "--yes", "--prometheus-url", prom.URL, "--verify-window", "5s", "--bake", "12s")
			b.waitFor(t, est.Back+": authz: guard: watching for 12s", 3*time.Minute)
			// A caller the plan never saw is denied by the enforced policies.
			exp.Report(e2e.EnforcedDenials(est.Back+"/api", 2))
			code := b.exit(t, 2*time.Minute)
			out := b.output()
			if code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, out)
			}
			for _, want := range []string{
				est.Back + ": strict: guard passed after 12s",
				est.Back + ": authz: GUARD FAILED: ",
				"calls were denied since enforcement, from pod/",
				"undoing enforcement (the policies back to dry-run)",
				est.Front + ": authz: guard passed after 12s",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("the run does not say %q:\n%s", want, out)
				}
			}
			if all, dry := dryRunPolicies(ctx, t, c, est.Back, p.ID); all == 0 || dry != all {
				t.Errorf("%s: %d of %d policies in dry-run after the guard failed, want all", est.Back, dry, all)
			}
			if all, dry := dryRunPolicies(ctx, t, c, est.Front, p.ID); all == 0 || dry != 0 {
				t.Errorf("%s: %d of %d policies in dry-run after a clean bake, want none", est.Front, dry, all)
			}
			if m := mode(t, c, est.Back); m != "STRICT" {
				t.Errorf("%s is %s: undoing enforcement must leave STRICT alone", est.Back, m)
			}
			checkRecords(t, checkpoint(ctx, t, c, est.Back), p.ID)
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestGuardResumesAfterSIGKILL: a run killed during its bake leaves a
// checkpoint that the next apply resumes: it makes no change again and
// watches again.
func TestGuardResumesAfterSIGKILL(t *testing.T) {
	var (
		est  *e2e.Estate
		prom *e2e.Prometheus
		file string
		p    *plan.Plan
	)
	f := features.New("a crash during the bake").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			est = newEstate(ctx, t, c, "grk", 0)
			_, prom = telemetry(ctx, t, c, est.Series()...)
			file, p = planEstate(t, c, est, t.TempDir())
			return ctx
		}).
		Assess("killed while baking, then resumed", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			b := startMeshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL, "--verify-window", "30s", "--bake", "5m")
			b.waitFor(t, est.Back+": strict: guard: watching for 5m0s", 3*time.Minute)
			if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			b.exit(t, time.Minute)
			cp := checkpoint(ctx, t, c, est.Back)
			if rec := cp.Phase(plan.PhaseStrict); rec.State != phases.StateRunning || rec.Guard != nil {
				t.Fatalf("after the kill: strict record %+v, want running with no verdict yet", rec)
			}
			before := len(cp.Records)
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--prometheus-url", prom.URL,
				"--verify-window", "30s", "--bake", "5s", "--wait-for-lock", "1m")
			if code != 0 || !strings.Contains(out, est.Back+": strict: guard passed after 5s") {
				t.Fatalf("resume: exit %d\n%s\n%s", code, out, stderr)
			}
			if strings.Contains(out, est.Back+": strict: applied") {
				t.Errorf("the resumed run applied STRICT again:\n%s", out)
			}
			cp = checkpoint(ctx, t, c, est.Back)
			checkRecords(t, cp, p.ID)
			if len(cp.Records) != before {
				t.Errorf("%d records after the resume, %d before: a change was made twice", len(cp.Records), before)
			}
			if g := cp.Phase(plan.PhaseStrict).Guard; g == nil || g.Result != phases.GatePassed {
				t.Errorf("guard %+v, want passed", g)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestKeepGoing: with --keep-going a namespace whose gate fails stops
// alone; the one that depends on it (calledBy) is held back, and two
// independent namespaces finish. The summary and the exit code say so.
func TestKeepGoing(t *testing.T) {
	var (
		a, b *e2e.Estate
		prom *e2e.Prometheus
		file string
	)
	f := features.New("--keep-going across independent namespaces").
		Setup(func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			a = newEstate(ctx, t, c, "kga", 0)
			b = newEstate(ctx, t, c, "kgb", 0)
			// Live: a's front also gets plaintext from a client without a
			// sidecar that the recorded graph never saw, so its verify
			// gate fails; b is healthy.
			series := append(append(a.Series(), b.Series()...), e2e.Edge("istio_requests_total", "", a.Front+"/web", "none", 2))
			_, prom = telemetry(ctx, t, c, series...)
			// a's back is called by a's front in plaintext (calledBy):
			// it depends on it. b's namespaces depend on nothing in a.
			graph := callerGraph(a) + strings.SplitAfter(b.Graph(), "edges:\n")[1]
			dir := t.TempDir()
			gf := filepath.Join(dir, "traffic.yaml")
			if err := os.WriteFile(gf, []byte(graph), 0o644); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := meshmigrate(t, c, "plan", "-n", strings.Join([]string{a.Front, a.Back, b.Front, b.Back}, ","), "--traffic-file", gf, "-o", "yaml", "--min-verify-window", "5s")
			if code != 0 {
				t.Fatalf("plan: exit %d\n%s\n%s", code, out, stderr)
			}
			file = filepath.Join(dir, "plan.yaml")
			if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("one stops, its dependent is held back, the independent two finish", func(ctx context.Context, t *testing.T, c *envconf.Config) context.Context {
			out, stderr, code := meshmigrate(t, c, "apply", "-f", file, "--yes", "--through", "strict", "--keep-going", "-o", "json",
				"--prometheus-url", prom.URL, "--verify-window", "30s", "--bake", "5s")
			if code != 2 {
				t.Fatalf("exit %d, want 2 (a namespace stopped)\n%s\n%s", code, out, stderr)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			var sum struct {
				Result  string                   `json:"result"`
				Results []phases.NamespaceResult `json:"results"`
			}
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
				t.Fatalf("the last line is not the summary: %v\n%s", err, lines[len(lines)-1])
			}
			matchesSchema(t, contract.ApplySummary, lines[len(lines)-1])
			got := map[string]string{}
			for _, r := range sum.Results {
				got[r.Namespace] = fmt.Sprintf("%s %s", r.Result, r.Phase)
			}
			want := map[string]string{a.Front: "stopped verify", a.Back: "held-back inject", b.Front: "done ", b.Back: "done "}
			for ns, w := range want {
				if got[ns] != w {
					t.Errorf("%s: %q, want %q (summary %v)", ns, got[ns], w, got)
				}
			}
			if sum.Result != "stopped" {
				t.Errorf("result %q, want stopped", sum.Result)
			}
			if !strings.Contains(stderr, "Summary:") || !strings.Contains(stderr, "held-back") {
				t.Errorf("no summary table for people:\n%s", stderr)
			}
			for _, ns := range []string{b.Front, b.Back} {
				if m := mode(t, c, ns); m != "STRICT" {
					t.Errorf("%s is %s, want STRICT: it does not depend on %s", ns, m, a.Front)
				}
			}
			if cp := checkpoint(ctx, t, c, a.Back); cp != nil && len(cp.Records) > 0 {
				t.Errorf("%s was changed although it depends on the stopped %s: %+v", a.Back, a.Front, cp.Records)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
