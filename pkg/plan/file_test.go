package plan_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/istiofixture"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// richEstate exercises most of the plan: waves, a trust domain of its own,
// predicted principals, blocked steps of several kinds, skipped namespaces,
// a pinned namespace and an uncovered workload.
func richEstate() (*cluster.Snapshot, *traffic.Graph) {
	s := estate()
	s.Mesh.TrustDomain = "corp.example"
	s.Namespaces = []cluster.Namespace{
		ns("db", labelInjection, "enabled"), ns("kube-system"), ns("monitoring", labelInjection, "enabled"),
		ns("off", labelInjection, "disabled"), ns("pay", "team", "payments"), ns("shop", labelInjection, "enabled"),
	}
	billing := deploy("pay", "billing", 2)
	billing[1].ServiceAccount = "billing-legacy"
	s.Pods = pods(
		deploy("shop", "web", 2, injected("1-30")), deploy("shop", "api", 2, injected("1-30")), deploy("shop", "admin", 1, injected("1-30")),
		billing, deploy("pay", "worker", 1),
		workload("monitoring", "DaemonSet", "node-exporter", 2, hostNetwork()), deploy("monitoring", "grafana", 1, injected("1-30")),
		workload("db", "StatefulSet", "pg", 2),
		deploy("off", "legacy", 1),
	)
	s.OnDelete = []cluster.NamespacedWorkload{{Namespace: "db", WorkloadRef: cluster.WorkloadRef{Kind: "StatefulSet", Name: "pg"}}}
	s.PeerAuthentications = []cluster.PeerAuthentication{{Namespace: "monitoring", Name: "default", Mode: cluster.ModePermissive, CreatedAt: t0}}
	g := graphOf(
		mtlsAs("edge/gw", "corp.example/ns/edge/sa/gw", "shop/web", 8080),
		mtlsAs("shop/web", "corp.example/ns/shop/sa/web", "shop/api", 8080),
		plain("pay/billing", "shop/api"),
		plain("pay/worker", "db/pg"),
		plain("legacy/cron", "off/legacy"),
		plain("unknown", "monitoring/grafana"),
		mtlsAs("shop/web", "corp.example/ns/shop/sa/web", "monitoring/grafana", 3000),
	)
	return s, g
}

func TestBuildIsDeterministic(t *testing.T) {
	opts := plan.Options{PortExceptions: []string{"shop/api:9090"}, ForceStrict: []string{"monitoring"}}
	s, g := richEstate()
	p1 := build(t, s, g, opts)
	p2 := build(t, s, g, opts)
	s3, g3 := richEstate() // equal inputs, built afresh
	p3 := build(t, s3, g3, opts)

	for _, asJSON := range []bool{false, true} {
		b1, err := p1.Marshal(asJSON)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range []*plan.Plan{p2, p3} {
			b, err := p.Marshal(asJSON)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b1, b) {
				t.Errorf("json=%t: plan %d differs from the first:\n%s", asJSON, i+2, firstDiff(b1, b))
			}
		}
	}
	if p1.Hash != p2.Hash || p1.Hash != p3.Hash || p1.ID != p2.ID || p1.ID != p3.ID {
		t.Errorf("hash/id: %s %s, %s %s, %s %s", p1.Hash, p1.ID, p2.Hash, p2.ID, p3.Hash, p3.ID)
	}
	if !strings.HasPrefix(p1.Hash, "sha256:") || len(p1.Hash) != len("sha256:")+64 || p1.ID != "mp-"+p1.Hash[7:19] {
		t.Errorf("hash %q id %q: want sha256:<64 hex> and mp-<first 12>", p1.Hash, p1.ID)
	}
	if !p1.CreatedAt.Equal(t0) {
		t.Errorf("createdAt = %v, want the snapshot's time", p1.CreatedAt)
	}

	// Planning the same state later gives the same plan: CreatedAt is not
	// part of the hash.
	s3.TakenAt = t0.Add(36 * time.Hour)
	later := build(t, s3, g3, opts)
	if later.Hash != p1.Hash || later.ID != p1.ID || later.CreatedAt.Equal(p1.CreatedAt) {
		t.Errorf("re-planning later: hash %s id %s createdAt %v", later.Hash, later.ID, later.CreatedAt)
	}
}

