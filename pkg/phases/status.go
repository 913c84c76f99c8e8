package phases

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// NamespaceStatus is where a namespace's migration stands.
type NamespaceStatus struct {
	Namespace string `json:"namespace"`
	PlanID    string `json:"planID,omitempty"`
	// Phase is the latest phase a run reached, State its state
	// ("none" when no run started).
	Phase plan.PhaseName `json:"phase"`
	State State          `json:"state"`
	Gate  *GateResult    `json:"gate,omitempty"`
	// Guard is the latest verdict of the post-change guard, with the
	// window it watched.
	Guard *GuardResult `json:"guard,omitempty"`
	// Records counts the changes rollback can undo.
	Records   int       `json:"records"`
	Lock      *LockInfo `json:"lock,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitempty"`
	UpdatedBy string    `json:"updatedBy,omitempty"`
	// Checkpoint is the whole state object (-o yaml/json).
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// Error says why the namespace's checkpoint cannot be used (State is
	// then StateInvalid): unreadable, or holding what this tool never
	// writes. Apply and rollback refuse the namespace until it is fixed.
	Error string `json:"error,omitempty"`
}

// StateInvalid is the status of a namespace whose checkpoint cannot be used.
const StateInvalid State = "invalid"

// StateNone is the status of a namespace no run has started.
const StateNone State = "none"

// invalidStatus is the status of a namespace whose checkpoint is bad.
func invalidStatus(ns string, err error, lock *LockInfo) NamespaceStatus {
	return NamespaceStatus{Namespace: ns, Phase: "-", State: StateInvalid, Lock: lock, Error: err.Error()}
}

// StatusOf summarizes a checkpoint.
func StatusOf(cp *Checkpoint, lock *LockInfo) NamespaceStatus {
	st := NamespaceStatus{Namespace: cp.Namespace, PlanID: cp.PlanID, Phase: "-", State: StateNone, Records: len(cp.Records),
		Lock: lock, UpdatedAt: cp.UpdatedAt, UpdatedBy: cp.UpdatedBy}
	if cp.Stored() {
		st.Checkpoint = cp
	}
	for _, name := range plan.AllPhases {
		for _, p := range cp.Phases {
			if p.Name == name && p.State != "" {
				st.Phase, st.State = p.Name, p.State
				if p.Gate != nil {
					st.Gate = p.Gate
				}
				if p.Guard != nil {
					st.Guard = p.Guard
				}
			}
		}
	}
	return st
}

// Status reads the namespaces' checkpoints and locks; with all, every
// namespace holding a checkpoint. With all, checkpoints and locks are each
// listed once, by label, in pages; with named namespaces each is read by
// name. A checkpoint that cannot be used is one namespace's status (its
// Error), never the whole answer's: the other namespaces are still shown.
func (c *Cluster) Status(ctx context.Context, namespaces []string, all bool) ([]NamespaceStatus, error) {
	cps := map[string]*Checkpoint{}
	bad := map[string]error{}
	locks := map[string]*LockInfo{}
	if all {
		var err error
		if cps, bad, err = c.ListCheckpoints(ctx); err != nil {
			return nil, err
		}
		namespaces = slices.Collect(maps.Keys(cps))
		for ns := range bad {
			namespaces = append(namespaces, ns)
		}
		err = paged(ctx, LabelComponent+"=lock", func(opts metav1.ListOptions) (string, error) {
			list, err := c.Kube.CoordinationV1().Leases("").List(ctx, opts)
			if err != nil {
				return "", fmt.Errorf("list locks: %w", err)
			}
			for i := range list.Items {
				if l := &list.Items[i]; l.Name == LeaseName {
					in := leaseInfo(l)
					locks[l.Namespace] = &in
				}
			}
			return list.Continue, nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(namespaces)
	var out []NamespaceStatus
	for _, ns := range namespaces {
		cp, lock := cps[ns], locks[ns]
		if !all {
			if _, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
				return nil, fmt.Errorf("namespace %s: %w", ns, err)
			}
			var err error
			var invalid *CheckpointError
			if cp, err = c.LoadCheckpoint(ctx, ns); errors.As(err, &invalid) {
				bad[ns] = err
			} else if err != nil {
				return nil, err
			}
			if lock, err = c.LockState(ctx, ns); err != nil {
				return nil, err
			}
		}
		if err := bad[ns]; err != nil {
			out = append(out, invalidStatus(ns, err, lock))
			continue
		}
		out = append(out, StatusOf(cp, lock))
	}
	return out, nil
}

// paged lists the tool's objects with label selector sel (and the
// managed-by label), a page at a time; page returns the continue token.
func paged(ctx context.Context, sel string, page func(metav1.ListOptions) (string, error)) error {
	opts := metav1.ListOptions{LabelSelector: plan.LabelManagedBy + "=" + plan.ManagedBy + "," + sel, Limit: 250}
	for {
		var next string
		err := onTransient(ctx, func() error {
			var err error
			next, err = page(opts)
			return err
		})
		if err != nil || next == "" {
			return err
		}
		opts.Continue = next
	}
}
