package phases

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// The gates are pure: they judge a fresh audit of the namespace (and, for
// authz, the shadow-denial counts), so they are tested without a cluster.

// SidecarsGate passes when every pod that should carry a sidecar carries
// the current one. Pods of stayOut workloads (opted out, excluded, not
// injectable: the plan reports them) are not waited for.
func SidecarsGate(nr *audit.NamespaceReport, stayOut map[string]bool, now time.Time) GateResult {
	g := GateResult{Name: "sidecars-current", At: now}
	for _, p := range nr.Pods.Items {
		switch p.State {
		case audit.PodNeedsRestart, audit.PodWrongRevision, audit.PodNotSelected:
			if !stayOut[p.Workload] {
				g.Culprits = append(g.Culprits, fmt.Sprintf("pod %s (%s): %s", p.Name, p.Workload, p.State))
			}
		}
	}
	sort.Strings(g.Culprits)
	if len(g.Culprits) > 0 {
		g.Result = GateFailed
		g.Message = fmt.Sprintf("%d pods lack a current sidecar", len(g.Culprits))
		return g
	}
	g.Result = GatePassed
	g.Message = fmt.Sprintf("%d of %d pods meshed; the others stay out as planned", nr.Pods.Meshed, nr.Pods.Total)
	return g
}

// AmbientGate passes when every pod of an enrolled namespace is captured
// by ztunnel and none carries a sidecar, but the workloads the plan leaves
// out (stayOut): a pod must never be both injected and enrolled.
func AmbientGate(nr *audit.NamespaceReport, stayOut map[string]bool, now time.Time) GateResult {
	g := GateResult{Name: plan.GateAmbientCaptured, At: now}
	captured := 0
	for _, p := range nr.Pods.Items {
		switch {
		case p.Sidecar == "ambient":
			captured++
		case stayOut[p.Workload]:
		case p.Sidecar != "":
			g.Culprits = append(g.Culprits, fmt.Sprintf("pod %s (%s): still carries a sidecar", p.Name, p.Workload))
		case p.State != audit.PodNotInjectable:
			g.Culprits = append(g.Culprits, fmt.Sprintf("pod %s (%s): not captured by ztunnel (no ambient.istio.io/redirection=enabled)", p.Name, p.Workload))
		}
	}
	sort.Strings(g.Culprits)
	if len(g.Culprits) > 0 {
		g.Result = GateFailed
		g.Message = fmt.Sprintf("%d pods are not captured or keep a sidecar", len(g.Culprits))
		return g
	}
	g.Result = GatePassed
	g.Message = fmt.Sprintf("%d of %d pods captured by ztunnel; the others stay out as planned", captured, nr.Pods.Total)
	return g
}

// WaypointGate passes when gw, the namespace's waypoint, is a Gateway of
// class istio-waypoint whose Programmed condition is True for its current
// generation: istiod has deployed it (istioctl waypoint apply --wait
// waits for the same condition). gw is nil when there is none.
func WaypointGate(gw *unstructured.Unstructured, now time.Time) GateResult {
	g := GateResult{Name: plan.GateWaypointProgrammed, At: now, Result: GateFailed}
	if gw == nil {
		g.Message = "Gateway " + plan.WaypointName + " does not exist"
		return g
	}
	class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
	if class != plan.WaypointClass {
		g.Message = fmt.Sprintf("Gateway %s is of class %q, not %s: it is not a waypoint", plan.WaypointName, class, plan.WaypointClass)
		return g
	}
	conds, _, _ := unstructured.NestedSlice(gw.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != "Programmed" {
			continue
		}
		observed, _, _ := unstructured.NestedInt64(m, "observedGeneration")
		switch {
		case m["status"] == "True" && (observed == 0 || observed >= gw.GetGeneration()):
			g.Result, g.Message = GatePassed, fmt.Sprintf("Gateway %s is Programmed (%v)", plan.WaypointName, m["reason"])
		case m["status"] == "True":
			g.Message = fmt.Sprintf("Gateway %s: Programmed is for generation %d, not its current %d: istiod has not caught up", plan.WaypointName, observed, gw.GetGeneration())
		default:
			g.Message = fmt.Sprintf("Gateway %s is not Programmed: %v: %v", plan.WaypointName, m["reason"], m["message"])
		}
		return g
	}
	g.Message = fmt.Sprintf("Gateway %s has no Programmed condition yet: istiod has not deployed it (is istiod running, with ambient enabled?)", plan.WaypointName)
	return g
}

