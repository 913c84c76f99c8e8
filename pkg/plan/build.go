package plan

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// Input is what a plan is made from: the snapshot, its audit and the
// observed traffic (nil Graph when telemetry was not read).
type Input struct {
	Snapshot *cluster.Snapshot
	Report   *audit.Report
	Graph    *traffic.Graph
}

// Istio's namespace injection labels (docs/istio.md 1.1).
const (
	labelInjection = "istio-injection"
	labelRev       = "istio.io/rev"
)

// Build makes the plan. It returns an error only for options that name
// something the cluster does not have (a typo must not become a silent
// no-op); everything the cluster makes impossible is a blocked step.
func Build(in Input, opts Options) (*Plan, error) {
	if opts.Target == "" {
		opts.Target = TargetStrict
	}
	if opts.Authz == "" {
		opts.Authz = AuthzEnforce
	}
	switch opts.Dataplane {
	case "", DataplaneSidecar:
		opts.Dataplane = ""
	case DataplaneAmbient:
	default:
		return nil, fmt.Errorf("--dataplane %q: want sidecar or ambient", opts.Dataplane)
	}
	if opts.MinVerifyWindow == "" {
		opts.MinVerifyWindow = DefaultMinVerifyWindow.String()
	}
	opts.normalize()
	s, r := in.Snapshot, in.Report
	b := &builder{in: in, opts: opts, reports: map[string]*audit.NamespaceReport{}, planned: map[string]bool{},
		after: map[string]audit.Pods{}, pods: map[string][]*cluster.Pod{}, cls: audit.NewClassifier(s),
		nsLabels: map[string]map[string]string{}, unmeshed: map[string]map[string]bool{}}
	for _, n := range s.Namespaces {
		b.nsLabels[n.Name] = n.Labels
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		if p.Phase != "Succeeded" && p.Phase != "Failed" {
			b.pods[p.Namespace] = append(b.pods[p.Namespace], p)
		}
	}
	if err := b.parseOptions(); err != nil {
		return nil, err
	}

	p := &Plan{
		APIVersion: APIVersion, Kind: Kind, CreatedAt: s.TakenAt.UTC(),
		Cluster: Cluster{Context: s.Context, Server: s.Server, UID: s.ClusterUID},
		Mesh: Mesh{RootNamespace: r.Mesh.RootNamespace, TrustDomain: r.Mesh.TrustDomain,
			SecurityAPIVersion: securityVersion(s), Fingerprint: MeshFingerprint(r)},
		Options:    opts,
		Waves:      []Wave{},
		Namespaces: []Namespace{},
	}
	if g := in.Graph; g != nil {
		p.Traffic = &Traffic{Source: g.Source, Window: g.Window, Start: g.Start.UTC(), End: g.End.UTC(), Edges: len(g.Edges)}
	}
	for i := range r.Namespaces {
		nr := &r.Namespaces[i]
		b.reports[nr.Name] = nr
		switch {
		case nr.Excluded != "":
			p.Skipped = append(p.Skipped, SkippedNamespace{Name: nr.Name, Reason: nr.Excluded})
		case nr.Injection.Mode == audit.InjectionAmbient && opts.Dataplane != DataplaneAmbient:
			p.Skipped = append(p.Skipped, SkippedNamespace{Name: nr.Name, Reason: "ambient data plane (" + nr.Injection.Label + "): out of scope for a sidecar migration"})
		default:
			b.planned[nr.Name] = true
		}
	}
	if err := b.checkOptionTargets(); err != nil {
		return nil, err
	}
	// Labels first: which pods each namespace's inject phase meshes decides
	// which plaintext callers other namespaces can expect to clear.
	labels := map[string]labelPlan{}
	b.ambient = b.ambientNamespaces()
	for _, name := range slices.Sorted(maps.Keys(b.planned)) {
		if b.ambient[name] {
			labels[name] = b.ambientLabels(b.reports[name])
			b.after[name] = ambientPods(b.pods[name], func(w string) bool { return b.excluded[name+"/"+w] })
			continue
		}
		lp := b.planLabels(b.reports[name])
		labels[name] = lp
		b.after[name] = b.cls.Pods(b.pods[name], lp.after)
	}
	b.indexTraffic()
	waves, callers := b.waves()
	for i, members := range waves {
		p.Waves = append(p.Waves, Wave{Number: i + 1, Namespaces: members})
		for _, name := range members {
			p.Namespaces = append(p.Namespaces, b.namespace(name, i+1, labels[name], callers[name]))
		}
	}
	p.Summary = summarize(p)
	if err := p.seal(); err != nil {
		return nil, err
	}
	return p, nil
}

