package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
)

// fastRetries shortens the backoff to milliseconds for one test, keeping
// its number of tries.
func fastRetries(t *testing.T) {
	t.Helper()
	saved := transientBackoff
	transientBackoff = wait.Backoff{Steps: saved.Steps, Duration: time.Millisecond, Factor: 1}
	t.Cleanup(func() { transientBackoff = saved })
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestTransient(t *testing.T) {
	gr := schema.GroupResource{Resource: "configmaps"}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"429", apierrors.NewTooManyRequests("slow down", 1), true},
		{"500", apierrors.NewInternalError(errors.New("etcd hiccup")), true},
		{"502", apierrors.NewGenericServerResponse(502, "get", gr, "x", "bad gateway", 0, false), true},
		{"503", apierrors.NewServiceUnavailable("apiserver restarting"), true},
		{"504", apierrors.NewGenericServerResponse(504, "get", gr, "x", "gateway timeout", 0, false), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "get", 1), true},
		{"connection reset", fmt.Errorf("get configmaps: %w", reset), true},
		{"connection refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{"EOF", &url.Error{Op: "Get", URL: "https://10.0.0.1:6443/api/v1/namespaces/shop", Err: io.ErrUnexpectedEOF}, true},
		{"net timeout", &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, true},
		{"500, not a Status", apierrors.NewGenericServerResponse(500, "get", gr, "", "<html>oops</html>", 0, true), true},
		{"404", apierrors.NewNotFound(gr, "x"), false},
		// Discovery's answer for a group the server does not serve, and
		// an RBAC denial of /version: plain bodies, not Status objects.
		{"404, not a Status", apierrors.NewGenericServerResponse(404, "get", schema.GroupResource{}, "", "404 page not found", 0, true), false},
		{"403, not a Status", apierrors.NewGenericServerResponse(403, "get", schema.GroupResource{}, "", "forbidden", 0, true), false},
		{"409", apierrors.NewConflict(gr, "x", errors.New("changed")), false},
		{"403", apierrors.NewForbidden(gr, "x", errors.New("RBAC")), false},
		{"410 expired", apierrors.NewResourceExpired("continue token too old"), false},
		{"400", apierrors.NewBadRequest("bad"), false},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Kind: "Namespace"}, "shop", nil), false},
		{"plain", errors.New("something else"), false},
		{"nil", nil, false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%s: %v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestOnTransientRetriesOnlyTransientErrors(t *testing.T) {
	saved := transientBackoff
	transientBackoff = wait.Backoff{Steps: 4, Duration: time.Millisecond, Factor: 1}
	t.Cleanup(func() { transientBackoff = saved })
	ctx := context.Background()

	calls := 0
	err := OnTransient(ctx, func() error {
		if calls++; calls < 3 {
			return apierrors.NewServiceUnavailable("restarting")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("two 503s then success: %v after %d calls, want success after 3", err, calls)
	}

	calls = 0
	err = OnTransient(ctx, func() error { calls++; return apierrors.NewForbidden(schema.GroupResource{}, "x", errors.New("RBAC")) })
	if !apierrors.IsForbidden(err) || calls != 1 {
		t.Errorf("403: %v after %d calls, want it at once", err, calls)
	}

	calls = 0
	err = OnTransient(ctx, func() error { calls++; return apierrors.NewTooManyRequests("slow down", 1) })
	if !apierrors.IsTooManyRequests(err) || calls != 4 {
		t.Errorf("always 429: %v after %d calls, want the error after the 4 tries", err, calls)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	calls = 0
	err = OnTransient(cancelled, func() error { calls++; return apierrors.NewServiceUnavailable("x") })
	if calls != 1 || !apierrors.IsServiceUnavailable(err) {
		t.Errorf("cancelled context: %v after %d calls, want fn's error after one call", err, calls)
	}
}

// The whole policy is bounded (about 10 s), and a context that ends
// during a wait ends it at once.
func TestOnTransientIsBounded(t *testing.T) {
	var total time.Duration
	b := transientBackoff
	for b.Steps > 1 {
		total += b.Step()
	}
	if total < 5*time.Second || total > 15*time.Second {
		t.Errorf("the retries wait %s in all, want about 10 s", total)
	}

	// Uninterrupted, these retries would take the whole 10 s.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := OnTransient(ctx, func() error { return apierrors.NewServiceUnavailable("x") })
	if !apierrors.IsServiceUnavailable(err) || time.Since(start) > 2*time.Second {
		t.Errorf("%v after %s, want the 503 soon after the 200 ms deadline", err, time.Since(start))
	}
}