// PinnedGate passes when the namespace's own PeerAuthentication decides
// its mode, and the mode is want.
func PinnedGate(nr *audit.NamespaceReport, want string, now time.Time) GateResult {
	g := GateResult{Name: "peer-authentication-in-force", At: now}
	m := nr.MTLS
	if m.Mode == want && m.Source == "namespace" {
		g.Result, g.Message = GatePassed, fmt.Sprintf("%s from PeerAuthentication %s", m.Mode, m.Policy)
		return g
	}
	g.Result = GateFailed
	g.Message = fmt.Sprintf("effective mode %s from %s, want %s from the namespace's policy", m.Mode, m.Source, want)
	if len(m.Ignored) > 0 {
		g.Culprits = append(g.Culprits, m.Ignored...)
	}
	return g
}

// Expect is what a plan tells the verify gate to see before it may pass,
// beyond "no plaintext": each caller it expects to clear arriving over
// mTLS, and each workload that served traffic at plan time serving traffic
// in the gate's window. The zero value expects nothing (verify without a
// plan).
type Expect struct {
	// Callers are "namespace/workload" (plan.Gate.Callers).
	Callers []string
	// Inbound are workload names of the namespace (plan.Gate.Inbound).
	Inbound []string
}

// VerifyGate is the verify gate (docs/apply.md), judged as the audit judges
// readiness for STRICT: real inbound traffic over the window, none of it
// plaintext, every pod meshed, no DestinationRule turning TLS off toward
// the namespace. No traffic at all is inconclusive, never a pass; so is a
// window where a caller the plan expects, or a workload that served
// traffic when the plan was made, has not been seen: one request to one
// busy workload says nothing about the others.
func VerifyGate(nr *audit.NamespaceReport, exp Expect, now time.Time) GateResult {
	g := GateResult{Name: "no-plaintext", At: now}
	rd := nr.Readiness
	switch rd.Next {
	case audit.PhaseStrict, audit.PhaseAuthz, audit.PhaseDone:
		if len(rd.Blockers) == 0 {
			if unseen := unseenExpected(nr, exp); len(unseen) > 0 {
				g.Result, g.Culprits = GateUnsettled, unseen
				g.Message = fmt.Sprintf("no plaintext, but %d of what the plan saw has not shown up in this window yet: a gate that passed on part of the traffic could hide the rest; re-run once they have served (or called) traffic, or re-plan if they are gone", len(unseen))
				if nr.Traffic.Window != "" {
					g.Message += "; window: " + nr.Traffic.Window
				}
				return g
			}
			g.Result, g.Message = GatePassed, rd.Reason
			return g
		}
	}
	for _, c := range nr.Traffic.PlaintextClients {
		g.Culprits = append(g.Culprits, fmt.Sprintf("%s (sidecar: %s) -> %s: %.0f plaintext %s", c.Name(), c.Meshed,
			strings.Join(c.Destinations, ", "), c.Count, strings.Join(c.Protocols, "/")))
	}
	g.Culprits = append(g.Culprits, rd.Blockers...)
	g.Message = rd.Reason
	if nr.Traffic.Window != "" {
		g.Message += "; window: " + nr.Traffic.Window
	}
	g.Result = GateFailed
	if len(nr.Traffic.PlaintextClients) == 0 && nr.Traffic.Status != audit.TrafficObserved && onlyTrafficBlockers(nr) {
		g.Result = GateUnsettled
		g.Message = "no inbound traffic observed yet (" + nr.Traffic.Reason + "): zero requests are not a pass; re-run once the namespace has served traffic"
		if nr.Traffic.Window != "" {
			g.Message += "; window: " + nr.Traffic.Window
		}
	}
	return g
}

