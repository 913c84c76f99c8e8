package audit

import (
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

func TestANamespacePolicyManagedElsewhereIsReported(t *testing.T) {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = []cluster.Pod{pod("shop", "web", injected("1-30"))}
	pa := peer("shop", "default", cluster.ModePermissive, 0, nil, nil)
	pa.Ownership = cluster.Ownership{Managers: []string{"kustomize-controller"},
		Marks: map[string]string{cluster.LabelFluxKustomizationName: "apps", cluster.LabelFluxKustomizationNamespace: "flux-system"}}
	s.PeerAuthentications = []cluster.PeerAuthentication{pa}
	f, ok := codes(nsReport(t, s, "shop").Findings)[CodePeerAuthenticationManagedElsewhere]
	if !ok || f.Severity != SeverityWarning || f.Object != "PeerAuthentication/shop/default" ||
		!strings.Contains(f.Message, "PeerAuthentication shop/default is managed by Flux (Kustomization flux-system/apps): the next reconciliation would revert this change") {
		t.Errorf("finding = %+v (found %v)", f, ok)
	}

	// Already STRICT by that policy: the migration does not change it.
	s.PeerAuthentications[0].Mode = cluster.ModeStrict
	if _, ok := codes(nsReport(t, s, "shop").Findings)[CodePeerAuthenticationManagedElsewhere]; ok {
		t.Error("reported a policy the migration leaves alone")
	}
	// Made with kubectl: the migration may change it.
	s.PeerAuthentications[0].Mode = cluster.ModePermissive
	s.PeerAuthentications[0].Ownership = cluster.Ownership{Managers: []string{"kubectl-client-side-apply"}}
	if _, ok := codes(nsReport(t, s, "shop").Findings)[CodePeerAuthenticationManagedElsewhere]; ok {
		t.Error("reported a kubectl-made policy")
	}
}
