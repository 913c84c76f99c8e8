package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// Fingerprint is the state a plan was made against, as readable items
// ("label/istio-injection" -> "enabled") and their digest. Items hold only
// what the plan's decisions depend on, so an unrelated change (a new
// annotation, a pod rescheduled) does not make a plan stale, while a changed
// label, policy or workload state does — and Diff names it.
type Fingerprint struct {
	Digest string            `json:"digest"`
	Items  map[string]string `json:"items"`
}

func newFingerprint(items map[string]string) Fingerprint {
	b, _ := json.Marshal(items) // map keys marshal sorted: deterministic
	sum := sha256.Sum256(b)
	return Fingerprint{Digest: "sha256:" + hex.EncodeToString(sum[:]), Items: items}
}

// Diff lists how current differs from f, one line per item, e.g.
// `label istio-injection: "enabled" -> (absent)`. Empty when they match.
func (f Fingerprint) Diff(current Fingerprint) []string {
	return f.DiffExcept(current, Made{})
}

// Made is what a run of the plan already changed in a namespace (from its
// checkpoint): label keys it set or removed, objects it applied
// ("peerauthentication/default"), and whether it injected (so workload
// states may have moved to meshed).
type Made struct {
	Labels   map[string]bool
	Objects  map[string]bool
	Injected bool
}

func (m Made) any() bool { return m.Injected || len(m.Labels) > 0 || len(m.Objects) > 0 }

// explains tells whether the plan's own changes account for item key
// moving from was to now. A workload that appeared or went away is never
// the plan's doing.
func (m Made) explains(key string, wok, nok bool) bool {
	kind, name, _ := strings.Cut(key, "/")
	switch kind {
	case "label":
		return m.Labels[name]
	case "peerauthentication", "authorizationpolicy":
		return m.Objects[key]
	case "workload":
		return m.Injected && wok && nok
	}
	return false
}

// DiffExcept is Diff without the items the plan's own changes explain.
func (f Fingerprint) DiffExcept(current Fingerprint, made Made) []string {
	if f.Digest == current.Digest {
		return nil
	}
	keys := map[string]bool{}
	for k := range f.Items {
		keys[k] = true
	}
	for k := range current.Items {
		keys[k] = true
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		was, wok := f.Items[k]
		now, nok := current.Items[k]
		if wok == nok && was == now || made.explains(k, wok, nok) {
			continue
		}
		show := func(v string, ok bool) string {
			if !ok {
				return "(absent)"
			}
			return fmt.Sprintf("%q", v)
		}
		kind, name, _ := strings.Cut(k, "/")
		out = append(out, fmt.Sprintf("%s %s: %s -> %s", kind, name, show(was, wok), show(now, nok)))
	}
	if len(out) == 0 && !made.any() {
		// Same items, different digest: the file's digest was edited.
		out = append(out, "fingerprint digest "+f.Digest+" -> "+current.Digest)
	}
	return out
}

// NamespaceFingerprint is what namespace ns looks like to the plan: its
// labels, its PeerAuthentications and AuthorizationPolicies, the
// DestinationRules that turn TLS off toward it, and the mesh state of each
// workload (not pod names or counts, which change with every reschedule).
func NamespaceFingerprint(s *cluster.Snapshot, nr *audit.NamespaceReport) Fingerprint {
	items := map[string]string{}
	for _, ns := range s.Namespaces {
		if ns.Name == nr.Name {
			for k, v := range ns.Labels {
				items["label/"+k] = v
			}
		}
	}
	for _, pa := range s.PeerAuthentications {
		if pa.Namespace == nr.Name {
			items["peerauthentication/"+pa.Name] = describePeerAuth(pa)
		}
	}
	for _, ap := range s.AuthorizationPolicies {
		if ap.Namespace == nr.Name {
			v := fmt.Sprintf("%s rules=%d namespaced=%t", ap.Action, ap.Rules, ap.Namespaced)
			if ap.DryRun {
				v += " dry-run"
			}
			items["authorizationpolicy/"+ap.Name] = v + describeOwners(ap.Ownership)
		}
	}
	for _, dr := range nr.DestinationRules {
		items["destinationrule/"+dr.Policy+" "+dr.Where] = dr.Mode
	}
	states := map[string]map[string]bool{}
	for _, p := range nr.Pods.Items {
		if states[p.Workload] == nil {
			states[p.Workload] = map[string]bool{}
		}
		states[p.Workload][p.State] = true
	}
	for w, st := range states {
		items["workload/"+w] = strings.Join(slices.Sorted(maps.Keys(st)), ",")
	}
	return newFingerprint(items)
}

