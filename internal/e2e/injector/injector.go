// Package injector is a STAND-IN FOR ISTIOD'S SIDECAR INJECTOR, for e2e tests
// and the demo only: there is no istiod here. It is a real mutating admission
// webhook, served on 127.0.0.1 with its own CA and registered under Istio's
// configuration names and selectors (internal/istiofixture), so the real API
// server decides which pods it sees exactly as it would for Istio. It then
// mutates pods the way Istio's injector does (docs/istio.md 1.3-1.4):
//
//   - skips hostNetwork pods, the namespaces Istio never injects, and pods
//     with sidecar.istio.io/inject=false (label wins over annotation)
//     (src pkg/kube/inject/inject.go injectRequired, initializer.go);
//   - adds the istio-init init container and the istio-proxy sidecar, as a
//     container (classic) or an init container with restartPolicy Always
//     (native; per revision, or the sidecar.istio.io/nativeSidecar annotation);
//   - sets the sidecar.istio.io/status annotation with the revision, the
//     istio.io/rev annotation, and the security.istio.io/tlsMode and
//     service.istio.io/canonical-* labels, and no istio.io/rev pod label
//     (src pkg/kube/inject/webhook.go getInjectionStatus).
//
// It does not render Istio's template, mount volumes or start an Envoy.
package injector

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Revision is an Istio revision the stand-in serves.
type Revision struct {
	Name string
	// ProxyImage is the istio-proxy image, e.g. docker.io/istio/proxyv2:1.30.0.
	ProxyImage string
	// Native injects istio-proxy as a native sidecar (the default from Istio 1.28).
	Native bool
}

// Server is a running stand-in injector.
type Server struct {
	// URL is https://127.0.0.1:PORT; revision R is served under URL/inject/R.
	URL string
	// CABundle is the PEM CA that signed the serving certificate.
	CABundle  []byte
	revisions map[string]Revision
	srv       *http.Server
	ln        net.Listener
}

// ignoredNamespaces mirrors Istio's (src pkg/kube/inject/initializer.go).
var ignoredNamespaces = map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true}

// Start serves the revisions on addr (use "127.0.0.1:0" for a free port).
func Start(addr string, revisions ...Revision) (*Server, error) {
	if host, _, err := net.SplitHostPort(addr); err != nil || !net.ParseIP(host).IsLoopback() {
		return nil, fmt.Errorf("the injector stand-in only listens on loopback, not %q", addr)
	}
	caPEM, cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &Server{URL: "https://" + ln.Addr().String(), CABundle: caPEM, revisions: map[string]Revision{}, ln: ln}
	for _, r := range revisions {
		s.revisions[r.Name] = r
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/inject/", s.handle)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	rev, ok := s.revisions[strings.TrimPrefix(r.URL.Path, "/inject/")]
	if !ok {
		http.Error(w, "unknown revision", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		resp.Allowed = false
		resp.Result = &metav1.Status{Message: "decode pod: " + err.Error()}
	} else if patch := Patch(&pod, review.Request.Namespace, rev); patch != nil {
		resp.Patch = patch
		pt := admissionv1.PatchTypeJSONPatch
		resp.PatchType = &pt
	}
	review.Response = resp
	review.Request = nil
	out, _ := json.Marshal(review)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// injectRequired is the injector's own check after webhook selection.
func injectRequired(pod *corev1.Pod, namespace string) bool {
	if pod.Spec.HostNetwork || ignoredNamespaces[namespace] {
		return false
	}
	if _, done := pod.Annotations["sidecar.istio.io/status"]; done {
		return false
	}
	v, ok := pod.Labels["sidecar.istio.io/inject"]
	if !ok {
		v = pod.Annotations["sidecar.istio.io/inject"]
	}
	// Only y/yes/true/on (any case) ask for injection; any other value opts
	// out (src pkg/kube/inject/inject.go injectRequired).
	switch strings.ToLower(v) {
	case "", "y", "yes", "true", "on":
		return true
	}
	return false
}

type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

func escape(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}

// Patch returns the JSON patch that injects pod, or nil when it must not be
// injected.
func Patch(pod *corev1.Pod, namespace string, rev Revision) []byte {
	if !injectRequired(pod, namespace) {
		return nil
	}
	native := rev.Native
	if v, ok := pod.Annotations["sidecar.istio.io/nativeSidecar"]; ok {
		native = v == "true"
	}
	var ops []op
	always := corev1.ContainerRestartPolicyAlways
	initC := corev1.Container{Name: "istio-init", Image: rev.ProxyImage, Args: []string{"istio-iptables"}}
	proxy := corev1.Container{Name: "istio-proxy", Image: rev.ProxyImage, Args: []string{"proxy", "sidecar"},
		Ports: []corev1.ContainerPort{{Name: "http-envoy-prom", ContainerPort: 15090}}}
	status := map[string]any{"initContainers": []string{"istio-init"}, "containers": []string{"istio-proxy"},
		"volumes": []string{"istio-envoy", "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert"}, "imagePullSecrets": nil, "revision": rev.Name}
	inits := []corev1.Container{initC}
	if native {
		proxy.RestartPolicy = &always
		inits = append(inits, proxy)
		status["initContainers"] = []string{"istio-init", "istio-proxy"}
		status["containers"] = nil
	}
	if len(pod.Spec.InitContainers) == 0 {
		ops = append(ops, op{"add", "/spec/initContainers", inits})
	} else {
		for _, c := range inits {
			ops = append(ops, op{"add", "/spec/initContainers/-", c})
		}
	}
	if !native {
		ops = append(ops, op{"add", "/spec/containers/-", proxy})
	}
	statusJSON, _ := json.Marshal(status)
	ops = append(ops, setMap("/metadata/annotations", pod.Annotations, map[string]string{
		"sidecar.istio.io/status": string(statusJSON),
		"istio.io/rev":            rev.Name,
	})...)
	name := pod.Labels["app"]
	if name == "" {
		name = pod.GenerateName
	}
	ops = append(ops, setMap("/metadata/labels", pod.Labels, map[string]string{
		"security.istio.io/tlsMode":           "istio",
		"service.istio.io/canonical-name":     name,
		"service.istio.io/canonical-revision": "latest",
	})...)
	out, _ := json.Marshal(ops)
	return out
}

func setMap(path string, existing map[string]string, add map[string]string) []op {
	if existing == nil {
		return []op{{"add", path, add}}
	}
	var ops []op
	for k, v := range add {
		ops = append(ops, op{"add", path + "/" + escape(k), v})
	}
	return ops
}

// selfSigned makes a CA and a serving certificate for 127.0.0.1 signed by it.
func selfSigned() ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshmigrate e2e injector stand-in CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return nil, tls.Certificate{}, errors.Join(errors.New("build the serving certificate"), err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), cert, nil
}

// Handle returns a Server value for an injector running in another process
// (the demo's), enough to Register its webhooks.
func Handle(url string, caBundle []byte, revisions ...Revision) *Server {
	s := &Server{URL: url, CABundle: caBundle, revisions: map[string]Revision{}}
	for _, r := range revisions {
		s.revisions[r.Name] = r
	}
	return s
}
