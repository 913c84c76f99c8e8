package plan

import (
	"fmt"
	"slices"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// A namespace moving to the ambient data plane (--dataplane ambient,
// docs/ambient.md) is enrolled instead of injected: labelled
// istio.io/dataplane-mode=ambient with its injection labels removed in the
// same step, its pods that carry sidecars restarted so the sidecars go
// away (istio-cni captures running pods without one), then gated on every
// pod being captured. Its waypoint phase comes next; PERMISSIVE, verify,
// STRICT and authz follow as for sidecars.

// ambientLabels is the enroll phase's relabelling: dataplane-mode=ambient,
// and neither injection label (a pod never both injected and captured).
func (b *builder) ambientLabels(nr *audit.NamespaceReport) labelPlan {
	cur := b.nsLabels[nr.Name]
	after := map[string]string{}
	for k, v := range cur {
		after[k] = v
	}
	lp := labelPlan{after: after, status: StatusPending}
	if cur[cluster.LabelDataplaneMode] != cluster.DataplaneModeAmbient {
		lp.set = map[string]string{cluster.LabelDataplaneMode: cluster.DataplaneModeAmbient}
		after[cluster.LabelDataplaneMode] = cluster.DataplaneModeAmbient
	}
	if m := b.waypointFor(nr.Name); m != nil && m.blocked == "" && cur[LabelUseWaypoint] != WaypointName {
		// In the enroll write: the waypoint is used once the namespace is
		// ambient, never by pods that still carry sidecars.
		if lp.set == nil {
			lp.set = map[string]string{}
		}
		lp.set[LabelUseWaypoint] = WaypointName
		after[LabelUseWaypoint] = WaypointName
	}
	for _, k := range []string{labelInjection, labelRev} {
		if _, ok := after[k]; ok {
			delete(after, k)
			lp.remove = append(lp.remove, k)
		}
	}
	if lp.set == nil && lp.remove == nil {
		lp.status = StatusDone
	}
	if why := b.ambientRefusal(nr); why != "" {
		lp.status, lp.reason = StatusBlocked, why
	}
	return lp
}

// ambientRefusal says why the namespace must not be enrolled now: the
// node agents are missing, or a policy ztunnel would turn into denials.
func (b *builder) ambientRefusal(nr *audit.NamespaceReport) string {
	a := b.in.Snapshot.Ambient
	var missing []string
	if a.Unreadable != "" {
		return a.Unreadable + ": the ambient data plane cannot be confirmed; grant list on daemonsets in istiod's namespace and kube-system, and re-plan"
	}
	for _, c := range []struct {
		name string
		ds   *cluster.DaemonSetState
	}{{"ztunnel", a.Ztunnel}, {"istio-cni", a.CNI}} {
		switch {
		case c.ds == nil:
			missing = append(missing, c.name+" is not installed")
		case !c.ds.Serving():
			missing = append(missing, c.name+" is not ready: "+c.ds.String())
		}
	}
	if len(missing) > 0 {
		return strings.Join(missing, "; ") + ": enrolled pods would not be captured; install Istio's ambient profile (istioctl install --set profile=ambient) and re-plan"
	}
	if major, minor, ok := a.Ztunnel.IstioVersion("ztunnel"); ok && (major < 1 || major == 1 && minor < 24) {
		return fmt.Sprintf("ztunnel is Istio %d.%d (%s), older than ambient's general availability in 1.24: upgrade Istio first", major, minor, a.Ztunnel.Image)
	}
	if l7 := b.l7Policies(nr.Name); len(l7) > 0 && (b.waypointFor(nr.Name) == nil || b.waypointFor(nr.Name).blocked != "") {
		return "AuthorizationPolicy " + strings.Join(l7, ", ") + " uses L7 attributes and is bound by selector or namespace: once enrolled, ztunnel enforces it and denies what it should allow (AmbientL7PolicyOnZtunnel); see the waypoint phase"
	}
	for _, p := range b.pods[nr.Name] {
		if asksForSidecar(p) && !b.excluded[nr.Name+"/"+p.Owner.Name] {
			return fmt.Sprintf("%s asks for a sidecar itself (sidecar.istio.io/inject=true on pod %s): it would keep one after the move, and ambient never captures it; remove that label, or keep the workload on sidecars with --exclude-workload %s/%s",
				p.Owner, p.Name, nr.Name, p.Owner.Name)
		}
	}
	return ""
}

// asksForSidecar is a pod the object-selector injector webhooks inject
// whatever its namespace's labels say.
func asksForSidecar(p *cluster.Pod) bool {
	return strings.EqualFold(p.Labels["sidecar.istio.io/inject"], "true") || p.Labels[labelRev] != ""
}

// l7Policies names the namespace's AuthorizationPolicies that only an L7
// proxy can enforce and that are not bound to a waypoint, with their L7
// attributes.
func (b *builder) l7Policies(ns string) []string {
	var out []string
	for _, ap := range b.in.Snapshot.L7Unbound(ns) {
		out = append(out, fmt.Sprintf("%s (%s)", ap.Name, strings.Join(ap.L7, ", ")))
	}
	return out
}

// ambientPods are the namespace's pods as they will be once enrolled: a pod
// that carries a sidecar needs a restart (which removes it), any other is
// captured where it runs, but hostNetwork pods and those opted out.
func ambientPods(pods []*cluster.Pod, excluded func(workload string) bool) audit.Pods {
	out := audit.Pods{Items: make([]audit.Pod, 0, len(pods))}
	for _, p := range pods {
		pr := audit.Pod{Name: p.Name, Workload: p.Owner.String()}
		hasSidecar := p.Annotations["sidecar.istio.io/status"] != ""
		switch {
		case p.HostNetwork:
			pr.State, pr.Reason = audit.PodNotInjectable, "hostNetwork pod: ambient never captures it"
		case p.Labels[cluster.LabelDataplaneMode] == "none":
			pr.State, pr.Reason = audit.PodNotInjectable, "opted out by istio.io/dataplane-mode=none"
		case excluded(p.Owner.Name):
			pr.State, pr.Reason = audit.PodNotInjectable, "kept on sidecars by --exclude-workload"
		case hasSidecar:
			pr.State, pr.Reason = audit.PodNeedsRestart, "carries a sidecar, which ambient never captures: a restart removes it"
		default:
			pr.State, pr.Sidecar = audit.PodMeshed, "ambient"
		}
		out.Total++
		if pr.State == audit.PodMeshed {
			out.Meshed++
		}
		out.Items = append(out.Items, pr)
	}
	out.NotMeshed = out.Total - out.Meshed
	return out
}

// enrollPhases plans a namespace's enroll and waypoint phases.
func (b *builder) enrollPhases(nr *audit.NamespaceReport, lp labelPlan) (Phase, Phase, []string) {
	waypoint := Phase{Name: PhaseWaypoint, Status: StatusSkipped,
		Reason: "no AuthorizationPolicy here uses L7 attributes: ztunnel enforces the L4 rules, no waypoint is needed"}
	move := b.waypointFor(nr.Name)
	switch {
	case move == nil:
	case move.blocked != "":
		waypoint.Status = StatusBlocked
		waypoint.Reason = fmt.Sprintf("AuthorizationPolicy %s needs a waypoint (L7), and cannot move to one: %s", strings.Join(b.l7Policies(nr.Name), ", "), move.blocked)
	default:
		waypoint.Steps = move.steps
		waypoint.Gate = &Gate{Name: GateWaypointProgrammed, Description: "Gateway " + WaypointName + " is of class " + WaypointClass + " and Programmed (istiod deployed it)"}
		waypoint.Status, waypoint.Reason = rollup(waypoint.Steps)
	}
	enroll, stayOut := b.meshPhase(nr, lp, meshWords{phase: PhaseEnroll,
		done:       "already enrolled in ambient (istio.io/dataplane-mode=ambient)",
		restart:    "carry a sidecar, which ambient never captures; the restart removes it",
		nextRun:    "its next run is captured without a sidecar",
		gate:       &Gate{Name: GateAmbientCaptured, Description: "every pod is captured by ztunnel (ambient.istio.io/redirection=enabled) and none carries a sidecar, but those that stay out"},
		unexcluded: "keeps its sidecars (not captured)"})
	if move != nil && move.blocked == "" && enroll.Status != StatusBlocked {
		// The originals go first: once the namespace is labelled, the CNI
		// captures its pods and ztunnel would enforce them.
		enroll.Steps = append(slices.Clone(move.deletes), enroll.Steps...)
		enroll.Status, enroll.Reason = rollup(enroll.Steps)
	}
	return enroll, waypoint, stayOut
}

// ambientNamespaces are the planned namespaces that move to ambient.
func (b *builder) ambientNamespaces() map[string]bool {
	out := map[string]bool{}
	if b.opts.Dataplane == DataplaneAmbient {
		for ns := range b.planned {
			out[ns] = true
		}
	}
	return out
}

// ztunnel gives no dry-run decisions to gate on: it ignores dry-run
// policies (istio/istio#55414), or with istiod's
// AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY only logs their matches
// (istio/ztunnel#1659, 1.29), and a ztunnel older than 1.29 enforces a
// dry-run policy it is sent (istio/istio#58657). So an ambient namespace's
// authz phase applies nothing in dry-run: its gate, callers-allowed, judges
// the planned ALLOW policies against every caller ztunnel saw since STRICT,
// as the policies would (docs/ambient.md), and enforce then applies them,
// watched by the guard on ztunnel's denial counter.

// minAuthzZtunnel is the first ztunnel that counts the connections it
// denies by policy (istio_tcp_connections_failed_total with
// response_flags="DENY", istio/ztunnel#1695): the guard's denial signal.
var minAuthzZtunnel = [2]int{1, 29}

// ambientAuthzRefusal says why an ambient namespace's authorization cannot
// be planned, or "".
func (b *builder) ambientAuthzRefusal(ns string) string {
	if m := b.waypointFor(ns); m != nil {
		return "ambient with a waypoint: ztunnel sees the waypoint's identity for the calls through it, so ALLOW policies by the callers' principals would deny them; this version plans authorization only for ambient namespaces without a waypoint; re-plan with --authz off"
	}
	if z := b.in.Snapshot.Ambient.Ztunnel; z != nil {
		major, minor, ok := z.IstioVersion("ztunnel")
		if !ok || major < minAuthzZtunnel[0] || major == minAuthzZtunnel[0] && minor < minAuthzZtunnel[1] {
			version := "an unknown version (image " + z.Image + ")"
			if ok {
				version = fmt.Sprintf("Istio %d.%d", major, minor)
			}
			return fmt.Sprintf("ambient: ztunnel is %s, and the guard needs ztunnel 1.%d or newer, which counts the connections it denies (istio_tcp_connections_failed_total, response_flags DENY): without it an enforced policy that denies a caller would go unseen; upgrade Istio, or re-plan with --authz off", version, minAuthzZtunnel[1])
		}
	}
	for key := range b.exceptions {
		if strings.HasPrefix(key, ns+"/") {
			return "ambient: --port-exception lets plaintext callers in by port, and this version does not plan that for ztunnel; re-plan without it, or with --authz off"
		}
	}
	return ""
}

// ambientAuthzSteps are an ambient namespace's authz steps: the
// callers-allowed gate, then (--authz enforce) the ALLOW policies and the
// allow-nothing policy, enforced; none is ever applied in dry-run.
func (b *builder) ambientAuthzSteps(allows []Step, nothing Step, unacked []string) []Step {
	gate := Step{Action: ActionGate, Target: string(GateCallersAllowed), Status: StatusPending,
		Reason: "every caller ztunnel saw arriving over mTLS since STRICT is allowed, by its principal and port, by the planned ALLOW policy of the workload it called (ztunnel has no dry-run decisions to read)"}
	if nothing.Status == StatusBlocked {
		gate.Status, gate.Reason = StatusBlocked, nothing.Reason
	}
	steps := []Step{gate}
	for _, st := range allows {
		steps = append(steps, withStepDryRun(st, false))
	}
	enforceNothing := withStepDryRun(nothing, false)
	if enforceNothing.Status != StatusBlocked && len(unacked) > 0 {
		enforceNothing.Status = StatusBlocked
		enforceNothing.Reason = fmt.Sprintf("%s no observed caller and would be denied everything: %s; acknowledge with --allow-no-callers NS/WORKLOAD (or NS/*) if that is intended",
			plural(len(unacked), "workload has", "workloads have"), strings.Join(unacked, ", "))
	}
	steps = append(steps, enforceNothing)
	if b.opts.Authz == AuthzEnforce {
		return steps
	}
	// --authz dry-run: the gate judges the policies, none is applied (the
	// objects stay in the plan for the gate and for review).
	for i := 1; i < len(steps); i++ {
		if steps[i].Status == StatusPending {
			steps[i].Status = StatusSkipped
			steps[i].Reason = "--authz dry-run, and ztunnel cannot run a policy in dry-run: the callers-allowed gate judges it; --authz enforce applies it (" + strings.TrimPrefix(steps[i].Reason, "enforce: ") + ")"
		}
	}
	return steps
}
