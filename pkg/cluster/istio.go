package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/pager"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	clientnetv1 "istio.io/client-go/pkg/apis/networking/v1"
	clientnetv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
	clientsecv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
)

// Istio's well-known keys (docs/istio.md 1.1, 1.2, 4).
const (
	LabelRev          = "istio.io/rev"
	LabelTag          = "istio.io/tag"
	DryRunAnnotation  = "istio.io/dry-run"
	injectorSuffix    = "sidecar-injector.istio.io"
	defaultIstiodNS   = "istio-system"
	securityGroup     = "security.istio.io"
	networkingGroup   = "networking.istio.io"
	defaultRevision   = "default"
	istioCRDsNotFound = "Istio's CRDs are not installed (security.istio.io and networking.istio.io are not served)"
)

// injectors lists the MutatingWebhookConfigurations and keeps the webhooks of
// Istio's sidecar injector, all named "<prefix>sidecar-injector.istio.io"
// (src manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml).
func (r *Reader) injectors(ctx context.Context) ([]InjectorWebhook, string, error) {
	var out []InjectorWebhook
	istiodNS := ""
	err := r.each(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return r.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, o)
	}, func(o runtime.Object) error {
		mwc := o.(*admissionv1.MutatingWebhookConfiguration)
		rev := mwc.Labels[LabelRev]
		if rev == "" {
			rev = defaultRevision
		}
		for _, wh := range mwc.Webhooks {
			if !strings.HasSuffix(wh.Name, injectorSuffix) {
				continue
			}
			w := InjectorWebhook{
				Configuration:     mwc.Name,
				Name:              wh.Name,
				Revision:          rev,
				Tag:               mwc.Labels[LabelTag],
				NamespaceSelector: wh.NamespaceSelector,
				ObjectSelector:    wh.ObjectSelector,
			}
			if s := wh.ClientConfig.Service; s != nil {
				w.ServiceNamespace = s.Namespace
				if istiodNS == "" {
					istiodNS = s.Namespace
				}
			}
			out = append(out, w)
		}
		return nil
	})
	if err != nil {
		return nil, "", apiError("list", "mutatingwebhookconfigurations", "", err)
	}
	if istiodNS == "" {
		istiodNS = defaultIstiodNS
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Configuration != out[j].Configuration {
			return out[i].Configuration < out[j].Configuration
		}
		return out[i].Name < out[j].Name
	})
	return out, istiodNS, nil
}

// servedVersion returns the first of versions in which group serves
// resource, or "" when none does. Istio serves v1 from 1.22 on and keeps
// v1beta1 with the same schema (docs/istio.md 2.4).
func (r *Reader) servedVersion(ctx context.Context, group, resource string, versions ...string) (string, error) {
	for _, v := range versions {
		list, err := retried(ctx, func() (*metav1.APIResourceList, error) {
			return r.Kube.Discovery().ServerResourcesForGroupVersion(group + "/" + v)
		})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return "", apiError("discover", group+"/"+v, "", err)
		}
		for _, res := range list.APIResources {
			if res.Name == resource {
				return v, nil
			}
		}
	}
	return "", nil
}