func TestHashFollowsTheInputs(t *testing.T) {
	s, g := richEstate()
	base := build(t, s, g, plan.Options{})

	changes := map[string]func(s *cluster.Snapshot, g *traffic.Graph) (*cluster.Snapshot, *traffic.Graph, plan.Options){
		"a namespace label": func(s *cluster.Snapshot, g *traffic.Graph) (*cluster.Snapshot, *traffic.Graph, plan.Options) {
			s.Namespaces[4].Labels["team"] = "billing"
			return s, g, plan.Options{}
		},
		"one more edge": func(s *cluster.Snapshot, g *traffic.Graph) (*cluster.Snapshot, *traffic.Graph, plan.Options) {
			g.Edges = append(g.Edges, mtlsAs("shop/api", "corp.example/ns/shop/sa/api", "shop/admin", 80))
			return s, g, plan.Options{}
		},
		"an option": func(s *cluster.Snapshot, g *traffic.Graph) (*cluster.Snapshot, *traffic.Graph, plan.Options) {
			return s, g, plan.Options{Authz: plan.AuthzDryRun}
		},
		"the cluster": func(s *cluster.Snapshot, g *traffic.Graph) (*cluster.Snapshot, *traffic.Graph, plan.Options) {
			s.ClusterUID = "another-cluster"
			return s, g, plan.Options{}
		},
	}
	for name, change := range changes {
		s, g := richEstate()
		s, g, opts := change(s, g)
		p := build(t, s, g, opts)
		if p.Hash == base.Hash || p.ID == base.ID {
			t.Errorf("changing %s kept hash %s id %s", name, p.Hash, p.ID)
		}
	}
}

