package plan

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// A namespace whose AuthorizationPolicies use L7 attributes needs a
// waypoint in ambient: ztunnel judges only L4 and fails closed on the rest
// (docs/ambient.md). The plan follows Istio's migration guide
// (istio.io/latest/docs/ambient/migrate): the waypoint phase, before enroll,
// deploys the waypoint and a copy of each such policy bound to it by
// targetRefs, which sidecars ignore and the waypoint only judges once the
// namespace is ambient; enroll then deletes the selector-bound originals
// before labelling the namespace, so ztunnel never enforces them.

// Waypoint names and labels (istioctl waypoint generate).
const (
	WaypointName     = "waypoint"
	WaypointClass    = "istio-waypoint"
	LabelUseWaypoint = "istio.io/use-waypoint"
	labelWaypointFor = "istio.io/waypoint-for"
	// WaypointSuffix names the copy of a policy on the waypoint.
	WaypointSuffix = "-waypoint"
	// maxTargetRefs is the AuthorizationPolicy CRD's limit.
	maxTargetRefs = 16
)

// waypointMove is how one namespace's L7 policies move to its waypoint.
type waypointMove struct {
	// steps are the waypoint phase's: the Gateway, then the copies.
	steps []Step
	// deletes are the enroll phase's first steps: the originals.
	deletes []Step
	// blocked says why the policies cannot move ("" when they can).
	blocked string
}

// waypointFor plans ns's move to a waypoint, or nil when no policy there
// needs one. It is computed once per namespace.
func (b *builder) waypointFor(ns string) *waypointMove {
	if m, ok := b.waypoints[ns]; ok {
		return m
	}
	m := b.planWaypoint(ns)
	if b.waypoints == nil {
		b.waypoints = map[string]*waypointMove{}
	}
	b.waypoints[ns] = m
	return m
}

func (b *builder) planWaypoint(ns string) *waypointMove {
	snap := b.in.Snapshot
	l7 := snap.L7Unbound(ns)
	if len(l7) == 0 {
		return nil
	}
	m := &waypointMove{}
	var why []string
	if snap.Ambient.GatewayAPI == "" {
		why = append(why, "the Gateway API is not installed (no gateway.networking.k8s.io/v1 gateways), and a waypoint is a Gateway: install its standard CRDs and re-plan")
	}
	moving := map[string]bool{}
	for _, ap := range l7 {
		moving[ap.Name] = true
	}
	// Through a waypoint, the destination's ztunnel sees the waypoint's
	// identity, not the caller's (istio.io ambient/usage/l4-policy): an
	// ALLOW policy left at ztunnel would deny every caller it names.
	for _, ap := range snap.AuthorizationPolicies {
		local := ap.Namespace == ns && !moving[ap.Name]
		mesh := ap.Namespace == snap.Mesh.RootNamespace && ap.Namespace != ns
		if !(local || mesh) || len(ap.TargetRefs) > 0 || ap.DryRun || (ap.Action != "ALLOW" && ap.Action != "") {
			continue
		}
		why = append(why, fmt.Sprintf("AuthorizationPolicy %s/%s allows at ztunnel, and through the waypoint ztunnel sees the waypoint's identity (%s/ns/%s/sa/%s) instead of the callers': it would deny them; move it to the waypoint too, or add that principal to it, and re-plan",
			ap.Namespace, ap.Name, b.in.Report.Mesh.TrustDomain, ns, WaypointName))
	}
	gateway := Step{Action: ActionApply, Target: "Gateway/" + WaypointName, Status: StatusPending,
		Reason: fmt.Sprintf("the namespace's waypoint (class %s, for Service traffic): the L7 proxy that enforces %s", WaypointClass, plural(len(l7), "policy", "policies"))}
	if slices.Contains(snap.Ambient.Gateways, ns+"/"+WaypointName) {
		gateway.Status, gateway.Reason = StatusDone, "Gateway "+WaypointName+" exists: the gate checks that it is of class "+WaypointClass+" and Programmed"
	} else if snap.Ambient.GatewayAPI != "" {
		gateway.Object = b.waypointGateway(ns)
	}
	m.steps = append(m.steps, gateway)
	for _, ap := range l7 {
		cp, del, err := b.movePolicy(ns, ap)
		if err != "" {
			why = append(why, err)
			continue
		}
		m.steps = append(m.steps, cp)
		m.deletes = append(m.deletes, del)
	}
	if len(why) > 0 {
		m.blocked = strings.Join(why, "; ")
	}
	return m
}

// waypointGateway is the Gateway istioctl waypoint generate writes, for
// Service traffic (which a policy's Service targetRefs need).
func (b *builder) waypointGateway(ns string) map[string]any {
	return map[string]any{
		"apiVersion": cluster.GatewayGroup + "/" + b.in.Snapshot.Ambient.GatewayAPI,
		"kind":       "Gateway",
		"metadata": map[string]any{"name": WaypointName, "namespace": ns,
			"labels": map[string]any{LabelManagedBy: ManagedBy, labelWaypointFor: "service"}},
		"spec": map[string]any{
			"gatewayClassName": WaypointClass,
			"listeners":        []any{map[string]any{"name": "mesh", "port": int64(15008), "protocol": "HBONE"}},
		},
	}
}

