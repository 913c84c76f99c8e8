package audit

import (
	"os"
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

func TestInjectionModes(t *testing.T) {
	tests := []struct {
		name         string
		ns           cluster.Namespace
		injectors    func(s *cluster.Snapshot)
		wantMode     string
		wantRevision string
		wantTag      string
		wantWebhook  string
		wantCode     string
	}{
		{name: "istio-injection=enabled uses the default revision", ns: ns("shop", "istio-injection", "enabled"),
			wantMode: InjectionEnabled, wantRevision: "1-30", wantWebhook: "istio-sidecar-injector-1-30/namespace.sidecar-injector.istio.io"},
		{name: "istio.io/rev names a revision", ns: ns("shop", "istio.io/rev", "1-31"),
			wantMode: InjectionRevision, wantRevision: "1-31", wantWebhook: "istio-sidecar-injector-1-31/rev.namespace.sidecar-injector.istio.io"},
		{name: "istio.io/rev names a tag, resolved to its revision", ns: ns("shop", "istio.io/rev", "canary"),
			wantMode: InjectionRevision, wantRevision: "1-30", wantTag: "canary", wantWebhook: "istio-revision-tag-canary/rev.namespace.sidecar-injector.istio.io"},
		{name: "istio.io/rev without an injector", ns: ns("shop", "istio.io/rev", "1-99"),
			wantMode: InjectionRevision, wantCode: CodeInjectorWebhookMissing},
		{name: "istio-injection=enabled without any injector", ns: ns("shop", "istio-injection", "enabled"),
			injectors: func(s *cluster.Snapshot) { s.Injectors = nil }, wantMode: InjectionEnabled, wantCode: CodeInjectorWebhookMissing},
		{name: "istio-injection=disabled", ns: ns("shop", "istio-injection", "disabled"),
			wantMode: InjectionDisabled, wantCode: CodeNamespaceInjectionDisabled},
		{name: "istio-injection=disabled beats istio.io/rev", ns: ns("shop", "istio-injection", "disabled", "istio.io/rev", "1-31"),
			wantMode: InjectionDisabled, wantCode: CodeConflictingInjectionLabels},
		{name: "istio-injection=enabled beats istio.io/rev", ns: ns("shop", "istio-injection", "enabled", "istio.io/rev", "1-31"),
			wantMode: InjectionEnabled, wantRevision: "1-30", wantWebhook: "istio-sidecar-injector-1-30/namespace.sidecar-injector.istio.io", wantCode: CodeConflictingInjectionLabels},
		{name: "ambient", ns: ns("shop", "istio.io/dataplane-mode", "ambient"), wantMode: InjectionAmbient, wantCode: CodeAmbientNamespace},
		{name: "no label", ns: ns("shop"), wantMode: InjectionNone, wantCode: CodeNamespaceNotSelected},
		{name: "no label, injected by default (enableNamespacesByDefault)", ns: ns("shop"),
			injectors: func(s *cluster.Snapshot) {
				s.Injectors = append(s.Injectors, cluster.InjectorWebhook{Configuration: "istio-sidecar-injector", Name: "auto.sidecar-injector.istio.io", Revision: "1-30"})
			}, wantMode: InjectionDefault, wantRevision: "1-30", wantWebhook: "istio-sidecar-injector/auto.sidecar-injector.istio.io"},
		{name: "kube-system is never injected", ns: ns("kube-system", "istio-injection", "enabled"), wantMode: InjectionIgnored},
		{name: "the control plane namespace", ns: ns("istio-system"), wantMode: InjectionIgnored},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snapshot()
			if tt.injectors != nil {
				tt.injectors(s)
			}
			s.Namespaces = []cluster.Namespace{tt.ns}
			n := nsReport(t, s, tt.ns.Name)
			inj := n.Injection
			if inj.Mode != tt.wantMode || inj.Revision != tt.wantRevision || inj.Tag != tt.wantTag || inj.Webhook != tt.wantWebhook {
				t.Errorf("injection = %+v, want mode %q revision %q tag %q webhook %q", inj, tt.wantMode, tt.wantRevision, tt.wantTag, tt.wantWebhook)
			}
			if tt.wantCode != "" {
				if _, ok := codes(n.Findings)[tt.wantCode]; !ok {
					t.Errorf("findings %v lack %s", n.Findings, tt.wantCode)
				}
			}
			if tt.wantMode == InjectionIgnored && (len(n.Findings) != 0 || n.Excluded == "" || n.Readiness.Next != PhaseNone) {
				t.Errorf("an excluded namespace must not be judged: %+v", n)
			}
		})
	}
}

