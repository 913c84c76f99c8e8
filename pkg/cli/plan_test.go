package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

const trafficFile = "testdata/traffic.yaml"

func TestPlanTableGolden(t *testing.T) {
	out, stderr, code := run(t, &fakeReader{snap: estate()}, "plan", "-A", "-o", "table", "--traffic-file", trafficFile)
	if code != ExitAttention {
		t.Errorf("exit code = %d, want 2 (shop's STRICT is blocked by a DestinationRule); stderr %q", code, stderr)
	}
	golden(t, "plan-table.txt", out)
	for _, want := range []string{
		"shop strict: PeerAuthentication/default: DestinationRule legacy/to-shop sets tls DISABLE",
		"Traffic: 2 edges over 1d",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

func TestPlanYAMLIsALoadablePlan(t *testing.T) {
	out, _, code := run(t, &fakeReader{snap: estate()}, "plan", "-A", "--traffic-file", trafficFile)
	if code != ExitAttention {
		t.Errorf("exit code = %d, want 2", code)
	}
	// Not a terminal: YAML by default, parseable and sealed.
	p, err := plan.Parse([]byte(out))
	if err != nil {
		t.Fatalf("the printed plan does not parse: %v\n%s", err, out)
	}
	if p.Cluster.Context != "prod" || len(p.Waves) != 2 {
		t.Errorf("cluster %+v, %d waves", p.Cluster, len(p.Waves))
	}
	// legacy calls shop in plaintext: legacy is meshed in an earlier wave.
	legacy, _ := p.Namespace("legacy")
	shop, _ := p.Namespace("shop")
	if legacy.Wave >= shop.Wave || strings.Join(shop.CalledBy, ",") != "legacy" {
		t.Errorf("legacy wave %d, shop wave %d, shop called by %v", legacy.Wave, shop.Wave, shop.CalledBy)
	}
	again, _, _ := run(t, &fakeReader{snap: estate()}, "plan", "-A", "--traffic-file", trafficFile)
	if again != out {
		t.Error("planning the same state twice gave different plans")
	}
	js, _, _ := run(t, &fakeReader{snap: estate()}, "plan", "-A", "--traffic-file", trafficFile, "-o", "json")
	pj, err := plan.Parse([]byte(js))
	if err != nil || pj.Hash != p.Hash {
		t.Errorf("json plan: %v, hash %s vs %s", err, pj.Hash, p.Hash)
	}
}

func TestPlanOutDirManifests(t *testing.T) {
	dir := t.TempDir()
	_, stderr, _ := run(t, &fakeReader{snap: estate()}, "plan", "-n", "legacy", "--traffic-file", trafficFile, "--out-dir", dir, "-o", "yaml")
	if !strings.Contains(stderr, "Wrote the manifests of plan mp-") {
		t.Errorf("stderr %q", stderr)
	}
	inject, err := os.ReadFile(filepath.Join(dir, "legacy", "01-inject.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(inject), "istio-injection: enabled") || !strings.Contains(string(inject), "kubectl rollout restart deployment/batch -n legacy") {
		t.Errorf("01-inject.yaml:\n%s", inject)
	}
	perm, err := os.ReadFile(filepath.Join(dir, "legacy", "02-permissive.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pa map[string]any
	if err := yaml.Unmarshal([]byte(strings.SplitN(string(perm), "---\n", 2)[1]), &pa); err != nil {
		t.Fatal(err)
	}
	md := pa["metadata"].(map[string]any)
	lbl := md["labels"].(map[string]any)
	if pa["kind"] != "PeerAuthentication" || md["name"] != "default" || lbl["app.kubernetes.io/managed-by"] != "kubectl-meshmigrate" || !strings.HasPrefix(lbl["meshmigrate.io/plan-id"].(string), "mp-") {
		t.Errorf("02-permissive.yaml: %v", pa)
	}
	kust, err := os.ReadFile(filepath.Join(dir, "legacy", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The permissive PeerAuthentication is superseded by the strict one.
	if strings.Contains(string(kust), "02-permissive.yaml") || !strings.Contains(string(kust), "- 01-inject.yaml") {
		t.Errorf("kustomization.yaml:\n%s", kust)
	}
}

func TestPlanRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--target", "mtls"}, `--target "mtls": use strict or permissive`},
		{[]string{"--authz", "maybe"}, `--authz "maybe": use off, dry-run or enforce`},
		{[]string{"--port-exception", "shop/web"}, "want NAMESPACE/WORKLOAD:PORT"},
		{[]string{"--port-exception", "shop/web:99999"}, "port must be 1-65535"},
		{[]string{"--exclude-workload", "web"}, "want NAMESPACE/WORKLOAD"},
		{[]string{"--exclude-workload", "shop/nope"}, `namespace shop has no running workload "nope"`},
		{[]string{"--force-strict", "elsewhere"}, "namespace elsewhere is not in the plan's scope"},
		{[]string{"--revision", "9-99"}, "no injector serves istio.io/rev=9-99"},
		{[]string{"-o", "wide"}, `unknown output format "wide"`},
		{[]string{"--min-verify-window", "500ms"}, "--min-verify-window 500ms: want at least 1s"},
	} {
		out, stderr, code := run(t, &fakeReader{snap: estate()}, append([]string{"plan", "-A", "--no-traffic"}, tc.args...)...)
		if code != ExitError || !strings.Contains(stderr, tc.want) || out != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %d bytes; want exit 1 and %q", tc.args, code, stderr, len(out), tc.want)
		}
	}
}

func TestPlanWithoutTrafficBlocksAuthzNotStrict(t *testing.T) {
	out, _, _ := run(t, &fakeReader{snap: estate()}, "plan", "-n", "legacy", "--no-traffic", "-o", "json")
	var p plan.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	ns := p.Namespaces[0]
	verify, _ := ns.Phase(plan.PhaseVerify)
	authz, _ := ns.Phase(plan.PhaseAuthz)
	if verify.Status != plan.StatusPending || !strings.Contains(strings.Join(verify.Notes, " "), "nothing is assumed safe") {
		t.Errorf("verify = %+v", verify)
	}
	if authz.Status != plan.StatusBlocked || !strings.Contains(authz.Reason, "telemetry was not read") {
		t.Errorf("authz = %+v", authz)
	}
}

func TestPlanValidate(t *testing.T) {
	dir := t.TempDir()
	out, _, _ := run(t, &fakeReader{snap: estate()}, "plan", "-A", "--traffic-file", trafficFile, "-o", "yaml")
	blocked := filepath.Join(dir, "blocked.yaml")
	clean := filepath.Join(dir, "clean.yaml")
	edited := filepath.Join(dir, "edited.yaml")
	// Only payments, already STRICT, with authorization left out: nothing blocked.
	snap := estate()
	snap.Namespaces = snap.Namespaces[1:2]
	cleanOut, _, code := run(t, &fakeReader{snap: snap}, "plan", "-n", "payments", "--no-traffic", "--authz", "off", "-o", "json")
	if code != ExitOK {
		t.Fatalf("clean plan: exit %d", code)
	}
	for path, body := range map[string]string{
		blocked: out, clean: cleanOut,
		edited: strings.Replace(out, "target: strict", "target: permissive", 1),
	} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-f", clean}, ExitOK, "is valid: 1 namespace in 1 wave, 0 steps to apply, 0 blocked"},
		{[]string{"-f", blocked}, ExitAttention, "is valid: 3 namespaces in 2 waves, 5 steps to apply, 4 blocked"},
		{[]string{"-f", edited}, ExitError, "it was edited after planning"},
		{[]string{"-f", filepath.Join(dir, "missing.yaml")}, ExitError, "does not exist"},
		{nil, ExitError, "-f PLAN is required"},
	} {
		api, kubeconfig := startAPI(t)
		stdout, stderr, code := runAgainst(t, kubeconfig, nil, append([]string{"plan", "validate"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
			t.Errorf("validate %v: exit %d, want %d and %q\nstdout %s\nstderr %s", tc.args, code, tc.code, tc.want, stdout, stderr)
		}
		if seen := api.seen(); len(seen) > 0 {
			t.Errorf("validate %v contacted the cluster: %v", tc.args, seen)
		}
	}
}