// builder holds the indexes one Build uses.
type builder struct {
	in      Input
	opts    Options
	reports map[string]*audit.NamespaceReport
	planned map[string]bool
	// ambient are the planned namespaces moving to ambient (--dataplane).
	ambient map[string]bool
	// pods are the running pods by namespace; after, their states once the
	// namespace carries its planned labels.
	pods  map[string][]*cluster.Pod
	after map[string]audit.Pods
	// cls judges injection with the injectors compiled once; nsLabels are
	// the namespaces' labels; unmeshed indexes, per namespace, the
	// workloads with a pod without a sidecar (filled on first use).
	cls      *audit.Classifier
	nsLabels map[string]map[string]string
	unmeshed map[string]map[string]bool

	excluded   map[string]bool            // "ns/workload"
	exceptions map[string][]uint32        // "ns/workload" -> ports
	noCallers  map[string]bool            // "ns/workload" or "ns/*"
	forced     map[string]bool            // namespace
	inbound    map[string][]traffic.Edge  // destination namespace -> edges
	workloads  map[string]map[string]*wl  // namespace -> workload name -> facts
	meshedBy   map[string]map[string]bool // namespace -> workload -> meshed once the plan ran
	accounts   map[string]map[string][]string
	owners     map[string][]cluster.Owner // "ns/Kind/name" -> who else manages it (filled on first use)
	waypoints  map[string]*waypointMove   // namespace -> its L7 policies' move (filled on first use)
}

// wl is a workload as the plan sees it: its owner kind and its pods.
type wl struct {
	ref  cluster.WorkloadRef
	pods []*cluster.Pod
}

func (o *Options) normalize() {
	for _, l := range []*[]string{&o.ExcludeWorkloads, &o.PortExceptions, &o.AllowNoCallers, &o.ForceStrict} {
		// Sort a copy: the caller's slices (flag values) are not ours to reorder.
		c := append([]string(nil), *l...)
		sort.Strings(c)
		*l = dedupe(c)
	}
}

func dedupe(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := in[:1]
	for _, s := range in[1:] {
		if s != out[len(out)-1] {
			out = append(out, s)
		}
	}
	return out
}

// ParseWorkload splits "NS/WORKLOAD" (the workload's name as Istio's
// telemetry names it: the Deployment, StatefulSet, ... name).
func ParseWorkload(s string) (ns, workload string, err error) {
	ns, workload, ok := strings.Cut(s, "/")
	if !ok || ns == "" || workload == "" || strings.Contains(workload, "/") {
		return "", "", fmt.Errorf("%q: want NAMESPACE/WORKLOAD", s)
	}
	return ns, workload, nil
}

// ParsePortException splits "NS/WORKLOAD:PORT".
func ParsePortException(s string) (ns, workload string, port uint32, err error) {
	ref, portS, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", 0, fmt.Errorf("%q: want NAMESPACE/WORKLOAD:PORT", s)
	}
	if ns, workload, err = ParseWorkload(ref); err != nil {
		return "", "", 0, fmt.Errorf("%q: want NAMESPACE/WORKLOAD:PORT", s)
	}
	n, err := strconv.ParseUint(portS, 10, 16)
	if err != nil || n == 0 {
		return "", "", 0, fmt.Errorf("%q: port must be 1-65535", s)
	}
	return ns, workload, uint32(n), nil
}

