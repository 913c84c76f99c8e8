package phases

import (
	"strings"
	"testing"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

func pod(name, workload, state string) audit.Pod {
	return audit.Pod{Name: name, Workload: workload, State: state}
}

func podsReport(items ...audit.Pod) *audit.NamespaceReport {
	nr := &audit.NamespaceReport{Name: "shop"}
	for _, p := range items {
		nr.Pods.Total++
		if p.State == audit.PodMeshed {
			nr.Pods.Meshed++
		}
		nr.Pods.Items = append(nr.Pods.Items, p)
	}
	return nr
}

func TestSidecarsGate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pods     []audit.Pod
		stayOut  map[string]bool
		want     Verdict
		culprits []string
	}{
		{"all meshed", []audit.Pod{pod("web-1", "Deployment/web", audit.PodMeshed), pod("db-0", "StatefulSet/db", audit.PodMeshed)},
			nil, GatePassed, nil},
		{"needs restart", []audit.Pod{pod("web-1", "Deployment/web", audit.PodMeshed), pod("web-2", "Deployment/web", audit.PodNeedsRestart)},
			nil, GateFailed, []string{"pod web-2 (Deployment/web): needs-restart"}},
		{"old revision", []audit.Pod{pod("db-0", "StatefulSet/db", audit.PodWrongRevision)},
			nil, GateFailed, []string{"pod db-0 (StatefulSet/db): wrong-revision"}},
		{"not selected", []audit.Pod{pod("api-1", "Deployment/api", audit.PodNotSelected)},
			nil, GateFailed, []string{"pod api-1 (Deployment/api): not-selected"}},
		// --exclude-workload: the plan leaves it out, the gate does not wait.
		{"stay-out workload", []audit.Pod{pod("web-1", "Deployment/web", audit.PodMeshed), pod("batch-1", "Deployment/batch", audit.PodNeedsRestart)},
			map[string]bool{"Deployment/batch": true}, GatePassed, nil},
		{"opted out and not injectable", []audit.Pod{pod("web-1", "Deployment/web", audit.PodMeshed),
			pod("agent-x", "DaemonSet/agent", audit.PodNotInjectable), pod("cron-1", "Deployment/cron", audit.PodSidecarNotExpected)},
			nil, GatePassed, nil},
		{"culprits sorted", []audit.Pod{pod("web-2", "Deployment/web", audit.PodNeedsRestart), pod("api-1", "Deployment/api", audit.PodNeedsRestart)},
			nil, GateFailed, []string{"pod api-1 (Deployment/api): needs-restart", "pod web-2 (Deployment/web): needs-restart"}},
	} {
		g := SidecarsGate(podsReport(tc.pods...), tc.stayOut, t0)
		if g.Name != "sidecars-current" || g.Result != tc.want || !g.At.Equal(t0) {
			t.Errorf("%s: gate %s %s at %s, want %s", tc.name, g.Name, g.Result, g.At, tc.want)
		}
		if strings.Join(g.Culprits, "|") != strings.Join(tc.culprits, "|") {
			t.Errorf("%s: culprits %q, want %q", tc.name, g.Culprits, tc.culprits)
		}
		if tc.want == GateFailed && !strings.Contains(g.Message, "lack a current sidecar") {
			t.Errorf("%s: message %q does not say what is wrong", tc.name, g.Message)
		}
	}
}

func TestSidecarsGateSaysWhoStaysOut(t *testing.T) {
	g := SidecarsGate(podsReport(pod("web-1", "Deployment/web", audit.PodMeshed), pod("agent-x", "DaemonSet/agent", audit.PodNotInjectable)), nil, t0)
	if g.Message != "1 of 2 pods meshed; the others stay out as planned" {
		t.Errorf("message %q", g.Message)
	}
}

