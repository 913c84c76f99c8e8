// Package istiofixture builds Istio's sidecar injector webhook selectors the
// way Istio's Helm chart renders them (src manifests/charts/istio-control/
// istio-discovery/templates/mutatingwebhook.yaml and revision-tags-mwc.yaml;
// docs/istio.md 1.2). Unit tests use them as snapshot values and the e2e
// suite registers them for its injector stand-in, so both agree with Istio.
package istiofixture

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

const (
	labelInjection = "istio-injection"
	labelRev       = "istio.io/rev"
	keyInject      = "sidecar.istio.io/inject"
)

func req(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

func sel(reqs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: reqs}
}

// Webhook is one webhook of an injector configuration: its name and selectors.
type Webhook struct {
	Name              string
	NamespaceSelector *metav1.LabelSelector
	ObjectSelector    *metav1.LabelSelector
}

// RevisionWebhooks are the webhooks of istio-sidecar-injector[-<rev>] for
// revision rev. The default revision also gets the istio-injection=enabled
// ("namespace.") and sidecar.istio.io/inject=true ("object.") webhooks.
// selectValue is what istio.io/rev must equal (the revision, or the tag for a
// tag's configuration).
func RevisionWebhooks(selectValue string, isDefault bool) []Webhook {
	notFalse := req(keyInject, metav1.LabelSelectorOpNotIn, "false")
	out := []Webhook{
		{
			Name:              "rev.namespace.sidecar-injector.istio.io",
			NamespaceSelector: sel(req(labelRev, metav1.LabelSelectorOpIn, selectValue), req(labelInjection, metav1.LabelSelectorOpDoesNotExist)),
			ObjectSelector:    sel(notFalse),
		},
		{
			Name:              "rev.object.sidecar-injector.istio.io",
			NamespaceSelector: sel(req(labelRev, metav1.LabelSelectorOpDoesNotExist), req(labelInjection, metav1.LabelSelectorOpDoesNotExist)),
			ObjectSelector:    sel(notFalse, req(labelRev, metav1.LabelSelectorOpIn, selectValue)),
		},
	}
	if isDefault {
		out = append(out,
			Webhook{
				Name:              "namespace.sidecar-injector.istio.io",
				NamespaceSelector: sel(req(labelInjection, metav1.LabelSelectorOpIn, "enabled")),
				ObjectSelector:    sel(notFalse),
			},
			Webhook{
				Name:              "object.sidecar-injector.istio.io",
				NamespaceSelector: sel(req(labelInjection, metav1.LabelSelectorOpDoesNotExist), req(labelRev, metav1.LabelSelectorOpDoesNotExist)),
				ObjectSelector:    sel(req(keyInject, metav1.LabelSelectorOpIn, "true"), req(labelRev, metav1.LabelSelectorOpDoesNotExist)),
			},
		)
	}
	return out
}

// Injectors returns snapshot values for an installation: revision rev's
// configuration (named istio-sidecar-injector for "default", else
// istio-sidecar-injector-<rev>), and a tag configuration for each tag.
func Injectors(rev string, isDefault bool, tags ...string) []cluster.InjectorWebhook {
	cfg := "istio-sidecar-injector"
	if rev != "default" {
		cfg += "-" + rev
	}
	var out []cluster.InjectorWebhook
	for _, w := range RevisionWebhooks(rev, isDefault) {
		out = append(out, cluster.InjectorWebhook{Configuration: cfg, Name: w.Name, Revision: rev,
			NamespaceSelector: w.NamespaceSelector, ObjectSelector: w.ObjectSelector, ServiceNamespace: "istio-system"})
	}
	for _, tag := range tags {
		for _, w := range RevisionWebhooks(tag, false) {
			out = append(out, cluster.InjectorWebhook{Configuration: "istio-revision-tag-" + tag, Name: w.Name, Revision: rev, Tag: tag,
				NamespaceSelector: w.NamespaceSelector, ObjectSelector: w.ObjectSelector, ServiceNamespace: "istio-system"})
		}
	}
	return out
}
