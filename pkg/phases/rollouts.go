package phases

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/kubectl/pkg/polymorphichelpers"
)

// waitRollouts waits for each restarted workload's rollout, as `kubectl
// rollout status` judges it, printing its progress.
func (e *Executor) waitRollouts(ctx context.Context, rs []*rollout) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, e.Options.Concurrency))
	for _, r := range rs {
		g.Go(func() error { return e.waitRollout(gctx, r) })
	}
	return g.Wait()
}

// rolledOut waits for the inject phase's restarts, then marks them done
// and the namespace meshed from now: its old pods, without a sidecar,
// served (and sent) plaintext until the rollout ended, and the verify
// window must not count that.
func (e *Executor) rolledOut(ctx context.Context, ns string, rs []*rollout) error {
	if err := e.waitRollouts(ctx, rs); err != nil {
		return err
	}
	t := e.now()
	e.cps[ns].MeshedAt = &t
	for _, r := range rs {
		if err := e.markDone(ctx, ns, r.seq); err != nil {
			return err
		}
	}
	return nil
}

func (e *Executor) waitRollout(ctx context.Context, r *rollout) error {
	kind, name, _ := strings.Cut(r.target, "/")
	viewer, err := polymorphichelpers.StatusViewerFor(schema.GroupKind{Group: "apps", Kind: kind})
	if err != nil {
		return err
	}
	last := ""
	err = poll(ctx, e.Clock, rolloutPoll, e.Options.Timeout, func(ctx context.Context) (bool, error) {
		obj, err := e.Cluster.get(ctx, r.gvr, r.ns, name)
		if err != nil {
			return false, fmt.Errorf("watch the rollout of %s: %w", r.target, err)
		}
		if obj == nil {
			return false, fmt.Errorf("%s was deleted during its rollout", r.target)
		}
		msg, done, err := viewer.Status(obj, 0)
		if err != nil {
			return false, fmt.Errorf("rollout of %s: %w", r.target, err)
		}
		if msg = strings.TrimSpace(msg); msg != last {
			e.emit(Event{Type: EventRollout, Namespace: r.ns, Phase: r.phase, Target: r.target, Message: fmt.Sprintf("%s: %s: %s", r.what, r.target, msg)})
			last = msg
		}
		return done, nil
	})
	if wait.Interrupted(err) {
		return &timeoutError{msg: fmt.Sprintf("the rollout of %s did not finish within %s (%s): re-run apply to keep waiting, or roll back", r.target, e.Options.Timeout, last)}
	}
	return err
}
