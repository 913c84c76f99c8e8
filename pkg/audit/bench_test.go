package audit

import (
	"fmt"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// benchSnapshot is an estate of namespaces x podsPerNS pods in mixed states:
// a third unlabelled, a third labelled with pods awaiting restart, a third
// meshed and STRICT, with workload policies and DestinationRules around.
func benchSnapshot(namespaces, podsPerNS int) *cluster.Snapshot {
	s := snapshot()
	for i := 0; i < namespaces; i++ {
		name := fmt.Sprintf("team-%03d", i)
		switch i % 3 {
		case 0:
			s.Namespaces = append(s.Namespaces, ns(name))
		case 1:
			s.Namespaces = append(s.Namespaces, ns(name, "istio-injection", "enabled"))
			s.PeerAuthentications = append(s.PeerAuthentications, peer(name, "default", "PERMISSIVE", i, nil, nil))
		case 2:
			s.Namespaces = append(s.Namespaces, ns(name, "istio.io/rev", "canary"))
			s.PeerAuthentications = append(s.PeerAuthentications,
				peer(name, "default", "STRICT", i, nil, nil),
				peer(name, "metrics", "UNSET", i+1, map[string]string{"app": "app-0"}, map[uint32]string{9090: "PERMISSIVE"}))
		}
		s.DestinationRules = append(s.DestinationRules, cluster.DestinationRule{Namespace: name, Name: "dr", Host: "app-1",
			TLS: []cluster.DRTLS{{Where: "trafficPolicy", Mode: "ISTIO_MUTUAL"}}})
		for j := 0; j < podsPerNS; j++ {
			opts := []podOpt{owner("Deployment", fmt.Sprintf("app-%d", j%10)), label("app", fmt.Sprintf("app-%d", j%10))}
			if i%3 == 2 || (i%3 == 1 && j%2 == 0) {
				opts = append(opts, injected("1-30"))
			}
			s.Pods = append(s.Pods, pod(name, fmt.Sprintf("app-%d-%d", j%10, j), opts...))
		}
	}
	return s
}

// BenchmarkAudit audits 500 namespaces and 20,000 pods. Run with
// `make bench`; it reports ns/op and allocations.
func BenchmarkAudit(b *testing.B) {
	s := benchSnapshot(500, 40)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := Audit(s, Observation{})
		if len(r.Namespaces) != 500 {
			b.Fatal("wrong report")
		}
	}
}
