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
	"reflect"
	"strings"
	"testing"
	"time"

	k8stesting "k8s.io/client-go/testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

// checkContract fails unless out, an output as printed (JSON or YAML),
// matches its schema and holds no null but at the JSON pointers allowNull
// names (contract.Check).
func checkContract(t *testing.T, name, out string, allowNull ...string) {
	t.Helper()
	if err := contract.Check(name, []byte(out), allowNull...); err != nil {
		t.Errorf("%s: %v\noutput:\n%s", name, err, out)
	}
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
	// The dynamic fake over client-go's field-managed tracker: server-side
	// apply with real field ownership, as the API server does it.
	scheme := runtime.NewScheme()
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "Namespace"},
		{Group: "apps", Version: "v1", Kind: "Deployment"},
		{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"},
		{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"},
	} {
		scheme.AddKnownTypeWithName(gvk, &unstructured.Unstructured{})
		scheme.AddKnownTypeWithName(gvk.GroupVersion().WithKind(gvk.Kind+"List"), &unstructured.UnstructuredList{})
	}
	tracker := k8stesting.NewFieldManagedObjectTracker(scheme, serializer.NewCodecFactory(scheme).UniversalDecoder(), managedfields.NewDeducedTypeConverter())
	for _, ns := range estate().Namespaces {
		if err := tracker.Add(&unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
			"metadata": map[string]any{"name": ns.Name, "labels": toAny(ns.Labels)}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range [][2]string{{"legacy", "batch"}, {"payments", "api"}, {"shop", "web"}} {
		if err := tracker.Add(&unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": w[1], "namespace": w[0]}}}); err != nil {
			t.Fatal(err)
		}
	}
	dyn := dynamicfake.NewSimpleDynamicClient(scheme)
	dyn.PrependReactor("*", "*", k8stesting.ObjectReaction(tracker))
	kube := kubefake.NewClientset()
	connect := func(f *ExecFlags) (*phases.Cluster, phases.Observer, error) {
		return &phases.Cluster{Kube: kube, Dynamic: dyn}, &clusterObserver{reader: &fakeReader{snap: estate()}, traffic: f.Traffic}, nil
	}
	var out, errOut bytes.Buffer
	cmd := newRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, &Factory{connect: connect, kube: kube})
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
		lines := strings.Split(strings.TrimSpace(out), "\n")
		for _, l := range lines[:len(lines)-1] {
			checkContract(t, contract.ApplyEvent, l)
		}
		last := lines[len(lines)-1]
		checkContract(t, contract.ApplySummary, last)
		var s ApplySummary
		if err := json.Unmarshal([]byte(last), &s); err != nil {
			t.Fatalf("%v: the last line of stdout is not the summary: %v\n%s", tc.args, err, out)
		}
		if len(lines) < 2 {
			t.Errorf("%v: no event streamed before the summary:\n%s", tc.args, out)
		}
		if s.Result != tc.result || !strings.Contains(stderr, "Plan "+s.PlanID) {
			t.Errorf("%v: result %q, want %q; the progress belongs on stderr:\n%s", tc.args, s.Result, tc.result, stderr)
		}
	}
}

// The schemas describe exactly what the Go types encode: every field, no
// other property, required unless encoding/json may leave it out, the
// JSON type of each. Values the fixtures never hold are covered too, and a
// field added to a type fails here until its schema says what it is.
func TestSchemasDescribeTheGoTypes(t *testing.T) {
	for name, v := range map[string]any{
		contract.AuditReport:   audit.Report{},
		contract.MigrationPlan: plan.Plan{},
		contract.TrafficGraph:  traffic.Graph{},
		contract.Status:        []phases.NamespaceStatus{},
		contract.Verify:        []VerifyResult{},
		contract.ApplySummary:  ApplySummary{},
		contract.ApplyEvent:    phases.Event{},
		contract.Version:       VersionInfo{},
	} {
		raw, err := contract.Read(name)
		if err != nil {
			t.Fatal(err)
		}
		var root map[string]any
		if err := json.Unmarshal(raw, &root); err != nil {
			t.Fatal(err)
		}
		d := &drift{t: t, file: name, root: root}
		d.check("", root, reflect.TypeOf(v), false)
	}
}