// unseenExpected names the expected callers not seen arriving over mTLS,
// and the workloads that served traffic at plan time but none in the
// window.
func unseenExpected(nr *audit.NamespaceReport, exp Expect) []string {
	mtlsFrom, served := map[string]bool{}, map[string]bool{}
	for _, e := range nr.Traffic.Edges {
		if e.Destination.Namespace != nr.Name || (e.Count <= 0 && e.Bytes <= 0) {
			continue
		}
		served[e.Destination.Workload] = true
		if e.Security == traffic.MutualTLS {
			mtlsFrom[e.Source.Namespace+"/"+e.Source.Workload] = true
		}
	}
	var out []string
	for _, c := range exp.Callers {
		if !mtlsFrom[c] {
			out = append(out, fmt.Sprintf("caller %s: the plan expects it to arrive over mTLS once meshed, and it has not been seen calling %s in this window", c, nr.Name))
		}
	}
	for _, w := range exp.Inbound {
		if !served[w] {
			out = append(out, fmt.Sprintf("workload %s/%s: it served traffic over the plan's window, and none in this window", nr.Name, w))
		}
	}
	return out
}

// ShortWindowGate is a traffic gate's verdict when its window is shorter
// than the plan's floor: inconclusive, without reading telemetry, saying
// when it can be judged. start says what started the window.
func ShortWindowGate(name plan.GateName, window, floor time.Duration, since time.Time, start string, now time.Time) GateResult {
	return GateResult{Name: name, At: now, Result: GateUnsettled,
		Message: fmt.Sprintf("the window is %s (since %s, %s), under the plan's minimum of %s (options.minVerifyWindow): too little traffic time to tell; re-run apply after %s",
			window.Round(time.Second), since.UTC().Format(time.RFC3339), start, floor, since.Add(floor).UTC().Format(time.RFC3339))}
}

// onlyTrafficBlockers is true when nothing but the lack of traffic keeps the
// gate closed.
func onlyTrafficBlockers(nr *audit.NamespaceReport) bool {
	return nr.Pods.NotMeshed == 0 && len(nr.DestinationRules) == 0 && nr.MTLS.Mode == cluster.ModePermissive
}

// AllowRule is one rule of a planned ALLOW policy: the principals it
// admits (none: any caller) on its ports (none: any port).
type AllowRule struct {
	Principals []string
	Ports      []string
}

// PlannedAllows are the planned ALLOW policies by the workload (its name)
// they select; DenyUnmatched is true when an allow-nothing policy is
// planned too, so a call no ALLOW policy admits is denied.
type PlannedAllows struct {
	Rules         map[string][]AllowRule
	DenyUnmatched bool
}

// admits tells whether rules admit a call from principal on port (0: not
// known, which only a rule for any port admits).
func admits(rules []AllowRule, principal string, port int) bool {
	for _, r := range rules {
		if len(r.Principals) > 0 && !slices.Contains(r.Principals, principal) {
			continue
		}
		if len(r.Ports) == 0 || port != 0 && slices.Contains(r.Ports, fmt.Sprint(port)) {
			return true
		}
	}
	return false
}

