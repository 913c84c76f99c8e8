package plan

import (
	"fmt"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// ownPeerAuthName is the namespace-wide policy the plan makes when the name
// "default" is taken by a workload policy someone else manages.
const ownPeerAuthName = "meshmigrate-default"

// ownersOf returns who else manages the namespace's kind/name (a
// PeerAuthentication or an AuthorizationPolicy), as the snapshot tells.
func (b *builder) ownersOf(ns, kind, name string) []cluster.Owner {
	if b.owners == nil {
		b.owners = map[string][]cluster.Owner{}
		for _, pa := range b.in.Snapshot.PeerAuthentications {
			if o := pa.Ownership.Owners(); len(o) > 0 {
				b.owners[pa.Namespace+"/PeerAuthentication/"+pa.Name] = o
			}
		}
		for _, ap := range b.in.Snapshot.AuthorizationPolicies {
			if o := ap.Ownership.Owners(); len(o) > 0 {
				b.owners[ap.Namespace+"/AuthorizationPolicy/"+ap.Name] = o
			}
		}
	}
	return b.owners[ns+"/"+kind+"/"+name]
}

// notTakenOver blocks every step of ph that would apply over an object that
// Argo CD, Flux, Helm or another controller manages: server-side apply with
// force would take the fields it set, and its next sync would silently put
// them back while the checkpoint says done. A second namespace-wide
// PeerAuthentication beside such a policy is no way out either: Istio
// honours only the oldest one (docs/istio.md 2.1).
func (b *builder) notTakenOver(ns string, ph Phase) Phase {
	blocked := false
	for i := range ph.Steps {
		st := &ph.Steps[i]
		if st.Action != ActionApply || (st.Status != StatusPending && st.Status != StatusBlocked) {
			continue
		}
		kind, name, _ := strings.Cut(st.Target, "/")
		owners := b.ownersOf(ns, kind, name)
		if len(owners) == 0 {
			continue
		}
		refusal := cluster.TakeoverRefusal(kind+" "+ns+"/"+name, owners)
		switch {
		case st.Status == StatusBlocked || st.Forced:
			// Not a change for the owner's source either, yet.
			st.Status, st.Reason, st.Forced = StatusBlocked, refusal+"; and "+st.Reason, false
		default:
			st.Status, st.Reason, st.Owner = StatusBlocked, refusal, owners[0].String()
		}
		blocked = true
	}
	if blocked {
		ph.Status, ph.Reason = rollup(ph.Steps)
	}
	return ph
}

// peerAuthName picks the namespace-wide PeerAuthentication the permissive
// and strict phases write: the one in force, whatever its name (a second
// one would be ignored), else "default" — unless "default" is a workload
// policy someone else manages. No namespace-wide policy exists then, so
// one of the plan's own under another name is the one in force.
func (b *builder) peerAuthName(nr *audit.NamespaceReport) (name, note string) {
	if nr.MTLS.NamespacePolicy != "" {
		return strings.TrimPrefix(nr.MTLS.NamespacePolicy, nr.Name+"/"), ""
	}
	if owners := b.ownersOf(nr.Name, "PeerAuthentication", defaultPeerAuthName); len(owners) > 0 {
		return ownPeerAuthName, fmt.Sprintf("PeerAuthentication/%s is a workload policy managed by %s: the namespace gets its own namespace-wide policy %s instead (no other namespace-wide policy exists, so it is the one in force)",
			defaultPeerAuthName, owners[0], ownPeerAuthName)
	}
	return defaultPeerAuthName, ""
}

// describeOwners is the fingerprint's view of who else manages an object:
// a plan made before an owner appeared is stale.
func describeOwners(o cluster.Ownership) string {
	owners := o.Owners()
	if len(owners) == 0 {
		return ""
	}
	names := make([]string, len(owners))
	for i, ow := range owners {
		names[i] = ow.String()
	}
	return " owners=" + strings.Join(names, ", ")
}
