package plan

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// labelPlan is how the inject phase (re)labels a namespace.
type labelPlan struct {
	after    map[string]string // the namespace's labels once relabelled
	set      map[string]string
	remove   []string
	status   Status
	reason   string
	revision string // the revision that injects under after
}

// planLabels picks the namespace's injection label: keep a selection an
// injector serves; else istio-injection=enabled where a default injector
// (or the "default" revision tag) serves it; else istio.io/rev=R where the
// mesh has a single revision. Never both labels (docs/istio.md 1.3: istio-injection
// wins and the revision webhooks require it absent). An explicit
// istio-injection=disabled is never overridden.
func (b *builder) planLabels(nr *audit.NamespaceReport) labelPlan {
	s := b.in.Snapshot
	cur := map[string]string{}
	for k, v := range b.nsLabels[nr.Name] {
		cur[k] = v
	}
	with := func(key, value, drop string) labelPlan {
		after := map[string]string{}
		for k, v := range cur {
			after[k] = v
		}
		after[key] = value
		lp := labelPlan{after: after, status: StatusPending}
		if cur[key] != value {
			lp.set = map[string]string{key: value}
		}
		if _, ok := after[drop]; ok {
			delete(after, drop)
			lp.remove = []string{drop}
		}
		if lp.set == nil && lp.remove == nil {
			lp.status = StatusDone
		}
		in, _ := b.cls.InjectorFor(after)
		lp.revision = in.Revision
		return lp
	}
	blocked := func(reason string) labelPlan {
		return labelPlan{after: cur, status: StatusBlocked, reason: reason}
	}
	switch {
	case cur[labelInjection] != "" && cur[labelInjection] != "enabled":
		return blocked(fmt.Sprintf("%s=%s is set: injection is disabled on purpose; remove the label yourself before migrating", labelInjection, cur[labelInjection]))
	case b.opts.Revision != "":
		return with(labelRev, b.opts.Revision, labelInjection)
	case len(s.Injectors) == 0:
		return blocked("Istio's sidecar injector is not installed: install Istio first")
	}
	if _, ok := b.cls.InjectorFor(cur); ok && (cur[labelInjection] == "enabled" || cur[labelRev] != "") {
		// Keep the label that decides and drop the other one: never both.
		key, drop := labelKeyOf(cur), labelRev
		if key == labelRev {
			drop = labelInjection
		}
		return with(key, cur[key], drop)
	}
	if rev := cur[labelRev]; rev != "" {
		if _, ok := b.cls.InjectorFor(map[string]string{labelRev: rev}); ok {
			// Both labels, and only the revision is served: istio-injection
			// shadows it (docs/istio.md 1.3), so removing it makes rev inject.
			return with(labelRev, rev, labelInjection)
		}
		return blocked(fmt.Sprintf("no injector serves %s=%s (installed: %s): re-plan with --revision", labelRev, cur[labelRev], revisionsInstalled(s)))
	}
	if _, ok := b.cls.InjectorFor(map[string]string{labelInjection: "enabled"}); ok {
		return with(labelInjection, "enabled", labelRev)
	}
	revs := map[string]bool{}
	for _, w := range s.Injectors {
		revs[w.Revision] = true
	}
	if len(revs) == 1 {
		return with(labelRev, slices.Sorted(maps.Keys(revs))[0], labelInjection)
	}
	return blocked(fmt.Sprintf("the mesh has several revisions (%s) and no default injector: re-plan with --revision", revisionsInstalled(s)))
}

func labelKeyOf(l map[string]string) string {
	if l[labelInjection] != "" {
		return labelInjection
	}
	return labelRev
}

