package cluster

import (
	"context"
	"errors"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
)

// transientBackoff retries an API call for about 10 s in all: 7 tries,
// 150 ms to 4.8 s apart.
var transientBackoff = wait.Backoff{Steps: 7, Duration: 150 * time.Millisecond, Factor: 2, Jitter: 0.2}

// OnTransient runs fn again while it fails in a way worth retrying (see
// Transient), for about 10 s, and returns its last error. It is the one
// retry policy of the tool, for reads and writes alike: reads are
// idempotent, and the executor makes its writes idempotent (server-side
// apply of the same content, conditional patches), so repeating a call
// whose response was lost is safe. fn always runs once; a done ctx ends
// the retries (and the wait between two) at once.
func OnTransient(ctx context.Context, fn func() error) error {
	b := transientBackoff
	for {
		err := fn()
		if !Transient(err) || ctx.Err() != nil || b.Steps <= 1 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(b.Step()):
		}
	}
}

// Transient tells an error worth retrying: throttling (429), server
// errors and timeouts (500, 502, 503, 504), dropped or refused
// connections. Everything else is an answer (403, 404, 409, 410, 422 ...)
// that asking again would not change.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var netErr net.Error
	switch {
	// Not IsUnexpectedServerError: it only says the body was no Status
	// (discovery's 404 for a group not served is one), whatever the code;
	// the code decides, below.
	case apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsInternalError(err), apierrors.IsServiceUnavailable(err):
		return true
	case utilnet.IsConnectionReset(err), utilnet.IsConnectionRefused(err), utilnet.IsProbableEOF(err):
		return true
	case errors.As(err, &netErr) && netErr.Timeout():
		return true
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code == 500 || code == 502 || code == 503 || code == 504
	}
	return false
}

// retried is OnTransient for a call that returns a value.
func retried[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	var v T
	err := OnTransient(ctx, func() error {
		var err error
		v, err = fn()
		return err
	})
	return v, err
}
