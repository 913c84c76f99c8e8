package phases

import (
	"context"
	"errors"
	"time"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
)

// The one wait policy of the executor, for rollouts, gates, lock waits and the
// traffic windows: poll a condition every interval until it holds, the
// context ends, or the timeout passes, on the executor's clock (a fake one
// in tests, so deadlines are tested without waiting). A transient API
// error is "not yet", never the end of the wait.

// Poll intervals.
const (
	rolloutPoll = time.Second     // as `kubectl rollout status` reports
	gatePoll    = 2 * time.Second // a fresh audit of the namespace
)

// errTimedOut is the end of a wait whose condition never held; it is
// wait.Interrupted, as apimachinery's own waits end.
var errTimedOut = wait.ErrorInterrupted(errors.New("timed out waiting for the condition"))

// poll calls cond until it returns true, and returns nil; errTimedOut once
// timeout has passed on clk; ctx's error when it ends; cond's error when it
// is not transient.
func poll(ctx context.Context, clk clock.Clock, interval, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	deadline := clk.Now().Add(timeout)
	for {
		done, err := cond(ctx)
		switch {
		case err != nil && !cluster.Transient(err):
			return err
		case err == nil && done:
			return nil
		case !clk.Now().Before(deadline):
			return errTimedOut
		}
		t := clk.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
	}
}

// sleep waits d on clk, or until ctx ends.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) error {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}