func TestPinnedGate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mtls audit.MTLS
		want Verdict
		msg  string
	}{
		{"pinned", audit.MTLS{Mode: cluster.ModePermissive, Source: "namespace", Policy: "shop/default"},
			GatePassed, "PERMISSIVE from PeerAuthentication shop/default"},
		// PERMISSIVE, but only because the mesh says so: a mesh-wide
		// change would move the namespace.
		{"inherited", audit.MTLS{Mode: cluster.ModePermissive, Source: "mesh", Policy: "istio-system/default"},
			GateFailed, "effective mode PERMISSIVE from mesh, want PERMISSIVE from the namespace's policy"},
		{"no policy yet", audit.MTLS{Mode: cluster.ModePermissive, Source: "default"}, GateFailed, "from default"},
		{"wrong mode", audit.MTLS{Mode: cluster.ModeStrict, Source: "namespace", Policy: "shop/default"}, GateFailed, "effective mode STRICT"},
	} {
		g := PinnedGate(&audit.NamespaceReport{Name: "shop", MTLS: tc.mtls}, cluster.ModePermissive, t0)
		if g.Name != "peer-authentication-in-force" || g.Result != tc.want || !strings.Contains(g.Message, tc.msg) {
			t.Errorf("%s: %s %s %q, want %s containing %q", tc.name, g.Name, g.Result, g.Message, tc.want, tc.msg)
		}
	}
}

func TestPinnedGateNamesIgnoredPolicies(t *testing.T) {
	nr := &audit.NamespaceReport{MTLS: audit.MTLS{Mode: cluster.ModePermissive, Source: "mesh",
		Ignored: []string{"shop/default-2: a second namespace-wide policy; Istio ignores all but the oldest"}}}
	g := PinnedGate(nr, cluster.ModePermissive, t0)
	if g.Result != GateFailed || len(g.Culprits) != 1 || !strings.Contains(g.Culprits[0], "shop/default-2") {
		t.Errorf("gate %s, culprits %q: the ignored policy is why it fails", g.Result, g.Culprits)
	}
}

// meshedPermissive is a namespace whose pods are all meshed, pinned
// PERMISSIVE: what the verify gate judges.
func meshedPermissive() *audit.NamespaceReport {
	nr := podsReport(pod("web-1", "Deployment/web", audit.PodMeshed))
	nr.MTLS = audit.MTLS{Mode: cluster.ModePermissive, Source: "namespace", Policy: "shop/default"}
	return nr
}

func TestVerifyGatePasses(t *testing.T) {
	for _, next := range []string{audit.PhaseStrict, audit.PhaseAuthz, audit.PhaseDone} {
		nr := meshedPermissive()
		nr.Traffic = audit.Traffic{Status: audit.TrafficObserved, Window: "24h", Inbound: audit.TrafficCounts{Total: 420, MTLS: 420}}
		nr.Readiness = audit.Readiness{Next: next, Safe: true, Reason: "verified: 420 inbound requests/connections, all mTLS, over 24h"}
		g := VerifyGate(nr, Expect{}, t0)
		if g.Name != "no-plaintext" || g.Result != GatePassed || g.Message != nr.Readiness.Reason || len(g.Culprits) != 0 {
			t.Errorf("next %s: %+v, want passed with the audit's reason", next, g)
		}
	}
}

func TestVerifyGateNamesPlaintextClients(t *testing.T) {
	nr := meshedPermissive()
	nr.Traffic = audit.Traffic{Status: audit.TrafficObserved, Window: "24h", Inbound: audit.TrafficCounts{Total: 427, MTLS: 420, Plaintext: 7},
		PlaintextClients: []audit.Client{{Namespace: "legacy", Workload: "batch", Meshed: "no", Destinations: []string{"web"}, Protocols: []string{"http"}, Count: 7}}}
	nr.Readiness = audit.Readiness{Next: audit.PhaseVerify, Reason: "PERMISSIVE and meshed: verify that no plaintext arrives before STRICT",
		Blockers: []string{"plaintext from legacy/batch (7 requests over 24h)"}}
	g := VerifyGate(nr, Expect{}, t0)
	if g.Result != GateFailed {
		t.Fatalf("result %s, want failed: a plaintext caller would break under STRICT", g.Result)
	}
	want := []string{"legacy/batch (sidecar: no) -> web: 7 plaintext http", "plaintext from legacy/batch (7 requests over 24h)"}
	if strings.Join(g.Culprits, "|") != strings.Join(want, "|") {
		t.Errorf("culprits %q, want %q", g.Culprits, want)
	}
	if !strings.Contains(g.Message, "window: 24h") {
		t.Errorf("message %q does not name the window", g.Message)
	}
}

