package plan_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// reseal edits the plan's JSON with f and recomputes its hash and id, as
// anyone can (the hash protects against accidents, it is not a signature):
// what Parse then refuses, it refuses for the edit itself.
func reseal(t *testing.T, raw []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var p plan.Plan
	if err := json.Unmarshal(edit(t, raw, f), &p); err != nil {
		t.Fatal(err)
	}
	c := p
	c.ID, c.Hash, c.CreatedAt = "", "", time.Time{}
	b, err := json.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	p.Hash = "sha256:" + hex.EncodeToString(sum[:])
	p.ID = "mp-" + p.Hash[len("sha256:"):len("sha256:")+12]
	out, err := json.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stepOf returns the first step of namespace ns's phase with action.
func stepOf(t *testing.T, m map[string]any, ns string, phase plan.PhaseName, action plan.Action) map[string]any {
	t.Helper()
	for _, n := range m["namespaces"].([]any) {
		n := n.(map[string]any)
		if n["name"] != ns {
			continue
		}
		for _, ph := range n["phases"].([]any) {
			ph := ph.(map[string]any)
			if ph["name"] != string(phase) {
				continue
			}
			steps, _ := ph["steps"].([]any)
			for _, st := range steps {
				if st := st.(map[string]any); st["action"] == string(action) {
					return st
				}
			}
		}
	}
	t.Fatalf("fixture: namespace %s phase %s has no %s step", ns, phase, action)
	return nil
}

func sealedFixture(t *testing.T) []byte {
	t.Helper()
	s, g := richEstate()
	raw, err := build(t, s, g, plan.Options{}).Marshal(true)
	if err != nil {
		t.Fatal(err)
	}
	// The resealed, unedited plan parses: the refusals below are the edits'.
	if _, err := plan.Parse(reseal(t, raw, func(map[string]any) {})); err != nil {
		t.Fatalf("a resealed plan without an edit must parse: %v", err)
	}
	return raw
}

func refuses(t *testing.T, raw []byte, want ...string) {
	t.Helper()
	p, err := plan.Parse(raw)
	if err == nil {
		t.Fatalf("Parse accepted the plan, want an error saying %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v, want it to say %q", err, w)
		}
	}
	if p != nil {
		t.Error("a plan came back with the error")
	}
}

func TestParseRejectsObjectNameMismatch(t *testing.T) {
	raw := sealedFixture(t)
	// off's permissive phase applies PeerAuthentication/default.
	object := func(m map[string]any) map[string]any {
		return stepOf(t, m, "off", plan.PhasePermissive, plan.ActionApply)["object"].(map[string]any)
	}
	for _, c := range []struct {
		name string
		f    func(m map[string]any)
		want []string
	}{
		{"another name", func(m map[string]any) { object(m)["metadata"].(map[string]any)["name"] = "other" },
			[]string{"namespace off phase permissive step 0", `target "PeerAuthentication/default"`, `metadata.name "other"`}},
		{"another namespace", func(m map[string]any) { object(m)["metadata"].(map[string]any)["namespace"] = "kube-system" },
			[]string{"namespace off phase permissive step 0", `metadata.namespace "kube-system"`, "want off"}},
		{"no namespace", func(m map[string]any) { delete(object(m)["metadata"].(map[string]any), "namespace") },
			[]string{`metadata.namespace ""`}},
		{"another kind", func(m map[string]any) { object(m)["kind"] = "AuthorizationPolicy" },
			[]string{`kind "AuthorizationPolicy"`, `target "PeerAuthentication/default"`}},
		{"another API group", func(m map[string]any) { object(m)["apiVersion"] = "apps/v1" },
			[]string{`apiVersion "apps/v1"`, "security.istio.io"}},
	} {
		t.Run(c.name, func(t *testing.T) { refuses(t, reseal(t, raw, c.f), c.want...) })
	}
}

func TestParseRejectsTargetOutsideItsNamespace(t *testing.T) {
	raw := sealedFixture(t)
	for _, c := range []struct {
		name string
		f    func(m map[string]any)
		want []string
	}{
		{"label another namespace", func(m map[string]any) {
			stepOf(t, m, "pay", plan.PhaseInject, plan.ActionLabelNamespace)["target"] = "Namespace/kube-system"
		}, []string{"namespace pay phase inject step 0", `"Namespace/kube-system"`, "Namespace/pay"}},
		{"apply a Namespace", func(m map[string]any) {
			st := stepOf(t, m, "off", plan.PhasePermissive, plan.ActionApply)
			st["target"] = "Namespace/kube-system"
			st["object"] = map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "kube-system", "namespace": "off"}}
		}, []string{`"Namespace/kube-system"`, "PeerAuthentication, AuthorizationPolicy or Gateway"}},
		{"apply a Deployment", func(m map[string]any) {
			st := stepOf(t, m, "off", plan.PhasePermissive, plan.ActionApply)
			st["target"] = "Deployment/legacy"
			st["object"] = map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "legacy", "namespace": "off"}}
		}, []string{`"Deployment/legacy"`, "PeerAuthentication, AuthorizationPolicy or Gateway"}},
		{"restart a Namespace", func(m map[string]any) {
			stepOf(t, m, "pay", plan.PhaseInject, plan.ActionRestartWorkload)["target"] = "Namespace/kube-system"
		}, []string{`"Namespace/kube-system"`, "Deployment, StatefulSet or DaemonSet"}},
		{"restart a bad name", func(m map[string]any) {
			stepOf(t, m, "pay", plan.PhaseInject, plan.ActionRestartWorkload)["target"] = "Deployment/../kube-system"
		}, []string{`"Deployment/../kube-system"`, "not a valid name"}},
		{"a label key that is no label key", func(m map[string]any) {
			stepOf(t, m, "pay", plan.PhaseInject, plan.ActionLabelNamespace)["labels"] = map[string]any{"istio-injection/../x": "enabled"}
		}, []string{"namespace pay phase inject step 0", `label "istio-injection/../x"`}},
	} {
		t.Run(c.name, func(t *testing.T) { refuses(t, reseal(t, raw, c.f), c.want...) })
	}
}