// namespace plans the five phases of one namespace.
func (b *builder) namespace(name string, wave int, lp labelPlan, callers []string) Namespace {
	nr := b.reports[name]
	ns := Namespace{Name: name, Wave: wave, CalledBy: callers, Fingerprint: NamespaceFingerprint(b.in.Snapshot, nr)}
	var (
		inject   Phase
		waypoint *Phase
		stayOut  []string
	)
	if b.ambient[name] {
		ns.Dataplane = DataplaneAmbient
		var wp Phase
		inject, wp, stayOut = b.enrollPhases(nr, lp)
		waypoint = &wp
	} else {
		inject, stayOut = b.injectPhase(nr, lp)
	}
	permissive, paName := b.permissivePhase(nr)
	permissive = b.notTakenOver(nr.Name, permissive)
	verify, trafficBlockers := b.verifyPhase(nr)
	if inject.Status == StatusBlocked && nr.Pods.NotMeshed > 0 {
		stayOut = append(stayOut, fmt.Sprintf("the inject phase is blocked, so %s without a sidecar (%s)",
			plural(nr.Pods.NotMeshed, "pod stays", "pods stay"), inject.Reason))
	}
	strict := b.notTakenOver(nr.Name, b.strictPhase(nr, paName, stayOut, trafficBlockers))
	authz, uncovered := b.authzPhase(nr, strict)
	authz = b.notTakenOver(nr.Name, authz)
	ns.Uncovered = uncovered
	ns.Phases = []Phase{inject, permissive, verify, strict, authz}
	if waypoint != nil {
		ns.Phases = []Phase{*waypoint, inject, permissive, verify, strict, authz}
	}
	return ns
}

// meshWords are what differs between meshing a namespace with sidecars
// (inject) and with ambient (enroll).
type meshWords struct {
	phase      PhaseName
	done       string // the label step's reason when it is done
	restart    string // why a pod is restarted: "without a current sidecar"
	nextRun    string // what a batch workload's next run gets
	gate       *Gate
	unexcluded string // what an excluded workload keeps
}

func (b *builder) injectPhase(nr *audit.NamespaceReport, lp labelPlan) (Phase, []string) {
	return b.meshPhase(nr, lp, meshWords{phase: PhaseInject,
		done:       "already selected for injection (" + labelString(pick(lp.after, labelInjection, labelRev)) + ")",
		restart:    "without a current sidecar",
		nextRun:    "its next run gets a sidecar",
		gate:       &Gate{Name: GateSidecars, Description: fmt.Sprintf("every injectable pod carries a sidecar of revision %s", lp.revision)},
		unexcluded: "keeps pods without a sidecar"})
}

