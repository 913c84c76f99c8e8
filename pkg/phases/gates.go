package phases

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
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

// VerifyGate is DESIGN.md's verify gate, judged as the audit judges
// readiness for STRICT: real inbound traffic over the window, none of it
// plaintext, every pod meshed, no DestinationRule turning TLS off toward
// the namespace. No traffic at all is inconclusive, never a pass.
func VerifyGate(nr *audit.NamespaceReport, now time.Time) GateResult {
	g := GateResult{Name: "no-plaintext", At: now}
	rd := nr.Readiness
	switch rd.Next {
	case audit.PhaseStrict, audit.PhaseAuthz, audit.PhaseDone:
		if len(rd.Blockers) == 0 {
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

// onlyTrafficBlockers is true when nothing but the lack of traffic keeps the
// gate closed.
func onlyTrafficBlockers(nr *audit.NamespaceReport) bool {
	return nr.Pods.NotMeshed == 0 && len(nr.DestinationRules) == 0 && nr.MTLS.Mode == cluster.ModePermissive
}

// ShadowGate passes when the dry-run policies made decisions over the
// window and denied none of them.
func ShadowGate(denied, decisions float64, window string, now time.Time) GateResult {
	g := GateResult{Name: "no-shadow-denials", At: now}
	switch {
	case denied > 0:
		g.Result = GateFailed
		g.Message = fmt.Sprintf("the dry-run policies would have denied %.0f of %.0f requests over %s: enforcing them would break callers; widen the ALLOW policies (re-plan with a longer window) or roll back", denied, decisions, window)
	case decisions == 0:
		g.Result = GateUnsettled
		g.Message = fmt.Sprintf("no dry-run decision recorded over %s: zero requests are not a pass; re-run once the namespace has served traffic", window)
	default:
		g.Result = GatePassed
		g.Message = fmt.Sprintf("%.0f requests judged by the dry-run policies over %s, none denied", decisions, window)
	}
	return g
}
