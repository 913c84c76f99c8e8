package audit

import (
	"fmt"
	"sort"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// Audit computes the report for a snapshot and the observed traffic. It is
// deterministic: the same inputs give the same report.
func Audit(s *cluster.Snapshot, obs Observation) *Report {
	injectors := compileInjectors(s.Injectors)
	byNS := splitPeerPolicies(s.PeerAuthentications)
	mesh, meshIgnored := meshMTLS(s.Mesh.RootNamespace, byNS)

	r := &Report{
		APIVersion:  APIVersion,
		Kind:        Kind,
		GeneratedAt: s.TakenAt,
		Cluster:     Cluster{Context: s.Context, Server: s.Server},
		Mesh: Mesh{
			RootNamespace:   s.Mesh.RootNamespace,
			TrustDomain:     s.Mesh.TrustDomain,
			AutoMTLS:        s.Mesh.EnableAutoMTLS,
			ConfigSource:    s.Mesh.Source,
			IstiodNamespace: s.IstiodNamespace,
			PoliciesRead:    s.Istio.PoliciesReadable,
			PoliciesReason:  s.Istio.Reason,
			Injectors:       []Injector{},
			MTLS:            mesh,
		},
		Namespaces: []NamespaceReport{},
		Findings:   []Finding{},
	}
	for _, w := range s.Injectors {
		r.Mesh.Injectors = append(r.Mesh.Injectors, Injector{Configuration: w.Configuration, Webhook: w.Name, Revision: w.Revision, Tag: w.Tag})
	}
	if !s.Istio.PoliciesReadable {
		r.Mesh.MTLS = MTLSSource{Mode: "UNKNOWN", Source: "unavailable"}
		r.Findings = append(r.Findings, Finding{Code: CodeIstioPoliciesUnreadable, Severity: SeverityWarning, Object: "cluster",
			Message: s.Istio.Reason + "; mTLS and authorization cannot be audited: install Istio (or its CRDs) and re-run"})
	} else {
		for _, why := range meshIgnored {
			r.Findings = append(r.Findings, Finding{Code: CodePeerAuthenticationIgnored, Severity: SeverityWarning, Object: "PeerAuthentication/" + strings.SplitN(why, ":", 2)[0],
				Message: why + "; delete it or merge it into the policy that wins"})
		}
	}
	if s.Istio.DestinationRulesPartial {
		r.Findings = append(r.Findings, Finding{Code: CodeDestinationRulesPartial, Severity: SeverityWarning, Object: "cluster",
			Message: "listing DestinationRules cluster-wide is forbidden, so only those in the audited and root namespaces were read; a rule elsewhere may turn TLS off toward them: grant list on destinationrules cluster-wide"})
	}
	for _, ap := range s.AuthorizationPolicies {
		if ap.Namespace == s.Mesh.RootNamespace {
			desc := name(ap.Namespace, ap.Name) + " (" + ap.Action
			if ap.DryRun {
				desc += ", dry-run"
			}
			r.Mesh.AuthorizationPolicies = append(r.Mesh.AuthorizationPolicies, desc+")")
		}
	}
	if len(s.Injectors) == 0 {
		r.Findings = append(r.Findings, Finding{Code: CodeInjectorNotInstalled, Severity: SeverityWarning, Object: "cluster",
			Message: "no Istio sidecar injector webhook (*sidecar-injector.istio.io) is installed: install Istio before migrating"})
	}
	switch {
	case obs.Graph == nil && obs.Failed:
		r.Findings = append(r.Findings, Finding{Code: CodeTrafficUnavailable, Severity: SeverityWarning, Object: "cluster",
			Message: obs.Reason + "; no verdict past verify can be given"})
	case obs.Graph != nil && obs.Graph.Empty():
		r.Findings = append(r.Findings, Finding{Code: CodeTelemetryMissing, Severity: SeverityWarning, Object: obs.Graph.Source,
			Message: fmt.Sprintf("no istio_requests_total or istio_tcp_connections_opened_total samples over %s: is Istio telemetry enabled and scraped by this Prometheus?", obs.Graph.Describe())})
	}
	if obs.Graph != nil {
		r.Traffic = &TrafficSource{Source: obs.Graph.Source, Window: obs.Graph.Window, Start: obs.Graph.Start, End: obs.Graph.End, Edges: len(obs.Graph.Edges)}
	}
	if !s.Mesh.EnableAutoMTLS {
		r.Findings = append(r.Findings, Finding{Code: CodeAutoMTLSDisabled, Severity: SeverityWarning, Object: "ConfigMap/" + s.Mesh.Source,
			Message: "enableAutoMtls is false: clients send plaintext unless a DestinationRule sets ISTIO_MUTUAL; enable it before STRICT"})
	}

	podsByNS := map[string][]*cluster.Pod{}
	finishedByNS := map[string][]*cluster.Pod{}
	for i := range s.Pods {
		p := &s.Pods[i]
		if p.Phase == "Succeeded" || p.Phase == "Failed" {
			// Not counted (they carry no traffic now), but a finished Job
			// pod is the only trace of a CronJob between its runs.
			if p.Owner.Kind == "Job" || p.Owner.Kind == "CronJob" {
				finishedByNS[p.Namespace] = append(finishedByNS[p.Namespace], p)
			}
			continue
		}
		podsByNS[p.Namespace] = append(podsByNS[p.Namespace], p)
	}
	apsByNS := map[string][]cluster.AuthorizationPolicy{}
	for _, ap := range s.AuthorizationPolicies {
		apsByNS[ap.Namespace] = append(apsByNS[ap.Namespace], ap)
	}

	tix := indexTraffic(obs, s)
	for _, ns := range s.Namespaces {
		nr := auditNamespace(s, ns, injectors, mesh, byNS[ns.Name], podsByNS[ns.Name], apsByNS[ns.Name], tix)
		if nr.Excluded == "" {
			nr.Findings = append(nr.Findings, jobFindings(finishedByNS[ns.Name], ns.Labels, injectors)...)
			sortFindings(nr.Findings)
		}
		r.Namespaces = append(r.Namespaces, nr)
	}
	var ambient []string
	for _, nr := range r.Namespaces {
		if nr.Excluded == "" && nr.Injection.Mode == InjectionAmbient {
			ambient = append(ambient, nr.Name)
		}
	}
	r.Findings = append(r.Findings, ambientNodeAgents(s, ambient)...)
	r.Summary = summarize(r)
	return r
}

func auditNamespace(s *cluster.Snapshot, ns cluster.Namespace, injectors []injector, mesh MTLSSource,
	pp *peerPolicies, pods []*cluster.Pod, aps []cluster.AuthorizationPolicy, tix *trafficIndex) NamespaceReport {
	nr := NamespaceReport{Name: ns.Name, Findings: []Finding{}, DestinationRules: []DestinationRuleTLS{}, Traffic: tix.namespaceTraffic(ns.Name)}
	switch {
	case ignoredNamespaces[ns.Name]:
		nr.Excluded = "Istio never injects this namespace"
	case ns.Name == s.IstiodNamespace:
		nr.Excluded = "Istio control plane namespace"
	}
	var nsInjector *injector
	nr.Injection, nsInjector = namespaceInjection(ns, injectors, nr.Excluded != "")
	nr.Pods = podsOf(pods, ns.Labels, injectors)
	if s.Istio.PoliciesReadable {
		nr.MTLS = namespaceMTLS(ns.Name, s.Mesh.RootNamespace, mesh, pp, pods)
		var drs []DestinationRuleTLS
		drs, nr.istioMutualDR = nonIstioDRs(s.DestinationRules, ns.Name)
		nr.DestinationRules = append(nr.DestinationRules, drs...)
	} else {
		nr.MTLS = MTLS{Mode: "UNKNOWN", Source: "unavailable"}
	}
	var allows int
	nr.Authz, allows = authzOf(aps)
	if nr.Excluded != "" {
		nr.Readiness = Readiness{Next: PhaseNone, Safe: false, Reason: nr.Excluded + ": not migrated"}
		return nr
	}
	nr.Findings = append(namespaceFindings(s, ns, nr, nsInjector, allows), trafficFindings(ns.Name, nr.Traffic)...)
	if nr.Injection.Mode == InjectionAmbient {
		nr.Findings = append(nr.Findings, ambientFindings(s, ns, nr, pods, aps)...)
	}
	sortFindings(nr.Findings)
	nr.Readiness = readiness(s, nr, nsInjector)
	return nr
}

func podsOf(pods []*cluster.Pod, nsLabels map[string]string, injectors []injector) Pods {
	out := Pods{Items: make([]Pod, 0, len(pods))}
	for _, p := range pods {
		pr := classifyPod(p, nsLabels, injectors)
		out.Total++
		if pr.Sidecar != "" {
			out.Meshed++
		}
		switch pr.State {
		case PodNeedsRestart:
			out.NeedRestart++
		case PodWrongRevision:
			out.WrongRevision++
		case PodSidecarNotExpected:
			out.SidecarNotExpected++
		case PodNotInjectable:
			out.NotInjectable++
		case PodNotSelected:
			out.NotSelected++
		}
		out.Items = append(out.Items, pr)
	}
	out.NotMeshed = out.Total - out.Meshed
	return out
}

// jobFindings reports Jobs and CronJobs whose finished pods ran without a
// sidecar and whose next run will not get one either (opted out, or nothing
// selects them): each run is a plaintext client that STRICT destinations
// reject. A Job whose next run will be injected is not reported.
func jobFindings(finished []*cluster.Pod, nsLabels map[string]string, injectors []injector) []Finding {
	var out []Finding
	seen := map[string]bool{}
	for _, p := range finished {
		pr := classifyPod(p, nsLabels, injectors)
		if pr.Sidecar != "" || (pr.State != PodNotInjectable && pr.State != PodNotSelected) || seen[pr.Workload] {
			continue
		}
		seen[pr.Workload] = true
		out = append(out, Finding{Code: CodeJobNotMeshed, Severity: SeverityWarning, Object: pr.Workload,
			Message: fmt.Sprintf("its runs go without a sidecar (%s): each run calls in plaintext and fails against STRICT destinations; use native sidecars instead of opting out", pr.Reason)})
	}
	return out
}

// workloadGroup is the pods of one workload that share a state, so that a
// finding names the workload to act on rather than every pod.
type workloadGroup struct {
	workload string
	pods     []string
	reason   string
}

func groupByWorkload(items []Pod, state string) []workloadGroup {
	var out []workloadGroup
	idx := map[string]int{}
	for _, p := range items {
		if p.State != state {
			continue
		}
		i, ok := idx[p.Workload]
		if !ok {
			i = len(out)
			idx[p.Workload] = i
			out = append(out, workloadGroup{workload: p.Workload, reason: p.Reason})
		}
		out[i].pods = append(out[i].pods, p.Name)
	}
	return out
}

// onDeleteIn returns the namespace's workloads with updateStrategy OnDelete.
func onDeleteIn(s *cluster.Snapshot, ns string) map[string]bool {
	out := map[string]bool{}
	for _, w := range s.OnDelete {
		if w.Namespace == ns {
			out[w.String()] = true
		}
	}
	return out
}

// restartHint says how to get a workload's pods recreated. A rollout
// restart does not replace the pods of an OnDelete StatefulSet or DaemonSet:
// name the pods to delete instead (docs/findings.md).
func restartHint(g workloadGroup, ns string, onDelete map[string]bool) string {
	if onDelete[g.workload] {
		return fmt.Sprintf("%s uses updateStrategy OnDelete, so a rollout restart does not replace its pods: kubectl delete pod -n %s %s",
			g.workload, ns, strings.Join(g.pods, " "))
	}
	workload := g.workload
	kind, name, _ := strings.Cut(workload, "/")
	switch kind {
	case "Deployment", "StatefulSet", "DaemonSet":
		return fmt.Sprintf("kubectl rollout restart %s/%s -n %s", strings.ToLower(kind), name, ns)
	case "Job", "CronJob":
		return "re-run the Job; the next run gets a sidecar (use native sidecars so Jobs can complete)"
	case "Pod":
		return fmt.Sprintf("delete and re-create pod %s (nothing re-creates a bare pod)", name)
	default:
		return fmt.Sprintf("delete the pods so %s re-creates them", workload)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func namespaceFindings(s *cluster.Snapshot, ns cluster.Namespace, nr NamespaceReport, nsInjector *injector, allows int) []Finding {
	var f []Finding
	add := func(code, sev, obj, msg string) {
		f = append(f, Finding{Code: code, Severity: sev, Object: obj, Message: msg})
	}
	nsObj := "Namespace/" + ns.Name
	inj := nr.Injection
	switch inj.Mode {
	case InjectionNone:
		add(CodeNamespaceNotSelected, SeverityWarning, nsObj,
			fmt.Sprintf("no injector selects this namespace: kubectl label namespace %s istio-injection=enabled (or istio.io/rev=REVISION)", ns.Name))
	case InjectionDisabled:
		add(CodeNamespaceInjectionDisabled, SeverityWarning, nsObj,
			fmt.Sprintf("%s blocks injection of every revision: remove it on purpose before migrating", inj.Label))
	case InjectionAmbient:
		add(CodeAmbientNamespace, SeverityInfo, nsObj, "ambient data plane (ztunnel): sidecar injection does not apply; the Ambient* findings say what ambient needs here")
	case InjectionEnabled, InjectionRevision:
		if nsInjector == nil {
			what := "the default revision"
			if inj.Mode == InjectionRevision {
				what = "revision or tag " + strings.TrimPrefix(inj.Label, labelRev+"=")
			}
			add(CodeInjectorWebhookMissing, SeverityError, nsObj,
				fmt.Sprintf("%s selects injection but no injector webhook serves %s: new pods get no sidecar; install that revision or fix the label", inj.Label, what))
		}
	}
	if ns.Labels[labelInjection] != "" && (ns.Labels[labelRev] != "" || ns.Labels[labelDataplaneMode] != "") {
		add(CodeConflictingInjectionLabels, SeverityWarning, nsObj,
			fmt.Sprintf("%s and istio.io/rev or istio.io/dataplane-mode are both set; %s wins: keep one label", labelInjection, labelInjection))
	}

	onDelete := onDeleteIn(s, ns.Name)
	for _, g := range groupByWorkload(nr.Pods.Items, PodNeedsRestart) {
		add(CodePodNeedsRestart, SeverityWarning, g.workload,
			fmt.Sprintf("%s without a sidecar though the namespace selects injection: %s", plural(len(g.pods), "pod", "pods"), restartHint(g, ns.Name, onDelete)))
	}
	for _, g := range groupByWorkload(nr.Pods.Items, PodWrongRevision) {
		add(CodePodRevisionMismatch, SeverityWarning, g.workload,
			fmt.Sprintf("%s (%s): %s", plural(len(g.pods), "pod runs an old sidecar", "pods run an old sidecar"), g.reason, restartHint(g, ns.Name, onDelete)))
	}
	for _, g := range groupByWorkload(nr.Pods.Items, PodSidecarNotExpected) {
		add(CodePodSidecarNotExpected, SeverityInfo, g.workload,
			fmt.Sprintf("%s: %s", plural(len(g.pods), "pod", "pods"), g.reason))
	}
	for _, g := range groupByWorkload(nr.Pods.Items, PodNotInjectable) {
		add(CodePodNotInjectable, SeverityInfo, g.workload,
			fmt.Sprintf("%s out of the mesh (%s); under STRICT its calls to meshed pods fail", plural(len(g.pods), "pod stays", "pods stay"), g.reason))
	}

	if s.Istio.PoliciesReadable {
		m := nr.MTLS
		if m.Mode == "DISABLE" {
			add(CodeMTLSDisabled, SeverityWarning, "PeerAuthentication/"+m.Policy,
				"mTLS is DISABLE: sidecars accept only plaintext; move to PERMISSIVE first")
		}
		if m.Mode == "STRICT" && nr.Pods.NotMeshed > 0 {
			add(CodeStrictWithUnmeshedPods, SeverityError, nsObj,
				fmt.Sprintf("mTLS is STRICT (%s) but %s: their plaintext calls to meshed pods are rejected; mesh them or set PERMISSIVE",
					m.Source, plural(nr.Pods.NotMeshed, "pod has no sidecar", "pods have no sidecar")))
		}
		for _, why := range m.Ignored {
			add(CodePeerAuthenticationIgnored, SeverityWarning, "PeerAuthentication/"+strings.SplitN(why, ":", 2)[0], why+"; delete it or merge it into the policy that wins")
		}
		if owners := peerAuthOwners(s, m.NamespacePolicy); len(owners) > 0 && !(m.Mode == cluster.ModeStrict && m.Source == "namespace") {
			add(CodePeerAuthenticationManagedElsewhere, SeverityWarning, "PeerAuthentication/"+m.NamespacePolicy,
				"the migration's permissive and strict phases change this policy, so the plan blocks them: "+cluster.TakeoverRefusal("PeerAuthentication "+m.NamespacePolicy, owners))
		}
		for _, w := range m.Workloads {
			if w.Mode != m.Mode || len(w.Ports) > 0 {
				sev := SeverityInfo
				if m.Mode == cluster.ModeStrict && len(mtlsExceptions(MTLS{Workloads: []WorkloadMTLS{w}})) > 0 {
					sev = SeverityWarning // plaintext still accepted inside a STRICT namespace
				}
				add(CodeWorkloadMTLSOverride, sev, "PeerAuthentication/"+w.Policy,
					fmt.Sprintf("workload policy sets %s%s for %s (namespace is %s): review it before changing the namespace mode",
						w.Mode, portModes(w.Ports), plural(w.Pods, "pod", "pods"), m.Mode))
			}
		}
		for _, d := range nr.DestinationRules {
			if d.Mode == "DISABLE" {
				add(CodeDestinationRuleTLSDisabled, SeverityWarning, "DestinationRule/"+d.Policy,
					fmt.Sprintf("host %s (%s) sets tls.mode DISABLE: its clients send plaintext and fail under STRICT; remove the tls setting or use ISTIO_MUTUAL", d.Host, d.Where))
				continue
			}
			add(CodeDestinationRuleTLSNotIstio, SeverityWarning, "DestinationRule/"+d.Policy,
				fmt.Sprintf("host %s (%s) sets tls.mode %s: its clients originate their own TLS, which a STRICT sidecar rejects; use ISTIO_MUTUAL (or exclude the port from capture)", d.Host, d.Where, d.Mode))
		}
		if nr.Authz.AllowNothing && allows == 0 {
			add(CodeAllowNothingWithoutAllows, SeverityWarning, nsObj,
				"an enforced allow-nothing AuthorizationPolicy with no ALLOW policy denies every request: add ALLOW policies or set istio.io/dry-run")
		}
	}
	sortFindings(f)
	return f
}

func portModes(ports map[uint32]string) string {
	if len(ports) == 0 {
		return ""
	}
	keys := make([]int, 0, len(ports))
	for p := range ports {
		keys = append(keys, int(p))
	}
	sort.Ints(keys)
	parts := make([]string, len(keys))
	for i, p := range keys {
		parts[i] = fmt.Sprintf("%d=%s", p, ports[uint32(p)])
	}
	return " (ports " + strings.Join(parts, ",") + ")"
}

var severityRank = map[string]int{SeverityError: 0, SeverityWarning: 1, SeverityInfo: 2}

func sortFindings(f []Finding) {
	sort.SliceStable(f, func(i, j int) bool {
		if severityRank[f[i].Severity] != severityRank[f[j].Severity] {
			return severityRank[f[i].Severity] < severityRank[f[j].Severity]
		}
		if f[i].Code != f[j].Code {
			return f[i].Code < f[j].Code
		}
		return f[i].Object < f[j].Object
	})
}

// readiness decides the next phase and whether it is safe to start now. The
// phases run inject -> permissive -> verify -> strict -> authz (docs/apply.md);
// without observed traffic, nothing past verify is called safe.
func readiness(s *cluster.Snapshot, nr NamespaceReport, nsInjector *injector) Readiness {
	p, inj := nr.Pods, nr.Injection
	switch {
	case inj.Mode == InjectionAmbient:
		// Meshed means captured by ztunnel; then mTLS decides, as for
		// sidecars.
		var out []string
		for _, pod := range p.Items {
			if pod.Sidecar != "ambient" && pod.State != PodNotInjectable {
				out = append(out, pod.Name)
			}
		}
		if len(out) > 0 {
			return Readiness{Next: PhaseInject, Reason: "ambient data plane: " + plural(len(out), "pod is", "pods are") + " not captured by ztunnel",
				Blockers: []string{"not captured (or still carrying a sidecar): " + strings.Join(out, ", ")}}
		}
		if !s.Istio.PoliciesReadable {
			return Readiness{Next: PhaseNone, Reason: "Istio policies could not be read", Blockers: []string{s.Istio.Reason}}
		}
	case inj.Mode == InjectionDisabled:
		return Readiness{Next: PhaseInject, Reason: "injection is explicitly disabled",
			Blockers: []string{inj.Label + " is set: remove it on purpose before migrating"}}
	case inj.Mode == InjectionNone || nsInjector == nil || p.NeedRestart > 0 || p.WrongRevision > 0:
		rd := Readiness{Next: PhaseInject, Safe: true}
		switch {
		case inj.Mode == InjectionNone:
			rd.Reason = "the namespace is not selected for injection"
		case p.NeedRestart > 0 || p.WrongRevision > 0:
			rd.Reason = plural(p.NeedRestart+p.WrongRevision, "pod needs", "pods need") + " a restart to get a current sidecar"
		default:
			rd.Reason = "no injector serves the namespace's selection"
		}
		onDelete := onDeleteIn(s, nr.Name)
		for _, state := range []string{PodNeedsRestart, PodWrongRevision} {
			for _, g := range groupByWorkload(nr.Pods.Items, state) {
				if onDelete[g.workload] {
					rd.Safe = false
					rd.Blockers = append(rd.Blockers, fmt.Sprintf("%s uses updateStrategy OnDelete: its pods %s must be deleted, a restart will not replace them",
						g.workload, strings.Join(g.pods, ", ")))
				}
			}
		}
		if len(s.Injectors) == 0 {
			rd.Safe = false
			rd.Blockers = append(rd.Blockers, "Istio's sidecar injector is not installed")
		} else if inj.Mode != InjectionNone && nsInjector == nil {
			rd.Safe = false
			rd.Blockers = append(rd.Blockers, "no injector webhook serves "+inj.Label)
		}
		return rd
	case !s.Istio.PoliciesReadable:
		return Readiness{Next: PhaseNone, Reason: "Istio policies could not be read",
			Blockers: []string{s.Istio.Reason}}
	}
	m := nr.MTLS
	switch {
	case m.Mode == "DISABLE" || (m.Mode == "PERMISSIVE" && m.Source != "namespace"):
		return Readiness{Next: PhasePermissive, Safe: true,
			Reason: "pin the namespace with a PERMISSIVE PeerAuthentication; it accepts mTLS and plaintext alike"}
	case m.Mode == "PERMISSIVE":
		rd := Readiness{Next: PhaseVerify, Reason: "PERMISSIVE and meshed: verify that no plaintext arrives before STRICT"}
		rd.Blockers = append(rd.Blockers, verifyBlockers(nr.Traffic)...)
		if p.NotMeshed > 0 {
			rd.Blockers = append(rd.Blockers, plural(p.NotMeshed, "pod stays", "pods stay")+" out of the mesh; under STRICT their calls to meshed pods fail")
		}
		if len(nr.DestinationRules) > 0 {
			rd.Blockers = append(rd.Blockers, plural(len(nr.DestinationRules), "DestinationRule setting makes", "DestinationRule settings make")+" clients send plaintext or non-Istio TLS to this namespace")
		}
		if s.Istio.DestinationRulesPartial {
			rd.Blockers = append(rd.Blockers, "DestinationRules outside the audited namespaces could not be read (RBAC)")
		}
		if !s.Mesh.EnableAutoMTLS && !nr.istioMutualDR {
			rd.Blockers = append(rd.Blockers, "enableAutoMtls is false and no DestinationRule sets ISTIO_MUTUAL toward this namespace: clients send plaintext")
		}
		if len(rd.Blockers) == 0 {
			// The verify gate passes: STRICT is the safe next step.
			rd = Readiness{Next: PhaseStrict, Safe: true, Reason: fmt.Sprintf("verified: %.0f inbound requests/connections, all mTLS, over %s", nr.Traffic.Inbound.Total, nr.Traffic.Window)}
		}
		return rd
	case m.Mode == "STRICT" && len(mtlsExceptions(m)) > 0 && p.NotMeshed == 0:
		return Readiness{Next: PhaseStrict, Reason: "the namespace is STRICT but workload or port policies still accept plaintext",
			Blockers: mtlsExceptions(m)}
	case m.Mode == "STRICT" && p.NotMeshed > 0:
		return Readiness{Next: PhaseInject, Reason: "STRICT with unmeshed pods",
			Blockers: []string{plural(p.NotMeshed, "pod has", "pods have") + " no sidecar under STRICT"}}
	case m.Mode == "STRICT" && !nr.Authz.AllowNothing:
		rd := Readiness{Next: PhaseAuthz, Safe: true, Reason: "STRICT: add ALLOW policies from observed callers, then allow-nothing"}
		if nr.Traffic.Status != TrafficObserved {
			rd.Safe = false
			rd.Blockers = []string{"traffic " + nr.Traffic.Status + ": ALLOW policies need the observed mTLS callers (" + nr.Traffic.Reason + ")"}
		}
		return rd
	default:
		return Readiness{Next: PhaseDone, Safe: true, Reason: "meshed, STRICT and deny-by-default"}
	}
}

// verifyBlockers is the traffic half of the verify gate (docs/apply.md): real
// inbound traffic was observed and none of it was plaintext. No data is
// inconclusive, never a pass.
func verifyBlockers(t Traffic) []string {
	switch t.Status {
	case TrafficUnknown:
		return []string{"traffic unknown: plaintext callers cannot be ruled out without telemetry (" + t.Reason + ")"}
	case TrafficNoData:
		return []string{"inconclusive: " + t.Reason}
	}
	var out []string
	for _, c := range t.PlaintextClients {
		out = append(out, fmt.Sprintf("plaintext from %s (%s over %s)", c.Name(), amount(c), t.Window))
	}
	return out
}

func summarize(r *Report) Summary {
	sum := Summary{Namespaces: len(r.Namespaces), Findings: map[string]int{SeverityError: 0, SeverityWarning: 0, SeverityInfo: 0}, Next: map[string]int{}}
	sortFindings(r.Findings)
	for _, f := range r.Findings {
		sum.Findings[f.Severity]++
	}
	for _, ns := range r.Namespaces {
		for _, f := range ns.Findings {
			sum.Findings[f.Severity]++
		}
		sum.Next[ns.Readiness.Next]++
	}
	return sum
}

// peerAuthOwners returns who else manages the PeerAuthentication "ns/name".
func peerAuthOwners(s *cluster.Snapshot, policy string) []cluster.Owner {
	for _, pa := range s.PeerAuthentications {
		if pa.Namespace+"/"+pa.Name == policy {
			return pa.Ownership.Owners()
		}
	}
	return nil
}