func (b *builder) meshPhase(nr *audit.NamespaceReport, lp labelPlan, words meshWords) (Phase, []string) {
	ph := Phase{Name: words.phase, Status: StatusPending}
	label := Step{Action: ActionLabelNamespace, Target: "Namespace/" + nr.Name, Status: lp.status, Reason: lp.reason, Labels: lp.set, Remove: lp.remove}
	if lp.status == StatusDone {
		label.Reason = words.done
	}
	ph.Steps = append(ph.Steps, label)
	if lp.status == StatusBlocked {
		ph.Status, ph.Reason = StatusBlocked, lp.reason
		return ph, nil
	}
	onDelete := map[string]bool{}
	for _, w := range b.in.Snapshot.OnDelete {
		if w.Namespace == nr.Name {
			onDelete[w.String()] = true
		}
	}
	groups := map[string][]audit.Pod{}
	for _, p := range b.after[nr.Name].Items {
		groups[p.Workload] = append(groups[p.Workload], p)
	}
	var stayOut []string
	for _, ref := range slices.Sorted(maps.Keys(groups)) {
		pods := groups[ref]
		kind, wname, _ := strings.Cut(ref, "/")
		var restart, out []string
		reason := ""
		for _, p := range pods {
			switch p.State {
			case audit.PodNeedsRestart, audit.PodWrongRevision:
				restart = append(restart, p.Name)
			case audit.PodNotInjectable, audit.PodNotSelected:
				out = append(out, p.Name)
				reason = p.Reason
			}
		}
		batch := kind == "Job" || kind == "CronJob"
		if len(out) > 0 {
			st := Step{Action: ActionReport, Target: ref, Status: StatusSkipped,
				Reason: fmt.Sprintf("stays out of the mesh: %s (%s)", reason, strings.Join(out, ", "))}
			ph.Steps = append(ph.Steps, st)
			if !batch {
				stayOut = append(stayOut, fmt.Sprintf("%s stays out of the mesh (%s)", ref, reason))
			}
		}
		if len(restart) == 0 {
			continue
		}
		st := Step{Action: ActionRestartWorkload, Target: ref, Status: StatusPending,
			Reason: fmt.Sprintf("%s %s: %s", plural(len(restart), "pod", "pods"), words.restart, strings.Join(restart, ", "))}
		switch {
		case b.excluded[nr.Name+"/"+wname]:
			st.Status, st.Reason = StatusSkipped, "excluded by --exclude-workload; "+st.Reason
			stayOut = append(stayOut, ref+" is excluded by --exclude-workload and "+words.unexcluded)
		case onDelete[ref]:
			st.Action, st.Status = ActionReport, StatusBlocked
			st.Reason = fmt.Sprintf("updateStrategy OnDelete: a rollout restart does not replace its pods; delete them yourself: kubectl delete pod -n %s %s", nr.Name, strings.Join(restart, " "))
		case kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet":
		case batch:
			st.Action, st.Status = ActionReport, StatusSkipped
			st.Reason = "runs to completion; " + words.nextRun + " (" + st.Reason + ")"
		case kind == "Pod":
			st.Action, st.Status = ActionReport, StatusBlocked
			st.Reason = fmt.Sprintf("a bare pod: nothing re-creates it; delete and re-create %s yourself", wname)
		default:
			st.Action, st.Status = ActionReport, StatusBlocked
			st.Reason = fmt.Sprintf("owned by %s, which the tool does not restart: delete its pods so it re-creates them (%s)", ref, strings.Join(restart, " "))
		}
		ph.Steps = append(ph.Steps, st)
	}
	ph.Gate = words.gate
	ph.Status, ph.Reason = rollup(ph.Steps)
	sort.Strings(stayOut)
	return ph, stayOut
}

// rollup derives a phase's status from its steps: blocked if one is, done if
// nothing is left to do, else pending.
func rollup(steps []Step) (Status, string) {
	pending := false
	for _, st := range steps {
		switch st.Status {
		case StatusBlocked:
			return StatusBlocked, st.Target + ": " + st.Reason
		case StatusPending:
			pending = true
		}
	}
	if pending {
		return StatusPending, ""
	}
	return StatusDone, "nothing to change"
}

// permissivePhase pins the namespace with a namespace-wide PERMISSIVE
// PeerAuthentication. It reuses the namespace-wide policy in force, whatever
// its name: Istio honours only the oldest namespace-wide policy (docs/istio.md
// 2.1), so a second one named "default" would be ignored. It never lowers a
// STRICT namespace.
func (b *builder) permissivePhase(nr *audit.NamespaceReport) (Phase, string) {
	ph := Phase{Name: PhasePermissive}
	name, note := b.peerAuthName(nr)
	if note != "" {
		ph.Notes = append(ph.Notes, note)
	}
	target := "PeerAuthentication/" + name
	switch {
	case !b.in.Snapshot.Istio.PoliciesReadable:
		ph.Status, ph.Reason = StatusBlocked, "Istio's policies could not be read: "+b.in.Snapshot.Istio.Reason
	case nr.MTLS.Mode == cluster.ModeStrict:
		ph.Status, ph.Reason = StatusDone, fmt.Sprintf("already STRICT (%s %s): never lowered", nr.MTLS.Source, nr.MTLS.Policy)
	case nr.MTLS.Source == "namespace" && nr.MTLS.Mode == cluster.ModePermissive:
		ph.Status, ph.Reason = StatusDone, "already pinned PERMISSIVE by "+nr.MTLS.Policy
	default:
		ph.Status = StatusPending
		ph.Steps = []Step{{Action: ActionApply, Target: target, Status: StatusPending,
			Reason: fmt.Sprintf("pin the namespace PERMISSIVE (now %s from %s)", nr.MTLS.Mode, nr.MTLS.Source),
			Object: b.peerAuth(nr.Name, name, cluster.ModePermissive, nil, nil)}}
	}
	return ph, name
}

