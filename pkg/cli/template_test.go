package cli

import (
	"strings"
	"testing"
)

// The outputs that carry an apiVersion and a kind print through kubectl's
// templates, as `kubectl get -o jsonpath=...` does.
func TestAuditAndPlanPrintThroughKubectlTemplates(t *testing.T) {
	out, stderr, code := run(t, &fakeReader{snap: estate()}, "audit", "-A", "--no-traffic", "-o", "jsonpath={.namespaces[*].name}")
	if code != ExitAttention && code != ExitOK || strings.TrimSpace(out) == "" {
		t.Fatalf("audit -o jsonpath: exit %d, %q, %s", code, out, stderr)
	}
	for _, ns := range []string{"legacy", "payments", "shop"} {
		if !strings.Contains(out, ns) {
			t.Errorf("audit -o jsonpath printed %q, want namespace %s", out, ns)
		}
	}
	out, stderr, _ = run(t, &fakeReader{snap: estate()}, "plan", "-A", "--no-traffic", "-o", "go-template={{.kind}} {{.id}}")
	if !strings.HasPrefix(out, "MigrationPlan mp-") {
		t.Errorf("plan -o go-template printed %q (%s)", out, stderr)
	}
	_, stderr, code = run(t, &fakeReader{snap: estate()}, "audit", "-A", "-o", "jsonpath")
	if code != ExitError || !strings.Contains(stderr, "jsonpath") {
		t.Errorf("an empty template: exit %d, %s", code, stderr)
	}
	_, stderr, code = run(t, &fakeReader{snap: estate()}, "audit", "-A", "-o", "csv")
	if code != ExitError || !strings.Contains(stderr, `unknown output format "csv": use table, wide, json or yaml, or a kubectl template (jsonpath=, go-template=)`) {
		t.Errorf("-o csv: exit %d, %s", code, stderr)
	}
}
