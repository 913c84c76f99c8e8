package plan

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// volatileLabels differ between pods of one workload, or are added by the
// injector and so absent before the restart: never part of a selector.
var volatileLabels = map[string]bool{
	"pod-template-hash": true, "controller-revision-hash": true, "pod-template-generation": true,
	"statefulset.kubernetes.io/pod-name": true, "apps.kubernetes.io/pod-index": true,
	"batch.kubernetes.io/controller-uid": true, "batch.kubernetes.io/job-name": true,
	"controller-uid": true, "job-name": true,
	"security.istio.io/tlsMode": true, "service.istio.io/canonical-name": true, "service.istio.io/canonical-revision": true,
}

// selectorOf returns matchLabels that select exactly the workload's pods in
// its namespace: the labels all its pods share, less the volatile ones. It
// fails when those labels also select another workload's pods, since a
// policy would then reach pods it was not made for.
func (b *builder) selectorOf(ns, workload string) (map[string]string, error) {
	w := b.workloads[ns][workload]
	if w == nil || len(w.pods) == 0 {
		return nil, fmt.Errorf("no running pod of %s: no selector can be derived", workload)
	}
	common := map[string]string{}
	for k, v := range w.pods[0].Labels {
		if !volatileLabels[k] {
			common[k] = v
		}
	}
	for _, p := range w.pods[1:] {
		for k, v := range common {
			if p.Labels[k] != v {
				delete(common, k)
			}
		}
	}
	if len(common) == 0 {
		return nil, fmt.Errorf("the pods of %s share no stable label to select them by", w.ref)
	}
	sel := labels.SelectorFromSet(common)
	var others []string
	for _, name := range slices.Sorted(maps.Keys(b.workloads[ns])) {
		if name == workload {
			continue
		}
		for _, p := range b.workloads[ns][name].pods {
			if sel.Matches(labels.Set(p.Labels)) {
				others = append(others, b.workloads[ns][name].ref.String())
				break
			}
		}
	}
	if len(others) > 0 {
		return nil, fmt.Errorf("the labels %s of %s also select %s: give its pods a distinguishing label", labelString(common), w.ref, strings.Join(others, ", "))
	}
	return common, nil
}

// caller is one principal allowed into a workload, with the ports it was
// seen on (nil when any port, which is what Istio's standard metrics give).
type caller struct {
	ports     map[int]bool
	anyPort   bool
	predicted bool
	from      string
}

