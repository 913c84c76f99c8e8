package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// apiServer stands in for the Kubernetes API: it records every request and
// answers from routes ("METHOD path"), 403 Forbidden for anything else.
type apiServer struct {
	mu       sync.Mutex
	requests []string
	routes   map[string]func(w http.ResponseWriter, body []byte)
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	key := r.Method + " " + r.URL.Path
	s.mu.Lock()
	s.requests = append(s.requests, key)
	route := s.routes[key]
	s.mu.Unlock()
	if route != nil {
		route(w, body)
		return
	}
	status(w, http.StatusForbidden, "Forbidden", "forbidden: "+key)
}

func (s *apiServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":%q,"code":%d}`, msg, reason, code)
}

// startAPI starts the fake API server and writes a kubeconfig pointing at it.
func startAPI(t *testing.T) (*apiServer, string) {
	t.Helper()
	s := &apiServer{routes: map[string]func(http.ResponseWriter, []byte){}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, writeKubeconfig(t, srv.URL)
}

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
contexts:
- name: test
  context:
    cluster: test
    user: test
    namespace: default
current-context: test
users:
- name: test
  user:
    token: not-a-secret
`, server)
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// runAgainst executes `kubectl meshmigrate ARGS` with the kubeconfig, the
// snapshot reader r and a stdin that is not a terminal.
func runAgainst(t *testing.T, kubeconfig string, r *fakeReader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("NO_COLOR", "")
	t.Setenv("KUBECONFIG", kubeconfig)
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader("y\n"), Out: &out, ErrOut: &errOut}
	var reader snapshotReader
	if r != nil {
		reader = r
	}
	cmd := newRootCommand(streams, &Factory{reader: reader})
	cmd.SetArgs(append(args, "--kubeconfig", kubeconfig))
	cmd.SetContext(context.Background())
	code = ExitCode(cmd.Execute(), &errOut)
	return out.String(), errOut.String(), code
}

// writePlan plans the audit test estate and writes the plan file.
func writePlan(t *testing.T) string {
	t.Helper()
	snap := estate()
	p, err := plan.Build(plan.Input{Snapshot: snap, Report: audit.Audit(snap, audit.Observation{Reason: "--no-traffic"})}, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Marshal(false)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "plan.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExecCommandsRejectBadInput(t *testing.T) {
	planFile := writePlan(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	malformed := filepath.Join(dir, "malformed.yaml")
	if err := os.WriteFile(malformed, []byte("apiVersion: meshmigrate.io/v1alpha1\nkind: [MigrationPlan\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	edited := filepath.Join(dir, "edited.yaml")
	raw, _ := os.ReadFile(planFile)
	if !bytes.Contains(raw, []byte("target: strict")) {
		t.Fatal("the plan file has no \"target: strict\" to edit")
	}
	if err := os.WriteFile(edited, bytes.Replace(raw, []byte("target: strict"), []byte("target: permissive"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"apply"}, "-f PLAN is required: make one with `kubectl meshmigrate plan -o yaml > plan.yaml`"},
		{[]string{"apply", "-f", missing}, "plan file " + missing + " does not exist: make one with `kubectl meshmigrate plan"},
		{[]string{"apply", "-f", malformed}, "plan file " + malformed + ": not a MigrationPlan"},
		{[]string{"apply", "-f", edited}, "it was edited after planning"},
		{[]string{"apply", "-f", planFile, "--phase", "nope"}, `unknown phase "nope": want one of inject, waypoint, enroll, permissive, verify, strict, authz`},
		{[]string{"apply", "-f", planFile, "--through", "done"}, `unknown phase "done"`},
		{[]string{"apply", "-f", planFile, "--phase", "strict", "--through", "authz"}, "--phase and --through exclude each other: pick one"},
		{[]string{"apply", "-f", planFile, "--dry-run=maybe"}, `--dry-run="maybe": want none, client or server`},
		{[]string{"apply", "-f", planFile, "-o", "yaml"}, `unknown output format "yaml": use json or leave -o out`},
		{[]string{"apply", "-f", planFile, "--concurrency", "0"}, "--concurrency must be at least 1, got 0"},
		{[]string{"apply", "-f", planFile, "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"apply", "-f", planFile, "--wait-for-lock=-1s"}, "--wait-for-lock must not be negative"},
		{[]string{"apply", "-f", planFile, "--lease-duration", "2s"}, "--lease-duration must be at least 3s, got 2s"},
		{[]string{"apply", "-f", planFile, "--lease-duration", "0s"}, "--lease-duration must be at least 3s, got 0s"},
		{[]string{"apply", "-f", planFile, "--lease-duration", "3500ms"}, "--lease-duration must be whole seconds (the Lease stores seconds), got 3.5s"},
		{[]string{"apply", "-f", planFile, "--verify-window=-1h"}, "--verify-window must not be negative"},
		{[]string{"apply", "-f", planFile, "--bake=-1m"}, "--bake -1m0s: want a duration of 0 (no guard) or more, e.g. 5m"},
		{[]string{"apply", "-f", planFile, "--bake-max-error-ratio", "5"}, "--bake-max-error-ratio 5: want a ratio from 0 to 1 (0.05 is 5% of the callers' requests failing)"},
		{[]string{"apply", "-f", planFile, "--bake-max-error-ratio=-0.5"}, "--bake-max-error-ratio -0.5: want a ratio from 0 to 1"},
		{[]string{"apply", "-f", planFile, "--verify-window=1m", "--yes"}, "--verify-window 1m0s is under plan mp-"},
		{[]string{"apply", "-f", planFile, "--prometheus-url", "http://127.0.0.1:9090", "--prometheus-service", "monitoring/prometheus"},
			"--prometheus-url and --prometheus-service exclude each other"},
		{[]string{"rollback"}, "rollback needs its namespaces named explicitly: -n NS[,NS...]"},
		{[]string{"rollback", "-n", "shop"}, "say how far to roll back: --to PHASE or --all (one of them)"},
		{[]string{"rollback", "-n", "shop", "--to", "strict", "--all"}, "say how far to roll back: --to PHASE or --all"},
		{[]string{"rollback", "-n", "shop", "--to", "nope"}, `--to "nope": want one of inject, waypoint, enroll, permissive, verify, strict, authz`},
		{[]string{"rollback", "-n", "shop", "--all", "--dry-run=maybe"}, `--dry-run="maybe"`},
		{[]string{"rollback", "-n", "shop", "--all", "--lease-duration", "1s"}, "--lease-duration must be at least 3s, got 1s"},
		{[]string{"unlock"}, "unlock needs exactly one namespace, named explicitly: -n NS"},
		{[]string{"status", "-n", "shop", "-o", "wide"}, `unknown output format "wide": use table, yaml or json`},
		{[]string{"verify", "-n", "shop", "--no-traffic"}, "verify judges live telemetry: --no-traffic and --traffic-file cannot pass its gate"},
		{[]string{"verify", "-n", "shop", "--traffic-file", trafficFile}, "verify judges live telemetry"},
		{[]string{"verify", "-n", "shop", "-o", "yaml"}, `unknown output format "yaml": use table or json`},
	} {
		api, kubeconfig := startAPI(t)
		r := &fakeReader{snap: estate()}
		out, stderr, code := runAgainst(t, kubeconfig, r, tc.args...)
		if code != ExitError || !strings.HasPrefix(stderr, "error: ") || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and %q", tc.args, code, stderr, tc.want)
		}
		if out != "" {
			t.Errorf("%v: printed %q on bad input", tc.args, out)
		}
		if seen := api.seen(); len(seen) > 0 || len(r.scope.Namespaces) > 0 {
			t.Errorf("%v: bad input reached the cluster: %v, read %v", tc.args, seen, r.scope.Namespaces)
		}
	}
}

