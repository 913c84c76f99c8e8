package cluster

import (
	"context"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	securityv1beta1 "istio.io/api/security/v1beta1"
)

// AmbientComponents is what the cluster runs of Istio's ambient data plane
// (docs/istio.md 1.6): the node agents that capture pods (istio-cni) and
// carry their traffic (ztunnel), both DaemonSets.
type AmbientComponents struct {
	Ztunnel *DaemonSetState `json:"ztunnel,omitempty"`
	CNI     *DaemonSetState `json:"cni,omitempty"`
	// Unreadable says why they could not be looked for (RBAC): the audit
	// must not conclude they are missing.
	Unreadable string `json:"unreadable,omitempty"`
	// What a waypoint needs, read only for the namespaces that have an
	// AuthorizationPolicy with L7 attributes not yet on a waypoint: the
	// Gateway API version served for gateways ("" when its CRDs are not
	// installed), the Gateways there ("namespace/name") and their Services.
	GatewayAPI string    `json:"-"`
	Gateways   []string  `json:"-"`
	Services   []Service `json:"-"`
}

// Service is a Service reduced to what a policy on a waypoint needs: the
// pods it selects.
type Service struct {
	Namespace string
	Name      string
	Selector  map[string]string
}

// GatewayGroup is the Gateway API's group; a waypoint is a Gateway of
// class istio-waypoint.
const GatewayGroup = "gateway.networking.k8s.io"

