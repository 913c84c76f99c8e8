package plan_test

import (
	"fmt"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// benchEstate is namespaces x workloads x pods with 10 inbound edges per
// workload: a third of the namespaces unlabelled, a third labelled and
// meshed, a third selecting revision 1-30 with pods to restart. Each
// workload is called over mTLS by six neighbours (with ports) and two
// workloads elsewhere (without), and in plaintext by the same workload of a
// "platform" namespace (the first 20, which makes waves) and of the
// namespace 20 below (more waves), or by unidentified clients.
func benchEstate(namespaces, workloads, pods int) (*cluster.Snapshot, *traffic.Graph) {
	s := estate()
	g := graphOf()
	name := func(i int) string { return fmt.Sprintf("team-%03d", i) }
	svc := func(j int) string { return fmt.Sprintf("svc-%02d", j) }
	for i := 0; i < namespaces; i++ {
		var opts []podOpt
		switch i % 3 {
		case 0:
			s.Namespaces = append(s.Namespaces, ns(name(i)))
		case 1:
			s.Namespaces = append(s.Namespaces, ns(name(i), labelInjection, "enabled"))
			opts = append(opts, injected("1-30"))
		case 2:
			s.Namespaces = append(s.Namespaces, ns(name(i), labelRev, "1-30"))
		}
		for j := 0; j < workloads; j++ {
			kind := "Deployment"
			if j == workloads-1 {
				kind = "StatefulSet"
			}
			s.Pods = append(s.Pods, workload(name(i), kind, svc(j), pods, opts...)...)
			dst := name(i) + "/" + svc(j)
			for k := 0; k < 6; k++ {
				g.Edges = append(g.Edges, mtls(name(i)+"/"+svc((j+k+1)%workloads), dst, 8080+k%2))
			}
			for k := 0; k < 2; k++ {
				g.Edges = append(g.Edges, mtls(name((i+7*(k+1))%namespaces)+"/"+svc(j), dst, 0))
			}
			switch {
			case i >= 20:
				g.Edges = append(g.Edges, plain(name(i%20)+"/"+svc(j), dst))
			default:
				g.Edges = append(g.Edges, mtls(name(namespaces-1-i)+"/"+svc(j), dst, 0))
			}
			switch {
			case i%10 == 9:
				g.Edges = append(g.Edges, plain("unknown", dst))
			case i >= 40:
				g.Edges = append(g.Edges, plain(name(i-20)+"/"+svc(j), dst))
			default:
				g.Edges = append(g.Edges, mtls(name((i+1)%namespaces)+"/"+svc(j), dst, 9090))
			}
		}
	}
	return s, g
}

// BenchmarkBuild times one Build (the audit is done once, outside the
// timer) of
//   - 200 namespaces, 2,000 workloads (4,000 pods) and 20,000 edges;
//   - 400 namespaces, 4,000 workloads and 20,000 pods without traffic, the
//     estate of `make bench-estate` planned with --no-traffic;
//   - the same with 40,000 edges.
func BenchmarkBuild(b *testing.B) {
	for _, c := range []struct {
		name                        string
		namespaces, workloads, pods int
		traffic                     bool
		wantEdges                   int
	}{
		{"4k-pods-20k-edges", 200, 10, 2, true, 20000},
		{"20k-pods-no-traffic", 400, 10, 5, false, 0},
		{"20k-pods-40k-edges", 400, 10, 5, true, 40000},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, g := benchEstate(c.namespaces, c.workloads, c.pods)
			if !c.traffic {
				g = nil
			} else if len(g.Edges) != c.wantEdges {
				b.Fatalf("estate has %d edges", len(g.Edges))
			}
			if len(s.Pods) != c.namespaces*c.workloads*c.pods {
				b.Fatalf("estate has %d pods", len(s.Pods))
			}
			r := audit.Audit(s, audit.Observation{Graph: g})
			in := plan.Input{Snapshot: s, Report: r, Graph: g}
			p, err := plan.Build(in, plan.Options{})
			if err != nil {
				b.Fatal(err)
			}
			if len(p.Namespaces) != c.namespaces || (c.traffic && len(p.Waves) < 3) {
				b.Fatalf("plan has %d namespaces in %d waves", len(p.Namespaces), len(p.Waves))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := plan.Build(in, plan.Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFile writes and reads the plan file of the 20,000-pod estate
// without traffic: what `plan -A -o yaml` pays after Build, and what
// `apply`'s stale check pays before it reads anything.
func BenchmarkFile(b *testing.B) {
	s, _ := benchEstate(400, 10, 5)
	p, err := plan.Build(plan.Input{Snapshot: s, Report: audit.Audit(s, audit.Observation{})}, plan.Options{})
	if err != nil {
		b.Fatal(err)
	}
	raw, err := p.Marshal(false)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("marshal-yaml", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := p.Marshal(false); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(raw)), "bytes")
	})
	b.Run("parse-yaml", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := plan.Parse(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}
