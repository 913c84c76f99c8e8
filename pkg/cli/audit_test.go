package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/istiofixture"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

type fakeReader struct {
	snap  *cluster.Snapshot
	err   error
	scope cluster.Scope
}

func (f *fakeReader) Read(_ context.Context, scope cluster.Scope) (*cluster.Snapshot, error) {
	f.scope = scope
	return f.snap, f.err
}

// estate is a small cluster mid-migration.
func estate() *cluster.Snapshot {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	status := `{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":"1-30"}`
	meshed := func(ns, name, owner string) cluster.Pod {
		return cluster.Pod{Namespace: ns, Name: name, Phase: "Running", Labels: map[string]string{"app": owner},
			Containers:  []cluster.Container{{Name: "app"}, {Name: "istio-proxy"}},
			Annotations: map[string]string{"sidecar.istio.io/status": status},
			Owner:       cluster.WorkloadRef{Kind: "Deployment", Name: owner}}
	}
	plain := func(ns, name, owner string) cluster.Pod {
		return cluster.Pod{Namespace: ns, Name: name, Phase: "Running", Labels: map[string]string{"app": owner},
			Containers: []cluster.Container{{Name: "app"}}, Owner: cluster.WorkloadRef{Kind: "Deployment", Name: owner}}
	}
	return &cluster.Snapshot{
		TakenAt: t0, Context: "prod", Server: "https://127.0.0.1:6443",
		Injectors:       istiofixture.Injectors("1-30", true),
		IstiodNamespace: "istio-system",
		Mesh:            cluster.MeshConfig{RootNamespace: "istio-system", TrustDomain: "cluster.local", EnableAutoMTLS: true, Source: "istio-system/istio"},
		Istio:           cluster.IstioAvailability{PoliciesReadable: true, SecurityVersion: "v1", NetworkingVersion: "v1"},
		Namespaces: []cluster.Namespace{
			{Name: "legacy"},
			{Name: "payments", Labels: map[string]string{"istio-injection": "enabled"}},
			{Name: "shop", Labels: map[string]string{"istio-injection": "enabled"}},
		},
		Pods: []cluster.Pod{
			plain("legacy", "batch-7d9f-abcde", "batch"),
			meshed("payments", "api-5c6d-xyz12", "api"),
			meshed("shop", "web-6b7c-aaaaa", "web"),
			plain("shop", "web-6b7c-bbbbb", "web"),
		},
		PeerAuthentications: []cluster.PeerAuthentication{
			{Namespace: "payments", Name: "default", Mode: "STRICT", CreatedAt: t0},
			{Namespace: "shop", Name: "default", Mode: "PERMISSIVE", CreatedAt: t0},
		},
		DestinationRules: []cluster.DestinationRule{
			{Namespace: "legacy", Name: "to-shop", Host: "web.shop.svc.cluster.local", TLS: []cluster.DRTLS{{Where: "trafficPolicy", Mode: "DISABLE"}}},
		},
	}
}

func runAudit(t *testing.T, r *fakeReader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return run(t, r, append([]string{"audit"}, args...)...)
}

// run executes `kubectl meshmigrate ARGS` over the fake cluster.
func run(t *testing.T, r *fakeReader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("NO_COLOR", "")
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	// The fake stands in for the cluster; flags go through the real root
	// command, ConfigFlags included.
	f := &Factory{}
	if r != nil {
		f.reader = r
	}
	cmd := newRootCommand(streams, f)
	// No cluster here: traffic comes from a file or is not read.
	if !strings.Contains(strings.Join(args, " "), "traffic") && !strings.Contains(strings.Join(args, " "), "prometheus") {
		args = append(args, "--no-traffic")
	}
	cmd.SetArgs(args)
	cmd.SetContext(context.Background())
	code = ExitCode(cmd.Execute(), &errOut)
	return out.String(), errOut.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./pkg/cli -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test ./pkg/cli -update rewrites it)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestAuditTableGolden(t *testing.T) {
	out, stderr, code := runAudit(t, &fakeReader{snap: estate()}, "-A")
	if code != ExitAttention {
		t.Errorf("exit code = %d, want 2 (findings need attention); stderr %q", code, stderr)
	}
	golden(t, "audit-table.txt", out)
}

func TestAuditWideGolden(t *testing.T) {
	out, _, _ := runAudit(t, &fakeReader{snap: estate()}, "-A", "-o", "wide")
	golden(t, "audit-wide.txt", out)
}

