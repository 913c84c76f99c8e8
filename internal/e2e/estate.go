package e2e

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1beta1 "istio.io/api/security/v1beta1"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
)

// Estate is a small estate for one apply story, in namespaces of its own so
// stories do not disturb each other or the shared scenario:
//
//	PREFIX-front  no injection label; Deployment web (2 replicas)
//	PREFIX-back   labelled istio.io/rev=1-30 after Deployment api started (its
//	              pod needs a restart); a namespace-wide PERMISSIVE
//	              PeerAuthentication "legacy-pa" its team made
//
// web and api call each other (Graph, Series).
type Estate struct {
	Front, Back string
}

// NewEstate creates the estate and waits for its pods. minReady slows each
// rollout down (Deployment minReadySeconds), for stories that must catch
// apply in the middle of one.
func (s *Scenario) NewEstate(ctx context.Context, prefix string, minReady int32) (*Estate, error) {
	e := &Estate{Front: prefix + "-front", Back: prefix + "-back"}
	if err := s.namespace(ctx, e.Front, map[string]string{"team": prefix}); err != nil {
		return nil, err
	}
	if err := s.namespace(ctx, e.Back, map[string]string{"team": prefix}); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		ns, app  string
		replicas int32
	}{{e.Front, "web", 2}, {e.Back, "api", 1}} {
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: d.ns, Name: d.app, Labels: map[string]string{"app": d.app}},
			Spec: appsv1.DeploymentSpec{Replicas: int32p(d.replicas), MinReadySeconds: minReady,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": d.app}}, Template: template(d.app, nil, false)}}
		if _, err := s.Kube.AppsV1().Deployments(d.ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		if err := s.waitPods(ctx, d.ns, d.app, int(d.replicas), "Running"); err != nil {
			return nil, err
		}
	}
	if err := s.relabel(ctx, e.Back, map[string]string{"team": prefix, "istio.io/rev": "1-30"}); err != nil {
		return nil, err
	}
	pa := &clientsecv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: e.Back, Name: "legacy-pa",
		Labels: map[string]string{"owner": "platform"}, Annotations: map[string]string{"note": "made by hand"}},
		Spec: securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE}}}
	if _, err := s.Istio.SecurityV1().PeerAuthentications(e.Back).Create(ctx, pa, metav1.CreateOptions{FieldManager: HandMade}); err != nil {
		return nil, err
	}
	return e, nil
}

// Graph is a recorded traffic graph for planning the estate: web and api
// call each other over mTLS.
func (e *Estate) Graph() string {
	return fmt.Sprintf(`apiVersion: meshmigrate.io/v1alpha1
kind: TrafficGraph
source: recorded for an apply e2e story
window: 24h
start: "2026-01-01T00:00:00Z"
end: "2026-01-02T00:00:00Z"
edges:
- source: {namespace: %[1]s, workload: web, principal: cluster.local/ns/%[1]s/sa/default}
  destination: {namespace: %[2]s, workload: api, service: api}
  protocol: http
  security: mutual_tls
  count: 100
- source: {namespace: %[2]s, workload: api, principal: cluster.local/ns/%[2]s/sa/default}
  destination: {namespace: %[1]s, workload: web, service: web}
  protocol: http
  security: mutual_tls
  count: 50
`, e.Front, e.Back)
}

// Series is the live telemetry of the meshed estate: mTLS both ways, and
// the sidecars' dry-run authorization decisions, all allowed, from every
// pod of web and api.
func (e *Estate) Series() []Series {
	return []Series{
		Edge("istio_requests_total", e.Front+"/web", e.Back+"/api", "mutual_tls", 10),
		Edge("istio_requests_total", e.Back+"/api", e.Front+"/web", "mutual_tls", 5),
		ShadowDecisions(e.Front+"/web", "http", "allowed", 5),
		ShadowDecisions(e.Back+"/api", "http", "allowed", 5),
	}
}

// EnforcedDenials is the Envoy RBAC stat each sidecar of app reports for
// the requests its enforced policies denied (authz_enforce_result, the tag
// Istio's bootstrap extracts from the filter's "denied" stat).
func EnforcedDenials(app string, perScrape float64) Series {
	return Series{Metric: "envoy_http_rbac", PerScrape: perScrape, PodsOf: app, Labels: map[string]string{
		"http_conn_manager_prefix": "inbound_0.0.0.0_8080", "authz_enforce_result": "denied"}}
}

// ShadowDecisions is the Envoy RBAC stat each sidecar of app
// ("namespace/app") reports for the requests (protocol "http") or
// connections ("tcp") its dry-run policies judged, result "allowed" or
// "denied", named as Istio 1.23.1 and later name them: the HTTP filter's
// envoy_http_rbac with the listener in http_conn_manager_prefix, and the
// network filter's counter, whose stat prefix "tcp." leaves the name
// envoy_tcp_ and the rest in tcp_prefix (tools/packaging/common/envoy_bootstrap.json).
func ShadowDecisions(app, protocol, result string, perScrape float64) Series {
	s := Series{Metric: "envoy_http_rbac", PerScrape: perScrape, PodsOf: app, Labels: map[string]string{
		"http_conn_manager_prefix": "inbound_0.0.0.0_8080", "authz_dry_run_action": "allow", "authz_dry_run_result": result}}
	if protocol == "tcp" {
		s.Metric, s.Labels = "envoy_tcp_", map[string]string{"tcp_prefix": "rbac.istio_dry_run_allow_", "authz_dry_run_action": "allow", "authz_dry_run_result": result}
	}
	return s
}