// istioPolicies reads PeerAuthentications (audited namespaces and the root
// namespace), DestinationRules (cluster-wide where allowed, since a rule in
// any namespace can target this namespace's hosts) and AuthorizationPolicies (audited and root namespaces).
// Missing CRDs are reported in the availability, not as an error, so the
// audit still reports injection and pods.
func (r *Reader) istioPolicies(ctx context.Context, snap *Snapshot, policyNamespaces []string, clusterWide bool) (IstioAvailability, error) {
	sec, err := r.servedVersion(ctx, securityGroup, "peerauthentications", "v1", "v1beta1")
	if err != nil {
		return IstioAvailability{}, err
	}
	net, err := r.servedVersion(ctx, networkingGroup, "destinationrules", "v1", "v1beta1")
	if err != nil {
		return IstioAvailability{}, err
	}
	avail := IstioAvailability{PoliciesReadable: sec != "" && net != "", SecurityVersion: sec, NetworkingVersion: net}
	if !avail.PoliciesReadable {
		avail.Reason = istioCRDsNotFound
		return avail, nil
	}
	inPolicyScope := setOf(policyNamespaces)

	if err := r.listNamespaced(ctx, "list", "peerauthentications."+securityGroup, policyNamespaces, clusterWide,
		func(ns string) pager.ListPageFunc {
			return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				if sec == "v1" {
					return r.Istio.SecurityV1().PeerAuthentications(ns).List(ctx, o)
				}
				return r.Istio.SecurityV1beta1().PeerAuthentications(ns).List(ctx, o)
			}
		}, nil, inPolicyScope, func(o runtime.Object) error {
			switch pa := o.(type) {
			case *clientsecv1.PeerAuthentication:
				snap.PeerAuthentications = append(snap.PeerAuthentications, peerAuthenticationFrom(&pa.ObjectMeta, &pa.Spec))
			case *clientsecv1beta1.PeerAuthentication:
				snap.PeerAuthentications = append(snap.PeerAuthentications, peerAuthenticationFrom(&pa.ObjectMeta, &pa.Spec))
			}
			return nil
		}); err != nil {
		return avail, err
	}

	if err := r.listNamespaced(ctx, "list", "authorizationpolicies."+securityGroup, policyNamespaces, clusterWide,
		func(ns string) pager.ListPageFunc {
			return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				if sec == "v1" {
					return r.Istio.SecurityV1().AuthorizationPolicies(ns).List(ctx, o)
				}
				return r.Istio.SecurityV1beta1().AuthorizationPolicies(ns).List(ctx, o)
			}
		}, nil, inPolicyScope, func(o runtime.Object) error {
			switch ap := o.(type) {
			case *clientsecv1.AuthorizationPolicy:
				snap.AuthorizationPolicies = append(snap.AuthorizationPolicies, authorizationPolicyFrom(&ap.ObjectMeta, &ap.Spec))
			case *clientsecv1beta1.AuthorizationPolicy:
				snap.AuthorizationPolicies = append(snap.AuthorizationPolicies, authorizationPolicyFrom(&ap.ObjectMeta, &ap.Spec))
			}
			return nil
		}); err != nil {
		return avail, err
	}

	// DestinationRules from any namespace may point at audited hosts: read
	// them all when allowed, else those in the audited and root namespaces.
	visitDR := func(o runtime.Object) error {
		switch dr := o.(type) {
		case *clientnetv1.DestinationRule:
			snap.DestinationRules = append(snap.DestinationRules, destinationRuleFrom(&dr.ObjectMeta, &dr.Spec))
		case *clientnetv1beta1.DestinationRule:
			snap.DestinationRules = append(snap.DestinationRules, destinationRuleFrom(&dr.ObjectMeta, &dr.Spec))
		}
		return nil
	}
	drPage := func(ns string) pager.ListPageFunc {
		return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			if net == "v1" {
				return r.Istio.NetworkingV1().DestinationRules(ns).List(ctx, o)
			}
			return r.Istio.NetworkingV1beta1().DestinationRules(ns).List(ctx, o)
		}
	}
	err = r.each(ctx, drPage(metav1.NamespaceAll), visitDR)
	if err == nil {
		return avail, nil
	}
	if !apierrors.IsForbidden(err) {
		return avail, apiError("list", "destinationrules."+networkingGroup, "", err)
	}
	snap.DestinationRules = nil
	avail.DestinationRulesPartial = true
	return avail, r.listNamespaced(ctx, "list", "destinationrules."+networkingGroup, policyNamespaces, false, drPage, nil, inPolicyScope, visitDR)
}

