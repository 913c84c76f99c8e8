package audit

import (
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// An ambient namespace mid-way: one pod captured, one not, one still with
// its sidecar, one opted out; a selector-bound ALLOW with L7 rules (an
// outage under ztunnel), the same rules on a waypoint (fine), and an L4
// policy (fine).
func ambientSnapshot() *cluster.Snapshot {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("mesh", "istio.io/dataplane-mode", "ambient")}
	s.Pods = []cluster.Pod{
		pod("mesh", "web", annotate("ambient.istio.io/redirection", "enabled")),
		pod("mesh", "api", annotate("ambient.istio.io/redirection", "pending")),
		pod("mesh", "legacy", injected("1-30")),
		pod("mesh", "batch", label("istio.io/dataplane-mode", "none")),
	}
	s.AuthorizationPolicies = []cluster.AuthorizationPolicy{
		{Namespace: "mesh", Name: "api-get-only", Action: "ALLOW", Rules: 1, L7: []string{"methods", "paths"}},
		{Namespace: "mesh", Name: "api-get-on-waypoint", Action: "ALLOW", Rules: 1, L7: []string{"methods"}, TargetRefs: []string{"Gateway/waypoint"}},
		{Namespace: "mesh", Name: "from-front", Action: "ALLOW", Rules: 1},
	}
	s.Ambient = cluster.AmbientComponents{
		Ztunnel: &cluster.DaemonSetState{Namespace: "istio-system", Name: "ztunnel", Desired: 3, Ready: 3},
		CNI:     &cluster.DaemonSetState{Namespace: "istio-system", Name: "istio-cni-node", Desired: 3, Ready: 3},
	}
	return s
}

func TestAmbientNamespaceFindings(t *testing.T) {
	n := nsReport(t, ambientSnapshot(), "mesh")
	got := map[string][]Finding{}
	for _, f := range n.Findings {
		got[f.Code] = append(got[f.Code], f)
	}
	for code, want := range map[string]struct {
		object, says, severity string
	}{
		CodeAmbientPodNotCaptured:    {"Deployment/api", "1 pod is not captured by ztunnel", SeverityWarning},
		CodeAmbientPodHasSidecar:     {"Deployment/legacy", "still carry a sidecar in an ambient namespace", SeverityWarning},
		CodeAmbientWorkloadOptedOut:  {"Deployment/batch", "opted out of ambient (istio.io/dataplane-mode=none)", SeverityInfo},
		CodeAmbientL7PolicyOnZtunnel: {"AuthorizationPolicy/api-get-only", "ALLOW policy with L7 attributes (methods, paths) bound by selector or namespace, so ztunnel enforces it", SeverityError},
	} {
		fs := got[code]
		if len(fs) != 1 || fs[0].Object != want.object || fs[0].Severity != want.severity || !strings.Contains(fs[0].Message, want.says) {
			t.Errorf("%s: %+v, want one %s finding on %s saying %q", code, fs, want.severity, want.object, want.says)
		}
	}
	// The captured pod, the waypoint-bound policy and the L4 policy are fine.
	for _, f := range n.Findings {
		if strings.Contains(f.Object, "web") || f.Object == "AuthorizationPolicy/api-get-on-waypoint" || f.Object == "AuthorizationPolicy/from-front" {
			t.Errorf("finding on what is fine: %+v", f)
		}
	}
}

func TestAmbientNodeAgents(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ambient  cluster.AmbientComponents
		severity string
		says     string
	}{
		{"both ready", ambientSnapshot().Ambient, "", ""},
		{"no ztunnel", cluster.AmbientComponents{CNI: &cluster.DaemonSetState{Namespace: "istio-system", Name: "istio-cni-node", Desired: 1, Ready: 1}}, SeverityError,
			"namespaces mesh use the ambient data plane, but ztunnel (carries their traffic): no DaemonSet in istio-system or kube-system"},
		{"cni not ready", cluster.AmbientComponents{Ztunnel: &cluster.DaemonSetState{Namespace: "istio-system", Name: "ztunnel", Desired: 2, Ready: 2},
			CNI: &cluster.DaemonSetState{Namespace: "kube-system", Name: "istio-cni-node", Desired: 2, Ready: 1}}, SeverityError,
			"istio-cni (captures their pods): DaemonSet kube-system/istio-cni-node (1 of 2 ready)"},
		{"not readable", cluster.AmbientComponents{Unreadable: "listing DaemonSets in istio-system is forbidden: ztunnel and istio-cni could not be looked for"}, SeverityWarning,
			"cannot tell whether ambient namespaces mesh are served"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ambientSnapshot()
			s.Ambient = tc.ambient
			r := Audit(s, Observation{})
			checkContract(t, r)
			var f *Finding
			for i := range r.Findings {
				if r.Findings[i].Code == CodeAmbientNodeAgentsMissing {
					f = &r.Findings[i]
				}
			}
			switch {
			case tc.severity == "" && f != nil:
				t.Errorf("finding %+v with both agents ready", *f)
			case tc.severity != "" && (f == nil || f.Severity != tc.severity || !strings.Contains(f.Message, tc.says)):
				t.Errorf("finding %+v, want %s saying %q", f, tc.severity, tc.says)
			}
		})
	}
	// No ambient namespace audited: nothing is said about the agents.
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("shop", "istio-injection", "enabled")}
	for _, f := range Audit(s, Observation{}).Findings {
		if f.Code == CodeAmbientNodeAgentsMissing {
			t.Errorf("node agents reported for a sidecar-only audit: %+v", f)
		}
	}
}

// An ambient namespace is judged like a meshed one once every pod is
// captured: an uncaptured pod (or one with a sidecar) keeps it at the
// mesh phase, never at verify or STRICT.
func TestAmbientReadiness(t *testing.T) {
	s := ambientSnapshot()
	s.PeerAuthentications = []cluster.PeerAuthentication{peer("mesh", "default", "PERMISSIVE", 0, nil, nil)}
	if rd := nsReport(t, s, "mesh").Readiness; rd.Next != PhaseInject || !strings.Contains(rd.Reason, "not captured by ztunnel") || rd.Safe {
		t.Errorf("readiness %+v, want the mesh phase: api is not captured and legacy keeps its sidecar", rd)
	}
	s.Pods = s.Pods[:1] // only the captured web
	if rd := nsReport(t, s, "mesh").Readiness; rd.Next != PhaseVerify {
		t.Errorf("readiness %+v, want verify (PERMISSIVE, every pod captured)", rd)
	}
}