func TestPodStates(t *testing.T) {
	tests := []struct {
		name      string
		nsLabels  []string
		pod       cluster.Pod
		wantState string
		sidecar   string
	}{
		{"classic sidecar of the namespace's revision", []string{"istio-injection", "enabled"}, pod("shop", "web", injected("1-30")), PodMeshed, "classic"},
		{"native sidecar in initContainers", []string{"istio-injection", "enabled"}, pod("shop", "web", nativeInjected("1-30")), PodMeshed, "native"},
		{"istio-proxy init container without restartPolicy Always is no sidecar", []string{"istio-injection", "enabled"},
			pod("shop", "web", func(p *cluster.Pod) { p.InitContainers = []cluster.Container{{Name: "istio-proxy"}} }), PodNeedsRestart, ""},
		{"created before the label", []string{"istio-injection", "enabled"}, pod("shop", "web"), PodNeedsRestart, ""},
		{"tag namespace, pod on the tag's revision", []string{"istio.io/rev", "canary"}, pod("shop", "web", injected("1-30")), PodMeshed, "classic"},
		{"namespace moved to 1-31, pod on 1-30", []string{"istio.io/rev", "1-31"}, pod("shop", "web", injected("1-30")), PodWrongRevision, "classic"},
		{"sidecar but namespace unlabelled", nil, pod("shop", "web", injected("1-30")), PodSidecarNotExpected, "classic"},
		{"hostNetwork", []string{"istio-injection", "enabled"}, pod("shop", "agent", func(p *cluster.Pod) { p.HostNetwork = true }), PodNotInjectable, ""},
		{"opt-out label", []string{"istio-injection", "enabled"}, pod("shop", "web", label("sidecar.istio.io/inject", "false")), PodNotInjectable, ""},
		{"opt-out annotation (deprecated, still honoured by the injector)", []string{"istio-injection", "enabled"},
			pod("shop", "web", annotate("sidecar.istio.io/inject", "false")), PodNotInjectable, ""},
		{"opt-out label with another false-y value (Istio injects only y/yes/true/on)", []string{"istio-injection", "enabled"},
			pod("shop", "web", label("sidecar.istio.io/inject", "No")), PodNotInjectable, ""},
		{"label true wins over annotation false", []string{"istio-injection", "enabled"},
			pod("shop", "web", label("sidecar.istio.io/inject", "true"), annotate("sidecar.istio.io/inject", "false")), PodNeedsRestart, ""},
		{"pod opts in by label in an unlabelled namespace", nil, pod("shop", "web", label("sidecar.istio.io/inject", "true")), PodNeedsRestart, ""},
		{"pod annotation alone never triggers injection", nil, pod("shop", "web", annotate("sidecar.istio.io/inject", "true")), PodNotSelected, ""},
		{"pod istio.io/rev label in an unlabelled namespace", nil, pod("shop", "web", label("istio.io/rev", "1-31")), PodNeedsRestart, ""},
		{"ambient-captured pod", []string{"istio.io/dataplane-mode", "ambient"}, pod("shop", "web", annotate("ambient.istio.io/redirection", "enabled")), PodMeshed, "ambient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snapshot()
			s.Namespaces = []cluster.Namespace{ns("shop", tt.nsLabels...)}
			s.Pods = []cluster.Pod{tt.pod}
			n := nsReport(t, s, "shop")
			if len(n.Pods.Items) != 1 {
				t.Fatalf("pods = %+v", n.Pods)
			}
			p := n.Pods.Items[0]
			if p.State != tt.wantState || p.Sidecar != tt.sidecar {
				t.Errorf("pod = %+v, want state %s sidecar %q", p, tt.wantState, tt.sidecar)
			}
			if p.State != PodMeshed && p.Reason == "" {
				t.Errorf("a pod that is not plainly meshed needs a reason: %+v", p)
			}
			stateCode := map[string]string{PodNeedsRestart: CodePodNeedsRestart, PodWrongRevision: CodePodRevisionMismatch,
				PodSidecarNotExpected: CodePodSidecarNotExpected, PodNotInjectable: CodePodNotInjectable}
			if code, ok := stateCode[p.State]; ok {
				f, found := codes(n.Findings)[code]
				if !found || f.Object != p.Workload {
					t.Errorf("want finding %s on %s, got %v", code, p.Workload, n.Findings)
				}
			}
		})
	}
}

