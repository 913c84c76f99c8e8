package phases

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// phaseGate evaluates a phase's gate. The sidecar and policy gates wait (up
// to the timeout) for the cluster to settle; the traffic gate is judged
// once, on the window since the namespace and its callers were meshed.
func (e *Executor) phaseGate(ctx context.Context, p *plan.Plan, pn *plan.Namespace, phase plan.PhaseName, gate *plan.Gate, steps []plan.Step) (GateResult, error) {
	ns := pn.Name
	switch gate.Name {
	case plan.GateNoPlaintext:
		since := e.verifySince(p, pn)
		if short, err := e.shortWindow(ctx, p, ns, gate.Name, since); err != nil || short {
			return ShortWindowGate(gate.Name, e.now().Sub(since), p.VerifyFloor(), since, "when the namespace or a caller it waits for was meshed, or --verify-window", e.now()), err
		}
		_, r, err := e.Observer.Audit(ctx, []string{ns}, since)
		if err != nil {
			return GateResult{}, fmt.Errorf("gate %s of %s: %w", gate.Name, ns, err)
		}
		return VerifyGate(namespaceOf(r, ns), Expect{Callers: gate.Callers, Inbound: gate.Inbound}, e.now()), nil
	case plan.GateSidecars, plan.GatePinned, plan.GateAmbientCaptured:
		stayOut := map[string]bool{}
		for _, st := range steps {
			if st.Status == plan.StatusSkipped {
				stayOut[st.Target] = true
			}
		}
		// Polled until it passes or --timeout: the cluster settles (pods
		// roll, the injector and Istio's policies catch up). The last
		// verdict is the gate's.
		var g GateResult
		judged := false
		err := poll(ctx, e.Clock, gatePoll, e.Options.Timeout, func(ctx context.Context) (bool, error) {
			_, r, err := e.Observer.Audit(ctx, []string{ns}, time.Time{})
			if err != nil {
				return false, fmt.Errorf("gate %s of %s: %w", gate.Name, ns, err)
			}
			nr := namespaceOf(r, ns)
			switch {
			case gate.Name == plan.GateSidecars:
				g = SidecarsGate(nr, stayOut, e.now())
			case gate.Name == plan.GateAmbientCaptured:
				g = AmbientGate(nr, stayOut, e.now())
			case phase == plan.PhaseStrict:
				g = PinnedGate(nr, cluster.ModeStrict, e.now())
			default:
				g = PinnedGate(nr, cluster.ModePermissive, e.now())
			}
			judged = true
			return g.Result == GatePassed, nil
		})
		if wait.Interrupted(err) && judged {
			return g, nil
		}
		if err != nil {
			return GateResult{}, err
		}
		return g, nil
	case plan.GateWaypointProgrammed:
		return e.waypointGate(ctx, ns)
	}
	return GateResult{}, fmt.Errorf("the plan names gate %q, which this version does not know: use the version that made the plan", gate.Name)
}

// waypointGate polls the namespace's waypoint Gateway until istiod has
// programmed it, or --timeout: the last verdict is the gate's.
func (e *Executor) waypointGate(ctx context.Context, ns string) (GateResult, error) {
	gvr, err := resourceFor(cluster.GatewayGroup+"/v1", "Gateway")
	if err != nil {
		return GateResult{}, err
	}
	var g GateResult
	judged := false
	err = poll(ctx, e.Clock, gatePoll, e.Options.Timeout, func(ctx context.Context) (bool, error) {
		gw, err := e.Cluster.get(ctx, gvr, ns, plan.WaypointName)
		if err != nil {
			return false, fmt.Errorf("gate %s of %s: read Gateway %s: %w", plan.GateWaypointProgrammed, ns, plan.WaypointName, err)
		}
		g, judged = WaypointGate(gw, e.now()), true
		return g.Result == GatePassed, nil
	})
	if wait.Interrupted(err) && judged {
		return g, nil
	}
	return g, err
}