// callerVerdict is what the plan makes of one non-mTLS caller.
type callerVerdict struct {
	name    string
	clears  bool   // the plan meshes it
	why     string // why it blocks, or how it clears
	covered bool   // a --port-exception accepts it
}

// judgeCaller decides whether a caller that reaches a workload of ns
// without mTLS stops doing so once the plan has run.
func (b *builder) judgeCaller(ns string, e traffic.Edge) callerVerdict {
	v := b.judgeMeshing(e)
	// A port exception covers only callers that stay plaintext: one the plan
	// meshes sends mTLS and must be allowed by its principal instead.
	if ports := b.exceptions[ns+"/"+e.Destination.Workload]; !v.clears && len(ports) > 0 && (e.Port == 0 || containsPort(ports, uint32(e.Port))) {
		v.covered = true
		v.why = fmt.Sprintf("accepted by --port-exception on %s/%s port %s", ns, e.Destination.Workload, portList(ports))
		if e.Port == 0 {
			v.why += " (telemetry does not tell the port: make sure it is that one)"
		}
	}
	return v
}

// judgeMeshing decides whether the plan meshes the caller of e.
func (b *builder) judgeMeshing(e traffic.Edge) callerVerdict {
	src := e.Source
	v := callerVerdict{name: src.Namespace + "/" + src.Workload}
	switch {
	case e.UnmeshedSource():
		v.name = "unidentified clients without a sidecar"
		v.why = "Istio cannot name them (no sidecar): find them (access logs show their IPs) and mesh them, or keep the namespace PERMISSIVE"
	case !b.planned[src.Namespace]:
		v.why = fmt.Sprintf("namespace %s is outside this plan: mesh %s first, or plan its namespace too", src.Namespace, v.name)
	case b.workloads[src.Namespace][src.Workload] == nil:
		v.why = "no running workload of that name was found (a Job between runs?): make sure its next run gets a sidecar, then re-plan"
	case !b.meshedBy[src.Namespace][src.Workload]:
		v.why = "the plan does not mesh it (excluded, opted out or not injectable): it keeps sending plaintext"
	case b.sidecarNow(src.Namespace, src.Workload):
		v.why = "it has a sidecar but still sends plaintext (a DestinationRule with tls DISABLE, excluded outbound ports or calls by pod IP)"
	default:
		v.clears = true
		v.why = fmt.Sprintf("the inject phase of %s meshes it", src.Namespace)
	}
	return v
}

// sidecarNow tells whether every pod of the workload has a sidecar today.
func (b *builder) sidecarNow(ns, workload string) bool {
	w := b.workloads[ns][workload]
	if w == nil {
		return false
	}
	if b.unmeshed[ns] == nil {
		// Indexed once per namespace: this is asked for every edge.
		b.unmeshed[ns] = map[string]bool{}
		for _, p := range b.reports[ns].Pods.Items {
			if p.Sidecar == "" {
				b.unmeshed[ns][p.Workload] = true
			}
		}
	}
	return !b.unmeshed[ns][w.ref.String()]
}

