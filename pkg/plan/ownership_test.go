package plan_test

import (
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// argoOwned is what Argo CD leaves on an object it syncs server-side.
var argoOwned = cluster.Ownership{Managers: []string{"argocd-controller"},
	Marks: map[string]string{cluster.AnnotationArgoTrackingID: "shop-mesh:security.istio.io/PeerAuthentication:shop/default"}}

const argoRefusal = "PeerAuthentication shop/default is managed by Argo CD (application shop-mesh): the next sync would revert this change; make it in Git instead (kubectl meshmigrate plan --out-dir renders the manifests), or remove it from the application"

func TestPlanBlocksAStepOverAnArgoCDOwnedPeerAuthentication(t *testing.T) {
	s, g := cleanEstate()
	s.PeerAuthentications = []cluster.PeerAuthentication{{Namespace: "shop", Name: "default", Mode: cluster.ModeDisable, CreatedAt: t0, Ownership: argoOwned}}
	p := build(t, s, g, plan.Options{})
	for _, phase := range []plan.PhaseName{plan.PhasePermissive, plan.PhaseStrict} {
		ph := phaseOf(t, p, "shop", phase)
		st := oneStep(t, ph, "PeerAuthentication/default")
		if st.Status != plan.StatusBlocked || st.Reason != argoRefusal {
			t.Errorf("%s step over Argo CD's policy = %s %q, want blocked:\n%s", phase, st.Status, st.Reason, argoRefusal)
		}
		if ph.Status != plan.StatusBlocked {
			t.Errorf("%s phase = %s %q, want blocked", phase, ph.Status, ph.Reason)
		}
	}
	if a := phaseOf(t, p, "shop", plan.PhaseAuthz); a.Status != plan.StatusBlocked {
		t.Errorf("authz without STRICT = %s %q", a.Status, a.Reason)
	}
	if !p.NeedsAttention() || !containsPrefix(p.Summary.BlockedSteps, "shop permissive: PeerAuthentication/default: "+argoRefusal) {
		t.Errorf("summary does not name the owner: %+v", p.Summary.BlockedSteps)
	}

	// Made by hand with kubectl, the same policy is the plan's to change.
	s.PeerAuthentications[0].Ownership = cluster.Ownership{Managers: []string{"kubectl-client-side-apply"}}
	p = build(t, s, g, plan.Options{})
	if st := oneStep(t, phaseOf(t, p, "shop", plan.PhasePermissive), "PeerAuthentication/default"); st.Status != plan.StatusPending {
		t.Errorf("permissive step over a kubectl-made policy = %s %q, want pending", st.Status, st.Reason)
	}
}

func TestPlanBlocksAStepOverAnOwnedAuthorizationPolicy(t *testing.T) {
	s, g := cleanEstate()
	s.AuthorizationPolicies = []cluster.AuthorizationPolicy{{Namespace: "shop", Name: "meshmigrate-allow-web", Action: "ALLOW", Rules: 1,
		Ownership: cluster.Ownership{Managers: []string{"helm"}, Marks: map[string]string{cluster.LabelManagedBy: "Helm", cluster.AnnotationHelmReleaseName: "policies", cluster.AnnotationHelmReleaseNamespace: "shop"}}}}
	p := build(t, s, g, plan.Options{})
	authz := phaseOf(t, p, "shop", plan.PhaseAuthz)
	want := "AuthorizationPolicy shop/meshmigrate-allow-web is managed by Helm (release shop/policies): the next helm upgrade would revert this change"
	for _, st := range steps(authz, "AuthorizationPolicy/meshmigrate-allow-web") {
		if st.Status != plan.StatusBlocked || !strings.HasPrefix(st.Reason, want) {
			t.Errorf("step over Helm's policy = %s %q", st.Status, st.Reason)
		}
	}
	if authz.Status != plan.StatusBlocked || !strings.Contains(authz.Reason, want) {
		t.Errorf("authz = %s %q, want blocked naming the release", authz.Status, authz.Reason)
	}
	// The policy of another workload is not in the way.
	if st := steps(authz, "AuthorizationPolicy/meshmigrate-allow-api"); len(st) == 0 || st[0].Status != plan.StatusPending {
		t.Errorf("api's policy = %+v", st)
	}
}

func TestPlanMakesItsOwnNamespacePolicyWhereDefaultIsAnOwnedWorkloadPolicy(t *testing.T) {
	s, g := cleanEstate()
	s.PeerAuthentications = []cluster.PeerAuthentication{{Namespace: "shop", Name: "default", Mode: cluster.ModeStrict, CreatedAt: t0,
		Selector:  map[string]string{"app": "api"},
		Ownership: cluster.Ownership{Marks: map[string]string{cluster.LabelFluxKustomizationName: "apps", cluster.LabelFluxKustomizationNamespace: "flux-system"}}}}
	p := build(t, s, g, plan.Options{})
	per := phaseOf(t, p, "shop", plan.PhasePermissive)
	if st := oneStep(t, per, "PeerAuthentication/meshmigrate-default"); st.Status != plan.StatusPending || get(st.Object, "spec", "selector") != nil {
		t.Errorf("the plan's own namespace-wide policy = %+v", st)
	}
	if len(steps(per, "PeerAuthentication/default")) != 0 || !containsPrefix(per.Notes, "PeerAuthentication/default is a workload policy managed by Flux (Kustomization flux-system/apps)") {
		t.Errorf("permissive steps %s, notes %q", describeSteps(per.Steps), per.Notes)
	}
	if st := oneStep(t, phaseOf(t, p, "shop", plan.PhaseStrict), "PeerAuthentication/meshmigrate-default"); st.Status != plan.StatusPending {
		t.Errorf("strict step = %s %q", st.Status, st.Reason)
	}
}

func TestAnOwnerAppearingMakesThePlanStale(t *testing.T) {
	s, g := cleanEstate()
	s.PeerAuthentications = []cluster.PeerAuthentication{{Namespace: "shop", Name: "default", Mode: cluster.ModeDisable, CreatedAt: t0}}
	p := build(t, s, g, plan.Options{})
	later := *s
	later.PeerAuthentications = []cluster.PeerAuthentication{s.PeerAuthentications[0]}
	later.PeerAuthentications[0].Ownership = argoOwned
	changes := p.Changes(&later, audit.Audit(&later, audit.Observation{Graph: g}))
	if len(changes) != 1 || !strings.Contains(changes[0], `peerauthentication default: "mode=DISABLE" -> "mode=DISABLE owners=Argo CD (application shop-mesh)"`) {
		t.Errorf("changes = %q", changes)
	}
}

func TestOutDirRendersAnOwnedPolicysChangeForItsOwner(t *testing.T) {
	s, g := cleanEstate()
	s.PeerAuthentications = []cluster.PeerAuthentication{{Namespace: "shop", Name: "default", Mode: cluster.ModeDisable, CreatedAt: t0, Ownership: argoOwned}}
	p := build(t, s, g, plan.Options{})
	if st := oneStep(t, phaseOf(t, p, "shop", plan.PhaseStrict), "PeerAuthentication/default"); st.Owner != "Argo CD (application shop-mesh)" {
		t.Errorf("owner of the blocked step = %q", st.Owner)
	}
	files, err := p.Render()
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]string{"shop/02-permissive.yaml": "PERMISSIVE", "shop/03-strict.yaml": "STRICT"} {
		f := string(files[name])
		if !strings.Contains(f, "# MANAGED BY Argo CD (application shop-mesh) PeerAuthentication/default: the tool does not apply it; make this change in the owner's source") ||
			!strings.Contains(f, "mode: "+mode) {
			t.Errorf("%s does not render the change for Argo CD:\n%s", name, f)
		}
		if strings.Contains(f, plan.LabelManagedBy) || strings.Contains(f, plan.LabelPlanID) {
			t.Errorf("%s claims the policy with the tool's labels:\n%s", name, f)
		}
	}
}