func peerAuthenticationFrom(m *metav1.ObjectMeta, s *securityv1beta1.PeerAuthentication) PeerAuthentication {
	pa := PeerAuthentication{Namespace: m.Namespace, Name: m.Name, CreatedAt: m.CreationTimestamp.Time, Mode: ModeUnset,
		Ownership: OwnershipOf(m.Labels, m.Annotations, m.ManagedFields)}
	pa.Selector = selectorLabels(s.GetSelector())
	if mt := s.GetMtls(); mt != nil {
		pa.Mode = mt.GetMode().String()
	}
	for port, mt := range s.GetPortLevelMtls() {
		if pa.PortModes == nil {
			pa.PortModes = map[uint32]string{}
		}
		mode := ModeUnset
		if mt != nil {
			mode = mt.GetMode().String()
		}
		pa.PortModes[port] = mode
	}
	return pa
}

func selectorLabels(s *typev1beta1.WorkloadSelector) map[string]string {
	if s == nil || len(s.GetMatchLabels()) == 0 {
		return nil
	}
	return s.GetMatchLabels()
}

func authorizationPolicyFrom(m *metav1.ObjectMeta, s *securityv1beta1.AuthorizationPolicy) AuthorizationPolicy {
	ap := AuthorizationPolicy{
		Namespace:  m.Namespace,
		Name:       m.Name,
		Action:     s.GetAction().String(),
		Namespaced: selectorLabels(s.GetSelector()) == nil && s.GetTargetRef() == nil && len(s.GetTargetRefs()) == 0,
		Rules:      len(s.GetRules()),
		DryRun:     strings.EqualFold(m.Annotations[DryRunAnnotation], "true"),
		Ownership:  OwnershipOf(m.Labels, m.Annotations, m.ManagedFields),
		L7:         l7Attributes(s),
		Selector:   selectorLabels(s.GetSelector()),
	}
	for _, ref := range s.GetTargetRefs() {
		ap.TargetRefs = append(ap.TargetRefs, ref.GetKind()+"/"+ref.GetName())
	}
	if ref := s.GetTargetRef(); ref != nil {
		ap.TargetRefs = append(ap.TargetRefs, ref.GetKind()+"/"+ref.GetName())
	}
	if len(ap.L7) > 0 && len(ap.TargetRefs) == 0 {
		ap.Spec = specJSON(s)
	}
	for _, rule := range s.GetRules() {
		if rule == nil || (len(rule.GetFrom()) == 0 && len(rule.GetTo()) == 0 && len(rule.GetWhen()) == 0) {
			ap.EmptyRule = true
		}
	}
	return ap
}

func destinationRuleFrom(m *metav1.ObjectMeta, s *networkingv1alpha3.DestinationRule) DestinationRule {
	dr := DestinationRule{Namespace: m.Namespace, Name: m.Name, Host: s.GetHost(), ExportTo: s.GetExportTo()}
	addPolicy := func(where string, tp *networkingv1alpha3.TrafficPolicy) {
		if tp == nil {
			return
		}
		if t := tp.GetTls(); t != nil {
			dr.TLS = append(dr.TLS, DRTLS{Where: where, Mode: t.GetMode().String()})
		}
		for _, pl := range tp.GetPortLevelSettings() {
			if t := pl.GetTls(); t != nil {
				dr.TLS = append(dr.TLS, DRTLS{Where: fmt.Sprintf("%s port %d", where, pl.GetPort().GetNumber()), Mode: t.GetMode().String()})
			}
		}
	}
	addPolicy("trafficPolicy", s.GetTrafficPolicy())
	for _, sub := range s.GetSubsets() {
		addPolicy("subset "+sub.GetName(), sub.GetTrafficPolicy())
	}
	return dr
}

func setOf(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func parseSelector(s string) (labels.Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid label selector %q: %w", s, err)
	}
	return sel, nil
}

func labelSet(m map[string]string) labels.Set { return labels.Set(m) }

// specJSON is an AuthorizationPolicy's spec as the API server returns it
// (the istio.io/api types marshal with protojson); nil if it cannot be.
func specJSON(s *securityv1beta1.AuthorizationPolicy) map[string]any {
	raw, err := s.MarshalJSON()
	if err != nil {
		return nil
	}
	var out map[string]any
	if json.Unmarshal(raw, &out) != nil {
		return nil
	}
	return out
}