// movePolicy plans the copy of ap bound to the waypoint and the deletion of
// ap, or says why it cannot move.
func (b *builder) movePolicy(ns string, ap cluster.AuthorizationPolicy) (Step, Step, string) {
	name := ns + "/" + ap.Name
	if owners := ap.Ownership.Owners(); len(owners) > 0 {
		return Step{}, Step{}, cluster.TakeoverRefusal("AuthorizationPolicy "+name, owners) + ": moving it deletes it, and its owner would put it back; move it to the waypoint in its source"
	}
	if ap.Spec == nil {
		return Step{}, Step{}, "AuthorizationPolicy " + name + ": its spec could not be read to copy it"
	}
	copyName := ap.Name + WaypointSuffix
	if errs := validation.IsDNS1123Subdomain(copyName); len(errs) > 0 {
		return Step{}, Step{}, fmt.Sprintf("AuthorizationPolicy %s: its copy's name %s is not a valid name (%s)", name, copyName, strings.Join(errs, "; "))
	}
	for _, other := range b.in.Snapshot.AuthorizationPolicies {
		if other.Namespace == ns && other.Name == copyName {
			return Step{}, Step{}, fmt.Sprintf("AuthorizationPolicy %s: its copy on the waypoint would be %s, which exists already", name, copyName)
		}
	}
	refs, what, err := b.waypointTargets(ns, ap)
	if err != "" {
		return Step{}, Step{}, "AuthorizationPolicy " + name + ": " + err
	}
	spec := maps.Clone(ap.Spec)
	delete(spec, "selector")
	spec["targetRefs"] = refs
	cp := Step{Action: ActionApply, Target: "AuthorizationPolicy/" + copyName, Status: StatusPending,
		Reason: fmt.Sprintf("%s on the waypoint (%s), targeting %s: sidecars ignore a policy with targetRefs, and the waypoint judges it once the namespace is enrolled",
			ap.Name, strings.Join(ap.L7, ", "), what),
		Object: b.authorizationPolicy(ns, copyName, spec)}
	orig := b.authorizationPolicy(ns, ap.Name, ap.Spec)
	delete(orig["metadata"].(map[string]any), "labels")
	del := Step{Action: ActionDelete, Target: "AuthorizationPolicy/" + ap.Name, Status: StatusPending, Object: orig,
		Reason: fmt.Sprintf("moved to the waypoint as %s; deleted before the namespace is enrolled, since ztunnel would enforce it and deny what it allows", copyName)}
	if b.unmeshedIn(ns) {
		del.Reason += "; until the restarts below have replaced the pods that carry sidecars, its L7 rules are enforced by neither (Istio's documented gap: a short window, as wide as the restarts)"
	}
	return cp, del, ""
}

// unmeshedIn is true when some pod of ns carries a sidecar today: its
// policies are enforced now, by the sidecars.
func (b *builder) unmeshedIn(ns string) bool {
	for _, p := range b.pods[ns] {
		if p.Annotations["sidecar.istio.io/status"] != "" {
			return true
		}
	}
	return false
}

// waypointTargets are the targetRefs that give a policy on the waypoint
// the reach its selector gave it: the waypoint for a namespace-wide
// policy; for a selector, the Services of exactly the pods it selects (a
// Service that also selects other pods would extend it to them).
func (b *builder) waypointTargets(ns string, ap cluster.AuthorizationPolicy) ([]any, string, string) {
	if len(ap.Selector) == 0 {
		return []any{map[string]any{"group": cluster.GatewayGroup, "kind": "Gateway", "name": WaypointName}}, "the waypoint (namespace-wide)", ""
	}
	selected := map[string]bool{}
	for _, p := range b.pods[ns] {
		if labels.SelectorFromSet(ap.Selector).Matches(labels.Set(p.Labels)) {
			selected[p.Name] = true
		}
	}
	var names, uncovered []string
	covered := map[string]bool{}
	for _, svc := range b.in.Snapshot.Ambient.Services {
		if svc.Namespace != ns || len(svc.Selector) == 0 {
			continue
		}
		var in, out []string
		for _, p := range b.pods[ns] {
			if labels.SelectorFromSet(svc.Selector).Matches(labels.Set(p.Labels)) {
				if selected[p.Name] {
					in = append(in, p.Name)
				} else {
					out = append(out, p.Name)
				}
			}
		}
		if len(in) == 0 {
			continue
		}
		if len(out) > 0 {
			return nil, "", fmt.Sprintf("Service %s also selects pods the policy's selector does not (%s): on the waypoint the policy would apply to them too; give them a Service of their own, or move the policy yourself", svc.Name, strings.Join(out, ", "))
		}
		names = append(names, svc.Name)
		for _, p := range in {
			covered[p] = true
		}
	}
	for _, p := range slices.Sorted(maps.Keys(selected)) {
		if !covered[p] {
			uncovered = append(uncovered, p)
		}
	}
	switch {
	case len(selected) == 0:
		return nil, "", "its selector " + labelString(ap.Selector) + " selects no running pod, so no Service can stand for it on the waypoint; delete it if it is stale, or re-plan once its pods run"
	case len(names) == 0:
		return nil, "", "no Service selects its pods, and a waypoint for Service traffic judges only traffic addressed to a Service; add one, or move the policy yourself"
	case len(names) > maxTargetRefs:
		return nil, "", fmt.Sprintf("%d Services select its pods, more than the %d targetRefs a policy may have", len(names), maxTargetRefs)
	}
	slices.Sort(names)
	refs := make([]any, len(names))
	for i, n := range names {
		refs[i] = map[string]any{"group": "", "kind": "Service", "name": n}
	}
	what := "Service " + strings.Join(names, ", ")
	if len(uncovered) > 0 {
		what += fmt.Sprintf(" (pods no Service selects, %s, are reached only by pod address, which the waypoint does not judge)", strings.Join(uncovered, ", "))
	}
	return refs, what, ""
}