func TestVerifyGateWithoutTrafficIsInconclusive(t *testing.T) {
	for _, tr := range []audit.Traffic{
		{Status: audit.TrafficNoData, Reason: "no inbound requests in Prometheus", Window: "24h"},
		{Status: audit.TrafficUnknown, Reason: "--no-traffic"},
	} {
		nr := meshedPermissive()
		nr.Traffic = tr
		nr.Readiness = audit.Readiness{Next: audit.PhaseVerify, Reason: "PERMISSIVE and meshed: verify that no plaintext arrives before STRICT",
			Blockers: []string{"inconclusive: " + tr.Reason}}
		g := VerifyGate(nr, Expect{}, t0)
		if g.Result != GateUnsettled {
			t.Errorf("%s: result %s, want inconclusive (zero requests are never a pass)", tr.Status, g.Result)
		}
		if !strings.Contains(g.Message, "no inbound traffic observed yet ("+tr.Reason+")") || !strings.Contains(g.Message, "re-run once the namespace has served traffic") {
			t.Errorf("%s: message %q does not say what to do", tr.Status, g.Message)
		}
	}
}

func TestVerifyGateNoTrafficAndAnotherBlockerFails(t *testing.T) {
	for name, change := range map[string]func(*audit.NamespaceReport){
		"unmeshed pod": func(nr *audit.NamespaceReport) { nr.Pods.NotMeshed = 1 },
		"tls disabled": func(nr *audit.NamespaceReport) {
			nr.DestinationRules = []audit.DestinationRuleTLS{{Policy: "legacy/to-shop", Host: "web.shop.svc.cluster.local", Mode: "DISABLE"}}
		},
	} {
		nr := meshedPermissive()
		nr.Traffic = audit.Traffic{Status: audit.TrafficNoData, Reason: "no inbound requests"}
		nr.Readiness = audit.Readiness{Next: audit.PhaseVerify, Blockers: []string{"inconclusive: no inbound requests", "something else"}}
		change(nr)
		if g := VerifyGate(nr, Expect{}, t0); g.Result != GateFailed {
			t.Errorf("%s: result %s, want failed: traffic would not fix it", name, g.Result)
		}
	}
}

func TestShadowGate(t *testing.T) {
	web := "Deployment/web"
	for _, tc := range []struct {
		name    string
		tallies map[string]ShadowTally
		covered []string
		want    Verdict
		msg     string
	}{
		{"denials", map[string]ShadowTally{web: {Denied: 3, Decisions: 120, Protocols: []string{"http"}}}, []string{web}, GateFailed, "would have denied 3 of 120 requests and connections over 1h"},
		{"nothing", nil, nil, GateUnsettled, "no dry-run decision recorded over 1h: zero requests are not a pass"},
		{"judged", map[string]ShadowTally{web: {Decisions: 120}}, []string{web}, GatePassed, "120 requests and connections judged by the dry-run policies over 1h, none denied"},
	} {
		g := ShadowGate(tc.tallies, tc.covered, "1h", t0)
		if g.Name != "no-shadow-denials" || g.Result != tc.want || !strings.Contains(g.Message, tc.msg) {
			t.Errorf("%s: ShadowGate = %s %q, want %s containing %q", tc.name, g.Result, g.Message, tc.want, tc.msg)
		}
	}
	if g := ShadowGate(map[string]ShadowTally{web: {Denied: 1, Decisions: 1}}, []string{web}, "1h", t0); !strings.Contains(g.Message, "widen the ALLOW policies") {
		t.Errorf("a failed shadow gate does not say what to do: %q", g.Message)
	}
}

// A busy workload must not hide a silent one: each workload an ALLOW
// policy covers needs dry-run decisions of its own.
func TestShadowGatePerWorkloadSilentWorkloadInconclusive(t *testing.T) {
	tallies := map[string]ShadowTally{"Deployment/web": {Decisions: 5000, Protocols: []string{"http"}}}
	g := ShadowGate(tallies, []string{"Deployment/web", "StatefulSet/db"}, "1h", t0)
	if g.Result != GateUnsettled {
		t.Fatalf("result %s (%s), want inconclusive: db's policy was never exercised", g.Result, g.Message)
	}
	if len(g.Culprits) != 1 || !strings.HasPrefix(g.Culprits[0], "StatefulSet/db: no dry-run decision") {
		t.Errorf("culprits %q, want db named", g.Culprits)
	}
	// TCP decisions count: a database judged over TCP passes.
	tallies["StatefulSet/db"] = ShadowTally{Decisions: 12, Protocols: []string{"tcp"}}
	if g := ShadowGate(tallies, []string{"Deployment/web", "StatefulSet/db"}, "1h", t0); g.Result != GatePassed {
		t.Errorf("with db judged over TCP: %s (%s), want passed", g.Result, g.Message)
	}
	// A TCP denial fails, named.
	tallies["StatefulSet/db"] = ShadowTally{Denied: 2, Decisions: 12, Protocols: []string{"tcp"}}
	g = ShadowGate(tallies, []string{"Deployment/web", "StatefulSet/db"}, "1h", t0)
	if g.Result != GateFailed || len(g.Culprits) != 1 || g.Culprits[0] != "StatefulSet/db: 2 of 12 tcp would be denied" {
		t.Errorf("TCP denial: %s %q", g.Result, g.Culprits)
	}
}

