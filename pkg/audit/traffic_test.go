package audit

import (
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

func edge(srcNS, srcWL, dstNS, dstWL, security string, count float64) traffic.Edge {
	e := traffic.Edge{Source: traffic.Endpoint{Namespace: srcNS, Workload: srcWL}, Destination: traffic.Endpoint{Namespace: dstNS, Workload: dstWL},
		Protocol: traffic.HTTP, Security: security, Count: count}
	if security == traffic.MutualTLS {
		e.Source.Principal = "cluster.local/ns/" + srcNS + "/sa/" + srcWL
	}
	return e
}

func graph(edges ...traffic.Edge) *traffic.Graph {
	return &traffic.Graph{APIVersion: traffic.APIVersion, Kind: traffic.Kind, Source: "prometheus http://127.0.0.1:9090", Window: "1d", Start: t0, End: t0.Add(24 * 60 * 60 * 1e9), Edges: edges}
}

// permissiveEstate: orders is meshed and pinned PERMISSIVE (verify is next);
// shop has a meshed cart and an unmeshed legacy worker.
func permissiveEstate() *cluster.Snapshot {
	s := snapshot()
	s.Namespaces = []cluster.Namespace{ns("orders", "istio-injection", "enabled"), ns("shop", "istio-injection", "enabled")}
	s.Pods = []cluster.Pod{
		pod("orders", "orders-1", owner("Deployment", "orders"), injected("1-30")),
		pod("shop", "cart-1", owner("Deployment", "cart"), injected("1-30")),
		pod("shop", "worker-1", owner("Deployment", "worker"), label("sidecar.istio.io/inject", "false")),
	}
	s.PeerAuthentications = []cluster.PeerAuthentication{peer("orders", "default", "PERMISSIVE", 0, nil, nil)}
	return s
}

func TestVerifyPassesOnlyOnObservedMTLS(t *testing.T) {
	s := permissiveEstate()
	n := nsReport(t, s, "orders")
	if n.Readiness.Next != PhaseVerify || n.Readiness.Safe {
		t.Fatalf("without traffic: %+v", n.Readiness)
	}
	clean := Audit(s, Observation{Graph: graph(edge("shop", "cart", "orders", "orders", traffic.MutualTLS, 500))})
	o := clean.Namespaces[0]
	if o.Traffic.Status != TrafficObserved || o.Traffic.Inbound.MTLS != 500 || o.Readiness.Next != PhaseStrict || !o.Readiness.Safe {
		t.Errorf("all mTLS: traffic %+v readiness %+v", o.Traffic, o.Readiness)
	}
	if !strings.Contains(o.Readiness.Reason, "1d since") {
		t.Errorf("the verdict must name its window: %q", o.Readiness.Reason)
	}
}

func TestNoDataIsInconclusive(t *testing.T) {
	s := permissiveEstate()
	// Traffic elsewhere but none into orders: zero plaintext of zero requests.
	r := Audit(s, Observation{Graph: graph(edge("shop", "cart", "shop", "cart", traffic.MutualTLS, 10))})
	checkContract(t, r)
	o := r.Namespaces[0]
	if o.Traffic.Status != TrafficNoData || o.Readiness.Safe || o.Readiness.Next != PhaseVerify {
		t.Errorf("no inbound traffic must not pass verify: %+v %+v", o.Traffic, o.Readiness)
	}
	// No Istio metrics at all: a finding says so.
	r = Audit(s, Observation{Graph: graph()})
	checkContract(t, r)
	if _, ok := codes(r.Findings)[CodeTelemetryMissing]; !ok || r.Namespaces[0].Readiness.Safe {
		t.Errorf("empty telemetry: findings %v readiness %+v", r.Findings, r.Namespaces[0].Readiness)
	}
}

func TestPlaintextClientsAreNamed(t *testing.T) {
	s := permissiveEstate()
	r := Audit(s, Observation{Graph: graph(
		edge("shop", "cart", "orders", "orders", traffic.MutualTLS, 500),
		edge("legacy", "unknown", "orders", "orders", traffic.Plaintext, 120),
		edge("shop", "worker", "orders", "orders", traffic.Plaintext, 30),
		edge("shop", "cart", "orders", "orders", traffic.Plaintext, 5), // e.g. a DestinationRule with tls DISABLE
	)})
	checkContract(t, r)
	o := r.Namespaces[0]
	if o.Traffic.Inbound.Plaintext != 155 || len(o.Traffic.PlaintextClients) != 3 {
		t.Fatalf("traffic = %+v", o.Traffic)
	}
	meshed := map[string]string{}
	for _, c := range o.Traffic.PlaintextClients {
		meshed[c.Name()] = c.Meshed
	}
	if meshed["unidentified clients without a sidecar"] != "no" || meshed["shop/worker"] != "no" || meshed["shop/cart"] != "yes" {
		t.Errorf("clients = %+v", o.Traffic.PlaintextClients)
	}
	if o.Readiness.Safe || o.Readiness.Next != PhaseVerify || len(o.Readiness.Blockers) != 3 {
		t.Errorf("readiness = %+v", o.Readiness)
	}
	var objs []string
	for _, f := range o.Findings {
		if f.Code == CodePlaintextClient {
			objs = append(objs, f.Object)
			if !strings.Contains(f.Message, "over 1d since") {
				t.Errorf("finding must name the window: %s", f.Message)
			}
		}
	}
	if strings.Join(objs, ",") != "Namespace/orders,Workload/shop/cart,Workload/shop/worker" {
		t.Errorf("plaintext client findings on %v", objs)
	}
	shop := r.Namespaces[1]
	if len(shop.Traffic.PlaintextOutbound) != 1 || shop.Traffic.PlaintextOutbound[0].Name() != "orders/orders" {
		t.Errorf("shop outbound = %+v", shop.Traffic.PlaintextOutbound)
	}
	if _, ok := codes(shop.Findings)[CodePlaintextOutbound]; !ok {
		t.Errorf("shop findings lack %s: %v", CodePlaintextOutbound, shop.Findings)
	}
}

func TestTrafficUnavailableIsAFindingButNoTrafficIsNot(t *testing.T) {
	s := permissiveEstate()
	r := Audit(s, Observation{Reason: "no Prometheus service found", Failed: true})
	checkContract(t, r)
	if _, ok := codes(r.Findings)[CodeTrafficUnavailable]; !ok {
		t.Errorf("findings %v", r.Findings)
	}
	r = Audit(s, Observation{Reason: "--no-traffic"})
	checkContract(t, r)
	if _, ok := codes(r.Findings)[CodeTrafficUnavailable]; ok {
		t.Errorf("--no-traffic is the user's choice, not a finding")
	}
	if r.Namespaces[0].Traffic.Status != TrafficUnknown || r.Namespaces[0].Traffic.Reason != "--no-traffic" {
		t.Errorf("traffic = %+v", r.Namespaces[0].Traffic)
	}
}

func TestAuthzNeedsObservedCallers(t *testing.T) {
	s := permissiveEstate()
	s.PeerAuthentications = []cluster.PeerAuthentication{peer("orders", "default", "STRICT", 0, nil, nil)}
	if rd := Audit(s, Observation{}).Namespaces[0].Readiness; rd.Next != PhaseAuthz || rd.Safe {
		t.Errorf("unknown traffic: %+v", rd)
	}
	rd := Audit(s, Observation{Graph: graph(edge("shop", "cart", "orders", "orders", traffic.MutualTLS, 9))}).Namespaces[0].Readiness
	if rd.Next != PhaseAuthz || !rd.Safe {
		t.Errorf("observed callers: %+v", rd)
	}
}

func TestStrictWithWeakerWorkloadPolicyIsNotDone(t *testing.T) {
	s := permissiveEstate()
	s.PeerAuthentications = []cluster.PeerAuthentication{
		peer("orders", "default", "STRICT", 0, nil, nil),
		peer("orders", "metrics", "UNSET", 1, map[string]string{"app": "orders-1"}, map[uint32]string{9090: "DISABLE"}),
	}
	s.AuthorizationPolicies = []cluster.AuthorizationPolicy{
		{Namespace: "orders", Name: "allow-nothing", Action: "ALLOW", Namespaced: true},
		{Namespace: "orders", Name: "orders", Action: "ALLOW", Rules: 1},
	}
	n := Audit(s, Observation{}).Namespaces[0]
	if n.Readiness.Next != PhaseStrict || n.Readiness.Safe || !strings.Contains(strings.Join(n.Readiness.Blockers, ";"), "DISABLE on port 9090") {
		t.Errorf("readiness = %+v: a port that accepts plaintext is not done", n.Readiness)
	}
	if f := codes(n.Findings)[CodeWorkloadMTLSOverride]; f.Severity != SeverityWarning {
		t.Errorf("override finding = %+v, want a warning", f)
	}
}

func TestVerifyBlockedByNonIstioTLSAndAutoMTLSOff(t *testing.T) {
	observed := Observation{Graph: graph(edge("shop", "cart", "orders", "orders", traffic.MutualTLS, 500))}
	s := permissiveEstate()
	s.DestinationRules = []cluster.DestinationRule{{Namespace: "shop", Name: "tls-origination", Host: "orders.orders.svc.cluster.local",
		TLS: []cluster.DRTLS{{Where: "trafficPolicy port 8443", Mode: "SIMPLE"}}}}
	n := Audit(s, observed).Namespaces[0]
	if _, ok := codes(n.Findings)[CodeDestinationRuleTLSNotIstio]; !ok || n.Readiness.Safe {
		t.Errorf("SIMPLE toward a sidecar: findings %v readiness %+v", n.Findings, n.Readiness)
	}

	s = permissiveEstate()
	s.Mesh.EnableAutoMTLS = false
	if rd := Audit(s, observed).Namespaces[0].Readiness; rd.Safe || !strings.Contains(strings.Join(rd.Blockers, ";"), "enableAutoMtls is false") {
		t.Errorf("auto mTLS off, no ISTIO_MUTUAL rule: %+v", rd)
	}
	s.DestinationRules = []cluster.DestinationRule{{Namespace: "orders", Name: "mtls", Host: "*.orders.svc.cluster.local",
		TLS: []cluster.DRTLS{{Where: "trafficPolicy", Mode: "ISTIO_MUTUAL"}}}}
	if rd := Audit(s, observed).Namespaces[0].Readiness; rd.Next != PhaseStrict || !rd.Safe {
		t.Errorf("auto mTLS off but an ISTIO_MUTUAL rule covers the namespace: %+v", rd)
	}
}

func TestPartialDestinationRulesAndMeshPolicies(t *testing.T) {
	s := permissiveEstate()
	s.Istio.DestinationRulesPartial = true
	s.AuthorizationPolicies = []cluster.AuthorizationPolicy{{Namespace: "istio-system", Name: "deny-legacy", Action: "DENY", Rules: 1}}
	r := Audit(s, Observation{Graph: graph(edge("shop", "cart", "orders", "orders", traffic.MutualTLS, 500))})
	checkContract(t, r)
	if _, ok := codes(r.Findings)[CodeDestinationRulesPartial]; !ok {
		t.Errorf("findings %v", r.Findings)
	}
	if rd := r.Namespaces[0].Readiness; rd.Safe || !strings.Contains(strings.Join(rd.Blockers, ";"), "could not be read") {
		t.Errorf("verify must not pass on a partial read: %+v", rd)
	}
	if len(r.Mesh.AuthorizationPolicies) != 1 || r.Mesh.AuthorizationPolicies[0] != "istio-system/deny-legacy (DENY)" {
		t.Errorf("mesh-wide policies = %v", r.Mesh.AuthorizationPolicies)
	}
}

func TestLongLivedPlaintextConnectionBlocks(t *testing.T) {
	s := permissiveEstate()
	long := traffic.Edge{Source: traffic.Endpoint{Namespace: "legacy", Workload: "reporting"}, Destination: traffic.Endpoint{Namespace: "orders", Workload: "orders"},
		Protocol: traffic.TCP, Security: traffic.Plaintext, Bytes: 5000}
	o := Audit(s, Observation{Graph: graph(long)}).Namespaces[0]
	if o.Traffic.Status != TrafficObserved || len(o.Traffic.PlaintextClients) != 1 || o.Readiness.Safe {
		t.Fatalf("a long-lived plaintext connection (bytes, no new connection) must block: %+v %+v", o.Traffic, o.Readiness)
	}
	if f := codes(o.Findings)[CodePlaintextClient]; !strings.Contains(f.Message, "5000 plaintext bytes over long-lived TCP connections") {
		t.Errorf("finding = %q", f.Message)
	}
}
