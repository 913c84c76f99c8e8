package audit

import (
	"fmt"
	"sort"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// Ambient data plane checks (docs/istio.md 1.6, docs/findings.md): for a
// namespace labelled istio.io/dataplane-mode=ambient, whether the node
// agents run, which pods ztunnel captured, which keep a sidecar or opted
// out, and which AuthorizationPolicies ztunnel cannot enforce.

// ambientNodeAgents is the report-level finding when ambient namespaces are
// audited and ztunnel or istio-cni is missing or not ready: their pods are
// not captured (or not served), so their traffic is not in the mesh.
func ambientNodeAgents(s *cluster.Snapshot, ambientNamespaces []string) []Finding {
	if len(ambientNamespaces) == 0 {
		return nil
	}
	a := s.Ambient
	if a.Unreadable != "" {
		return []Finding{{Code: CodeAmbientNodeAgentsMissing, Severity: SeverityWarning, Object: "cluster",
			Message: a.Unreadable + ": cannot tell whether ambient namespaces " + strings.Join(ambientNamespaces, ", ") + " are served; grant list on daemonsets there"}}
	}
	where := strings.Join(cluster.AmbientNamespaces(s.IstiodNamespace), " or ")
	var missing []string
	for _, c := range []struct {
		what string
		ds   *cluster.DaemonSetState
	}{{"ztunnel (carries their traffic)", a.Ztunnel}, {"istio-cni (captures their pods)", a.CNI}} {
		switch {
		case c.ds == nil:
			missing = append(missing, c.what+": no DaemonSet in "+where)
		case !c.ds.Serving():
			missing = append(missing, c.what+": "+c.ds.String())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return []Finding{{Code: CodeAmbientNodeAgentsMissing, Severity: SeverityError, Object: "cluster",
		Message: fmt.Sprintf("namespaces %s use the ambient data plane, but %s: install Istio's ambient profile (istioctl install --set profile=ambient) or wait for its DaemonSets to be ready",
			strings.Join(ambientNamespaces, ", "), strings.Join(missing, "; "))}}
}

// ambientFindings are the checks of one ambient namespace.
func ambientFindings(s *cluster.Snapshot, ns cluster.Namespace, nr NamespaceReport, pods []*cluster.Pod, aps []cluster.AuthorizationPolicy) []Finding {
	var f []Finding
	byWorkload := func(filter func(p *cluster.Pod, pr Pod) bool) ([]string, map[string][]string) {
		var order []string
		group := map[string][]string{}
		for i, p := range pods {
			pr := nr.Pods.Items[i]
			if !filter(p, pr) {
				continue
			}
			if _, ok := group[pr.Workload]; !ok {
				order = append(order, pr.Workload)
			}
			group[pr.Workload] = append(group[pr.Workload], p.Name)
		}
		sort.Strings(order)
		return order, group
	}
	optedOut := func(p *cluster.Pod) bool { return p.Labels[labelDataplaneMode] == "none" }
	ws, g := byWorkload(func(p *cluster.Pod, _ Pod) bool { return optedOut(p) })
	for _, w := range ws {
		f = append(f, Finding{Code: CodeAmbientWorkloadOptedOut, Severity: SeverityInfo, Object: w,
			Message: fmt.Sprintf("%s opted out of ambient (istio.io/dataplane-mode=none): not captured, plaintext to the mesh; under STRICT their calls to captured pods fail",
				plural(len(g[w]), "pod", "pods"))})
	}
	ws, g = byWorkload(func(p *cluster.Pod, pr Pod) bool { return pr.Sidecar != "" && pr.Sidecar != "ambient" })
	onDelete := onDeleteIn(s, ns.Name)
	for _, w := range ws {
		f = append(f, Finding{Code: CodeAmbientPodHasSidecar, Severity: SeverityWarning, Object: w,
			Message: fmt.Sprintf("%s still carry a sidecar in an ambient namespace: ambient never captures a pod with a sidecar; remove istio-injection/istio.io/rev from the namespace (and the pods' sidecar.istio.io/inject), then %s",
				plural(len(g[w]), "pod", "pods"), restartHint(workloadGroup{workload: w, pods: g[w]}, ns.Name, onDelete))})
	}
	ws, g = byWorkload(func(p *cluster.Pod, pr Pod) bool {
		return pr.Sidecar == "" && !p.HostNetwork && !optedOut(p)
	})
	for _, w := range ws {
		f = append(f, Finding{Code: CodeAmbientPodNotCaptured, Severity: SeverityWarning, Object: w,
			Message: fmt.Sprintf("%s not captured by ztunnel (no ambient.istio.io/redirection=enabled): their traffic bypasses the mesh; check istio-cni on their nodes (kubectl get pods -n %s %s)",
				plural(len(g[w]), "pod is", "pods are"), ns.Name, strings.Join(g[w], " "))})
	}
	for _, ap := range aps {
		if len(ap.L7) == 0 || len(ap.TargetRefs) > 0 {
			continue
		}
		effect := "an ALLOW rule ztunnel cannot judge matches nothing, so the traffic it should allow is denied"
		switch ap.Action {
		case "DENY":
			effect = "ztunnel denies the traffic the rule selects on L4 alone, wider than written"
		case "AUDIT", "CUSTOM":
			effect = "ztunnel cannot apply it"
		}
		dry := ""
		if ap.DryRun {
			dry = " (dry-run now: the outage starts when it is enforced)"
		}
		f = append(f, Finding{Code: CodeAmbientL7PolicyOnZtunnel, Severity: SeverityError, Object: "AuthorizationPolicy/" + ap.Name,
			Message: fmt.Sprintf("%s policy with L7 attributes (%s) bound by selector or namespace, so ztunnel enforces it: %s%s; deploy a waypoint (istioctl waypoint apply -n %s --enroll-namespace) and move the policy to targetRefs of the waypoint",
				ap.Action, strings.Join(ap.L7, ", "), effect, dry, ns.Name)})
	}
	return f
}