// effectCheck is the check apply makes after a phase the plan gives no
// gate: that the PeerAuthentication it applied is the one in force, with
// its mode (a second namespace-wide policy that is older would win).
func effectCheck(phase plan.PhaseName) *plan.Gate {
	switch phase {
	case plan.PhasePermissive, plan.PhaseStrict:
		return &plan.Gate{Name: plan.GatePinned, Description: "the namespace's PeerAuthentication decides its mode, " + strings.ToUpper(string(phase))}
	}
	return nil
}

func namespaceOf(r *audit.Report, ns string) *audit.NamespaceReport {
	for i := range r.Namespaces {
		if r.Namespaces[i].Name == ns {
			return &r.Namespaces[i]
		}
	}
	return &audit.NamespaceReport{Name: ns}
}

// verifySince is where the verify window starts: plaintext seen before the
// namespace and the callers the plan meshes were meshed says nothing about
// now. It is never earlier than the plan's own window.
func (e *Executor) verifySince(p *plan.Plan, pn *plan.Namespace) time.Time {
	now := e.now()
	if e.Options.VerifyWindow > 0 {
		return now.Add(-e.Options.VerifyWindow)
	}
	window := 24 * time.Hour
	if p.Traffic != nil {
		if d, err := time.ParseDuration(p.Traffic.Window); err == nil && d > 0 {
			window = d
		} else if !p.Traffic.Start.IsZero() {
			window = p.Traffic.End.Sub(p.Traffic.Start)
		}
	}
	since := now.Add(-window)
	for _, ns := range append([]string{pn.Name}, pn.CalledBy...) {
		if m := e.peers[ns].meshedAt; m != nil && m.After(since) {
			since = *m
		}
	}
	return since
}

// shortWindow tells whether a traffic gate's window, since `since`, is
// under the plan's floor and so cannot be judged. A window that reaches
// the floor within --timeout is waited for. With
// --allow-short-verify-window it is judged anyway, and the checkpoint
// records that it was.
func (e *Executor) shortWindow(ctx context.Context, p *plan.Plan, ns string, gate plan.GateName, since time.Time) (bool, error) {
	window, floor := e.now().Sub(since), p.VerifyFloor()
	switch {
	case window >= floor:
		return false, nil
	case e.Options.AllowShortWindow:
		note := fmt.Sprintf("%s gate %s judged over %s, under the plan's minimum of %s: --allow-short-verify-window by %s", e.now().Format(time.RFC3339), gate, window.Round(time.Second), floor, e.Options.Identity)
		e.warn(ns, "%s", note)
		cp := e.cps[ns]
		cp.Overrides = append(cp.Overrides, note)
		return false, nil
	case floor-window > e.Options.Timeout:
		return true, nil
	}
	wait := floor - window
	e.note(ns, "gate %s: waiting %s for its window to reach the plan's minimum of %s", gate, wait.Round(time.Second), floor)
	return false, sleep(ctx, e.Clock, wait)
}

