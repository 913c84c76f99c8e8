package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Self is the tool's name as field manager and as the value of
// app.kubernetes.io/managed-by on what it writes.
const Self = "kubectl-meshmigrate"

// The labels and annotations that say who manages an object.
const (
	// LabelManagedBy is the recommended label naming the tool that manages
	// an object; Helm sets it to "Helm" (helm pkg/action/validate.go).
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// AnnotationArgoTrackingID is Argo CD's tracking annotation,
	// "<app>:<group>/<kind>:<namespace>/<name>" (argo-cd common.AnnotationKeyAppInstance;
	// the "annotation" tracking method, the default since Argo CD 3.0).
	AnnotationArgoTrackingID = "argocd.argoproj.io/tracking-id"
	// LabelArgoInstance is the instance label Argo CD's docs configure for
	// label tracking (application.instanceLabelKey). Its default,
	// app.kubernetes.io/instance, is not read: Helm charts set it too.
	LabelArgoInstance = "argocd.argoproj.io/instance"
	// Flux labels what it applies with its API group's name and namespace
	// keys (fluxcd/pkg ssa ResourceManager.SetOwnerLabels, called by
	// kustomize-controller; helm-controller's post-renderer does the same).
	LabelFluxKustomizationName      = "kustomize.toolkit.fluxcd.io/name"
	LabelFluxKustomizationNamespace = "kustomize.toolkit.fluxcd.io/namespace"
	LabelFluxHelmReleaseName        = "helm.toolkit.fluxcd.io/name"
	LabelFluxHelmReleaseNamespace   = "helm.toolkit.fluxcd.io/namespace"
	// Helm annotates what a release installed (helm pkg/action/validate.go).
	AnnotationHelmReleaseName      = "meta.helm.sh/release-name"
	AnnotationHelmReleaseNamespace = "meta.helm.sh/release-namespace"
)

var (
	ownerLabels      = []string{LabelManagedBy, LabelArgoInstance, LabelFluxKustomizationName, LabelFluxKustomizationNamespace, LabelFluxHelmReleaseName, LabelFluxHelmReleaseNamespace}
	ownerAnnotations = []string{AnnotationArgoTrackingID, AnnotationHelmReleaseName, AnnotationHelmReleaseNamespace}
)

// kubectlManagers are the field managers kubectl's own commands write with
// (k8s.io/kubectl v0.37 pkg/cmd: "kubectl" for apply --server-side,
// "kubectl-client-side-apply" and "kubectl-last-applied" for apply, and the
// --field-manager default of create, edit, label, annotate, patch,
// replace, set, rollout, run, expose and taint), and the API server's
// "before-first-apply". A person ran them once: nothing re-applies what
// they wrote, so the plan may change such an object, and rollback gives
// them their fields back.
var kubectlManagers = map[string]bool{
	"kubectl": true, "kubectl-client-side-apply": true, "kubectl-last-applied": true,
	"kubectl-create": true, "kubectl-edit": true, "kubectl-label": true, "kubectl-annotate": true,
	"kubectl-patch": true, "kubectl-replace": true, "kubectl-set": true, "kubectl-rollout": true,
	"kubectl-run": true, "kubectl-expose": true, "kubectl-taint": true,
	"before-first-apply": true,
}

// toolManagers are the field managers of the tools that re-apply what they
// manage, by the owner they stand for.
var toolManagers = map[string]string{
	// argo-cd common.ArgoCDSSAManager, for server-side syncs.
	"argocd-controller": ownerArgo,
	// Client-side syncs run kubectl's apply inside the controller without a
	// field manager: the API server names it after the user agent.
	"argocd-application-controller": ownerArgo,
	// fluxcd/kustomize-controller main.go controllerName, its ssa.Owner.
	"kustomize-controller": ownerFluxKustomization,
	// helm-controller writes through Helm's client, named after the binary.
	"helm-controller": ownerFluxHelmRelease,
	// helm pkg/kube getManagedFieldsManager: the binary's name.
	"helm": ownerHelm,
}

// Keys of the owners Owners tells apart, in the order it lists them: the
// GitOps tool first, since Argo CD and Flux also deploy Helm charts and
// their sync is what reverts a change.
const (
	ownerArgo              = "argo"
	ownerFluxKustomization = "flux-kustomization"
	ownerFluxHelmRelease   = "flux-helmrelease"
	ownerHelm              = "helm"
)

// Ownership is what tells who else writes an object: the field managers of
// its managedFields and the labels and annotations GitOps tools and Helm put
// on what they manage. The reader keeps it for PeerAuthentications and
// AuthorizationPolicies, the executor takes it from the live object; both
// judge it with Owners, so plan and apply agree.
type Ownership struct {
	// Managers are the field managers of the object, sorted; writers of a
	// subresource (status) are left out, they do not write the spec.
	Managers []string `json:"managers,omitempty"`
	// Marks are the object's labels and annotations that name an owner.
	Marks map[string]string `json:"marks,omitempty"`
}

// OwnershipOf extracts the ownership facts of an object's metadata.
func OwnershipOf(labels, annotations map[string]string, fields []metav1.ManagedFieldsEntry) Ownership {
	var o Ownership
	set := map[string]bool{}
	for _, f := range fields {
		if f.Subresource == "" && f.Manager != "" {
			set[f.Manager] = true
		}
	}
	if len(set) > 0 {
		o.Managers = slices.Sorted(maps.Keys(set))
	}
	mark := func(m map[string]string, keys []string) {
		for _, k := range keys {
			if v, ok := m[k]; ok {
				if o.Marks == nil {
					o.Marks = map[string]string{}
				}
				o.Marks[k] = v
			}
		}
	}
	mark(labels, ownerLabels)
	mark(annotations, ownerAnnotations)
	return o
}