// The schemas pin the identities and the fixed sets the code defines.
func TestSchemasPinTheCodesConstants(t *testing.T) {
	pinned := func(name string, path ...string) any {
		raw, _ := contract.Read(name)
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		for _, p := range path {
			v = v.(map[string]any)[p]
		}
		return v
	}
	for _, c := range []struct {
		name, apiVersion, kind string
	}{
		{contract.AuditReport, audit.APIVersion, audit.Kind},
		{contract.MigrationPlan, plan.APIVersion, plan.Kind},
		{contract.TrafficGraph, traffic.APIVersion, traffic.Kind},
		{contract.ApplySummary, plan.APIVersion, applySummaryKind},
	} {
		if got := pinned(c.name, "properties", "apiVersion", "const"); got != c.apiVersion {
			t.Errorf("%s: apiVersion %v, the code says %s", c.name, got, c.apiVersion)
		}
		if got := pinned(c.name, "properties", "kind", "const"); got != c.kind {
			t.Errorf("%s: kind %v, the code says %s", c.name, got, c.kind)
		}
		if !strings.HasPrefix(c.apiVersion, "meshmigrate.io/") || !strings.HasSuffix(contract.BaseID, "/"+strings.TrimPrefix(c.apiVersion, "meshmigrate.io/")+"/") {
			t.Errorf("%s: $id base %s does not carry the version of %s", c.name, contract.BaseID, c.apiVersion)
		}
	}
	codes := fmt.Sprint(pinned(contract.AuditReport, "$defs", "finding", "properties", "code", "enum"))
	if want := fmt.Sprint(audit.Codes); codes != want {
		t.Errorf("auditreport.json finding codes %s, pkg/audit has %s", codes, want)
	}
	phaseNames := fmt.Sprint(pinned(contract.MigrationPlan, "$defs", "phase", "properties", "name", "enum"))
	if want := fmt.Sprint(plan.AllPhases); phaseNames != want {
		t.Errorf("migrationplan.json phases %s, pkg/plan has %s", phaseNames, want)
	}
}

type drift struct {
	t    *testing.T
	file string
	root map[string]any
}

// resolve follows a local $ref, merging the keywords beside it.
func (d *drift) resolve(node map[string]any) map[string]any {
	ref, ok := node["$ref"].(string)
	if !ok {
		return node
	}
	target := any(d.root)
	for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		target = target.(map[string]any)[p]
	}
	out := map[string]any{}
	for k, v := range d.resolve(target.(map[string]any)) {
		out[k] = v
	}
	for k, v := range node {
		if k == "$ref" {
			continue
		}
		if k == "properties" {
			if base, ok := out[k].(map[string]any); ok {
				merged := map[string]any{}
				for pk, pv := range base {
					merged[pk] = pv
				}
				for pk, pv := range v.(map[string]any) {
					if b, ok := merged[pk].(map[string]any); ok {
						both := map[string]any{}
						for bk, bv := range b {
							both[bk] = bv
						}
						for bk, bv := range pv.(map[string]any) {
							both[bk] = bv
						}
						pv = both
					}
					merged[pk] = pv
				}
				v = merged
			}
		}
		out[k] = v
	}
	return out
}

var (
	timeType    = reflect.TypeOf(time.Time{})
	marshalType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
)

// modulePath prefixes this module's packages, whose structs are the whole
// contract.
const modulePath = "github.com/meshmigrate/kubectl-meshmigrate/"