// verifyPhase is the gate before STRICT. At plan time it predicts the
// outcome: plaintext callers the plan meshes are expected to clear; any
// other one will keep the gate shut, so it is a blocker named here. It
// returns the names of those callers, for the STRICT step to name them.
func (b *builder) verifyPhase(nr *audit.NamespaceReport) (Phase, []string) {
	ph := Phase{Name: PhaseVerify, Status: StatusPending, Gate: &Gate{Name: GateNoPlaintext,
		Description: "over the traffic window: real inbound traffic observed, none of it plaintext, every pod meshed, no DestinationRule turning TLS off toward the namespace"}}
	if b.opts.Target == TargetPermissive {
		ph.Status, ph.Reason, ph.Gate = StatusSkipped, "--target permissive: the plan stops before STRICT", nil
		return ph, nil
	}
	if nr.MTLS.Mode == cluster.ModeStrict && nr.MTLS.Source == "namespace" {
		ph.Status, ph.Reason, ph.Gate = StatusDone, "already STRICT ("+nr.MTLS.Policy+")", nil
		return ph, nil
	}
	var blockers []string
	seen, culprits := map[string]bool{}, map[string]bool{}
	served, expected := map[string]bool{}, map[string]bool{}
	for _, e := range b.inbound[nr.Name] {
		if e.Count > 0 || e.Bytes > 0 {
			served[e.Destination.Workload] = true
		}
		if e.Security == traffic.MutualTLS {
			continue
		}
		v := b.judgeCaller(nr.Name, e)
		line := fmt.Sprintf("%s -> %s (%s %s): %s", v.name, e.Destination.Workload, e.Protocol, e.Security, v.why)
		if seen[line] {
			continue
		}
		seen[line] = true
		switch {
		case v.covered:
			ph.Notes = append(ph.Notes, line)
		case v.clears:
			ph.Gate.Expect = append(ph.Gate.Expect, line)
			expected[v.name] = true
		default:
			blockers = append(blockers, line)
			culprits[v.name] = true
		}
	}
	switch t := nr.Traffic; {
	case b.in.Graph == nil:
		ph.Notes = append(ph.Notes, "telemetry was not read at plan time ("+t.Reason+"): the gate reads it at apply time; nothing is assumed safe")
	case t.Status == audit.TrafficNoData:
		ph.Notes = append(ph.Notes, "no inbound traffic observed ("+t.Reason+"): the gate waits for real traffic, zero requests are not a pass")
	}
	ph.Gate.Callers = slices.Sorted(maps.Keys(expected))
	ph.Gate.Inbound = slices.Sorted(maps.Keys(served))
	sort.Strings(blockers)
	if len(blockers) > 0 {
		ph.Status, ph.Reason = StatusBlocked, "plaintext callers the plan does not mesh: "+strings.Join(blockers, "; ")
		if b.forced[nr.Name] {
			ph.Status, ph.Reason = StatusSkipped, "--force-strict: the gate is not enforced; it would fail on: "+strings.Join(blockers, "; ")
		}
	}
	return ph, slices.Sorted(maps.Keys(culprits))
}