func TestPodCountsAndRestartFindings(t *testing.T) {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	done := pod("shop", "done", owner("Job", "nightly"))
	done.Phase = "Succeeded"
	s.Pods = []cluster.Pod{
		pod("shop", "web-1", owner("Deployment", "web")),
		pod("shop", "web-2", owner("Deployment", "web")),
		pod("shop", "db-0", owner("StatefulSet", "db"), injected("1-30")),
		pod("shop", "report-x", owner("CronJob", "report")),
		pod("shop", "debug", owner("Pod", "debug")),
		pod("shop", "node-agent", owner("DaemonSet", "node-agent"), func(p *cluster.Pod) { p.HostNetwork = true }),
		done,
	}
	n := nsReport(t, s, "shop")
	got := n.Pods
	if got.Total != 6 || got.Meshed != 1 || got.NotMeshed != 5 || got.NeedRestart != 4 || got.NotInjectable != 1 {
		t.Errorf("counts = %+v", got)
	}
	var restarts []string
	for _, f := range n.Findings {
		if f.Code == CodePodNeedsRestart {
			restarts = append(restarts, f.Object+": "+f.Message)
		}
	}
	want := map[string]string{
		"Deployment/web":  "2 pods without a sidecar though the namespace selects injection: kubectl rollout restart deployment/web -n shop",
		"CronJob/report":  "re-run the Job",
		"Pod/debug":       "delete and re-create pod debug",
		"DaemonSet/node-": "",
	}
	if len(restarts) != 3 {
		t.Fatalf("want one restart finding per workload (3), got %q", restarts)
	}
	for obj, msg := range want {
		found := false
		for _, r := range restarts {
			if strings.HasPrefix(r, obj) && strings.Contains(r, msg) {
				found = true
			}
		}
		if found == (msg == "") {
			t.Errorf("restart finding for %s with %q: found=%v in %q", obj, msg, found, restarts)
		}
	}
	if _, ok := codes(n.Findings)[CodePodNotInjectable]; !ok {
		t.Errorf("hostNetwork DaemonSet should be reported as not injectable: %v", n.Findings)
	}
	if n.Readiness.Next != PhaseInject || !n.Readiness.Safe {
		t.Errorf("readiness = %+v, want inject (safe)", n.Readiness)
	}
}