// L7Unbound are ns's AuthorizationPolicies that only an L7 proxy can
// enforce and that no waypoint has yet (bound by selector or namespace).
func (s *Snapshot) L7Unbound(ns string) []AuthorizationPolicy {
	var out []AuthorizationPolicy
	for _, ap := range s.AuthorizationPolicies {
		if ap.Namespace == ns && len(ap.L7) > 0 && len(ap.TargetRefs) == 0 {
			out = append(out, ap)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// waypointInputs reads what a waypoint needs in the namespaces with
// policies only a waypoint can enforce: nothing for the others, so an
// ambient audit without L7 policies makes no extra request.
func (r *Reader) waypointInputs(ctx context.Context, snap *Snapshot) error {
	var nss []string
	for _, ns := range snap.Namespaces {
		if len(snap.L7Unbound(ns.Name)) > 0 {
			nss = append(nss, ns.Name)
		}
	}
	if len(nss) == 0 {
		return nil
	}
	v, err := r.servedVersion(ctx, GatewayGroup, "gateways", "v1")
	if err != nil {
		return err
	}
	snap.Ambient.GatewayAPI = v
	gateways := schema.GroupVersionResource{Group: GatewayGroup, Version: v, Resource: "gateways"}
	for _, ns := range nss {
		svcs, err := retried(ctx, func() (*corev1.ServiceList, error) {
			return r.Kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		})
		if err != nil {
			return apiError("list", "services", ns, err)
		}
		for _, svc := range svcs.Items {
			snap.Ambient.Services = append(snap.Ambient.Services, Service{Namespace: ns, Name: svc.Name, Selector: svc.Spec.Selector})
		}
		if v == "" {
			continue
		}
		gws, err := retried(ctx, func() (*metav1.PartialObjectMetadataList, error) {
			return r.Metadata.Resource(gateways).Namespace(ns).List(ctx, metav1.ListOptions{})
		})
		if err != nil {
			return apiError("list", "gateways", ns, err)
		}
		for _, gw := range gws.Items {
			snap.Ambient.Gateways = append(snap.Ambient.Gateways, ns+"/"+gw.Name)
		}
	}
	return nil
}

// DaemonSetState is a DaemonSet's rollout as its status says.
type DaemonSetState struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Desired   int32  `json:"desired"`
	Ready     int32  `json:"ready"`
	// Image is the first container's image (ztunnel's carries Istio's
	// version in its tag).
	Image string `json:"image,omitempty"`
}

// IstioVersion is the major and minor version in the tag of an Istio
// image ("docker.io/istio/ztunnel:1.24.2-distroless" is 1, 24), when the
// image is Istio's (its name ends in want) and its tag reads as one.
func (d *DaemonSetState) IstioVersion(want string) (major, minor int, ok bool) {
	name, tag, found := strings.Cut(d.Image[strings.LastIndex(d.Image, "/")+1:], ":")
	if !found || name != want {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(tag, "%d.%d", &major, &minor); err != nil {
		return 0, 0, false
	}
	return major, minor, true
}

// Serving is true when the DaemonSet runs ready on every node it is
// scheduled to (and on one at least).
func (d *DaemonSetState) Serving() bool {
	return d != nil && d.Desired > 0 && d.Ready >= d.Desired
}

func (d *DaemonSetState) String() string {
	return fmt.Sprintf("DaemonSet %s/%s (%d of %d ready)", d.Namespace, d.Name, d.Ready, d.Desired)
}

// The ambient node agents, by the name and selector labels of Istio's
// charts (manifests/charts/ztunnel, manifests/charts/istio-cni).
const (
	ztunnelName = "ztunnel"
	cniName     = "istio-cni-node"
)

// AmbientNamespaces are where the ambient agents are looked for: istiod's
// namespace (Helm and istioctl install them there) and kube-system (GKE).
func AmbientNamespaces(istiodNamespace string) []string {
	if istiodNamespace == "" || istiodNamespace == "kube-system" {
		return []string{"kube-system"}
	}
	return []string{istiodNamespace, "kube-system"}
}

// LabelDataplaneMode selects the ambient data plane for a namespace or
// pod: "ambient", or "none" to opt a pod out.
const LabelDataplaneMode = "istio.io/dataplane-mode"

// DataplaneModeAmbient is LabelDataplaneMode's value that enrolls.
const DataplaneModeAmbient = "ambient"

func anyAmbient(nss []Namespace) bool {
	for _, ns := range nss {
		if ns.Labels[LabelDataplaneMode] == DataplaneModeAmbient {
			return true
		}
	}
	return false
}

// ambient finds ztunnel and istio-cni among the DaemonSets of the
// namespaces they are installed in: one small list each.
func (r *Reader) ambient(ctx context.Context, istiodNamespace string) (AmbientComponents, error) {
	var out AmbientComponents
	for _, ns := range AmbientNamespaces(istiodNamespace) {
		list, err := retried(ctx, func() (*appsv1.DaemonSetList, error) {
			return r.Kube.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
		})
		if apierrors.IsForbidden(err) {
			out.Unreadable = fmt.Sprintf("listing DaemonSets in %s is forbidden: ztunnel and istio-cni could not be looked for", ns)
			return out, nil
		}
		if err != nil {
			return out, apiError("list", "daemonsets", ns, err)
		}
		for i := range list.Items {
			ds := &list.Items[i]
			st := &DaemonSetState{Namespace: ds.Namespace, Name: ds.Name, Desired: ds.Status.DesiredNumberScheduled, Ready: ds.Status.NumberReady}
			if cs := ds.Spec.Template.Spec.Containers; len(cs) > 0 {
				st.Image = cs[0].Image
			}
			var sel map[string]string
			if ds.Spec.Selector != nil {
				sel = ds.Spec.Selector.MatchLabels
			}
			switch {
			case out.Ztunnel == nil && (ds.Name == ztunnelName || sel["app"] == ztunnelName):
				out.Ztunnel = st
			case out.CNI == nil && (ds.Name == cniName || sel["k8s-app"] == cniName || sel["app"] == cniName):
				out.CNI = st
			}
		}
	}
	return out, nil
}

// l7Attributes lists the attributes of an AuthorizationPolicy's rules that
// only an L7 proxy (a sidecar or a waypoint) can judge: ztunnel enforces
// principals, namespaces, IP blocks and ports only
// (https://istio.io/latest/docs/ambient/usage/l4-policy/), and a rule it
// cannot judge makes the policy fail closed.
func l7Attributes(s *securityv1beta1.AuthorizationPolicy) []string {
	seen := map[string]bool{}
	for _, rule := range s.GetRules() {
		for _, f := range rule.GetFrom() {
			if src := f.GetSource(); src != nil {
				if len(src.GetRequestPrincipals()) > 0 || len(src.GetNotRequestPrincipals()) > 0 {
					seen["requestPrincipals"] = true
				}
			}
		}
		for _, t := range rule.GetTo() {
			if op := t.GetOperation(); op != nil {
				if len(op.GetMethods()) > 0 || len(op.GetNotMethods()) > 0 {
					seen["methods"] = true
				}
				if len(op.GetPaths()) > 0 || len(op.GetNotPaths()) > 0 {
					seen["paths"] = true
				}
				if len(op.GetHosts()) > 0 || len(op.GetNotHosts()) > 0 {
					seen["hosts"] = true
				}
			}
		}
		for _, c := range rule.GetWhen() {
			if k := c.GetKey(); strings.HasPrefix(k, "request.") || strings.HasPrefix(k, "experimental.") {
				seen["when "+k] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