// stepGate judges a gate between a phase's steps, over the window since
// what makes its verdict meaningful: no-shadow-denials since the dry-run
// policies before it were applied (also with --verify-window: decisions
// made before them say nothing); callers-allowed, in ambient, since STRICT
// was in force (principals are only trustworthy then). A window under the
// plan's floor is inconclusive; a pass is recorded on the phase.
func (e *Executor) stepGate(ctx context.Context, p *plan.Plan, ns string, phase plan.PhaseName, idx int, gate plan.GateName) (*GateResult, error) {
	if gate != plan.GateNoShadowDenials && gate != plan.GateCallersAllowed {
		return nil, fmt.Errorf("the plan names gate %q between the steps of %s, which this version does not know: use the version that made the plan", gate, phase)
	}
	if e.dry() {
		e.emit(Event{Type: EventNote, Namespace: ns, Phase: phase, Message: fmt.Sprintf("%s: gate %s would be checked here", phase, gate)})
		return nil, nil
	}
	pn, _ := p.Namespace(ns)
	ph, _ := pn.Phase(phase)
	since, start := e.verifySince(p, pn), "when the dry-run policies were applied"
	if gate == plan.GateCallersAllowed {
		start = "when STRICT was in force"
		for _, r := range e.cps[ns].Phases {
			if r.Name == plan.PhaseStrict && r.FinishedAt != nil && r.FinishedAt.After(since) {
				since = *r.FinishedAt
			}
		}
	} else {
		for i := 0; i < idx; i++ {
			if r := e.cps[ns].Record(p.ID, phase, i); r != nil && r.DoneAt != nil && r.DoneAt.After(since) {
				since = *r.DoneAt
			}
		}
	}
	if short, err := e.shortWindow(ctx, p, ns, gate, since); err != nil {
		return nil, err
	} else if short {
		g := ShortWindowGate(gate, e.now().Sub(since), p.VerifyFloor(), since, start, e.now())
		return &g, nil
	}
	var g GateResult
	var err error
	if gate == plan.GateCallersAllowed {
		g, err = e.callersVerdict(ctx, p, ns, ph.Steps[idx+1:], since)
	} else {
		g, err = e.shadowVerdict(ctx, p, ns, ph.Steps[:idx], since)
	}
	if err != nil {
		return nil, fmt.Errorf("gate %s of %s: %w", gate, ns, err)
	}
	if g.Result == GatePassed {
		e.gateEvent(ns, phase, g, "%s: gate %s passed: %s", phase, g.Name, g.Message)
		e.cps[ns].Phase(phase).Gate = &g
	}
	return &g, nil
}

// shadowVerdict judges no-shadow-denials per workload: each workload an
// ALLOW policy among the dry-run steps covers must have been judged.
func (e *Executor) shadowVerdict(ctx context.Context, p *plan.Plan, ns string, dryRun []plan.Step, since time.Time) (GateResult, error) {
	counts, window, err := e.Observer.ShadowDecisions(ctx, ns, since)
	if err != nil {
		return GateResult{}, err
	}
	snap, _, err := e.Observer.Audit(ctx, []string{ns}, time.Time{})
	if err != nil {
		return GateResult{}, err
	}
	tallies, covered := shadowTallies(snap, ns, counts, p, dryRun)
	return ShadowGate(tallies, covered, window, e.now()), nil
}

// callersVerdict judges callers-allowed: the ALLOW policies among steps (the
// ones after the gate) as ztunnel would apply them, against every caller
// seen since (ztunnel has no dry-run decisions to read, docs/ambient.md).
func (e *Executor) callersVerdict(ctx context.Context, p *plan.Plan, ns string, steps []plan.Step, since time.Time) (GateResult, error) {
	snap, r, err := e.Observer.Audit(ctx, []string{ns}, since)
	if err != nil {
		return GateResult{}, err
	}
	nr := namespaceOf(r, ns)
	g := CallersGate(ns, nr.Traffic.Edges, plannedAllows(snap, ns, p, steps), e.now())
	if nr.Traffic.Window != "" {
		g.Message += "; window: " + nr.Traffic.Window
	}
	return g, nil
}