// MeshFingerprint covers the mesh-wide state every namespace's plan depends
// on: the injectors and what they inject, the trust domain, auto mTLS, the
// root namespace and the mesh-wide mTLS mode.
func MeshFingerprint(r *audit.Report) Fingerprint {
	items := map[string]string{
		"mesh/rootNamespace": r.Mesh.RootNamespace,
		"mesh/trustDomain":   r.Mesh.TrustDomain,
		"mesh/autoMtls":      fmt.Sprint(r.Mesh.AutoMTLS),
		"mesh/mtls":          r.Mesh.MTLS.Mode + " " + r.Mesh.MTLS.Policy,
	}
	for _, in := range r.Mesh.Injectors {
		v := "revision=" + in.Revision
		if in.Tag != "" {
			v += " tag=" + in.Tag
		}
		items["injector/"+in.Configuration+"/"+in.Webhook] = v
	}
	return newFingerprint(items)
}

func describePeerAuth(pa cluster.PeerAuthentication) string {
	v := "mode=" + pa.Mode
	if len(pa.Selector) > 0 {
		v += " selector=" + labelString(pa.Selector)
	}
	if len(pa.PortModes) > 0 {
		ports := make([]string, 0, len(pa.PortModes))
		for p, m := range pa.PortModes {
			ports = append(ports, fmt.Sprintf("%d=%s", p, m))
		}
		sort.Strings(ports)
		v += " ports=" + strings.Join(ports, ",")
	}
	return v + describeOwners(pa.Ownership)
}

func labelString(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// ForCluster refuses a plan made for another cluster: the kube-system UID
// names a cluster whatever the kubeconfig calls it. A plan (or a cluster)
// without a UID falls back to the API server URL.
func (p *Plan) ForCluster(uid, server string) error {
	switch {
	case p.Cluster.UID != "" && uid != "":
		if p.Cluster.UID != uid {
			return fmt.Errorf("plan %s was made for cluster %s (context %q), this is cluster %s: make a plan against this cluster", p.ID, p.Cluster.UID, p.Cluster.Context, uid)
		}
	case p.Cluster.Server != server:
		return fmt.Errorf("plan %s was made for the API server %s (context %q), this is %s: make a plan against this cluster", p.ID, p.Cluster.Server, p.Cluster.Context, server)
	}
	return nil
}

// Changes lists how the cluster now differs from the state the plan was
// made against, one line per change ("namespace shop: label
// istio-injection: ..."); empty when the plan is current. A namespace the
// plan holds that the report lacks is a change too.
func (p *Plan) Changes(s *cluster.Snapshot, r *audit.Report) []string {
	var all []string
	for _, ns := range p.Namespaces {
		all = append(all, ns.Name)
	}
	return p.ChangesIn(s, r, all)
}

// ChangesIn is Changes for the mesh and the named namespaces only: apply
// checks the namespaces it is about to start, not those a run of the plan
// already changed (their checkpoint speaks for them) or left out.
func (p *Plan) ChangesIn(s *cluster.Snapshot, r *audit.Report, names []string) []string {
	return p.ChangesSince(s, r, names, nil)
}

// ChangesSince is ChangesIn where made holds, for the namespaces a run of
// the plan already changed, what it changed: those namespaces are checked
// too, for every change the plan did not make.
func (p *Plan) ChangesSince(s *cluster.Snapshot, r *audit.Report, names []string, made map[string]Made) []string {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []string
	for _, d := range p.Mesh.Fingerprint.Diff(MeshFingerprint(r)) {
		out = append(out, "mesh: "+d)
	}
	current := map[string]*audit.NamespaceReport{}
	for i := range r.Namespaces {
		current[r.Namespaces[i].Name] = &r.Namespaces[i]
	}
	for _, ns := range p.Namespaces {
		if !want[ns.Name] {
			continue
		}
		nr := current[ns.Name]
		if nr == nil {
			out = append(out, "namespace "+ns.Name+": no longer exists or is out of scope")
			continue
		}
		for _, d := range ns.Fingerprint.DiffExcept(NamespaceFingerprint(s, nr), made[ns.Name]) {
			out = append(out, "namespace "+ns.Name+": "+d)
		}
	}
	return out
}
