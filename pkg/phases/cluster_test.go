package phases

import (
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
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
