package phases

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
)

func TestClean(t *testing.T) {
	obj := map[string]any{
		"apiVersion": "security.istio.io/v1",
		"kind":       "PeerAuthentication",
		"metadata": map[string]any{
			"name": "default", "namespace": "shop",
			"labels":            map[string]any{"team": "shop"},
			"annotations":       map[string]any{"owner": "platform"},
			"resourceVersion":   "4711",
			"uid":               "0b9c-uid",
			"generation":        int64(3),
			"creationTimestamp": "2026-01-01T00:00:00Z",
			"managedFields":     []any{map[string]any{"manager": "kubectl"}},
			"selfLink":          "/apis/security.istio.io/v1/namespaces/shop/peerauthentications/default",
		},
		"spec":   map[string]any{"mtls": map[string]any{"mode": "DISABLE"}},
		"status": map[string]any{"conditions": []any{}},
	}
	got := Clean(obj)
	want := map[string]any{
		"apiVersion": "security.istio.io/v1",
		"kind":       "PeerAuthentication",
		"metadata": map[string]any{
			"name": "default", "namespace": "shop",
			"labels":      map[string]any{"team": "shop"},
			"annotations": map[string]any{"owner": "platform"},
		},
		"spec": map[string]any{"mtls": map[string]any{"mode": "DISABLE"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Clean =\n%v\nwant\n%v", got, want)
	}
	// The object read from the server is left as it was.
	md := obj["metadata"].(map[string]any)
	if obj["status"] == nil || md["uid"] != "0b9c-uid" || md["resourceVersion"] != "4711" {
		t.Errorf("Clean modified its input: %v", obj)
	}
}

func TestResourceFor(t *testing.T) {
	for _, tc := range []struct {
		apiVersion, kind string
		want             schema.GroupVersionResource
		err              string
	}{
		{"v1", "Namespace", schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, ""},
		{"apps/v1", "Deployment", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, ""},
		{"apps/v1", "StatefulSet", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}, ""},
		{"apps/v1", "DaemonSet", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}, ""},
		// The Istio kinds take the version the plan chose.
		{"security.istio.io/v1", "PeerAuthentication", schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}, ""},
		{"security.istio.io/v1beta1", "PeerAuthentication", schema.GroupVersionResource{Group: "security.istio.io", Version: "v1beta1", Resource: "peerauthentications"}, ""},
		{"security.istio.io/v1beta1", "AuthorizationPolicy", schema.GroupVersionResource{Group: "security.istio.io", Version: "v1beta1", Resource: "authorizationpolicies"}, ""},
		{"networking.istio.io/v1", "PeerAuthentication", schema.GroupVersionResource{}, `PeerAuthentication has apiVersion "networking.istio.io/v1", want security.istio.io/VERSION`},
		{"", "AuthorizationPolicy", schema.GroupVersionResource{}, `AuthorizationPolicy has apiVersion "", want security.istio.io/VERSION`},
		{"a/b/c", "AuthorizationPolicy", schema.GroupVersionResource{}, "want security.istio.io/VERSION"},
		{"v1", "ConfigMap", schema.GroupVersionResource{}, "the plan names a ConfigMap, which apply does not handle"},
		{"networking.istio.io/v1", "DestinationRule", schema.GroupVersionResource{}, "which apply does not handle"},
	} {
		got, err := resourceFor(tc.apiVersion, tc.kind)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("resourceFor(%q, %s): %v", tc.apiVersion, tc.kind, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("resourceFor(%q, %s) = %v, want %v", tc.apiVersion, tc.kind, got, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("resourceFor(%q, %s) = %v, %v; want error %q", tc.apiVersion, tc.kind, got, err, tc.err)
		}
	}
}

func TestResourceForDoesNotChangeTheTable(t *testing.T) {
	if _, err := resourceFor("security.istio.io/v1beta1", "PeerAuthentication"); err != nil {
		t.Fatal(err)
	}
	if v := kinds["PeerAuthentication"].Version; v != "" {
		t.Errorf("kinds[PeerAuthentication].Version = %q after a lookup: the next plan's version would be ignored", v)
	}
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
		{"404", apierrors.NewNotFound(gr, "x"), false},
		{"409", apierrors.NewConflict(gr, "x", errors.New("changed")), false},
		{"403", apierrors.NewForbidden(gr, "x", errors.New("RBAC")), false},
		{"400", apierrors.NewBadRequest("bad"), false},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Kind: "Namespace"}, "shop", nil), false},
		{"plain", errors.New("something else"), false},
		{"nil", nil, false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%s: %v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestOnTransientRetriesOnlyTransientErrors(t *testing.T) {
	saved := transientBackoff
	transientBackoff = wait.Backoff{Steps: 4, Duration: time.Millisecond, Factor: 1}
	t.Cleanup(func() { transientBackoff = saved })
	ctx := context.Background()

	calls := 0
	err := onTransient(ctx, func() error {
		if calls++; calls < 3 {
			return apierrors.NewServiceUnavailable("restarting")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("two 503s then success: %v after %d calls, want success after 3", err, calls)
	}

	calls = 0
	err = onTransient(ctx, func() error { calls++; return apierrors.NewForbidden(schema.GroupResource{}, "x", errors.New("RBAC")) })
	if !apierrors.IsForbidden(err) || calls != 1 {
		t.Errorf("403: %v after %d calls, want it at once", err, calls)
	}

	calls = 0
	err = onTransient(ctx, func() error { calls++; return apierrors.NewTooManyRequests("slow down", 1) })
	if !apierrors.IsTooManyRequests(err) || calls != 4 {
		t.Errorf("always 429: %v after %d calls, want the error after the 4 tries", err, calls)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	calls = 0
	_ = onTransient(cancelled, func() error { calls++; return apierrors.NewServiceUnavailable("x") })
	if calls != 1 {
		t.Errorf("cancelled context: %d calls, want no retry", calls)
	}
}
