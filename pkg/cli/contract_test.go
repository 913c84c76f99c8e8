package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

// checkContract fails unless out, an output as printed (JSON or YAML),
// matches its schema and holds no null but at the JSON pointers allowNull
// names ("*" stands for one segment): a list prints as [], a map as {}.
func checkContract(t *testing.T, name, out string, allowNull ...string) {
	t.Helper()
	if err := contract.Validate(name, []byte(out)); err != nil {
		t.Errorf("%v\noutput:\n%s", err, out)
	}
	v, err := contract.Decode([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range contract.Nulls(v) {
		if !matchesAny(p, allowNull) {
			t.Errorf("%s: null at %s: an empty list prints as [] and an empty map as {}, never null", name, p)
		}
	}
}

func matchesAny(pointer string, patterns []string) bool {
	segs := strings.Split(pointer, "/")
	for _, pat := range patterns {
		ps := strings.Split(pat, "/")
		if len(ps) != len(segs) {
			continue
		}
		match := true
		for i := range ps {
			if ps[i] != "*" && ps[i] != segs[i] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

func TestAuditOutputsMatchTheSchema(t *testing.T) {
	for _, args := range [][]string{
		{"-A", "-o", "json"},
		{"-A", "-o", "yaml"},
		{"-A", "-o", "json", "--traffic-file", trafficFile},
	} {
		out, stderr, code := runAudit(t, &fakeReader{snap: estate()}, args...)
		if code == ExitError {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		checkContract(t, contract.AuditReport, out)
	}
}

// The defect a new user hit: `jq '.namespaces[].findings[]'` failed on a
// namespace without findings, printed as "findings": null.
func TestAuditNamespaceWithoutFindingsHasAnEmptyList(t *testing.T) {
	snap := estate()
	snap.Namespaces = snap.Namespaces[1:2] // payments: meshed and STRICT, no finding at all
	out, _, _ := runAudit(t, &fakeReader{snap: snap}, "-n", "payments", "-o", "json")
	var doc struct {
		Namespaces []struct {
			Name     string `json:"name"`
			Findings *[]any `json:"findings"`
		} `json:"namespaces"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Namespaces) != 1 || doc.Namespaces[0].Name != "payments" || doc.Namespaces[0].Findings == nil || len(*doc.Namespaces[0].Findings) != 0 {
		t.Errorf("payments findings: want [], got %s", out)
	}
}

func TestPlanOutputsMatchTheSchema(t *testing.T) {
	for _, args := range [][]string{
		{"-A", "-o", "json", "--traffic-file", trafficFile},
		{"-A", "-o", "yaml", "--traffic-file", trafficFile},
		{"-n", "legacy", "-o", "json", "--no-traffic"},
		{"-n", "shop", "-o", "json", "--traffic-file", trafficFile, "--target", "permissive", "--authz", "off"},
	} {
		out, stderr, code := run(t, &fakeReader{snap: estate()}, append([]string{"plan"}, args...)...)
		if code == ExitError {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		checkContract(t, contract.MigrationPlan, out)
	}
}

func TestVersionOutputMatchesTheSchema(t *testing.T) {
	_, kubeconfig := startAPI(t)
	out, stderr, code := runAgainst(t, kubeconfig, nil, "version", "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	checkContract(t, contract.Version, out)
}

// fakePrometheus serves the Prometheus API the traffic reader uses: the
// first edges of a plaintext and an mTLS caller of shop/web over HTTP, no
// TCP.
func fakePrometheus(t *testing.T, edges int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/status/runtimeinfo":
			fmt.Fprint(w, `{"status":"success","data":{"storageRetention":"15d"}}`)
		case "/api/v1/query":
			_ = r.ParseForm()
			samples := []string{
				`{"metric":{"source_workload_namespace":"legacy","source_workload":"batch","source_principal":"unknown","destination_workload_namespace":"shop","destination_workload":"web","destination_service_name":"web","connection_security_policy":"none"},"value":[1767225600,"42"]}`,
				`{"metric":{"source_workload_namespace":"payments","source_workload":"api","source_principal":"spiffe://cluster.local/ns/payments/sa/api","destination_workload_namespace":"shop","destination_workload":"web","destination_service_name":"web","connection_security_policy":"mutual_tls"},"value":[1767225600,"900"]}`,
			}[:edges]
			if !strings.Contains(r.Form.Get("query"), "istio_requests_total") {
				samples = nil
			}
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[%s]}}`, strings.Join(samples, ","))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestTrafficExportMatchesTheSchema(t *testing.T) {
	for _, edges := range []int{2, 0} {
		prom := fakePrometheus(t, edges)
		out, stderr, code := run(t, nil, "traffic", "export", "--prometheus-url", prom)
		if code != ExitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkContract(t, contract.TrafficGraph, out)
		file := filepath.Join(t.TempDir(), "traffic.json")
		if _, stderr, code := run(t, nil, "traffic", "export", "--prometheus-url", prom, "-o", file); code != ExitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		saved, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		checkContract(t, contract.TrafficGraph, string(saved))
	}
}

func TestVerifyOutputMatchesTheSchema(t *testing.T) {
	prom := fakePrometheus(t, 2)
	out, stderr, code := run(t, &fakeReader{snap: estate()}, "verify", "-A", "--prometheus-url", prom, "-o", "json")
	if code != ExitAttention {
		t.Errorf("exit %d, want 2 (shop is called in plaintext): %s", code, stderr)
	}
	checkContract(t, contract.Verify, out)
	if !strings.Contains(out, `"culprits"`) {
		t.Errorf("no culprits named:\n%s", out)
	}
}

// checkpointData is a stored checkpoint as a new plan leaves it: the
// progress of the plan before was reset (phases null in the ConfigMap),
// its records kept.
func checkpointData(t *testing.T) string {
	t.Helper()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	enabled := "enabled"
	cp := &phases.Checkpoint{Namespace: "shop", PlanID: "mp-000000000002", PlanHash: "sha256:2",
		Records: []phases.Record{{Seq: 1, PlanID: "mp-000000000001", Phase: "inject", Step: 0, Action: "label-namespace",
			Target: "Namespace/shop", State: phases.StateDone, StartedAt: t0, DoneAt: &t0,
			Undo: phases.Undo{Labels: map[string]*string{"istio-injection": nil}, After: map[string]*string{"istio-injection": &enabled}}}},
		UpdatedAt: t0, UpdatedBy: "alice@ci pid 1 run aaaaaa"}
	data, err := cp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(data, `"phases":null`) {
		t.Fatalf("the stored checkpoint no longer holds a null list, the case this test is about: %s", data)
	}
	return data
}

func jsonRoute(body string) func(http.ResponseWriter, []byte) {
	return func(w http.ResponseWriter, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}
}

func TestStatusOutputsMatchTheSchema(t *testing.T) {
	// No checkpoint anywhere: an empty list, not null.
	api, kubeconfig := startAPI(t)
	api.routes["GET /api/v1/configmaps"] = jsonRoute(`{"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[]}`)
	api.routes["GET /apis/coordination.k8s.io/v1/leases"] = jsonRoute(`{"kind":"LeaseList","apiVersion":"coordination.k8s.io/v1","metadata":{},"items":[]}`)
	for _, format := range []string{"json", "yaml"} {
		out, stderr, code := runAgainst(t, kubeconfig, nil, "status", "-A", "-o", format)
		if code != ExitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkContract(t, contract.Status, out)
		if strings.TrimSpace(out) != "[]" {
			t.Errorf("-o %s without checkpoints: %q, want []", format, out)
		}
	}

	// A checkpoint and a held lock.
	data, _ := json.Marshal(checkpointData(t))
	api, kubeconfig = startAPI(t)
	api.routes["GET /api/v1/namespaces/shop"] = jsonRoute(`{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"shop"}}`)
	api.routes["GET /api/v1/namespaces/shop/configmaps/meshmigrate-checkpoint"] = jsonRoute(fmt.Sprintf(
		`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"meshmigrate-checkpoint","namespace":"shop","resourceVersion":"3"},"data":{"checkpoint.json":%s}}`, data))
	api.routes["GET /apis/coordination.k8s.io/v1/namespaces/shop/leases/meshmigrate-lock"] = jsonRoute(`{"apiVersion":"coordination.k8s.io/v1","kind":"Lease",
"metadata":{"name":"meshmigrate-lock","namespace":"shop","resourceVersion":"7"},
"spec":{"holderIdentity":"bob@ci pid 2 run bbbbbb","leaseDurationSeconds":30,"acquireTime":"2026-03-01T12:00:00.000000Z","renewTime":"2026-03-01T12:00:10.000000Z"}}`)
	for _, format := range []string{"json", "yaml"} {
		out, stderr, code := runAgainst(t, kubeconfig, nil, "status", "-n", "shop", "-o", format)
		if code != ExitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		// An undo record's labels are null where the label was absent.
		checkContract(t, contract.Status, out, "/0/checkpoint/records/*/undo/labels/*", "/0/checkpoint/records/*/undo/after/*")
		if !strings.Contains(out, "istio-injection") {
			t.Errorf("-o %s does not show the checkpoint:\n%s", format, out)
		}
	}
}

// runApply runs `kubectl meshmigrate apply ARGS` over a fake cluster:
// client-go's fake clientsets hold the checkpoints, the locks and the
// namespaces and workloads of the estate, which the fake reader shows the
// gates.
func runApply(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("NO_COLOR", "")
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	lists := map[schema.GroupVersionResource]string{
		{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}:   "PeerAuthenticationList",
		{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}: "AuthorizationPolicyList",
		{Group: "apps", Version: "v1", Resource: "deployments"}:                        "DeploymentList",
	}
	var objs []runtime.Object
	for _, ns := range estate().Namespaces {
		objs = append(objs, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
			"metadata": map[string]any{"name": ns.Name, "labels": toAny(ns.Labels)}}})
	}
	for _, w := range [][2]string{{"legacy", "batch"}, {"payments", "api"}, {"shop", "web"}} {
		objs = append(objs, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": w[1], "namespace": w[0]}}})
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, lists, objs...)
	kube := kubefake.NewClientset()
	connect := func(f *ExecFlags) (*phases.Cluster, phases.Observer, error) {
		return &phases.Cluster{Kube: kube, Dynamic: dyn}, &clusterObserver{reader: &fakeReader{snap: estate()}, traffic: f.Traffic}, nil
	}
	var out, errOut bytes.Buffer
	cmd := newRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, nil, connect)
	cmd.SetArgs(append([]string{"apply"}, args...))
	cmd.SetContext(context.Background())
	code = ExitCode(cmd.Execute(), &errOut)
	return out.String(), errOut.String(), code
}

func toAny(m map[string]string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestApplySummaryMatchesTheSchema(t *testing.T) {
	planOut, _, _ := run(t, &fakeReader{snap: estate()}, "plan", "-A", "--traffic-file", trafficFile, "-o", "yaml")
	file := filepath.Join(t.TempDir(), "plan.yaml")
	if err := os.WriteFile(file, []byte(planOut), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		result string
	}{
		// Stops before the blocked steps: shop's STRICT, everyone's authz.
		{[]string{"--dry-run=client"}, ExitAttention, "stopped"},
		// Nothing blocked on the way: no stop, an empty list.
		{[]string{"-n", "legacy", "--through", "permissive", "--dry-run=client"}, ExitOK, "dry-run"},
		// A real run: takes the lock, writes the checkpoint, stops at the
		// blocked authz phase having changed nothing.
		{[]string{"-n", "payments", "--yes"}, ExitAttention, "stopped"},
	} {
		out, stderr, code := runApply(t, append([]string{"-f", file, "-o", "json"}, tc.args...)...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d; stderr:\n%s", tc.args, code, tc.code, stderr)
		}
		checkContract(t, contract.ApplySummary, out)
		var s ApplySummary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("%v: stdout is not the summary alone: %v\n%s", tc.args, err, out)
		}
		if s.Result != tc.result || !strings.Contains(stderr, "Plan "+s.PlanID) {
			t.Errorf("%v: result %q, want %q; the progress belongs on stderr:\n%s", tc.args, s.Result, tc.result, stderr)
		}
	}
}
