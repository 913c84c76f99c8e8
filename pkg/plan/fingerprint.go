package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
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
	for _, k := range sortedKeys(keys) {
		was, wok := f.Items[k]
		now, nok := current.Items[k]
		if wok == nok && was == now {
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
	if len(out) == 0 {
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
			items["authorizationpolicy/"+ap.Name] = v
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
		items["workload/"+w] = strings.Join(sortedKeys(st), ",")
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
	return v
}

func labelString(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
