package phases

import (
	"errors"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// Objects that Argo CD, Flux, Helm or another controller manage are theirs:
// server-side apply with force would take the fields they set, and their
// next sync would silently put them back while the checkpoint says done.
// The plan blocks such steps; apply checks again at capture (an owner may
// have appeared since).

// refusal is a step apply will not make. runPhase stops there, as before a
// step the plan blocks: recorded, exit 2, resumable once it is resolved.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

// refused tells whether err is a refusal, and why.
func refused(err error) (string, bool) {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason, true
	}
	return "", false
}

// objectName is "PeerAuthentication shop/default" for target
// "PeerAuthentication/default" in namespace shop.
func objectName(ns, target string) string {
	kind, name, _ := strings.Cut(target, "/")
	return kind + " " + ns + "/" + name
}

func ownershipOf(obj *unstructured.Unstructured) cluster.Ownership {
	return cluster.OwnershipOf(obj.GetLabels(), obj.GetAnnotations(), obj.GetManagedFields())
}

// captureOwnership refuses to apply over cur, the live object of target,
// when someone else manages it, with the plan's own words.
func captureOwnership(u *Undo, ns, target string, cur *unstructured.Unstructured) error {
	if owners := ownershipOf(cur).Owners(); len(owners) > 0 {
		return &refusal{reason: cluster.TakeoverRefusal(objectName(ns, target), owners)}
	}
	return nil
}