func TestBuildDoesNotModifyItsInputs(t *testing.T) {
	s, g := richEstate()
	opts := plan.Options{
		ExcludeWorkloads: []string{"shop/web", "pay/worker", "shop/web"},
		PortExceptions:   []string{"shop/api:9090", "db/pg:5432"},
		AllowNoCallers:   []string{"shop/*", "monitoring/*"},
		ForceStrict:      []string{"shop", "monitoring", "shop"},
	}
	before := func() []byte {
		b, err := json.Marshal([]any{s, g, opts})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	want := before()
	p := build(t, s, g, opts)
	if got := before(); !bytes.Equal(want, got) {
		t.Errorf("Build changed its inputs:\n%s", firstDiff(want, got))
	}
	// The plan records the options sorted and without repeats.
	if !reflect.DeepEqual(p.Options.ExcludeWorkloads, []string{"pay/worker", "shop/web"}) || !reflect.DeepEqual(p.Options.ForceStrict, []string{"monitoring", "shop"}) ||
		!reflect.DeepEqual(p.Options.PortExceptions, []string{"db/pg:5432", "shop/api:9090"}) {
		t.Errorf("plan options = %+v", p.Options)
	}
	// And the order the user typed them in does not change the plan.
	q := build(t, s, g, plan.Options{
		ExcludeWorkloads: []string{"pay/worker", "shop/web"}, PortExceptions: []string{"db/pg:5432", "shop/api:9090"},
		AllowNoCallers: []string{"monitoring/*", "shop/*"}, ForceStrict: []string{"monitoring", "shop"},
	})
	if q.Hash != p.Hash {
		t.Errorf("option order changed the hash")
	}
}

func TestFileRoundTrip(t *testing.T) {
	s, g := richEstate()
	p := build(t, s, g, plan.Options{PortExceptions: []string{"shop/api:9090"}})
	yamlOut, err := p.Marshal(false)
	if err != nil {
		t.Fatal(err)
	}
	jsonOut, err := p.Marshal(true)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(jsonOut) || json.Valid(yamlOut) {
		t.Fatal("Marshal(true) must give JSON and Marshal(false) YAML")
	}
	for _, raw := range [][]byte{yamlOut, jsonOut} {
		q, err := plan.Parse(raw)
		if err != nil {
			t.Fatalf("Parse(%.20q...): %v", raw, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Errorf("parsed plan differs from the original")
		}
		for _, c := range []struct {
			asJSON bool
			want   []byte
		}{{false, yamlOut}, {true, jsonOut}} {
			again, err := q.Marshal(c.asJSON)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, c.want) {
				t.Errorf("re-marshalled (json=%t) differs:\n%s", c.asJSON, firstDiff(c.want, again))
			}
		}
		if q.Hash != p.Hash || q.ID != p.ID {
			t.Errorf("hash %s id %s after parse, want %s %s", q.Hash, q.ID, p.Hash, p.ID)
		}
	}

	// Load reads what was written.
	dir := t.TempDir()
	path := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(path, yamlOut, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := plan.Load(path)
	if err != nil || l.Hash != p.Hash {
		t.Fatalf("Load: %v", err)
	}
}

// docs/plan.md suggests an editor modeline at the top of a plan file: a
// comment, which neither the loader nor the hash sees.
func TestParseIgnoresASchemaModeline(t *testing.T) {
	s, g := richEstate()
	p := build(t, s, g, plan.Options{})
	raw, err := p.Marshal(false)
	if err != nil {
		t.Fatal(err)
	}
	q, err := plan.Parse(append([]byte("# yaml-language-server: $schema=./schema/migrationplan.json\n"), raw...))
	if err != nil || q.Hash != p.Hash {
		t.Errorf("a plan with a modeline: %v", err)
	}
}

// A plan file written before empty lists were filled, with a null list or
// map in it, still loads: filling happens when a plan is made, the hash
// stays over the content as written.
func TestParseAcceptsTheNullsOfEarlierFiles(t *testing.T) {
	s, g := richEstate()
	p := build(t, s, g, plan.Options{})
	p.Mesh.Fingerprint.Items = nil
	p.Waves[0].Namespaces = nil
	// Sealed as the earlier version did: the hash over the content, id,
	// hash and createdAt left out.
	c := *p
	c.ID, c.Hash, c.CreatedAt = "", "", time.Time{}
	sum := sha256.Sum256(mustJSON(t, &c))
	p.Hash = "sha256:" + hex.EncodeToString(sum[:])
	p.ID = "mp-" + p.Hash[len("sha256:"):len("sha256:")+12]
	raw := mustJSON(t, p)
	if !bytes.Contains(raw, []byte(`"items":null`)) || !bytes.Contains(raw, []byte(`"namespaces":null`)) {
		t.Fatalf("the file holds no null to test: %s", raw)
	}
	if _, err := plan.Parse(raw); err != nil {
		t.Errorf("a plan file with null lists no longer loads: %v", err)
	}
}

// edit returns the plan's JSON with f applied to its generic form.
func edit(t *testing.T, raw []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseRefuses(t *testing.T) {
	s, g := richEstate()
	p := build(t, s, g, plan.Options{})
	yamlOut, _ := p.Marshal(false)
	jsonOut, _ := p.Marshal(true)
	text := string(yamlOut)
	if strings.Count(text, "mode: PERMISSIVE") == 0 {
		t.Fatal("fixture: the plan has no PERMISSIVE PeerAuthentication to edit")
	}
	firstStep := func(m map[string]any) map[string]any {
		return m["namespaces"].([]any)[0].(map[string]any)["phases"].([]any)[0].(map[string]any)["steps"].([]any)[0].(map[string]any)
	}

	cases := []struct {
		name string
		raw  []byte
		want string
	}{
		{"empty", nil, "apiVersion"},
		{"not YAML", []byte("{{{"), "not a MigrationPlan"},
		{"wrong apiVersion", []byte(strings.Replace(text, "apiVersion: meshmigrate.io/v1alpha1", "apiVersion: meshmigrate.io/v2", 1)), `apiVersion "meshmigrate.io/v2"`},
		{"wrong kind", []byte(strings.Replace(text, "kind: MigrationPlan", "kind: AuditReport", 1)), `kind "AuditReport"`},
		{"unknown top-level field", append(append([]byte{}, yamlOut...), "approvedBy: me\n"...), `unknown field "approvedBy"`},
		{"unknown step field", edit(t, jsonOut, func(m map[string]any) { firstStep(m)["forcedd"] = true }), `unknown field "forcedd"`},
		{"PeerAuthentication mode edited", []byte(strings.Replace(text, "mode: PERMISSIVE", "mode: STRICT", 1)), "does not match its hash"},
		{"step status edited", edit(t, jsonOut, func(m map[string]any) {
			st := firstStep(m)
			if st["status"] == string(plan.StatusDone) {
				st["status"] = plan.StatusPending
			} else {
				st["status"] = plan.StatusDone
			}
		}), "does not match its hash"},
		{"hash edited", edit(t, jsonOut, func(m map[string]any) { m["hash"] = "sha256:" + strings.Repeat("0", 64) }), "does not match its hash"},
		{"id edited", edit(t, jsonOut, func(m map[string]any) { m["id"] = "mp-000000000000" }), "id \"mp-000000000000\" does not match"},
		{"no hash", edit(t, jsonOut, func(m map[string]any) { delete(m, "hash") }), "missing id or hash"},
		{"bad target", edit(t, jsonOut, func(m map[string]any) { m["options"].(map[string]any)["target"] = "yolo" }), "options.target"},
		{"unknown step status", edit(t, jsonOut, func(m map[string]any) { firstStep(m)["status"] = "maybe" }), "not valid"},
		{"a phase dropped", edit(t, jsonOut, func(m map[string]any) {
			n := m["namespaces"].([]any)[0].(map[string]any)
			n["phases"] = n["phases"].([]any)[1:]
		}), "4 phases, want 5"},
		{"apply without object", edit(t, jsonOut, func(m map[string]any) {
			// off's permissive phase applies a PeerAuthentication.
			for _, n := range m["namespaces"].([]any) {
				if n := n.(map[string]any); n["name"] == "off" {
					st := n["phases"].([]any)[1].(map[string]any)["steps"].([]any)[0].(map[string]any)
					delete(st, "object")
				}
			}
		}), "pending apply without an object"},
		{"a TrafficGraph", mustJSON(t, graphOf()), "not a MigrationPlan"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, err := plan.Parse(c.raw)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one containing %q", err, c.want)
			}
			if q != nil {
				t.Error("a plan came back with the error")
			}
		})
	}
	// The unedited plan parses, so the refusals above are the edits'.
	if _, err := plan.Parse(jsonOut); err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Parse(edit(t, jsonOut, func(map[string]any) {})); err != nil {
		t.Fatalf("re-encoding without an edit must parse: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.yaml")
	_, err := plan.Load(missing)
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "kubectl meshmigrate plan -o yaml > "+missing) {
		t.Errorf("missing file: %v, want how to make one", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: ConfigMap\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Load(bad); err == nil || !strings.Contains(err.Error(), "plan file "+bad) {
		t.Errorf("bad file: %v, want the path named", err)
	}
}

func TestFingerprintDiff(t *testing.T) {
	s, g := richEstate()
	p := build(t, s, g, plan.Options{})
	current := func(s *cluster.Snapshot, name string) plan.Fingerprint {
		r := audit.Audit(s, audit.Observation{Graph: g})
		for i := range r.Namespaces {
			if r.Namespaces[i].Name == name {
				return plan.NamespaceFingerprint(s, &r.Namespaces[i])
			}
		}
		t.Fatalf("no namespace %s", name)
		return plan.Fingerprint{}
	}
	planned := nsOf(t, p, "shop").Fingerprint

	if d := planned.Diff(current(s, "shop")); d != nil {
		t.Errorf("same state: diff %q, want nil", d)
	}
	// A pod rescheduled under another name is not a change the plan cares for.
	s2, _ := richEstate()
	for i := range s2.Pods {
		if s2.Pods[i].Namespace == "shop" {
			s2.Pods[i].Name += "-x"
		}
	}
	if d := planned.Diff(current(s2, "shop")); d != nil {
		t.Errorf("pods renamed: diff %q, want nil", d)
	}

	s3, _ := richEstate()
	s3.Namespaces[5].Labels[labelInjection] = "disabled"
	s3.Namespaces[5].Labels["owner"] = "team-a"
	d := planned.Diff(current(s3, "shop"))
	want := []string{
		`label istio-injection: "enabled" -> "disabled"`,
		`label owner: (absent) -> "team-a"`,
	}
	for _, w := range want {
		if !contains(d, w) {
			t.Errorf("diff %q lacks %q", d, w)
		}
	}
	// The workloads' states changed with the label: they are named too.
	if !containsPrefix(d, "workload Deployment/web: ") {
		t.Errorf("diff %q lacks the web workload's new state", d)
	}

	s4, _ := richEstate()
	delete(s4.Namespaces[4].Labels, "team")
	if d := nsOf(t, p, "pay").Fingerprint.Diff(current(s4, "pay")); !contains(d, `label team: "payments" -> (absent)`) {
		t.Errorf("removed label: diff %q", d)
	}

	// The mesh fingerprint names a changed trust domain.
	s5, _ := richEstate()
	s5.Mesh.TrustDomain = "cluster.local"
	if d := p.Mesh.Fingerprint.Diff(plan.MeshFingerprint(audit.Audit(s5, audit.Observation{Graph: g}))); !reflect.DeepEqual(d, []string{`mesh trustDomain: "corp.example" -> "cluster.local"`}) {
		t.Errorf("mesh diff %q", d)
	}

	// A digest edited by hand is reported even though the items match.
	edited := planned
	edited.Digest = "sha256:edited"
	if d := edited.Diff(planned); len(d) != 1 || !strings.Contains(d[0], "sha256:edited") {
		t.Errorf("edited digest: %q", d)
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

// firstDiff shows where two outputs part.
func firstDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + itoa(i+1) + ":\n- " + x + "\n+ " + y
		}
	}
	return "(identical)"
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// FuzzParse: Parse never panics, and a plan it accepts re-marshals and
// re-parses to the same hash. The seeds are real plans kept as small as a
// plan gets (one namespace, no pods): the fuzzer minimizes every input that
// finds new coverage, one Parse per candidate, and minimizing a plan of
// kilobytes takes most of a short run (60s per input by default): pass
// -fuzzminimizetime 2s to spend a run fuzzing rather than minimizing.
func FuzzParse(f *testing.F) {
	s := estate()
	s.Injectors = istiofixture.Injectors("1-30", false)
	s.Namespaces = []cluster.Namespace{ns("shop")}
	p := build(f, s, nil, plan.Options{Authz: plan.AuthzDryRun})
	yamlOut, _ := p.Marshal(false)
	jsonOut, _ := p.Marshal(true)
	f.Add(yamlOut)
	f.Add(jsonOut)
	for _, seed := range []string{
		"", "{}", "null", "[]", "apiVersion: meshmigrate.io/v1alpha1\nkind: MigrationPlan\n",
		`{"apiVersion":"meshmigrate.io/v1alpha1","kind":"MigrationPlan","id":"mp-x","hash":"sha256:x","options":{"target":"strict","authz":"off"},"waves":[{"number":2}],"namespaces":[{"name":"a","wave":7}]}`,
		"- - -\n", "\x00\xff\xfe", "a: &a [*a, *a]", "hash: !!binary AAAA", strings.Repeat("[", 100),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := plan.Parse(raw)
		if err != nil {
			if p != nil {
				t.Fatal("Parse returned a plan with its error")
			}
			return
		}
		for _, asJSON := range []bool{false, true} {
			out, err := p.Marshal(asJSON)
			if err != nil {
				t.Fatalf("an accepted plan does not marshal (json=%t): %v", asJSON, err)
			}
			q, err := plan.Parse(out)
			if err != nil {
				t.Fatalf("an accepted plan does not re-parse (json=%t): %v\n%s", asJSON, err, out)
			}
			if q.Hash != p.Hash || q.ID != p.ID {
				t.Fatalf("re-parsed hash %s id %s, accepted %s %s", q.Hash, q.ID, p.Hash, p.ID)
			}
			again, err := q.Marshal(asJSON)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("marshal is not stable across a parse (json=%t): %v", asJSON, err)
			}
		}
	})
}
