package audit

import (
	"encoding/json"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/istiofixture"
	"github.com/meshmigrate/kubectl-meshmigrate/internal/nonnil"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/schema"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// snapshot returns a snapshot of a cluster with Istio's default revision
// "1-30" installed as the default, with tag "canary" -> 1-30, a second
// revision "1-31", and its policies readable.
func snapshot() *cluster.Snapshot {
	inj := istiofixture.Injectors("1-30", true, "canary")
	inj = append(inj, istiofixture.Injectors("1-31", false)...)
	return &cluster.Snapshot{
		TakenAt:         t0,
		Injectors:       inj,
		IstiodNamespace: "istio-system",
		Mesh:            cluster.MeshConfig{RootNamespace: "istio-system", TrustDomain: "cluster.local", EnableAutoMTLS: true, Source: "istio-system/istio"},
		Istio:           cluster.IstioAvailability{PoliciesReadable: true, SecurityVersion: "v1", NetworkingVersion: "v1"},
	}
}

func ns(name string, labels ...string) cluster.Namespace {
	n := cluster.Namespace{Name: name, UID: "uid-" + name}
	for i := 0; i+1 < len(labels); i += 2 {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[labels[i]] = labels[i+1]
	}
	return n
}

type podOpt func(*cluster.Pod)

func pod(namespace, name string, opts ...podOpt) cluster.Pod {
	p := cluster.Pod{Namespace: namespace, Name: name, Phase: "Running",
		Labels:     map[string]string{"app": name},
		Containers: []cluster.Container{{Name: "app", Image: "app:1"}},
		Owner:      cluster.WorkloadRef{Kind: "Deployment", Name: name}}
	for _, o := range opts {
		o(&p)
	}
	return p
}

// injected adds a classic sidecar injected by revision rev, as Istio's
// injector does: the istio-proxy container, the istio-init init container,
// and the status and istio.io/rev annotations.
func injected(rev string) podOpt {
	return func(p *cluster.Pod) {
		p.Containers = append(p.Containers, cluster.Container{Name: "istio-proxy", Image: "proxyv2:" + rev})
		p.InitContainers = append(p.InitContainers, cluster.Container{Name: "istio-init"})
		annotate("sidecar.istio.io/status", `{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":[],"imagePullSecrets":null,"revision":"`+rev+`"}`)(p)
		annotate("istio.io/rev", rev)(p)
	}
}

// nativeInjected adds a native sidecar: istio-proxy as an init container
// with restartPolicy Always.
func nativeInjected(rev string) podOpt {
	return func(p *cluster.Pod) {
		p.InitContainers = append(p.InitContainers, cluster.Container{Name: "istio-validation"}, cluster.Container{Name: "istio-proxy", RestartAlways: true})
		annotate("sidecar.istio.io/status", `{"initContainers":["istio-validation","istio-proxy"],"containers":null,"revision":"`+rev+`"}`)(p)
	}
}

func annotate(k, v string) podOpt {
	return func(p *cluster.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

func label(k, v string) podOpt { return func(p *cluster.Pod) { p.Labels[k] = v } }

func owner(kind, name string) podOpt {
	return func(p *cluster.Pod) { p.Owner = cluster.WorkloadRef{Kind: kind, Name: name} }
}

func peer(namespace, name, mode string, age int, selector map[string]string, ports map[uint32]string) cluster.PeerAuthentication {
	return cluster.PeerAuthentication{Namespace: namespace, Name: name, Mode: mode, CreatedAt: t0.Add(time.Duration(age) * time.Minute), Selector: selector, PortModes: ports}
}

// checkContract fails unless the report, encoded as `audit -o json` prints
// it, matches schema/auditreport.json: every fixture tests the schema's
// enums and shapes.
func checkContract(t interface{ Fatalf(string, ...any) }, r *Report) {
	nonnil.Fill(r)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("encode the report: %v", err)
	}
	if err := schema.Check(schema.AuditReport, b); err != nil {
		t.Fatalf("the report breaks its schema: %v\n%s", err, b)
	}
}

// nsReport audits the snapshot and returns the named namespace's report.
func nsReport(t interface{ Fatalf(string, ...any) }, s *cluster.Snapshot, name string) NamespaceReport {
	r := Audit(s, Observation{})
	checkContract(t, r)
	for _, n := range r.Namespaces {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("namespace %s not in report", name)
	return NamespaceReport{}
}

func codes(fs []Finding) map[string]Finding {
	m := map[string]Finding{}
	for _, f := range fs {
		m[f.Code] = f
	}
	return m
}