func TestEffectiveMTLS(t *testing.T) {
	strictMesh := peer("istio-system", "default", cluster.ModeStrict, 0, nil, nil)
	tests := []struct {
		name       string
		pas        []cluster.PeerAuthentication
		wantMode   string
		wantSource string
		wantPolicy string
		wantCode   string
		check      func(t *testing.T, m MTLS)
	}{
		{name: "no policy anywhere is PERMISSIVE", wantMode: "PERMISSIVE", wantSource: "default"},
		{name: "mesh STRICT", pas: []cluster.PeerAuthentication{strictMesh}, wantMode: "STRICT", wantSource: "mesh", wantPolicy: "istio-system/default"},
		{name: "mesh UNSET is PERMISSIVE", pas: []cluster.PeerAuthentication{peer("istio-system", "default", cluster.ModeUnset, 0, nil, nil)},
			wantMode: "PERMISSIVE", wantSource: "default"},
		{name: "namespace PERMISSIVE beats mesh STRICT", pas: []cluster.PeerAuthentication{strictMesh, peer("shop", "default", cluster.ModePermissive, 1, nil, nil)},
			wantMode: "PERMISSIVE", wantSource: "namespace", wantPolicy: "shop/default"},
		{name: "namespace UNSET inherits mesh", pas: []cluster.PeerAuthentication{strictMesh, peer("shop", "pin", cluster.ModeUnset, 1, nil, nil)},
			wantMode: "STRICT", wantSource: "mesh", wantPolicy: "istio-system/default",
			check: func(t *testing.T, m MTLS) {
				if m.NamespacePolicy != "shop/pin" {
					t.Errorf("namespace policy = %q", m.NamespacePolicy)
				}
			}},
		{name: "oldest namespace policy wins", pas: []cluster.PeerAuthentication{peer("shop", "newer", cluster.ModeStrict, 5, nil, nil), peer("shop", "older", cluster.ModeDisable, 1, nil, nil)},
			wantMode: "DISABLE", wantSource: "namespace", wantPolicy: "shop/older", wantCode: CodePeerAuthenticationIgnored},
		{name: "DISABLE is reported", pas: []cluster.PeerAuthentication{peer("shop", "default", cluster.ModeDisable, 0, nil, nil)},
			wantMode: "DISABLE", wantSource: "namespace", wantPolicy: "shop/default", wantCode: CodeMTLSDisabled},
		{name: "a selector policy in the root namespace is ignored",
			pas:      []cluster.PeerAuthentication{peer("istio-system", "web-strict", cluster.ModeStrict, 0, map[string]string{"app": "web"}, nil)},
			wantMode: "PERMISSIVE", wantSource: "default",
			check: func(t *testing.T, m MTLS) {
				if len(m.Workloads) != 0 {
					t.Errorf("root selector policy applied to workloads: %+v", m.Workloads)
				}
			}},
		{name: "port-level mTLS without a selector is ignored", pas: []cluster.PeerAuthentication{peer("shop", "default", cluster.ModeStrict, 0, nil, map[uint32]string{9090: "DISABLE"})},
			wantMode: "STRICT", wantSource: "namespace", wantPolicy: "shop/default", wantCode: CodePeerAuthenticationIgnored},
		{name: "workload override, UNSET ports inherit the workload mode",
			pas: []cluster.PeerAuthentication{
				peer("shop", "default", cluster.ModePermissive, 0, nil, nil),
				peer("shop", "web", cluster.ModeStrict, 1, map[string]string{"app": "web"}, map[uint32]string{9090: "DISABLE", 8080: "UNSET"}),
				peer("shop", "web-later", cluster.ModeDisable, 2, map[string]string{"app": "web"}, nil),
			},
			wantMode: "PERMISSIVE", wantSource: "namespace", wantPolicy: "shop/default", wantCode: CodeWorkloadMTLSOverride,
			check: func(t *testing.T, m MTLS) {
				if len(m.Workloads) != 2 {
					t.Fatalf("workloads = %+v", m.Workloads)
				}
				w := m.Workloads[0]
				if w.Policy != "shop/web" || w.Mode != "STRICT" || w.Pods != 1 || w.Ports[9090] != "DISABLE" || w.Ports[8080] != "STRICT" {
					t.Errorf("workload policy = %+v", w)
				}
				// The newer policy matching the same pod loses: oldest wins.
				if m.Workloads[1].Pods != 0 {
					t.Errorf("newer matching policy should select no pod: %+v", m.Workloads[1])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snapshot()
			s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
			s.Pods = []cluster.Pod{pod("shop", "web", injected("1-30"))}
			s.PeerAuthentications = tt.pas
			n := nsReport(t, s, "shop")
			m := n.MTLS
			if m.Mode != tt.wantMode || m.Source != tt.wantSource || m.Policy != tt.wantPolicy {
				t.Errorf("mtls = %+v, want %s from %s %s", m, tt.wantMode, tt.wantSource, tt.wantPolicy)
			}
			if tt.wantCode != "" {
				if _, ok := codes(n.Findings)[tt.wantCode]; !ok {
					t.Errorf("findings %v lack %s", n.Findings, tt.wantCode)
				}
			}
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}

func TestStrictWithUnmeshedPods(t *testing.T) {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = []cluster.Pod{pod("shop", "web", injected("1-30")), pod("shop", "legacy", label("sidecar.istio.io/inject", "false"))}
	s.PeerAuthentications = []cluster.PeerAuthentication{peer("shop", "default", cluster.ModeStrict, 0, nil, nil)}
	n := nsReport(t, s, "shop")
	f, ok := codes(n.Findings)[CodeStrictWithUnmeshedPods]
	if !ok || f.Severity != SeverityError {
		t.Fatalf("want an error StrictWithUnmeshedPods, got %v", n.Findings)
	}
	if n.Readiness.Safe || n.Readiness.Next != PhaseInject {
		t.Errorf("readiness = %+v", n.Readiness)
	}
}

func TestDestinationRuleHosts(t *testing.T) {
	tests := []struct {
		drNS, host string
		want       bool
	}{
		{"shop", "web", true},
		{"other", "web", false},
		{"other", "web.shop.svc.cluster.local", true},
		{"other", "web.other.svc.cluster.local", false},
		{"other", "*.shop.svc.cluster.local", true},
		{"other", "*.svc.cluster.local", true},
		{"other", "*.local", true},
		{"other", "*", true},
		{"other", "*.example.com", false},
		{"other", "api.example.com", false},
		{"other", "a.b.shop.svc.cluster.local", false},
	}
	for _, tt := range tests {
		dr := cluster.DestinationRule{Namespace: tt.drNS, Name: "dr", Host: tt.host}
		if got := drTargets(dr, "shop"); got != tt.want {
			t.Errorf("drTargets(%s in %s) = %v, want %v", tt.host, tt.drNS, got, tt.want)
		}
	}
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.DestinationRules = []cluster.DestinationRule{
		{Namespace: "client", Name: "plain", Host: "web.shop.svc.cluster.local", TLS: []cluster.DRTLS{{Where: "trafficPolicy port 8080", Mode: "DISABLE"}}},
		{Namespace: "client", Name: "mtls", Host: "web.shop.svc.cluster.local", TLS: []cluster.DRTLS{{Where: "trafficPolicy", Mode: "ISTIO_MUTUAL"}}},
	}
	n := nsReport(t, s, "shop")
	if len(n.DestinationRules) != 1 || n.DestinationRules[0].Policy != "client/plain" || n.DestinationRules[0].Where != "trafficPolicy port 8080" {
		t.Errorf("destinationRules = %+v", n.DestinationRules)
	}
	if _, ok := codes(n.Findings)[CodeDestinationRuleTLSDisabled]; !ok {
		t.Errorf("findings %v lack %s", n.Findings, CodeDestinationRuleTLSDisabled)
	}
}

func TestAuthz(t *testing.T) {
	allowNothing := cluster.AuthorizationPolicy{Namespace: "shop", Name: "allow-nothing", Action: "ALLOW", Namespaced: true}
	allowWeb := cluster.AuthorizationPolicy{Namespace: "shop", Name: "web", Action: "ALLOW", Rules: 1}
	denyAll := cluster.AuthorizationPolicy{Namespace: "shop", Name: "deny", Action: "DENY", Namespaced: true, Rules: 1, EmptyRule: true}
	dry := allowNothing
	dry.DryRun = true

	a, allows := authzOf([]cluster.AuthorizationPolicy{allowNothing, allowWeb, denyAll})
	if !a.AllowNothing || !a.DenyAll || a.Policies != 3 || allows != 1 {
		t.Errorf("authz = %+v allows %d", a, allows)
	}
	a, _ = authzOf([]cluster.AuthorizationPolicy{dry})
	if a.AllowNothing || !a.AllowNothingDryRun || a.DryRun != 1 {
		t.Errorf("dry-run allow-nothing = %+v", a)
	}

	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = []cluster.Pod{pod("shop", "web", injected("1-30"))}
	s.PeerAuthentications = []cluster.PeerAuthentication{peer("shop", "default", cluster.ModeStrict, 0, nil, nil)}
	s.AuthorizationPolicies = []cluster.AuthorizationPolicy{allowNothing}
	n := nsReport(t, s, "shop")
	if _, ok := codes(n.Findings)[CodeAllowNothingWithoutAllows]; !ok {
		t.Errorf("allow-nothing without allows should be flagged: %v", n.Findings)
	}
	if n.Readiness.Next != PhaseDone {
		t.Errorf("readiness = %+v, want done", n.Readiness)
	}
	s.AuthorizationPolicies = append(s.AuthorizationPolicies, allowWeb)
	if _, ok := codes(nsReport(t, s, "shop").Findings)[CodeAllowNothingWithoutAllows]; ok {
		t.Errorf("allow-nothing with an ALLOW policy is not a finding")
	}
}

func TestReadiness(t *testing.T) {
	meshed := []cluster.Pod{pod("shop", "web", injected("1-30"))}
	tests := []struct {
		name     string
		labels   []string
		pods     []cluster.Pod
		pas      []cluster.PeerAuthentication
		wantNext string
		wantSafe bool
	}{
		{"unlabelled: inject", nil, []cluster.Pod{pod("shop", "web")}, nil, PhaseInject, true},
		{"disabled on purpose: inject, blocked", []string{"istio-injection", "disabled"}, nil, nil, PhaseInject, false},
		{"revision without injector: inject, blocked", []string{"istio.io/rev", "1-99"}, nil, nil, PhaseInject, false},
		{"meshed, no namespace policy: permissive", []string{"istio-injection", "enabled"}, meshed, nil, PhasePermissive, true},
		{"meshed, DISABLE: permissive", []string{"istio-injection", "enabled"}, meshed, []cluster.PeerAuthentication{peer("shop", "default", "DISABLE", 0, nil, nil)}, PhasePermissive, true},
		{"pinned PERMISSIVE: verify, not safe without traffic", []string{"istio-injection", "enabled"}, meshed, []cluster.PeerAuthentication{peer("shop", "default", "PERMISSIVE", 0, nil, nil)}, PhaseVerify, false},
		{"STRICT, no allow-nothing: authz, needs traffic", []string{"istio-injection", "enabled"}, meshed, []cluster.PeerAuthentication{peer("shop", "default", "STRICT", 0, nil, nil)}, PhaseAuthz, false},
		{"mesh STRICT, meshed: authz", []string{"istio-injection", "enabled"}, meshed, []cluster.PeerAuthentication{peer("istio-system", "default", "STRICT", 0, nil, nil)}, PhaseAuthz, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snapshot()
			s.Namespaces = []cluster.Namespace{ns("shop", tt.labels...)}
			s.Pods = tt.pods
			s.PeerAuthentications = tt.pas
			rd := nsReport(t, s, "shop").Readiness
			if rd.Next != tt.wantNext || rd.Safe != tt.wantSafe || rd.Reason == "" {
				t.Errorf("readiness = %+v, want %s safe=%v", rd, tt.wantNext, tt.wantSafe)
			}
			if !rd.Safe && rd.Next != PhaseDone && len(rd.Blockers) == 0 {
				t.Errorf("an unsafe verdict must say what blocks it: %+v", rd)
			}
		})
	}
}

func TestPoliciesUnreadable(t *testing.T) {
	s := snapshot()
	s.Istio = cluster.IstioAvailability{Reason: "Istio's CRDs are not installed"}
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = []cluster.Pod{pod("shop", "web", injected("1-30")), pod("shop", "api")}
	r := Audit(s, Observation{})
	checkContract(t, r)
	if _, ok := codes(r.Findings)[CodeIstioPoliciesUnreadable]; !ok {
		t.Errorf("report findings %v lack %s", r.Findings, CodeIstioPoliciesUnreadable)
	}
	n := r.Namespaces[0]
	if n.MTLS.Mode != "UNKNOWN" || n.MTLS.Source != "unavailable" {
		t.Errorf("mtls = %+v: must not claim a mode it could not read", n.MTLS)
	}
	if n.Pods.Total != 2 || n.Pods.NeedRestart != 1 {
		t.Errorf("injection and pods must still be audited: %+v", n.Pods)
	}
	// Once pods are meshed, nothing past inject can be judged.
	s.Pods = s.Pods[:1]
	if rd := Audit(s, Observation{}).Namespaces[0].Readiness; rd.Next != PhaseNone || len(rd.Blockers) == 0 {
		t.Errorf("readiness = %+v", rd)
	}
}

func TestMeshFindings(t *testing.T) {
	s := snapshot()
	s.Injectors = nil
	s.Mesh.EnableAutoMTLS = false
	s.PeerAuthentications = []cluster.PeerAuthentication{
		peer("istio-system", "default", "STRICT", 0, nil, nil),
		peer("istio-system", "second", "PERMISSIVE", 3, nil, nil),
	}
	r := Audit(s, Observation{})
	checkContract(t, r)
	got := codes(r.Findings)
	for _, c := range []string{CodeInjectorNotInstalled, CodeAutoMTLSDisabled, CodePeerAuthenticationIgnored} {
		if _, ok := got[c]; !ok {
			t.Errorf("mesh findings %v lack %s", r.Findings, c)
		}
	}
	if r.Mesh.MTLS.Policy != "istio-system/default" || r.Mesh.MTLS.Mode != "STRICT" {
		t.Errorf("mesh mtls = %+v", r.Mesh.MTLS)
	}
	if !r.NeedsAttention() {
		t.Errorf("warnings must need attention")
	}
}

func TestTrafficIsNeverClaimedNone(t *testing.T) {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	for _, n := range Audit(s, Observation{}).Namespaces {
		if n.Traffic.Status != "unknown" {
			t.Errorf("traffic = %+v", n.Traffic)
		}
	}
}

func TestCleanNamespaceNeedsNoAttention(t *testing.T) {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = []cluster.Pod{pod("shop", "web", injected("1-30"))}
	s.PeerAuthentications = []cluster.PeerAuthentication{peer("shop", "default", "STRICT", 0, nil, nil)}
	s.AuthorizationPolicies = []cluster.AuthorizationPolicy{
		{Namespace: "shop", Name: "allow-nothing", Action: "ALLOW", Namespaced: true},
		{Namespace: "shop", Name: "web", Action: "ALLOW", Rules: 1},
	}
	r := Audit(s, Observation{})
	checkContract(t, r)
	if r.NeedsAttention() || len(r.Namespaces[0].Findings) != 0 {
		t.Errorf("a finished namespace needs no attention: %+v", r.Namespaces[0].Findings)
	}
}

// TestEveryCodeIsDocumented keeps docs/findings.md the complete reference.
func TestEveryCodeIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/findings.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Codes {
		if !strings.Contains(string(doc), "## "+c) {
			t.Errorf("docs/findings.md has no section \"## %s\"", c)
		}
	}
}

func TestDeterministic(t *testing.T) {
	s := benchSnapshot(20, 10)
	a, b := Audit(s, Observation{}), Audit(s, Observation{})
	if len(a.Namespaces) != len(b.Namespaces) {
		t.Fatal("reports differ")
	}
	for i := range a.Namespaces {
		fa, fb := a.Namespaces[i].Findings, b.Namespaces[i].Findings
		if len(fa) != len(fb) {
			t.Fatalf("findings differ for %s", a.Namespaces[i].Name)
		}
		for j := range fa {
			if fa[j] != fb[j] {
				t.Errorf("finding %d differs: %+v vs %+v", j, fa[j], fb[j])
			}
		}
	}
}

func TestFinishedOptedOutCronJobIsReported(t *testing.T) {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	optedOut := pod("shop", "report-1", owner("CronJob", "report"), label("sidecar.istio.io/inject", "false"))
	optedOut.Phase = "Succeeded"
	willBeInjected := pod("shop", "backup-1", owner("CronJob", "backup"))
	willBeInjected.Phase = "Succeeded"
	s.Pods = []cluster.Pod{optedOut, willBeInjected}
	n := nsReport(t, s, "shop")
	if n.Pods.Total != 0 {
		t.Errorf("finished pods are not counted: %+v", n.Pods)
	}
	var objs []string
	for _, f := range n.Findings {
		if f.Code == CodeJobNotMeshed {
			objs = append(objs, f.Object)
		}
	}
	if len(objs) != 1 || objs[0] != "CronJob/report" {
		t.Errorf("JobNotMeshed on %v, want only CronJob/report (backup's next run is injected)", objs)
	}
}

func TestOnDeleteWorkloadsNeedTheirPodsDeleted(t *testing.T) {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	s.Pods = []cluster.Pod{pod("shop", "db-0", owner("StatefulSet", "db")), pod("shop", "db-1", owner("StatefulSet", "db"))}
	s.OnDelete = []cluster.NamespacedWorkload{{Namespace: "shop", WorkloadRef: cluster.WorkloadRef{Kind: "StatefulSet", Name: "db"}}}
	n := nsReport(t, s, "shop")
	f := codes(n.Findings)[CodePodNeedsRestart]
	if !strings.Contains(f.Message, "kubectl delete pod -n shop db-0 db-1") || strings.Contains(f.Message, "kubectl rollout restart") {
		t.Errorf("hint = %q", f.Message)
	}
	if n.Readiness.Safe || !strings.Contains(strings.Join(n.Readiness.Blockers, ";"), "OnDelete") {
		t.Errorf("readiness = %+v", n.Readiness)
	}
}