// authzPhase generates one ALLOW policy per destination workload from the
// observed callers (principals, ports where known), then a namespace-wide
// allow-nothing policy (docs/istio.md 4). It is first applied as dry-run; with
// --authz enforce the policies are enforced after a gate sees no shadow
// denials, allows before allow-nothing, so nothing observed is denied.
func (b *builder) authzPhase(nr *audit.NamespaceReport, strict Phase) (Phase, []string) {
	ph := Phase{Name: PhaseAuthz, Status: StatusPending}
	ambientRefusal := ""
	if b.ambient[nr.Name] {
		ambientRefusal = b.ambientAuthzRefusal(nr.Name)
	}
	switch {
	case b.opts.Authz == AuthzOff:
		ph.Status, ph.Reason = StatusSkipped, "--authz off"
		return ph, nil
	case b.opts.Target == TargetPermissive:
		ph.Status, ph.Reason = StatusSkipped, "--target permissive: principals are only trustworthy under STRICT (ISTIO-SECURITY-2021-004)"
		return ph, nil
	case strict.Status == StatusBlocked:
		ph.Status, ph.Reason = StatusBlocked, "needs STRICT first: policies by principal admit plaintext callers otherwise (ISTIO-SECURITY-2021-004)"
		return ph, nil
	case ambientRefusal != "":
		ph.Status, ph.Reason = StatusBlocked, ambientRefusal
		return ph, nil
	case b.in.Graph == nil:
		ph.Status, ph.Reason = StatusBlocked, "ALLOW policies come from observed mTLS callers, and telemetry was not read ("+nr.Traffic.Reason+"): re-plan with traffic"
		return ph, nil
	case nr.Traffic.Status != audit.TrafficObserved:
		ph.Status, ph.Reason = StatusBlocked, "ALLOW policies need observed callers, and "+nr.Traffic.Reason+": an allow-nothing policy would deny callers never seen; re-plan over a longer window"
		return ph, nil
	case nr.Authz.AllowNothing:
		ph.Status, ph.Reason = StatusDone, "already deny-by-default: an enforced allow-nothing policy is in force"
		return ph, nil
	}
	byWorkload := map[string][]traffic.Edge{}
	for _, e := range b.inbound[nr.Name] {
		byWorkload[e.Destination.Workload] = append(byWorkload[e.Destination.Workload], e)
	}
	var allows []Step
	var blockers, uncovered []string
	for _, w := range slices.Sorted(maps.Keys(b.workloads[nr.Name])) {
		ref := b.workloads[nr.Name][w].ref
		if ref.Kind == "Job" || ref.Kind == "CronJob" {
			continue // runs to completion; serves nothing to allow
		}
		if !b.meshedBy[nr.Name][w] {
			ph.Notes = append(ph.Notes, fmt.Sprintf("%s has no sidecar after the plan: AuthorizationPolicies do not apply to it", ref))
			continue
		}
		callers := map[string]*caller{}
		add := func(principal string, e traffic.Edge, predicted bool) {
			c := callers[principal]
			if c == nil {
				c = &caller{ports: map[int]bool{}, predicted: predicted, from: e.Source.Namespace + "/" + e.Source.Workload}
				callers[principal] = c
			}
			// In ambient the callers-allowed gate reads ztunnel's series,
			// which name no port: a port rule it cannot confirm is left out.
			if e.Port == 0 || b.ambient[nr.Name] {
				c.anyPort = true
			} else {
				c.ports[e.Port] = true
			}
		}
		for _, e := range byWorkload[w] {
			if e.Security == traffic.MutualTLS && e.Source.Principal != "" {
				add(e.Source.Principal, e, false)
				continue
			}
			v := b.judgeCaller(nr.Name, e)
			switch {
			case v.covered:
				// Allowed by port below, not by principal.
			case v.clears:
				for _, sa := range b.accounts[e.Source.Namespace][e.Source.Workload] {
					add(fmt.Sprintf("%s/ns/%s/sa/%s", b.in.Report.Mesh.TrustDomain, e.Source.Namespace, sa), e, true)
				}
			default:
				blockers = append(blockers, fmt.Sprintf("%s calls %s without mTLS and cannot be allowed by principal: %s", v.name, w, v.why))
			}
		}
		exc := b.exceptions[nr.Name+"/"+w]
		if len(callers) == 0 && len(exc) == 0 {
			uncovered = append(uncovered, nr.Name+"/"+w)
			continue
		}
		st := Step{Action: ActionApply, Target: "AuthorizationPolicy/" + allowPolicyPrefix + w, Status: StatusPending}
		sel, err := b.selectorOf(nr.Name, w)
		if err != nil {
			st.Status, st.Reason = StatusBlocked, err.Error()
			blockers = append(blockers, "no policy can select "+w+": "+err.Error())
		} else {
			st.Object, st.Reason = b.allowPolicy(nr.Name, w, sel, callers, exc)
		}
		allows = append(allows, st)
	}
	sort.Strings(ph.Notes)
	sort.Strings(blockers)

	dry := func(steps []Step, on bool) []Step {
		out := make([]Step, len(steps))
		for i, st := range steps {
			out[i] = withStepDryRun(st, on)
		}
		return out
	}
	nothing := Step{Action: ActionApply, Target: "AuthorizationPolicy/" + allowNothingPolicyName, Status: StatusPending,
		Reason: "allow-nothing: denies every request no ALLOW policy matches",
		Object: b.authorizationPolicy(nr.Name, allowNothingPolicyName, map[string]any{})}
	if len(blockers) > 0 {
		nothing.Status, nothing.Reason = StatusBlocked, "not every observed caller is allowed: "+strings.Join(blockers, "; ")
	}
	var unacked []string
	for _, u := range uncovered {
		ns, _, _ := strings.Cut(u, "/")
		if !b.noCallers[u] && !b.noCallers[ns+"/*"] {
			unacked = append(unacked, u)
		}
	}
	if b.ambient[nr.Name] {
		ph.Steps = b.ambientAuthzSteps(allows, nothing, unacked)
		ph.Status, ph.Reason = rollup(ph.Steps)
		return ph, uncovered
	}
	ph.Steps = append(dry(allows, true), withStepDryRun(nothing, true))
	if b.opts.Authz == AuthzEnforce {
		gate := Step{Action: ActionGate, Target: string(GateNoShadowDenials), Status: StatusPending,
			Reason: "the dry-run policies record no shadow denial (envoy rbac authz_dry_run_result=\"denied\") over the window"}
		enforceNothing := withStepDryRun(nothing, false)
		if enforceNothing.Status != StatusBlocked && len(unacked) > 0 {
			enforceNothing.Status = StatusBlocked
			enforceNothing.Reason = fmt.Sprintf("%s no observed caller and would be denied everything: %s; acknowledge with --allow-no-callers NS/WORKLOAD (or NS/*) if that is intended",
				plural(len(unacked), "workload has", "workloads have"), strings.Join(unacked, ", "))
		}
		ph.Steps = append(ph.Steps, gate)
		ph.Steps = append(ph.Steps, dry(allows, false)...)
		ph.Steps = append(ph.Steps, enforceNothing)
	}
	ph.Status, ph.Reason = rollup(ph.Steps)
	return ph, uncovered
}