// check compares node with Go type t; omitted says a nil t is left out
// (an omitempty field), not written as null.
func (d *drift) check(path string, node map[string]any, t reflect.Type, omitted bool) {
	node = d.resolve(node)
	nullable := false
	for t.Kind() == reflect.Pointer {
		t, nullable = t.Elem(), !omitted
	}
	if t != timeType && (t.Implements(marshalType) || reflect.PointerTo(t).Implements(marshalType)) {
		return // it says itself how it encodes
	}
	want := ""
	switch {
	case t == timeType, t.Kind() == reflect.String:
		want = "string"
	case t.Kind() == reflect.Bool:
		want = "boolean"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		want = "integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		want = "number"
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		want = "array"
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		want = "object"
	case t.Kind() == reflect.Interface:
		return
	}
	switch typ := node["type"].(type) {
	case string:
		if typ != want && !(typ == "number" && want == "integer") || nullable {
			d.t.Errorf("%s %s: type %s, but the Go type %s encodes as %s%s", d.file, path, typ, t, want, map[bool]string{true: " or null"}[nullable])
		}
	case []any:
		if fmt.Sprint(typ) != fmt.Sprint([]any{want, "null"}) || !nullable {
			d.t.Errorf("%s %s: type %v, the Go type %s encodes as %s", d.file, path, typ, t, want)
		}
	case nil:
		if want == "array" || want == "object" {
			d.t.Errorf("%s %s: no type; the Go type %s encodes as %s", d.file, path, t, want)
		}
	}
	switch {
	case t == timeType:
		if node["format"] != "date-time" {
			d.t.Errorf("%s %s: a time without format date-time", d.file, path)
		}
	case want == "array":
		if items, ok := node["items"].(map[string]any); ok {
			d.check(path+"/*", items, t.Elem(), false)
		}
		if prefix, ok := node["prefixItems"].([]any); ok {
			for i, p := range prefix {
				d.check(fmt.Sprintf("%s/%d", path, i), p.(map[string]any), t.Elem(), false)
			}
		}
	case t.Kind() == reflect.Map:
		if elem, ok := node["additionalProperties"].(map[string]any); ok {
			d.check(path+"/*", elem, t.Elem(), false)
		} else if t.Elem().Kind() != reflect.Interface {
			d.t.Errorf("%s %s: a map of %s with no schema for its values", d.file, path, t.Elem())
		}
	case t.Kind() == reflect.Struct && strings.HasPrefix(t.PkgPath(), modulePath):
		d.checkStruct(path, node, t)
	}
	// Another module's struct (a Kubernetes type) is its own contract:
	// only its JSON type is checked.
}

func (d *drift) checkStruct(path string, node map[string]any, t reflect.Type) {
	if node["additionalProperties"] != false {
		d.t.Errorf("%s %s: %s is the whole contract: additionalProperties must be false", d.file, path, t)
	}
	props, _ := node["properties"].(map[string]any)
	required := map[string]bool{}
	for _, r := range asList(node["required"]) {
		required[r.(string)] = true
	}
	fields := map[string]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if f.Anonymous && name == "" {
				walk(f.Type)
				continue
			}
			if name == "" {
				name = f.Name
			}
			fields[name] = true
			// omitempty leaves out empty values, never structs.
			omittable := strings.Contains(","+opts+",", ",omitempty,") && f.Type.Kind() != reflect.Struct
			if required[name] == omittable {
				d.t.Errorf("%s %s/%s: required is %t, want %t (omitempty: %t)", d.file, path, name, required[name], !omittable, omittable)
			}
			p, ok := props[name].(map[string]any)
			if !ok {
				d.t.Errorf("%s %s: no property %q for %s.%s", d.file, path, name, t, f.Name)
				continue
			}
			d.check(path+"/"+name, p, f.Type, omittable)
		}
	}
	walk(t)
	for name := range props {
		if !fields[name] {
			d.t.Errorf("%s %s: property %q is not a field of %s", d.file, path, name, t)
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
