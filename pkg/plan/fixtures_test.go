package plan_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/istiofixture"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
	"github.com/meshmigrate/kubectl-meshmigrate/schema"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// estate is a cluster with Istio revision 1-30 installed as the default
// injector, auto mTLS on, trust domain cluster.local and its policies
// readable. Tests add namespaces, pods and edges.
func estate() *cluster.Snapshot {
	return &cluster.Snapshot{
		TakenAt:         t0,
		Context:         "prod",
		Server:          "https://10.0.0.1:6443",
		ClusterUID:      "uid-kube-system",
		Injectors:       istiofixture.Injectors("1-30", true),
		IstiodNamespace: "istio-system",
		Mesh:            cluster.MeshConfig{RootNamespace: "istio-system", TrustDomain: "cluster.local", EnableAutoMTLS: true, Source: "istio-system/istio"},
		Istio:           cluster.IstioAvailability{PoliciesReadable: true, SecurityVersion: "v1", NetworkingVersion: "v1"},
	}
}

func ns(name string, labels ...string) cluster.Namespace {
	n := cluster.Namespace{Name: name, UID: "uid-" + name, ResourceVersion: "1"}
	for i := 0; i+1 < len(labels); i += 2 {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[labels[i]] = labels[i+1]
	}
	return n
}

type podOpt func(*cluster.Pod)

// workload returns the running pods of a controller the way Kubernetes
// labels them: app=<name> plus the controller's volatile labels
// (pod-template-hash for a Deployment, which all pods of one ReplicaSet
// share; the pod name and controller revision for a StatefulSet). Each pod
// runs as service account <name>.
func workload(namespace, kind, name string, replicas int, opts ...podOpt) []cluster.Pod {
	var pods []cluster.Pod
	for i := 0; i < replicas; i++ {
		p := cluster.Pod{Namespace: namespace, Phase: "Running", ServiceAccount: name,
			Labels:     map[string]string{"app": name},
			Containers: []cluster.Container{{Name: "app", Image: name + ":1"}},
			Owner:      cluster.WorkloadRef{Kind: kind, Name: name}, CreatedAt: t0.Add(-time.Hour)}
		switch kind {
		case "Deployment":
			p.Name = fmt.Sprintf("%s-5d8f7c9b4-%d", name, i)
			p.Labels["pod-template-hash"] = "5d8f7c9b4"
		case "StatefulSet":
			p.Name = fmt.Sprintf("%s-%d", name, i)
			p.Labels["statefulset.kubernetes.io/pod-name"] = p.Name
			p.Labels["controller-revision-hash"] = name + "-6b9c"
		case "DaemonSet":
			p.Name = fmt.Sprintf("%s-node%d", name, i)
			p.Labels["controller-revision-hash"] = name + "-7f4d"
			p.Labels["pod-template-generation"] = "1"
		default:
			p.Name = fmt.Sprintf("%s-%d", name, i)
		}
		for _, o := range opts {
			o(&p)
		}
		pods = append(pods, p)
	}
	return pods
}

func deploy(namespace, name string, replicas int, opts ...podOpt) []cluster.Pod {
	return workload(namespace, "Deployment", name, replicas, opts...)
}

// injected adds a classic sidecar of revision rev as Istio's injector does.
func injected(rev string) podOpt {
	return func(p *cluster.Pod) {
		p.Containers = append(p.Containers, cluster.Container{Name: "istio-proxy", Image: "proxyv2:" + rev})
		p.InitContainers = append(p.InitContainers, cluster.Container{Name: "istio-init"})
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations["sidecar.istio.io/status"] = `{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":[],"imagePullSecrets":null,"revision":"` + rev + `"}`
		p.Annotations["istio.io/rev"] = rev
		p.Labels["security.istio.io/tlsMode"] = "istio"
		p.Labels["service.istio.io/canonical-name"] = p.Owner.Name
	}
}

func podLabel(k, v string) podOpt { return func(p *cluster.Pod) { p.Labels[k] = v } }

func hostNetwork() podOpt { return func(p *cluster.Pod) { p.HostNetwork = true } }