func passingReport() *audit.NamespaceReport {
	nr := podsReport(pod("web-1", "Deployment/web", audit.PodMeshed), pod("api-1", "Deployment/api", audit.PodMeshed))
	nr.MTLS = audit.MTLS{Mode: cluster.ModePermissive, Source: "namespace"}
	nr.Readiness = audit.Readiness{Next: audit.PhaseStrict, Reason: "all inbound traffic is mTLS"}
	nr.Traffic = audit.Traffic{Status: audit.TrafficObserved, Window: "10m", Edges: []traffic.Edge{
		{Source: traffic.Endpoint{Namespace: "front", Workload: "ui"}, Destination: traffic.Endpoint{Namespace: "shop", Workload: "web"},
			Protocol: traffic.HTTP, Security: traffic.MutualTLS, Count: 1}}}
	return nr
}

// One mTLS request to one busy workload passed the gate; now each workload
// that served traffic at plan time must serve some in the window.
func TestVerifyGateThinWindowSilentWorkloadInconclusive(t *testing.T) {
	nr := passingReport()
	if g := VerifyGate(nr, Expect{}, t0); g.Result != GatePassed {
		t.Fatalf("without expectations: %s (%s), want passed", g.Result, g.Message)
	}
	g := VerifyGate(nr, Expect{Inbound: []string{"api", "web"}}, t0)
	if g.Result != GateUnsettled || len(g.Culprits) != 1 || !strings.Contains(g.Culprits[0], "workload shop/api: it served traffic over the plan's window") {
		t.Errorf("api silent: %s %q (%s), want inconclusive naming api", g.Result, g.Culprits, g.Message)
	}
}

// The callers the plan expects to clear must be seen arriving over mTLS.
func TestVerifyGateExpectedCallerUnseenInconclusive(t *testing.T) {
	nr := passingReport()
	g := VerifyGate(nr, Expect{Callers: []string{"front/ui", "legacy/cron"}, Inbound: []string{"web"}}, t0)
	if g.Result != GateUnsettled || len(g.Culprits) != 1 || !strings.HasPrefix(g.Culprits[0], "caller legacy/cron: the plan expects it to arrive over mTLS") {
		t.Errorf("%s %q, want inconclusive naming legacy/cron only", g.Result, g.Culprits)
	}
	// A caller seen in plaintext only does not count as arriving over mTLS.
	nr.Traffic.Edges = append(nr.Traffic.Edges, traffic.Edge{Source: traffic.Endpoint{Namespace: "legacy", Workload: "cron"},
		Destination: traffic.Endpoint{Namespace: "shop", Workload: "web"}, Protocol: traffic.TCP, Security: traffic.MutualTLS, Bytes: 10})
	if g := VerifyGate(nr, Expect{Callers: []string{"front/ui", "legacy/cron"}, Inbound: []string{"web"}}, t0); g.Result != GatePassed {
		t.Errorf("both callers seen over mTLS: %s %q", g.Result, g.Culprits)
	}
}

func TestShortWindowGate(t *testing.T) {
	since := t0.Add(-90 * time.Second)
	g := ShortWindowGate("no-plaintext", 90*time.Second, 10*time.Minute, since, "when the namespace was meshed", t0)
	if g.Result != GateUnsettled || !strings.Contains(g.Message, "under the plan's minimum of 10m0s") || !strings.Contains(g.Message, since.Add(10*time.Minute).Format(time.RFC3339)) {
		t.Errorf("%s %q", g.Result, g.Message)
	}
}
