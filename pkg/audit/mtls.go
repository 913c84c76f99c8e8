package audit

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// clusterDomain is the Kubernetes DNS domain Istio assumes for short hosts
// (src pkg/config/host ResolveShortnameToFQDN uses the mesh's domain suffix,
// cluster.local unless changed at install).
const clusterDomain = "cluster.local"

// peerPolicies holds one namespace's PeerAuthentications split by scope,
// each list oldest first, the order in which Istio picks a winner.
type peerPolicies struct {
	namespaceWide []cluster.PeerAuthentication
	workload      []cluster.PeerAuthentication
}

func name(namespace, n string) string { return namespace + "/" + n }

// oldestFirst sorts policies the way Istio resolves conflicts: the oldest by
// creationTimestamp wins, ties broken by name.
func oldestFirst(pas []cluster.PeerAuthentication) {
	sort.SliceStable(pas, func(i, j int) bool {
		if !pas[i].CreatedAt.Equal(pas[j].CreatedAt) {
			return pas[i].CreatedAt.Before(pas[j].CreatedAt)
		}
		return pas[i].Name < pas[j].Name
	})
}

func splitPeerPolicies(pas []cluster.PeerAuthentication) map[string]*peerPolicies {
	out := map[string]*peerPolicies{}
	for _, pa := range pas {
		pp := out[pa.Namespace]
		if pp == nil {
			pp = &peerPolicies{}
			out[pa.Namespace] = pp
		}
		if len(pa.Selector) == 0 {
			pp.namespaceWide = append(pp.namespaceWide, pa)
		} else {
			pp.workload = append(pp.workload, pa)
		}
	}
	for _, pp := range out {
		oldestFirst(pp.namespaceWide)
		oldestFirst(pp.workload)
	}
	return out
}

// meshMTLS is the mesh-wide mode: the oldest selector-less policy in the
// root namespace; UNSET or none means PERMISSIVE (docs/istio.md 2.1).
func meshMTLS(root string, byNS map[string]*peerPolicies) (MTLSSource, []string) {
	src := MTLSSource{Mode: cluster.ModePermissive, Source: "default"}
	pp := byNS[root]
	if pp == nil {
		return src, nil
	}
	var ignored []string
	if len(pp.namespaceWide) > 0 {
		pa := pp.namespaceWide[0]
		if pa.Mode != cluster.ModeUnset {
			src = MTLSSource{Mode: pa.Mode, Source: "mesh", Policy: name(pa.Namespace, pa.Name)}
		}
		for _, other := range pp.namespaceWide[1:] {
			ignored = append(ignored, fmt.Sprintf("%s: newer than mesh-wide policy %s", name(other.Namespace, other.Name), name(pa.Namespace, pa.Name)))
		}
	}
	for _, pa := range pp.workload {
		ignored = append(ignored, fmt.Sprintf("%s: a selector policy in the root namespace is ignored", name(pa.Namespace, pa.Name)))
	}
	return src, ignored
}

// namespaceMTLS composes the namespace's effective mode the way Istio's
// ComposePeerAuthentication does (src pilot/pkg/security/authn/policy_applier.go):
// narrowest scope wins, UNSET inherits from the parent, only the oldest
// namespace-wide policy counts, and port-level settings need a selector.
func namespaceMTLS(ns string, root string, mesh MTLSSource, pp *peerPolicies, pods []*cluster.Pod) MTLS {
	m := MTLS{Mode: mesh.Mode, Source: mesh.Source, Policy: mesh.Policy}
	if pp == nil {
		return m
	}
	if ns != root && len(pp.namespaceWide) > 0 {
		pa := pp.namespaceWide[0]
		m.NamespacePolicy = name(pa.Namespace, pa.Name)
		if pa.Mode != cluster.ModeUnset {
			m.Mode, m.Source, m.Policy = pa.Mode, "namespace", m.NamespacePolicy
		}
		if len(pa.PortModes) > 0 {
			m.Ignored = append(m.Ignored, fmt.Sprintf("%s: portLevelMtls without a selector is ignored", m.NamespacePolicy))
		}
		for _, other := range pp.namespaceWide[1:] {
			m.Ignored = append(m.Ignored, fmt.Sprintf("%s: newer than namespace-wide policy %s", name(other.Namespace, other.Name), m.NamespacePolicy))
		}
	}
	if ns == root {
		return m
	}
	// Each pod takes the oldest workload policy that selects it.
	counts := make([]int, len(pp.workload))
	sels := make([]labels.Selector, len(pp.workload))
	for i, pa := range pp.workload {
		sels[i] = labels.SelectorFromSet(pa.Selector)
	}
	for _, p := range pods {
		for i := range pp.workload {
			if sels[i].Matches(labels.Set(p.Labels)) {
				counts[i]++
				break
			}
		}
	}
	for i, pa := range pp.workload {
		w := WorkloadMTLS{Policy: name(pa.Namespace, pa.Name), Selector: pa.Selector, Mode: pa.Mode, Pods: counts[i]}
		if w.Mode == cluster.ModeUnset {
			w.Mode = m.Mode
		}
		for port, mode := range pa.PortModes {
			if w.Ports == nil {
				w.Ports = map[uint32]string{}
			}
			if mode == cluster.ModeUnset {
				mode = w.Mode
			}
			w.Ports[port] = mode
		}
		m.Workloads = append(m.Workloads, w)
	}
	return m
}