// strictPhase sets the namespace STRICT, after the port exceptions it needs.
func (b *builder) strictPhase(nr *audit.NamespaceReport, paName string, stayOut, trafficBlockers []string) Phase {
	ph := Phase{Name: PhaseStrict, Status: StatusPending}
	switch {
	case b.opts.Target == TargetPermissive:
		ph.Status, ph.Reason = StatusSkipped, "--target permissive: the plan stops before STRICT"
		return ph
	case !b.in.Snapshot.Istio.PoliciesReadable:
		ph.Status, ph.Reason = StatusBlocked, "Istio's policies could not be read: "+b.in.Snapshot.Istio.Reason
		return ph
	}
	for _, w := range nr.MTLS.Workloads {
		for port, mode := range w.Ports {
			if mode != cluster.ModeStrict && w.Pods > 0 {
				ph.Notes = append(ph.Notes, fmt.Sprintf("workload policy %s keeps %s on port %d: it stays an exception under STRICT", w.Policy, mode, port))
			}
		}
		if w.Mode != cluster.ModeStrict && w.Pods > 0 {
			ph.Notes = append(ph.Notes, fmt.Sprintf("workload policy %s keeps %s: its pods stay an exception under STRICT", w.Policy, w.Mode))
		}
	}
	sort.Strings(ph.Notes)
	for _, w := range slices.Sorted(maps.Keys(b.workloads[nr.Name])) {
		ports := b.exceptions[nr.Name+"/"+w]
		if len(ports) == 0 {
			continue
		}
		sel, err := b.selectorOf(nr.Name, w)
		st := Step{Action: ActionApply, Target: "PeerAuthentication/" + portExceptionPrefix + w, Status: StatusPending,
			Reason: fmt.Sprintf("--port-exception: %s keeps accepting plaintext on port %s", w, portList(ports))}
		if err != nil {
			st.Status, st.Reason = StatusBlocked, err.Error()
		} else {
			modes := map[uint32]string{}
			for _, p := range ports {
				modes[p] = cluster.ModePermissive
			}
			st.Object = b.peerAuth(nr.Name, portExceptionPrefix+w, cluster.ModeUnset, sel, modes)
		}
		ph.Steps = append(ph.Steps, st)
	}
	blockers := append([]string{}, stayOut...)
	for _, dr := range nr.DestinationRules {
		blockers = append(blockers, fmt.Sprintf("DestinationRule %s sets tls %s (%s) toward %s: a STRICT sidecar rejects it", dr.Policy, dr.Mode, dr.Where, dr.Host))
	}
	if b.in.Snapshot.Istio.DestinationRulesPartial {
		blockers = append(blockers, "DestinationRules outside the planned namespaces could not be read (RBAC): one may turn TLS off toward this namespace")
	}
	if !nr.ClientsSendIstioMTLS(b.in.Snapshot.Mesh.EnableAutoMTLS) {
		blockers = append(blockers, "enableAutoMtls is false and no DestinationRule sets ISTIO_MUTUAL toward this namespace: clients send plaintext")
	}
	if len(trafficBlockers) > 0 {
		blockers = append(blockers, "the verify gate cannot pass: "+plural(len(trafficBlockers), "plaintext caller is", "plaintext callers are")+" not meshed by this plan: "+strings.Join(trafficBlockers, ", "))
	}
	st := Step{Action: ActionApply, Target: "PeerAuthentication/" + paName, Status: StatusPending,
		Reason: "the namespace accepts only mTLS", Object: b.peerAuth(nr.Name, paName, cluster.ModeStrict, nil, nil)}
	switch {
	case nr.MTLS.Mode == cluster.ModeStrict && nr.MTLS.Source == "namespace":
		st.Status, st.Reason = StatusDone, "already STRICT ("+nr.MTLS.Policy+")"
	case len(blockers) > 0 && b.forced[nr.Name]:
		st.Forced = true
		st.Reason = "FORCED by --force-strict over: " + strings.Join(blockers, "; ")
	case len(blockers) > 0:
		st.Status, st.Reason = StatusBlocked, strings.Join(blockers, "; ")
	}
	ph.Steps = append(ph.Steps, st)
	ph.Status, ph.Reason = rollup(ph.Steps)
	return ph
}

func (b *builder) peerAuth(ns, name, mode string, selector map[string]string, ports map[uint32]string) map[string]any {
	spec := map[string]any{}
	if mode != cluster.ModeUnset {
		spec["mtls"] = map[string]any{"mode": mode}
	}
	if selector != nil {
		spec["selector"] = map[string]any{"matchLabels": toAny(selector)}
	}
	if len(ports) > 0 {
		pl := map[string]any{}
		for p, m := range ports {
			pl[fmt.Sprint(p)] = map[string]any{"mode": m}
		}
		spec["portLevelMtls"] = pl
	}
	return map[string]any{
		"apiVersion": "security.istio.io/" + securityVersion(b.in.Snapshot),
		"kind":       "PeerAuthentication",
		"metadata": map[string]any{"name": name, "namespace": ns,
			"labels": map[string]any{LabelManagedBy: ManagedBy}},
		"spec": spec,
	}
}

func toAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func pick(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

func containsPort(ports []uint32, p uint32) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}

func portList(ports []uint32) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