func (b *builder) parseOptions() error {
	b.excluded, b.exceptions, b.noCallers, b.forced = map[string]bool{}, map[string][]uint32{}, map[string]bool{}, map[string]bool{}
	for _, s := range b.opts.ExcludeWorkloads {
		ns, w, err := ParseWorkload(s)
		if err != nil {
			return fmt.Errorf("--exclude-workload %w", err)
		}
		b.excluded[ns+"/"+w] = true
	}
	for _, s := range b.opts.PortExceptions {
		ns, w, port, err := ParsePortException(s)
		if err != nil {
			return fmt.Errorf("--port-exception %w", err)
		}
		b.exceptions[ns+"/"+w] = append(b.exceptions[ns+"/"+w], port)
	}
	for _, s := range b.opts.AllowNoCallers {
		ns, w, err := ParseWorkload(s)
		if err != nil {
			return fmt.Errorf("--allow-no-callers %w", err)
		}
		b.noCallers[ns+"/"+w] = true
	}
	for _, ns := range b.opts.ForceStrict {
		b.forced[ns] = true
	}
	b.workloads = map[string]map[string]*wl{}
	for ns, pods := range b.pods {
		m := map[string]*wl{}
		for _, p := range pods {
			w := m[p.Owner.Name]
			if w == nil {
				w = &wl{ref: p.Owner}
				m[p.Owner.Name] = w
			}
			w.pods = append(w.pods, p)
		}
		b.workloads[ns] = m
	}
	return nil
}

// checkOptionTargets refuses options that name a namespace or workload the
// plan does not hold: a typo must not silently leave a workload unexcluded.
func (b *builder) checkOptionTargets() error {
	check := func(flag string, keys map[string]bool) error {
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			ns, w, _ := strings.Cut(k, "/")
			if !b.planned[ns] {
				return fmt.Errorf("%s %s: namespace %s is not in the plan's scope (or is excluded from migration)", flag, k, ns)
			}
			if w != "*" && b.workloads[ns][w] == nil {
				return fmt.Errorf("%s %s: namespace %s has no running workload %q", flag, k, ns, w)
			}
		}
		return nil
	}
	exc := map[string]bool{}
	for k := range b.exceptions {
		exc[k] = true
	}
	if err := check("--exclude-workload", b.excluded); err != nil {
		return err
	}
	if err := check("--port-exception", exc); err != nil {
		return err
	}
	if err := check("--allow-no-callers", b.noCallers); err != nil {
		return err
	}
	for _, ns := range slices.Sorted(maps.Keys(b.forced)) {
		if !b.planned[ns] {
			return fmt.Errorf("--force-strict %s: namespace %s is not in the plan's scope", ns, ns)
		}
	}
	if rev := b.opts.Revision; rev != "" {
		if _, ok := b.cls.InjectorFor(map[string]string{labelRev: rev}); !ok {
			return fmt.Errorf("--revision %s: no injector serves istio.io/rev=%s (installed: %s)", rev, rev, revisionsInstalled(b.in.Snapshot))
		}
	}
	return nil
}

func revisionsInstalled(s *cluster.Snapshot) string {
	set := map[string]bool{}
	for _, w := range s.Injectors {
		set[w.Revision] = true
		if w.Tag != "" {
			set[w.Tag+" (tag of "+w.Revision+")"] = true
		}
	}
	if len(set) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(set)), ", ")
}

func securityVersion(s *cluster.Snapshot) string {
	if s.Istio.SecurityVersion != "" {
		return s.Istio.SecurityVersion
	}
	return "v1"
}

// indexTraffic indexes the inbound edges of planned namespaces and decides
// which workloads are meshed once the plan has run.
func (b *builder) indexTraffic() {
	b.inbound = map[string][]traffic.Edge{}
	if b.in.Graph != nil {
		for _, e := range b.in.Graph.Edges {
			if b.planned[e.Destination.Namespace] {
				b.inbound[e.Destination.Namespace] = append(b.inbound[e.Destination.Namespace], e)
			}
		}
	}
	b.meshedBy, b.accounts = map[string]map[string]bool{}, map[string]map[string][]string{}
	for ns := range b.planned {
		meshed, sas := map[string]bool{}, map[string]map[string]bool{}
		states := map[string]map[string]bool{}
		for _, p := range b.after[ns].Items {
			if states[p.Workload] == nil {
				states[p.Workload] = map[string]bool{}
			}
			states[p.Workload][p.State] = true
		}
		for name, w := range b.workloads[ns] {
			ok := !b.excluded[ns+"/"+name]
			for st := range states[w.ref.String()] {
				// A restart injects needs-restart and wrong-revision pods.
				ok = ok && (st == audit.PodMeshed || st == audit.PodNeedsRestart || st == audit.PodWrongRevision)
			}
			meshed[name] = ok
			sas[name] = map[string]bool{}
			for _, p := range w.pods {
				sa := p.ServiceAccount
				if sa == "" {
					sa = "default"
				}
				sas[name][sa] = true
			}
		}
		b.meshedBy[ns] = meshed
		b.accounts[ns] = map[string][]string{}
		for name, set := range sas {
			b.accounts[ns][name] = slices.Sorted(maps.Keys(set))
		}
	}
}

