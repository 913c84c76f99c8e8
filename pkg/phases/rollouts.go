package phases

import (
	"context"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
	deadline := time.Now().Add(e.Options.Timeout)
	last := ""
	for {
		obj, err := e.Cluster.get(ctx, r.gvr, r.ns, name)
		if err != nil {
			return fmt.Errorf("watch the rollout of %s: %w", r.target, err)
		}
		if obj == nil {
			return fmt.Errorf("%s was deleted during its rollout", r.target)
		}
		msg, done, err := viewer.Status(obj, 0)
		if err != nil {
			return fmt.Errorf("rollout of %s: %w", r.target, err)
		}
		msg = strings.TrimSpace(msg)
		if msg != last {
			e.logf(r.ns, "%s: %s: %s", r.what, r.target, msg)
			last = msg
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return &timeoutError{msg: fmt.Sprintf("the rollout of %s did not finish within %s (%s): re-run apply to keep waiting, or roll back", r.target, e.Options.Timeout, last)}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