func TestAuditJSONContract(t *testing.T) {
	out, _, code := runAudit(t, &fakeReader{snap: estate()}, "-A", "-o", "json")
	if code != ExitAttention {
		t.Errorf("exit code = %d", code)
	}
	golden(t, "audit.json", out)
	// The documented contract, read the way a script would.
	var doc struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Namespaces []struct {
			Name      string `json:"name"`
			Injection struct{ Mode string }
			Pods      struct{ Total, Meshed, NeedRestart int }
			MTLS      struct{ Mode string } `json:"mtls"`
			Findings  []struct{ Code string }
		} `json:"namespaces"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.APIVersion != "meshmigrate.io/v1alpha1" || doc.Kind != "AuditReport" || len(doc.Namespaces) != 3 {
		t.Fatalf("header = %s %s, %d namespaces", doc.APIVersion, doc.Kind, len(doc.Namespaces))
	}
	shop := doc.Namespaces[2]
	if shop.Name != "shop" || shop.Injection.Mode != "enabled" || shop.Pods.Total != 2 || shop.Pods.Meshed != 1 || shop.Pods.NeedRestart != 1 || shop.MTLS.Mode != "PERMISSIVE" {
		t.Errorf("shop = %+v", shop)
	}
	var got []string
	for _, f := range shop.Findings {
		got = append(got, f.Code)
	}
	if strings.Join(got, ",") != "DestinationRuleTLSDisabled,PodNeedsRestart" {
		t.Errorf("shop findings = %v", got)
	}
}

func TestAuditYAMLMatchesJSON(t *testing.T) {
	js, _, _ := runAudit(t, &fakeReader{snap: estate()}, "-A", "-o", "json")
	ys, _, _ := runAudit(t, &fakeReader{snap: estate()}, "-A", "-o", "yaml")
	var a, b any
	if err := json.Unmarshal([]byte(js), &a); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(ys), &b); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("yaml and json reports differ")
	}
}

func TestAuditExitCodes(t *testing.T) {
	clean := estate()
	clean.Namespaces = clean.Namespaces[1:2] // payments: meshed and STRICT
	clean.AuthorizationPolicies = []cluster.AuthorizationPolicy{
		{Namespace: "payments", Name: "allow-nothing", Action: "ALLOW", Namespaced: true},
		{Namespace: "payments", Name: "api", Action: "ALLOW", Rules: 1},
	}
	if _, stderr, code := runAudit(t, &fakeReader{snap: clean}, "-n", "payments"); code != ExitOK {
		t.Errorf("clean namespace: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code := runAudit(t, &fakeReader{err: errors.New(`namespace "nope" not found: check the name and --context`)}, "-n", "nope")
	if code != ExitError || !strings.Contains(stderr, `error: namespace "nope" not found`) {
		t.Errorf("reader error: exit %d, stderr %q", code, stderr)
	}
}

func TestAuditScopeFromFlags(t *testing.T) {
	r := &fakeReader{snap: estate()}
	runAudit(t, r, "-n", "shop, payments")
	if strings.Join(r.scope.Namespaces, ",") != "shop,payments" || r.scope.AllNamespaces {
		t.Errorf("scope = %+v", r.scope)
	}
	runAudit(t, r, "-A", "-n", "shop")
	if !r.scope.AllNamespaces || len(r.scope.Namespaces) != 0 {
		t.Errorf("-A wins over -n, as in kubectl: %+v", r.scope)
	}
	runAudit(t, r, "-l", "team=payments")
	if r.scope.Selector != "team=payments" || len(r.scope.Namespaces) != 0 {
		t.Errorf("scope = %+v", r.scope)
	}
}

func TestAuditRejectsBadInput(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-A", "-o", "xml"}, `unknown output format "xml"`},
		{[]string{"-l", "a==b==c"}, "invalid --selector"},
		{[]string{"-A", "extra"}, "unknown command"},
	} {
		r := &fakeReader{snap: estate()}
		_, stderr, code := runAudit(t, r, tt.args...)
		if code != ExitError || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tt.args, code, stderr, tt.want)
		}
		if r.scope.AllNamespaces || r.scope.Selector != "" {
			t.Errorf("%v: the cluster was read despite bad input", tt.args)
		}
	}
}

func TestColourOnlyOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	if colorEnabled(&buf) {
		t.Error("a buffer is no terminal")
	}
	if err := printReport(&buf, audit.Audit(estate(), audit.Observation{Reason: "--no-traffic"}), "table", false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "\x1b[") {
		t.Error("escape codes without colour")
	}
	t.Setenv("NO_COLOR", "1")
	if colorEnabled(os.Stdout) {
		t.Error("NO_COLOR must turn colour off")
	}
}

func TestAuditFromTrafficFile(t *testing.T) {
	out, stderr, code := runAudit(t, &fakeReader{snap: estate()}, "-n", "shop", "-o", "json", "--traffic-file", "testdata/traffic.yaml")
	if code != ExitAttention {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r audit.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	shop := r.Namespaces[2]
	if shop.Traffic.Status != "observed" || len(shop.Traffic.PlaintextClients) != 1 || shop.Traffic.PlaintextClients[0].Name() != "legacy/batch" ||
		shop.Traffic.PlaintextClients[0].Meshed != "no" {
		t.Errorf("traffic = %+v", shop.Traffic)
	}
	if r.Traffic == nil || r.Traffic.Source != "file testdata/traffic.yaml" {
		t.Errorf("report traffic source = %+v", r.Traffic)
	}
	wide, _, _ := runAudit(t, &fakeReader{snap: estate()}, "-n", "shop", "-o", "wide", "--traffic-file", "testdata/traffic.yaml")
	golden(t, "audit-wide-traffic.txt", wide)
	table, _, _ := runAudit(t, &fakeReader{snap: estate()}, "-n", "shop", "--traffic-file", "testdata/traffic.yaml")
	if !strings.Contains(table, "plaintext from 1") || !strings.Contains(table, "PlaintextClient") || !strings.Contains(table, "Traffic: 2 edges over 1d") {
		t.Errorf("table:\n%s", table)
	}
}

func TestTrafficFlagsExcludeEachOther(t *testing.T) {
	for _, args := range [][]string{
		{"-A", "--no-traffic", "--prometheus-url", "http://127.0.0.1:9090"},
		{"-A", "--traffic-file", "x.yaml", "--prometheus-service", "monitoring/prometheus"},
		{"-A", "--prometheus-url", "http://127.0.0.1:9090", "--traffic-window", "-1h"},
	} {
		_, stderr, code := runAudit(t, &fakeReader{snap: estate()}, args...)
		if code != ExitError || !strings.Contains(stderr, "--") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	_, stderr, code := runAudit(t, &fakeReader{snap: estate()}, "-A", "--traffic-file", "testdata/missing.yaml")
	if code != ExitError || !strings.Contains(stderr, "read traffic file") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
}