// Owner is someone other than a person with kubectl who manages an object
// and re-applies it: Argo CD, Flux, Helm or another controller.
type Owner struct {
	// Tool is "Argo CD", "Flux" or "Helm"; empty for another writer.
	Tool string
	// Unit is what the tool manages the object through, as far as the
	// object tells ("application shop", "Kustomization flux-system/apps",
	// "release shop/policies"); for another writer, how it shows.
	Unit string
	key  string
}

// String names the owner: `Argo CD (application shop)`.
func (o Owner) String() string {
	switch {
	case o.Tool == "":
		return o.Unit
	case o.Unit == "":
		return o.Tool
	}
	return o.Tool + " (" + o.Unit + ")"
}

// Owners judges the ownership facts: every owner other than this tool and
// kubectl's own commands, GitOps tools first. Empty when the tool may
// change the object without its change being reverted.
func (o Ownership) Owners() []Owner {
	byKey := map[string]*Owner{}
	see := func(key string) *Owner {
		ow := byKey[key]
		if ow == nil {
			ow = &Owner{Tool: toolNames[key], key: key}
			byKey[key] = ow
		}
		return ow
	}
	m := o.Marks
	if v, ok := m[AnnotationArgoTrackingID]; ok {
		app, _, _ := strings.Cut(v, ":")
		see(ownerArgo).Unit = "application " + app
	}
	if v, ok := m[LabelArgoInstance]; ok {
		ow := see(ownerArgo)
		if ow.Unit == "" {
			ow.Unit = "application " + v
		}
	}
	if v, ok := m[LabelFluxKustomizationName]; ok {
		see(ownerFluxKustomization).Unit = "Kustomization " + qualified(m[LabelFluxKustomizationNamespace], v)
	}
	if v, ok := m[LabelFluxHelmReleaseName]; ok {
		see(ownerFluxHelmRelease).Unit = "HelmRelease " + qualified(m[LabelFluxHelmReleaseNamespace], v)
	}
	if v, ok := m[AnnotationHelmReleaseName]; ok {
		see(ownerHelm).Unit = "release " + qualified(m[AnnotationHelmReleaseNamespace], v)
	}
	switch v, ok := m[LabelManagedBy]; {
	case !ok || v == Self:
	case v == "Helm":
		see(ownerHelm)
	default:
		see("label:" + v).Unit = fmt.Sprintf("%s (label %s)", v, LabelManagedBy)
	}
	for _, mgr := range o.Managers {
		switch key, known := toolManagers[mgr]; {
		case mgr == Self || kubectlManagers[mgr]:
		case known:
			see(key)
		default:
			see("manager:" + mgr).Unit = fmt.Sprintf("field manager %q", mgr)
		}
	}
	var out []Owner
	for _, key := range []string{ownerArgo, ownerFluxKustomization, ownerFluxHelmRelease, ownerHelm} {
		if ow := byKey[key]; ow != nil {
			if ow.Unit == "" {
				ow.Unit = unitKinds[key]
			}
			out = append(out, *ow)
			delete(byKey, key)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, *byKey[key])
	}
	return out
}

var toolNames = map[string]string{ownerArgo: "Argo CD", ownerFluxKustomization: "Flux", ownerFluxHelmRelease: "Flux", ownerHelm: "Helm"}

// unitKinds name the unit when only a field manager tells the owner.
var unitKinds = map[string]string{ownerFluxKustomization: "a Kustomization", ownerFluxHelmRelease: "a HelmRelease"}

func qualified(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// TakeoverRefusal is why the tool does not change object ("PeerAuthentication
// shop/default"), which owners manage: server-side apply with force would
// take their fields, and their next sync would silently put them back
// while the checkpoint says done. It names the owner and the way out.
func TakeoverRefusal(object string, owners []Owner) string {
	if len(owners) == 0 {
		return ""
	}
	o := owners[0]
	var msg string
	const render = "(kubectl meshmigrate plan --out-dir renders the manifests)"
	switch o.key {
	case ownerArgo:
		msg = fmt.Sprintf("%s is managed by %s: the next sync would revert this change; make it in Git instead %s, or remove it from the application", object, o, render)
	case ownerFluxKustomization, ownerFluxHelmRelease:
		from := "the Kustomization"
		if o.key == ownerFluxHelmRelease {
			from = "the HelmRelease"
		}
		msg = fmt.Sprintf("%s is managed by %s: the next reconciliation would revert this change; make it in Git instead %s, or remove it from %s", object, o, render, from)
	case ownerHelm:
		msg = fmt.Sprintf("%s is managed by %s: the next helm upgrade would revert this change; make it in the chart instead %s, or remove it from the release", object, o, render)
	default:
		msg = fmt.Sprintf("%s is also managed by %s: its next write would revert this change; make it where that writer takes the object from instead %s, or stop it managing the object", object, o, render)
	}
	if len(owners) > 1 {
		var also []string
		for _, other := range owners[1:] {
			also = append(also, other.String())
		}
		msg += "; also managed by " + strings.Join(also, ", ")
	}
	return msg
}