// allowPolicy builds the ALLOW policy of one workload: a rule per calling
// principal (ports where telemetry named them), and for --port-exception
// ports a rule without a source, since plaintext callers have no principal.
func (b *builder) allowPolicy(ns, workload string, sel map[string]string, callers map[string]*caller, exceptionPorts []uint32) (map[string]any, string) {
	var rules []any
	var predicted []string
	for _, principal := range slices.Sorted(maps.Keys(callers)) {
		c := callers[principal]
		rule := map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{principal}}}}}
		if !c.anyPort && len(c.ports) > 0 {
			rule["to"] = []any{map[string]any{"operation": map[string]any{"ports": portStrings(c.ports)}}}
		}
		rules = append(rules, rule)
		if c.predicted {
			predicted = append(predicted, principal+" (for "+c.from+", meshed by this plan)")
		}
	}
	if len(exceptionPorts) > 0 {
		ports := map[int]bool{}
		for _, p := range exceptionPorts {
			ports[int(p)] = true
		}
		rules = append(rules, map[string]any{"to": []any{map[string]any{"operation": map[string]any{"ports": portStrings(ports)}}}})
	}
	spec := map[string]any{"action": "ALLOW", "selector": map[string]any{"matchLabels": toAny(sel)}, "rules": rules}
	reason := fmt.Sprintf("allow %s into %s", plural(len(callers), "observed caller", "observed callers"), workload)
	if len(exceptionPorts) > 0 {
		reason += ", and any caller on --port-exception port " + portList(exceptionPorts)
	}
	if len(predicted) > 0 {
		reason += "; principals predicted from service accounts: " + strings.Join(predicted, ", ")
	}
	return b.authorizationPolicy(ns, allowPolicyPrefix+workload, spec), reason
}

func portStrings(ports map[int]bool) []any {
	ps := make([]int, 0, len(ports))
	for p := range ports {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	out := make([]any, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprint(p)
	}
	return out
}

func (b *builder) authorizationPolicy(ns, name string, spec map[string]any) map[string]any {
	return map[string]any{
		"apiVersion": "security.istio.io/" + securityVersion(b.in.Snapshot),
		"kind":       "AuthorizationPolicy",
		"metadata": map[string]any{"name": name, "namespace": ns,
			"labels": map[string]any{LabelManagedBy: ManagedBy}},
		"spec": spec,
	}
}

func withStepDryRun(st Step, on bool) Step {
	if st.Object != nil {
		st.Object = withDryRun(st.Object, on)
	}
	if !on && st.Status != StatusBlocked {
		st.Reason = "enforce: " + st.Reason
	}
	return st
}

// withDryRun copies a policy manifest with or without Istio's dry-run
// annotation (docs/istio.md 4): dry-run policies only log shadow decisions.
func withDryRun(obj map[string]any, on bool) map[string]any {
	out := make(map[string]any, len(obj))
	for k, v := range obj {
		out[k] = v
	}
	md := map[string]any{}
	for k, v := range obj["metadata"].(map[string]any) {
		md[k] = v
	}
	delete(md, "annotations")
	if on {
		md["annotations"] = map[string]any{AnnotationDryRun: "true"}
	}
	out["metadata"] = md
	return out
}
