package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// TestReaderWireFormats checks what the reader's clients ask for: protobuf
// for built-in kinds (a fifth of JSON's decoding cost, see
// BenchmarkDecodePodPage), JSON for Istio's CRDs, which have no protobuf
// form; and that the rate limit is the plugin's, not client-go's 5/s.
func TestReaderWireFormats(t *testing.T) {
	var mu sync.Mutex
	accept := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		accept[r.URL.Path] = r.Header.Get("Accept")
		mu.Unlock()
		http.NotFound(w, r)
	}))
	defer srv.Close()
	flags := genericclioptions.NewConfigFlags(false)
	flags.APIServer = &srv.URL
	r, err := NewFactory(flags).newReader()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, _ = r.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	_, _ = r.Istio.SecurityV1().PeerAuthentications("").List(ctx, metav1.ListOptions{})
	mu.Lock()
	defer mu.Unlock()
	for path, want := range map[string]string{
		"/api/v1/pods": "application/vnd.kubernetes.protobuf",
		"/apis/security.istio.io/v1/peerauthentications": "application/json",
	} {
		if got := accept[path]; !strings.HasPrefix(got, want) {
			t.Errorf("GET %s accepts %q, want %s first", path, got, want)
		}
	}
	cfg, err := restConfig(flags)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS < 50 || cfg.Burst < 100 {
		t.Errorf("rate limit %v/s burst %d: client-go's default throttles paged reads of a large estate", cfg.QPS, cfg.Burst)
	}
}
