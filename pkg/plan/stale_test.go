package plan_test

import (
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// twoNamespaces is an estate of shop (labelled, web needs a restart) and
// legacy (unlabelled, batch without a sidecar).
func twoNamespaces() *cluster.Snapshot {
	s := estate()
	s.Namespaces = []cluster.Namespace{ns("legacy"), ns("shop", "istio-injection", "enabled")}
	s.Pods = pods(deploy("legacy", "batch", 1), deploy("shop", "web", 2))
	return s
}

func TestChangesNameWhatMovedSincePlanning(t *testing.T) {
	estate := twoNamespaces
	s := estate()
	p := build(t, s, nil, plan.Options{})
	if got := p.Changes(s, audit.Audit(s, audit.Observation{})); len(got) != 0 {
		t.Fatalf("the unchanged cluster shows changes: %q", got)
	}

	later := estate()
	for i := range later.Namespaces {
		if later.Namespaces[i].Name == p.Namespaces[0].Name {
			later.Namespaces[i].Labels = map[string]string{"istio-injection": "disabled"}
		}
	}
	later.PeerAuthentications = append(later.PeerAuthentications, cluster.PeerAuthentication{Namespace: p.Namespaces[0].Name, Name: "hand-made", Mode: cluster.ModeStrict})
	got := strings.Join(p.Changes(later, audit.Audit(later, audit.Observation{})), "\n")
	for _, want := range []string{
		"namespace " + p.Namespaces[0].Name + `: label istio-injection: (absent) -> "disabled"`,
		"namespace " + p.Namespaces[0].Name + `: peerauthentication hand-made: (absent) -> "mode=STRICT"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("changes lack %q:\n%s", want, got)
		}
	}

	gone := estate()
	gone.Namespaces = gone.Namespaces[1:]
	// A restart meshed shop/web meanwhile: its workload state moved too.
	gone.Pods = pods(deploy("legacy", "batch", 1), deploy("shop", "web", 2, injected("1-30")))
	got = strings.Join(p.Changes(gone, audit.Audit(gone, audit.Observation{})), "\n")
	if !strings.Contains(got, "namespace legacy: no longer exists") || !strings.Contains(got, `namespace shop: workload Deployment/web: "needs-restart" -> "meshed"`) {
		t.Errorf("a vanished namespace and a moved workload must be named: %s", got)
	}
}

func TestForClusterRefusesAnotherCluster(t *testing.T) {
	s := twoNamespaces()
	s.ClusterUID, s.Server = "uid-a", "https://127.0.0.1:6443"
	p := build(t, s, nil, plan.Options{})
	if err := p.ForCluster("uid-a", "https://127.0.0.1:7443"); err != nil {
		t.Errorf("same UID behind another URL refused: %v", err)
	}
	if err := p.ForCluster("uid-b", s.Server); err == nil || !strings.Contains(err.Error(), "was made for cluster uid-a") {
		t.Errorf("another cluster: %v", err)
	}
	s.ClusterUID = ""
	p = build(t, s, nil, plan.Options{})
	if err := p.ForCluster("uid-b", "https://127.0.0.1:7443"); err == nil || !strings.Contains(err.Error(), "API server https://127.0.0.1:6443") {
		t.Errorf("no UID, other server: %v", err)
	}
}
