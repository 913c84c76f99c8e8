package phases

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// NamespaceStatus is where a namespace's migration stands.
type NamespaceStatus struct {
	Namespace string `json:"namespace"`
	PlanID    string `json:"planID,omitempty"`
	// Phase is the latest phase a run reached, State its state
	// ("none" when no run started).
	Phase string      `json:"phase"`
	State string      `json:"state"`
	Gate  *GateResult `json:"gate,omitempty"`
	// Records counts the changes rollback can undo.
	Records   int       `json:"records"`
	Lock      *LockInfo `json:"lock,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitempty"`
	UpdatedBy string    `json:"updatedBy,omitempty"`
	// Checkpoint is the whole state object (-o yaml/json).
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// StatusOf summarizes a checkpoint.
func StatusOf(cp *Checkpoint, lock *LockInfo) NamespaceStatus {
	st := NamespaceStatus{Namespace: cp.Namespace, PlanID: cp.PlanID, Phase: "-", State: "none", Records: len(cp.Records),
		Lock: lock, UpdatedAt: cp.UpdatedAt, UpdatedBy: cp.UpdatedBy}
	if cp.Stored() {
		st.Checkpoint = cp
	}
	for _, name := range plan.Phases {
		for _, p := range cp.Phases {
			if p.Name == name && p.State != "" {
				st.Phase, st.State = p.Name, p.State
				if p.Gate != nil {
					st.Gate = p.Gate
				}
			}
		}
	}
	return st
}

// Status reads the namespaces' checkpoints and locks; with all, every
// namespace holding a checkpoint, listed in pages (each checkpoint read
// once, from the list).
func (c *Cluster) Status(ctx context.Context, namespaces []string, all bool) ([]NamespaceStatus, error) {
	cps := map[string]*Checkpoint{}
	if all {
		namespaces = nil
		opts := metav1.ListOptions{LabelSelector: plan.LabelManagedBy + "=" + plan.ManagedBy + "," + LabelComponent + "=checkpoint", Limit: 250}
		for {
			var list *corev1.ConfigMapList
			err := onTransient(ctx, func() error {
				var err error
				list, err = c.Kube.CoreV1().ConfigMaps("").List(ctx, opts)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("list checkpoints: %w", err)
			}
			for _, cm := range list.Items {
				if cm.Name != CheckpointName {
					continue
				}
				cp, err := DecodeCheckpoint(cm.Namespace, cm.Data[CheckpointKey])
				if err != nil {
					return nil, err
				}
				cp.resourceVersion, cp.stored = cm.ResourceVersion, true
				cps[cm.Namespace] = cp
				namespaces = append(namespaces, cm.Namespace)
			}
			if list.Continue == "" {
				break
			}
			opts.Continue = list.Continue
		}
	}
	sort.Strings(namespaces)
	var out []NamespaceStatus
	for _, ns := range namespaces {
		cp, ok := cps[ns]
		if !ok {
			if _, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
				return nil, fmt.Errorf("namespace %s: %w", ns, err)
			}
			var err error
			if cp, err = c.LoadCheckpoint(ctx, ns); err != nil {
				return nil, err
			}
		}
		lock, err := c.LockState(ctx, ns)
		if err != nil {
			return nil, err
		}
		out = append(out, StatusOf(cp, lock))
	}
	return out, nil
}