// CallersGate judges an ambient namespace's planned ALLOW policies against
// the calls seen into it (edges), as ztunnel will once they are enforced:
// any call they would deny fails it, naming the caller; a plaintext call
// does too (it has no principal to allow). No call at all, or a workload a
// policy covers that nobody called in the window, is inconclusive: nothing
// is known then of who else calls it.
func CallersGate(ns string, edges []traffic.Edge, allows PlannedAllows, now time.Time) GateResult {
	g := GateResult{Name: plan.GateCallersAllowed, At: now}
	called := map[string]bool{}
	callers := map[string]bool{}
	for _, e := range edges {
		if e.Destination.Namespace != ns || (e.Count <= 0 && e.Bytes <= 0) {
			continue
		}
		w := e.Destination.Workload
		called[w] = true
		caller := e.Source.Namespace + "/" + e.Source.Workload
		callers[caller] = true
		rules, covered := allows.Rules[w]
		switch {
		case e.Security != traffic.MutualTLS:
			g.Culprits = append(g.Culprits, fmt.Sprintf("%s -> %s: arrives without mTLS, with no principal a policy could allow", caller, w))
		case !covered && allows.DenyUnmatched:
			g.Culprits = append(g.Culprits, fmt.Sprintf("%s -> %s: no planned ALLOW policy covers %s, and allow-nothing would deny the call", caller, w, w))
		case covered && !admits(rules, e.Source.Principal, e.Port):
			g.Culprits = append(g.Culprits, fmt.Sprintf("%s (%s) -> %s: the planned ALLOW policy of %s does not admit it", caller, e.Source.Principal, w, w))
		}
	}
	sort.Strings(g.Culprits)
	g.Culprits = slices.Compact(g.Culprits)
	if len(g.Culprits) > 0 {
		g.Result = GateFailed
		g.Message = fmt.Sprintf("%d calls seen since STRICT would be denied once the policies are enforced", len(g.Culprits))
		return g
	}
	var unseen []string
	for _, w := range slices.Sorted(maps.Keys(allows.Rules)) {
		if !called[w] {
			unseen = append(unseen, "workload "+ns+"/"+w+": a planned ALLOW policy covers it, and nobody called it in the window")
		}
	}
	if len(called) == 0 || len(unseen) > 0 {
		g.Result, g.Culprits = GateUnsettled, unseen
		g.Message = "not every workload a policy covers was called since STRICT: zero calls are not a pass; re-run once they have served traffic"
		return g
	}
	g.Result = GatePassed
	g.Message = fmt.Sprintf("%d callers of %d workloads, each admitted by the planned ALLOW policies", len(callers), len(called))
	return g
}

// ShadowTally is what the dry-run policies decided for one workload's pods
// over the window (HTTP requests and TCP connections).
type ShadowTally struct {
	Denied, Decisions float64
	Protocols         []string
}

// ShadowGate passes when the dry-run policies denied nothing over the
// window and made decisions for every workload an ALLOW policy covers
// (covered, "Kind/name"): summed over the namespace, a busy workload would
// hide one whose callers were never seen. tallies are by workload; pods no
// longer running are keyed "pod NAME".
func ShadowGate(tallies map[string]ShadowTally, covered []string, window string, now time.Time) GateResult {
	g := GateResult{Name: "no-shadow-denials", At: now}
	var denied, decisions float64
	for _, w := range slices.Sorted(maps.Keys(tallies)) {
		t := tallies[w]
		denied, decisions = denied+t.Denied, decisions+t.Decisions
		if t.Denied > 0 {
			g.Culprits = append(g.Culprits, fmt.Sprintf("%s: %.0f of %.0f %s would be denied", w, t.Denied, t.Decisions, strings.Join(t.Protocols, "/")))
		}
	}
	if denied > 0 {
		g.Result = GateFailed
		g.Message = fmt.Sprintf("the dry-run policies would have denied %.0f of %.0f requests and connections over %s: enforcing them would break callers; widen the ALLOW policies (re-plan with a longer window) or roll back", denied, decisions, window)
		return g
	}
	for _, w := range covered {
		if tallies[w].Decisions == 0 {
			g.Culprits = append(g.Culprits, fmt.Sprintf("%s: no dry-run decision over the window (no caller yet, or its sidecar's stats are not scraped)", w))
		}
	}
	switch {
	case len(g.Culprits) > 0:
		g.Result = GateUnsettled
		g.Message = fmt.Sprintf("%d of %d workloads under an ALLOW policy had no dry-run decision over %s: their policies are untested; re-run once they have served traffic", len(g.Culprits), len(covered), window)
	case decisions == 0:
		g.Result = GateUnsettled
		g.Message = fmt.Sprintf("no dry-run decision recorded over %s: zero requests are not a pass; re-run once the namespace has served traffic", window)
	default:
		g.Result = GatePassed
		g.Message = fmt.Sprintf("%.0f requests and connections judged by the dry-run policies over %s, none denied; every one of the %d workloads under an ALLOW policy was judged", decisions, window, len(covered))
	}
	return g
}
