package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// oneAsMany is a count of one with a plural noun: "1 waves", "1 pods need".
var oneAsMany = regexp.MustCompile(`\b1 (?:info )?[a-z]+s\b`)

// legacyOnly is the estate cut down to namespace legacy: one namespace,
// one wave, one pod.
func legacyOnly() *cluster.Snapshot {
	s := estate()
	s.Namespaces = s.Namespaces[:1]
	s.Pods = s.Pods[:1]
	s.DestinationRules = nil
	return s
}

// Every summary line says "1 wave", "1 edge", "1 change", never "1 waves".
func TestSummaryLinesAgreeInNumber(t *testing.T) {
	oneEdge := filepath.Join(t.TempDir(), "traffic.yaml")
	raw, err := os.ReadFile(trafficFile)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(raw), "- source: {namespace: payments")
	if err := os.WriteFile(oneEdge, []byte(first), 0o600); err != nil {
		t.Fatal(err)
	}
	planOut, _, _ := run(t, &fakeReader{snap: legacyOnly()}, "plan", "-A", "--traffic-file", oneEdge, "-o", "yaml")
	planFile := filepath.Join(t.TempDir(), "plan.yaml")
	if err := os.WriteFile(planFile, []byte(planOut), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		out  func() string
		want []string
	}{
		{"plan table", func() string {
			out, _, _ := run(t, &fakeReader{snap: legacyOnly()}, "plan", "-A", "--traffic-file", oneEdge, "-o", "table")
			return out
		}, []string{"Traffic: 1 edge over", "1 namespace in 1 wave,"}},
		{"audit table", func() string {
			out, _, _ := runAudit(t, &fakeReader{snap: estate()}, "-A", "--traffic-file", oneEdge)
			return out
		}, []string{"Traffic: 1 edge over", "1 info finding not shown"}},
		{"apply dry run", func() string {
			out, _, _ := runApply(t, "-f", planFile, "--phase", "permissive", "--dry-run=client")
			return out
		}, []string{"1 change to make", "1 change would be made"}},
		{"traffic export", func() string {
			_, stderr, _ := run(t, nil, "traffic", "export", "--prometheus-url", fakePrometheus(t, 1), "-o", filepath.Join(t.TempDir(), "g.yaml"))
			return stderr
		}, []string{"Wrote 1 edge over"}},
		{"verify table", func() string {
			out, _, _ := run(t, &fakeReader{snap: estate()}, "verify", "-n", "shop", "--prometheus-url", fakePrometheus(t, 2))
			return out
		}, []string{"1 pod needs a restart"}},
	} {
		out := tc.out()
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s lacks %q:\n%s", tc.name, w, out)
			}
		}
		if bad := oneAsMany.FindAllString(out, -1); len(bad) > 0 {
			t.Errorf("%s says %q:\n%s", tc.name, bad, out)
		}
	}
}
