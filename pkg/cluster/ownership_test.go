package cluster

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func managers(names ...string) []metav1.ManagedFieldsEntry {
	var out []metav1.ManagedFieldsEntry
	for _, n := range names {
		out = append(out, metav1.ManagedFieldsEntry{Manager: n, Operation: metav1.ManagedFieldsOperationUpdate})
	}
	return out
}

func TestOwners(t *testing.T) {
	for _, tc := range []struct {
		name        string
		labels      map[string]string
		annotations map[string]string
		managers    []string
		want        []string
	}{
		{name: "made with kubectl, then taken over by this tool",
			managers: []string{"kubectl-client-side-apply", "kubectl-label", "kubectl", Self},
			labels:   map[string]string{LabelManagedBy: Self}},
		{name: "created by this tool", managers: []string{Self}, labels: map[string]string{LabelManagedBy: Self, "team": "shop"}},
		{name: "Argo CD tracking annotation names the application",
			annotations: map[string]string{AnnotationArgoTrackingID: "shop-mesh:security.istio.io/PeerAuthentication:shop/default"},
			managers:    []string{"argocd-controller"},
			want:        []string{"Argo CD (application shop-mesh)"}},
		{name: "Argo CD instance label", labels: map[string]string{LabelArgoInstance: "shop-mesh"},
			want: []string{"Argo CD (application shop-mesh)"}},
		{name: "Argo CD client-side sync shows only as its field manager",
			managers: []string{"argocd-application-controller"}, want: []string{"Argo CD"}},
		{name: "Flux Kustomization",
			labels:   map[string]string{LabelFluxKustomizationName: "apps", LabelFluxKustomizationNamespace: "flux-system"},
			managers: []string{"kustomize-controller"},
			want:     []string{"Flux (Kustomization flux-system/apps)"}},
		{name: "Flux HelmRelease before the Helm release it drives",
			labels:      map[string]string{LabelFluxHelmReleaseName: "mesh", LabelFluxHelmReleaseNamespace: "flux-system", LabelManagedBy: "Helm"},
			annotations: map[string]string{AnnotationHelmReleaseName: "mesh", AnnotationHelmReleaseNamespace: "shop"},
			managers:    []string{"helm-controller"},
			want:        []string{"Flux (HelmRelease flux-system/mesh)", "Helm (release shop/mesh)"}},
		{name: "Helm alone", labels: map[string]string{LabelManagedBy: "Helm"},
			annotations: map[string]string{AnnotationHelmReleaseName: "policies", AnnotationHelmReleaseNamespace: "shop"},
			managers:    []string{"helm"},
			want:        []string{"Helm (release shop/policies)"}},
		{name: "another managed-by value and another controller",
			labels: map[string]string{LabelManagedBy: "Terraform"}, managers: []string{"kubectl-create", "mesh-operator"},
			want: []string{"Terraform (label app.kubernetes.io/managed-by)", `field manager "mesh-operator"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := OwnershipOf(tc.labels, tc.annotations, managers(tc.managers...))
			var got []string
			for _, ow := range o.Owners() {
				got = append(got, ow.String())
			}
			if strings.Join(got, "; ") != strings.Join(tc.want, "; ") {
				t.Errorf("owners = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOwnershipOfLeavesOutStatusWriters(t *testing.T) {
	fields := append(managers("kubectl-create"), metav1.ManagedFieldsEntry{Manager: "pilot-discovery", Subresource: "status"})
	if o := OwnershipOf(nil, nil, fields); len(o.Owners()) != 0 || len(o.Managers) != 1 {
		t.Errorf("istiod writing the status makes an owner: %+v -> %v", o, o.Owners())
	}
}

func TestTakeoverRefusalNamesTheOwnerAndTheWayOut(t *testing.T) {
	for _, tc := range []struct {
		o    Ownership
		want string
	}{
		{Ownership{Marks: map[string]string{AnnotationArgoTrackingID: "shop-mesh:security.istio.io/PeerAuthentication:shop/default"}},
			"PeerAuthentication shop/default is managed by Argo CD (application shop-mesh): the next sync would revert this change; make it in Git instead (kubectl meshmigrate plan --out-dir renders the manifests), or remove it from the application"},
		{Ownership{Managers: []string{"kustomize-controller"}},
			"PeerAuthentication shop/default is managed by Flux (a Kustomization): the next reconciliation would revert this change; make it in Git instead (kubectl meshmigrate plan --out-dir renders the manifests), or remove it from the Kustomization"},
		{Ownership{Managers: []string{"helm"}, Marks: map[string]string{LabelManagedBy: "Helm", AnnotationHelmReleaseName: "policies"}},
			"PeerAuthentication shop/default is managed by Helm (release policies): the next helm upgrade would revert this change; make it in the chart instead (kubectl meshmigrate plan --out-dir renders the manifests), or remove it from the release"},
		{Ownership{Managers: []string{"mesh-operator", "argocd-controller"}},
			`PeerAuthentication shop/default is managed by Argo CD: the next sync would revert this change; make it in Git instead (kubectl meshmigrate plan --out-dir renders the manifests), or remove it from the application; also managed by field manager "mesh-operator"`},
		{Ownership{Managers: []string{"kubectl-client-side-apply"}}, ""},
	} {
		if got := TakeoverRefusal("PeerAuthentication shop/default", tc.o.Owners()); got != tc.want {
			t.Errorf("refusal for %+v =\n%s\nwant\n%s", tc.o, got, tc.want)
		}
	}
}