func pods(groups ...[]cluster.Pod) []cluster.Pod {
	var out []cluster.Pod
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// split cuts "ns/workload".
func split(ref string) (string, string) {
	ns, wl, _ := strings.Cut(ref, "/")
	return ns, wl
}

// mtls is an edge as a destination sidecar reports it for an mTLS caller:
// the caller's principal is cluster.local/ns/<ns>/sa/<workload>.
func mtls(src, dst string, port int) traffic.Edge {
	sns, swl := split(src)
	return mtlsAs(src, "cluster.local/ns/"+sns+"/sa/"+swl, dst, port)
}

func mtlsAs(src, principal, dst string, port int) traffic.Edge {
	sns, swl := split(src)
	dns, dwl := split(dst)
	return traffic.Edge{Source: traffic.Endpoint{Namespace: sns, Workload: swl, Principal: principal},
		Destination: traffic.Endpoint{Namespace: dns, Workload: dwl}, Port: port,
		Protocol: traffic.HTTP, Security: traffic.MutualTLS, Count: 100}
}

// plain is a plaintext edge; src "unknown" is a caller Istio cannot name
// (no sidecar on the client side).
func plain(src, dst string) traffic.Edge {
	sns, swl := split(src)
	if src == traffic.UnknownWorkload {
		sns, swl = "", traffic.UnknownWorkload
	}
	dns, dwl := split(dst)
	return traffic.Edge{Source: traffic.Endpoint{Namespace: sns, Workload: swl},
		Destination: traffic.Endpoint{Namespace: dns, Workload: dwl},
		Protocol:    traffic.HTTP, Security: traffic.Plaintext, Count: 7}
}

func graphOf(edges ...traffic.Edge) *traffic.Graph {
	return &traffic.Graph{APIVersion: traffic.APIVersion, Kind: traffic.Kind, Source: "prometheus http://prometheus:9090",
		Window: "7d", Start: t0.Add(-7 * 24 * time.Hour), End: t0, Edges: edges}
}

// build audits the snapshot with the graph and builds the plan, as
// `kubectl meshmigrate plan` does. Every plan a test builds must match
// schema/migrationplan.json.
func build(t testing.TB, s *cluster.Snapshot, g *traffic.Graph, opts plan.Options) *plan.Plan {
	t.Helper()
	p, err := tryBuild(s, g, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	b, err := p.Marshal(true)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if err := schema.Check(schema.MigrationPlan, b); err != nil {
		t.Fatalf("the plan breaks its schema: %v\n%s", err, b)
	}
	return p
}

func tryBuild(s *cluster.Snapshot, g *traffic.Graph, opts plan.Options) (*plan.Plan, error) {
	obs := audit.Observation{Graph: g}
	if g == nil {
		obs.Reason = "--no-traffic"
	}
	r := audit.Audit(s, obs)
	return plan.Build(plan.Input{Snapshot: s, Report: r, Graph: g}, opts)
}

func nsOf(t testing.TB, p *plan.Plan, name string) *plan.Namespace {
	t.Helper()
	n, ok := p.Namespace(name)
	if !ok {
		t.Fatalf("plan has no namespace %s (namespaces %v, skipped %v)", name, names(p), p.Skipped)
	}
	return n
}

func names(p *plan.Plan) []string {
	var out []string
	for _, n := range p.Namespaces {
		out = append(out, n.Name)
	}
	return out
}

func phaseOf(t testing.TB, p *plan.Plan, namespace string, phase plan.PhaseName) *plan.Phase {
	t.Helper()
	ph, ok := nsOf(t, p, namespace).Phase(phase)
	if !ok {
		t.Fatalf("namespace %s has no phase %s", namespace, phase)
	}
	return ph
}

// steps returns the phase's steps on target (the authz phase holds a
// dry-run and an enforced copy of each policy).
func steps(ph *plan.Phase, target string) []plan.Step {
	var out []plan.Step
	for _, st := range ph.Steps {
		if st.Target == target {
			out = append(out, st)
		}
	}
	return out
}

func oneStep(t testing.TB, ph *plan.Phase, target string) plan.Step {
	t.Helper()
	s := steps(ph, target)
	if len(s) != 1 {
		t.Fatalf("phase %s: %d steps on %s, want 1; steps: %s", ph.Name, len(s), target, describeSteps(ph.Steps))
	}
	return s[0]
}

func describeSteps(steps []plan.Step) string {
	var b strings.Builder
	for i, st := range steps {
		fmt.Fprintf(&b, "\n  [%d] %s %s %s: %s", i, st.Action, st.Target, st.Status, st.Reason)
	}
	return b.String()
}

// get walks a manifest by keys.
func get(obj map[string]any, path ...string) any {
	var cur any = obj
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// applyLabels is what a label-namespace step leaves on the namespace.
func applyLabels(cur map[string]string, st plan.Step) map[string]string {
	out := map[string]string{}
	for k, v := range cur {
		out[k] = v
	}
	for k, v := range st.Labels {
		out[k] = v
	}
	for _, k := range st.Remove {
		delete(out, k)
	}
	return out
}

func wavesOf(p *plan.Plan) [][]string {
	var out [][]string
	for _, w := range p.Waves {
		out = append(out, w.Namespaces)
	}
	return out
}

// blockedCount walks the plan the way a reviewer would: every blocked step,
// plus every blocked phase that holds no blocked step.
func blockedCount(p *plan.Plan) int {
	n := 0
	for _, ns := range p.Namespaces {
		for _, ph := range ns.Phases {
			inSteps := 0
			for _, st := range ph.Steps {
				if st.Status == plan.StatusBlocked {
					inSteps++
				}
			}
			n += inSteps
			if inSteps == 0 && ph.Status == plan.StatusBlocked {
				n++
			}
		}
	}
	return n
}