// waves orders the planned namespaces. Namespace C must finish before N
// goes STRICT when a workload of C calls N without mTLS (once C is meshed
// those calls become mTLS). Namespaces that call each other in a cycle share
// a wave: apply runs a wave phase by phase, so all of them are injected
// before any goes STRICT. Each wave is one more than the latest wave of the
// namespaces that must precede it.
func (b *builder) waves() ([][]string, map[string][]string) {
	deps := map[string]map[string]bool{}
	for ns := range b.planned {
		deps[ns] = map[string]bool{}
		for _, e := range b.inbound[ns] {
			src := e.Source.Namespace
			if e.Security != traffic.MutualTLS && src != ns && b.planned[src] && !e.UnmeshedSource() {
				deps[ns][src] = true
			}
		}
	}
	callers := map[string][]string{}
	for ns, d := range deps {
		if len(d) > 0 {
			callers[ns] = slices.Sorted(maps.Keys(d))
		}
	}
	comp := sccs(slices.Sorted(maps.Keys(b.planned)), func(n string) []string { return slices.Sorted(maps.Keys(deps[n])) })
	// comp lists components with every dependency's component first.
	level := map[int]int{}
	of := map[string]int{}
	for i, c := range comp {
		for _, n := range c {
			of[n] = i
		}
	}
	maxLevel := 0
	for i, c := range comp {
		lv := 1
		for _, n := range c {
			for d := range deps[n] {
				if j := of[d]; j != i && level[j]+1 > lv {
					lv = level[j] + 1
				}
			}
		}
		level[i] = lv
		if lv > maxLevel {
			maxLevel = lv
		}
	}
	out := make([][]string, maxLevel)
	for i, c := range comp {
		out[level[i]-1] = append(out[level[i]-1], c...)
	}
	for _, w := range out {
		sort.Strings(w)
	}
	return out, callers
}

// sccs returns the strongly connected components of the graph (Tarjan),
// each component after every component it depends on.
func sccs(nodes []string, next func(string) []string) [][]string {
	index, low := map[string]int{}, map[string]int{}
	onStack := map[string]bool{}
	var stack []string
	var out [][]string
	counter := 0
	var visit func(n string)
	visit = func(n string) {
		index[n], low[n] = counter, counter
		counter++
		stack = append(stack, n)
		onStack[n] = true
		for _, m := range next(n) {
			if _, seen := index[m]; !seen {
				visit(m)
				low[n] = min(low[n], low[m])
			} else if onStack[m] {
				low[n] = min(low[n], index[m])
			}
		}
		if low[n] == index[n] {
			var c []string
			for {
				m := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[m] = false
				c = append(c, m)
				if m == n {
					break
				}
			}
			sort.Strings(c)
			out = append(out, c)
		}
	}
	for _, n := range nodes {
		if _, seen := index[n]; !seen {
			visit(n)
		}
	}
	return out
}

func summarize(p *Plan) Summary {
	s := Summary{Namespaces: len(p.Namespaces), Waves: len(p.Waves)}
	for _, ns := range p.Namespaces {
		for _, ph := range ns.Phases {
			stepBlocked := false
			for _, st := range ph.Steps {
				switch st.Status {
				case StatusPending:
					s.Steps++
				case StatusBlocked:
					stepBlocked = true
					s.Blocked++
					s.BlockedSteps = append(s.BlockedSteps, fmt.Sprintf("%s %s: %s: %s", ns.Name, ph.Name, st.Target, st.Reason))
				}
			}
			if ph.Status == StatusBlocked && !stepBlocked {
				s.Blocked++
				s.BlockedSteps = append(s.BlockedSteps, fmt.Sprintf("%s %s: %s", ns.Name, ph.Name, ph.Reason))
			}
		}
	}
	return s
}