// plannedAllows reads the ALLOW policies among steps as ztunnel would
// apply them to the namespace's workloads (by the pods their selectors
// choose), whatever the steps' status (--authz dry-run skips them).
func plannedAllows(snap *cluster.Snapshot, ns string, p *plan.Plan, steps []plan.Step) PlannedAllows {
	out := PlannedAllows{Rules: map[string][]AllowRule{}}
	for _, st := range steps {
		if st.Action != plan.ActionApply || !strings.HasPrefix(st.Target, "AuthorizationPolicy/") || st.Object == nil {
			continue
		}
		obj := p.Manifest(st)
		if action, _, _ := unstructured.NestedString(obj, "spec", "action"); action != "" && action != "ALLOW" {
			continue
		}
		sel, _, _ := unstructured.NestedStringMap(obj, "spec", "selector", "matchLabels")
		rules, _, _ := unstructured.NestedSlice(obj, "spec", "rules")
		if len(sel) == 0 {
			out.DenyUnmatched = out.DenyUnmatched || len(rules) == 0 // allow-nothing
			continue
		}
		var parsed []AllowRule
		for _, raw := range rules {
			parsed = append(parsed, allowRuleOf(raw))
		}
		for _, pod := range snap.Pods {
			if pod.Namespace == ns && matches(pod.Labels, sel) {
				out.Rules[pod.Owner.Name] = append(out.Rules[pod.Owner.Name], parsed...)
			}
		}
	}
	for w, rs := range out.Rules {
		out.Rules[w] = slices.CompactFunc(rs, func(a, b AllowRule) bool {
			return slices.Equal(a.Principals, b.Principals) && slices.Equal(a.Ports, b.Ports)
		})
	}
	return out
}

// allowRuleOf reads the sources and ports of one rule of an ALLOW policy
// the plan made (principals in from, ports in to).
func allowRuleOf(raw any) AllowRule {
	rule, _ := raw.(map[string]any)
	var r AllowRule
	from, _, _ := unstructured.NestedSlice(rule, "from")
	for _, f := range from {
		fm, _ := f.(map[string]any)
		ps, _, _ := unstructured.NestedStringSlice(fm, "source", "principals")
		r.Principals = append(r.Principals, ps...)
	}
	to, _, _ := unstructured.NestedSlice(rule, "to")
	for _, t := range to {
		tm, _ := t.(map[string]any)
		ps, _, _ := unstructured.NestedStringSlice(tm, "operation", "ports")
		r.Ports = append(r.Ports, ps...)
	}
	return r
}

// shadowTallies sums the dry-run decisions by workload (a pod gone since is
// its own entry), and lists the workloads the ALLOW policies among steps
// select: those the gate must see judged.
func shadowTallies(snap *cluster.Snapshot, ns string, counts []traffic.ShadowCount, p *plan.Plan, steps []plan.Step) (map[string]ShadowTally, []string) {
	owner := map[string]string{}
	for _, pod := range snap.Pods {
		if pod.Namespace == ns {
			owner[pod.Name] = pod.Owner.String()
		}
	}
	tallies := map[string]ShadowTally{}
	for _, c := range counts {
		w, ok := owner[c.Pod]
		if !ok {
			w = "pod " + c.Pod
		}
		t := tallies[w]
		t.Denied, t.Decisions = t.Denied+c.Denied, t.Decisions+c.Decisions
		if !slices.Contains(t.Protocols, c.Protocol) {
			t.Protocols = append(t.Protocols, c.Protocol)
			sort.Strings(t.Protocols)
		}
		tallies[w] = t
	}
	covered := map[string]bool{}
	for _, st := range steps {
		if st.Action != plan.ActionApply || !strings.HasPrefix(st.Target, "AuthorizationPolicy/") {
			continue
		}
		obj := p.Manifest(st)
		sel, _, _ := unstructured.NestedStringMap(obj, "spec", "selector", "matchLabels")
		action, _, _ := unstructured.NestedString(obj, "spec", "action")
		if len(sel) == 0 || action != "" && action != "ALLOW" {
			continue // the namespace-wide allow-nothing, or not an ALLOW
		}
		for _, pod := range snap.Pods {
			if pod.Namespace == ns && pod.Phase != "Succeeded" && pod.Phase != "Failed" && matches(pod.Labels, sel) {
				covered[pod.Owner.String()] = true
			}
		}
	}
	return tallies, slices.Sorted(maps.Keys(covered))
}

func matches(labels, sel map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