// drTargets tells whether a DestinationRule's host names hosts of namespace
// ns. Short names resolve in the rule's own namespace; "*" and "*.suffix"
// wildcards match any service whose FQDN ends in the suffix.
func drTargets(dr cluster.DestinationRule, ns string) bool {
	host := dr.Host
	if host == "" {
		return false
	}
	if host != "*" && !strings.Contains(host, ".") {
		host = host + "." + dr.Namespace + ".svc." + clusterDomain
	}
	nsSuffix := "." + ns + ".svc." + clusterDomain
	switch {
	case host == "*":
		return true
	case strings.HasPrefix(host, "*."):
		// Any service of ns, "x.ns.svc.cluster.local", ends in the suffix.
		return strings.HasSuffix("x"+nsSuffix, host[1:])
	default:
		return strings.HasSuffix(host, nsSuffix) && !strings.Contains(strings.TrimSuffix(host, nsSuffix), ".")
	}
}

// nonIstioDRs lists the TLS settings of rules targeting ns that make
// clients send something other than Istio mTLS: DISABLE (plaintext), SIMPLE
// and MUTUAL (TLS with other certificates), all of which a STRICT sidecar
// rejects (docs/istio.md 2.3). istioMutual says whether some rule targeting ns
// sets ISTIO_MUTUAL, which matters when auto mTLS is off.
func nonIstioDRs(drs []cluster.DestinationRule, ns string) (out []DestinationRuleTLS, istioMutual bool) {
	for _, dr := range drs {
		if !drTargets(dr, ns) {
			continue
		}
		for _, t := range dr.TLS {
			switch t.Mode {
			case "DISABLE", "SIMPLE", "MUTUAL":
				out = append(out, DestinationRuleTLS{Policy: name(dr.Namespace, dr.Name), Host: dr.Host, Where: t.Where, Mode: t.Mode})
			case "ISTIO_MUTUAL":
				istioMutual = true
			}
		}
	}
	return out, istioMutual
}

// mtlsExceptions lists the workload and port policies weaker than STRICT.
func mtlsExceptions(m MTLS) []string {
	var out []string
	for _, w := range m.Workloads {
		if w.Pods == 0 {
			continue
		}
		if w.Mode != cluster.ModeStrict {
			out = append(out, fmt.Sprintf("workload policy %s sets %s for %s", w.Policy, w.Mode, plural(w.Pods, "pod", "pods")))
		}
		for port, mode := range w.Ports {
			if mode != cluster.ModeStrict {
				out = append(out, fmt.Sprintf("workload policy %s sets %s on port %d for %s", w.Policy, mode, port, plural(w.Pods, "pod", "pods")))
			}
		}
	}
	sort.Strings(out)
	return out
}

// authzOf summarizes the namespace's AuthorizationPolicies (docs/istio.md 4):
// ALLOW with no rules is allow-nothing, DENY with an empty rule is deny-all.
func authzOf(aps []cluster.AuthorizationPolicy) (Authz, int) {
	var a Authz
	allows := 0
	for _, ap := range aps {
		a.Policies++
		if ap.DryRun {
			a.DryRun++
		}
		switch {
		case ap.Action == "ALLOW" && ap.Namespaced && ap.Rules == 0:
			if ap.DryRun {
				a.AllowNothingDryRun = true
			} else {
				a.AllowNothing = true
			}
		case ap.Action == "ALLOW" && !ap.DryRun:
			allows++
		case ap.Action == "DENY" && ap.Namespaced && ap.EmptyRule && !ap.DryRun:
			a.DenyAll = true
		}
	}
	return a, allows
}
