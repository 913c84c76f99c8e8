package traffic

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

// TestDiscoverReachesPrometheusThroughTheServiceProxy plays the API server:
// the reader must find the Service and send Prometheus API calls to
// /api/v1/namespaces/NS/services/NAME:PORT/proxy/..., with the caller's
// bearer token.
func TestDiscoverReachesPrometheusThroughTheServiceProxy(t *testing.T) {
	const prefix = "/api/v1/namespaces/monitoring/services/prometheus-operated:9090/proxy"
	var paths []string
	apiserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if !strings.HasPrefix(r.URL.Path, prefix) {
			http.NotFound(w, r)
			return
		}
		file := map[string]string{"/api/v1/status/runtimeinfo": "runtimeinfo.json", "/api/v1/query": "requests.json"}[strings.TrimPrefix(r.URL.Path, prefix)]
		b, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	defer apiserver.Close()
	kube := kubefake.NewClientset(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: "prometheus-operated"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 10901}, {Name: "web", Port: 9090}}}})
	cfg := &rest.Config{Host: apiserver.URL, BearerToken: "s3cret"}

	p, err := Discover(context.Background(), kube, cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.URL != apiserver.URL+prefix {
		t.Errorf("URL = %s", p.URL)
	}
	p.Now = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	g, err := p.Read(context.Background(), time.Hour)
	if err != nil {
		t.Fatalf("read through the proxy: %v (paths %v)", err, paths)
	}
	if len(g.Edges) == 0 || !strings.HasPrefix(g.Source, "prometheus "+apiserver.URL+prefix) {
		t.Errorf("graph = %+v", g)
	}
}

func TestDiscoverNothingOrBadName(t *testing.T) {
	kube := kubefake.NewClientset()
	cfg := &rest.Config{Host: "https://127.0.0.1:6443"}
	if _, err := Discover(context.Background(), kube, cfg, ""); !errors.Is(err, ErrNoPrometheus) {
		t.Errorf("err = %v, want ErrNoPrometheus", err)
	}
	if _, err := Discover(context.Background(), kube, cfg, "monitoring/prom"); err == nil || !strings.Contains(err.Error(), "monitoring/prom") {
		t.Errorf("a named service that does not exist: err = %v", err)
	}
	if _, err := Discover(context.Background(), kube, cfg, "just-a-name"); err == nil || !strings.Contains(err.Error(), "NAMESPACE/NAME") {
		t.Errorf("malformed --prometheus-service: err = %v", err)
	}
}

// The Service lookup is a read of the API server like the snapshot's, and
// the gates make it on every check: a 503 or a dropped connection is
// retried, a 404 moves on to the next well-known Service at once.
func TestDiscoverRetriesTransientErrors(t *testing.T) {
	kube := kubefake.NewClientset(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: "prometheus-operated"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Port: 9090}}}})
	calls := map[string]int{}
	kube.PrependReactor("get", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ref := a.GetNamespace() + "/" + a.(k8stesting.GetAction).GetName()
		if calls[ref]++; calls[ref] <= 2 {
			return true, nil, apierrors.NewServiceUnavailable("apiserver is restarting")
		}
		return false, nil, nil
	})
	p, err := Discover(context.Background(), kube, &rest.Config{Host: "https://10.0.0.1:6443"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p.URL, "/namespaces/monitoring/services/prometheus-operated:9090/proxy") {
		t.Errorf("URL = %s", p.URL)
	}
	if calls["istio-system/prometheus"] != 3 || calls["monitoring/prometheus-operated"] != 3 {
		t.Errorf("calls = %v, want two 503s and the answer (404, then the Service) for each", calls)
	}
}
