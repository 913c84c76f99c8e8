package injector

import (
	"context"
	"fmt"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/istiofixture"
)

// Install is how a revision is installed: its configuration
// istio-sidecar-injector-<rev> (istio.io/rev=<rev>), with the
// istio-injection=enabled webhooks when it is the default, and one
// istio-revision-tag-<tag> configuration per tag (istio.io/tag=<tag>,
// istio.io/rev=<rev>), as Istio's chart and `istioctl tag set` render them.
type Install struct {
	Revision string
	Default  bool
	Tags     []string
}

// Register creates (or replaces) the MutatingWebhookConfigurations of the
// installs, all pointing at this server.
func (s *Server) Register(ctx context.Context, kube kubernetes.Interface, installs ...Install) error {
	for _, in := range installs {
		if _, ok := s.revisions[in.Revision]; !ok {
			return fmt.Errorf("the stand-in does not serve revision %q", in.Revision)
		}
		mwcs := []*admissionv1.MutatingWebhookConfiguration{
			s.configuration("istio-sidecar-injector-"+in.Revision, map[string]string{"istio.io/rev": in.Revision, "app": "sidecar-injector"},
				in.Revision, istiofixture.RevisionWebhooks(in.Revision, in.Default)),
		}
		for _, tag := range in.Tags {
			mwcs = append(mwcs, s.configuration("istio-revision-tag-"+tag, map[string]string{"istio.io/rev": in.Revision, "istio.io/tag": tag, "app": "sidecar-injector"},
				in.Revision, istiofixture.RevisionWebhooks(tag, false)))
		}
		for _, m := range mwcs {
			if err := upsert(ctx, kube, m); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Server) configuration(name string, labels map[string]string, rev string, webhooks []istiofixture.Webhook) *admissionv1.MutatingWebhookConfiguration {
	url := s.URL + "/inject/" + rev
	fail := admissionv1.Fail
	none := admissionv1.SideEffectClassNone
	never := admissionv1.NeverReinvocationPolicy
	timeout := int32(10)
	m := &admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, w := range webhooks {
		m.Webhooks = append(m.Webhooks, admissionv1.MutatingWebhook{
			Name:                    w.Name,
			ClientConfig:            admissionv1.WebhookClientConfig{URL: &url, CABundle: s.CABundle},
			Rules:                   []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create}, Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       w.NamespaceSelector,
			ObjectSelector:          w.ObjectSelector,
			FailurePolicy:           &fail,
			SideEffects:             &none,
			ReinvocationPolicy:      &never,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		})
	}
	return m
}

func upsert(ctx context.Context, kube kubernetes.Interface, m *admissionv1.MutatingWebhookConfiguration) error {
	c := kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	old, err := c.Get(ctx, m.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = c.Create(ctx, m, metav1.CreateOptions{})
	case err == nil:
		m.ResourceVersion = old.ResourceVersion
		_, err = c.Update(ctx, m, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("register webhook configuration %s: %w", m.Name, err)
	}
	return nil
}