func TestApplyForbiddenClusterFails(t *testing.T) {
	planFile := writePlan(t)
	api, kubeconfig := startAPI(t) // answers 403 to everything
	out, stderr, code := runAgainst(t, kubeconfig, nil, "apply", "-f", planFile, "--yes")
	if code != ExitError || !strings.HasPrefix(stderr, "error: forbidden") {
		t.Errorf("exit %d, stderr %q: want exit 1 and the API's refusal", code, stderr)
	}
	if strings.Contains(out, "Done") {
		t.Errorf("stdout %q claims success", out)
	}
	// It did try (so the other tests' "no request" means something), and
	// only read: a run that cannot read the cluster changes nothing.
	seen := api.seen()
	if len(seen) == 0 {
		t.Fatal("apply never contacted the API server")
	}
	for _, req := range seen {
		if !strings.HasPrefix(req, "GET ") {
			t.Errorf("apply wrote (%s) although it could not read the cluster", req)
		}
	}
}

func TestApplyWithoutAServerFails(t *testing.T) {
	planFile := writePlan(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	kubeconfig := writeKubeconfig(t, srv.URL)
	srv.Close() // nothing listens there any more
	_, stderr, code := runAgainst(t, kubeconfig, nil, "apply", "-f", planFile, "--yes")
	if code != ExitError || !strings.Contains(stderr, "cannot reach the Kubernetes API server "+srv.URL) || !strings.Contains(stderr, "check --kubeconfig and --context") {
		t.Errorf("exit %d, stderr %q: want exit 1 naming the server and what to check", code, stderr)
	}
}

func TestUnlockReleasesTheHolder(t *testing.T) {
	api, kubeconfig := startAPI(t)
	const path = "/apis/coordination.k8s.io/v1/namespaces/shop/leases/meshmigrate-lock"
	lease := `{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"meshmigrate-lock","namespace":"shop","resourceVersion":"7"},
"spec":{"holderIdentity":"bob@ci pid 2 run bbbbbb","leaseDurationSeconds":30,"acquireTime":"2026-03-01T12:00:00.000000Z","renewTime":"2026-03-01T12:00:10.000000Z"}}`
	api.routes["GET "+path] = func(w http.ResponseWriter, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(lease))
	}
	var (
		mu  sync.Mutex
		put *coordinationv1.Lease
	)
	api.routes["PUT "+path] = func(w http.ResponseWriter, body []byte) {
		// The client may send protobuf: decode it as the API server would.
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		if err != nil {
			status(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		l := obj.(*coordinationv1.Lease)
		l.APIVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
		mu.Lock()
		put = l
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(l)
	}
	out, stderr, code := runAgainst(t, kubeconfig, nil, "unlock", "-n", "shop")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if want := `released the lock of "bob@ci pid 2 run bbbbbb" on namespace shop (renewed 2026-03-01T12:00:10Z)`; !strings.Contains(out, want) {
		t.Errorf("stdout %q, want %q", out, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if put == nil {
		t.Fatal("no lease update sent")
	}
	if put.Spec.HolderIdentity != nil || put.ResourceVersion != "7" {
		t.Errorf("update = holder %v at version %q, want the holder cleared, conditional on version 7", put.Spec.HolderIdentity, put.ResourceVersion)
	}

	free, kubeconfig := startAPI(t)
	free.routes["GET "+path] = func(w http.ResponseWriter, _ []byte) { status(w, http.StatusNotFound, "NotFound", "not found") }
	out, stderr, code = runAgainst(t, kubeconfig, nil, "unlock", "-n", "shop")
	if code != ExitOK || !strings.Contains(out, "namespace shop is not locked") {
		t.Errorf("never locked: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func TestConfirm(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); pw.Close() })
	fmt.Fprintln(pw, "y")
	for name, in := range map[string]io.Reader{"a reader": strings.NewReader("y\n"), "a pipe": pr} {
		var out bytes.Buffer
		err := confirm(context.Background(), in, &out, false, "Apply plan mp-1 to shop")
		if err == nil || !strings.Contains(err.Error(), "pass --yes") || !strings.Contains(err.Error(), "refusing to change the cluster") {
			t.Errorf("%s, no --yes: %v, want a refusal naming --yes", name, err)
		}
		if out.Len() != 0 {
			t.Errorf("%s: prompted %q where nobody can answer", name, out.String())
		}
	}
	var out bytes.Buffer
	if err := confirm(context.Background(), strings.NewReader(""), &out, true, "Apply plan mp-1 to shop"); err != nil || out.Len() != 0 {
		t.Errorf("--yes: %v, prompted %q; want no question", err, out.String())
	}
}

// --lease-duration reaches the executor's locks; its default is the
// package's.
func TestLeaseDurationFlag(t *testing.T) {
	kubeconfig := writeKubeconfig(t, "http://127.0.0.1:1")
	for args, want := range map[string]time.Duration{"": phases.DefaultLeaseDuration, "--lease-duration=45s": 45 * time.Second} {
		var f ExecFlags
		fs := pflag.NewFlagSet("apply", pflag.ContinueOnError)
		f.AddFlags(fs, false)
		if err := fs.Parse(strings.Fields(args)); err != nil {
			t.Fatal(err)
		}
		if err := f.Validate(); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		configFlags := genericclioptions.NewConfigFlags(false)
		configFlags.KubeConfig = &kubeconfig
		ex, err := newExecutor(NewFactory(configFlags).Executor, nil, &f, phases.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ex.Options.LeaseDuration != want {
			t.Errorf("%q: lease duration %s, want %s", args, ex.Options.LeaseDuration, want)
		}
	}
}

// status shows a lock's times as its holder's and never calls it expired
// by this machine's clock: that may only differ from the holder's.
func TestStatusDoesNotJudgeALockByTheClock(t *testing.T) {
	for renewed, want := range map[string]string{
		"2020-03-01T12:00:10.000000Z": `held by "bob@ci pid 2 run bbbbbb" (renewed 2020-03-01T12:00:10Z, by its clock; past its expiry 2020-03-01T12:00:40Z by this one: a dead holder, or clocks that differ)`,
		"2099-03-01T12:00:10.000000Z": `held by "bob@ci pid 2 run bbbbbb" (renewed 2099-03-01T12:00:10Z, expires 2099-03-01T12:00:40Z unless renewed)`,
	} {
		api, kubeconfig := startAPI(t)
		lease := `{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"meshmigrate-lock","namespace":"shop","resourceVersion":"7"},
"spec":{"holderIdentity":"bob@ci pid 2 run bbbbbb","leaseDurationSeconds":30,"acquireTime":"2020-03-01T12:00:00.000000Z","renewTime":"` + renewed + `"}}`
		serve := func(body string) func(http.ResponseWriter, []byte) {
			return func(w http.ResponseWriter, _ []byte) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(body))
			}
		}
		api.routes["GET /api/v1/namespaces/shop"] = serve(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}`)
		api.routes["GET /api/v1/namespaces/shop/configmaps/meshmigrate-checkpoint"] = func(w http.ResponseWriter, _ []byte) {
			status(w, http.StatusNotFound, "NotFound", "not found")
		}
		api.routes["GET /apis/coordination.k8s.io/v1/namespaces/shop/leases/meshmigrate-lock"] = serve(lease)
		out, stderr, code := runAgainst(t, kubeconfig, nil, "status", "-n", "shop", "-o", "table")
		if code != ExitOK || !strings.Contains(out, want) || strings.Contains(out, "expired") {
			t.Errorf("renewed %s: exit %d, stdout %q, stderr %q; want %q and never \"expired\"", renewed, code, out, stderr, want)
		}
	}
}
