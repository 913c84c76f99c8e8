package traffic

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// WellKnownServices are where Prometheus usually runs: Istio's addon, the
// Prometheus Operator and kube-prometheus-stack, and the community chart.
var WellKnownServices = []string{
	"istio-system/prometheus",
	"monitoring/prometheus-operated",
	"monitoring/prometheus-k8s",
	"monitoring/kube-prometheus-stack-prometheus",
	"monitoring/prometheus-server",
	"prometheus/prometheus-server",
	"observability/prometheus",
}

// ErrNoPrometheus is returned when no Prometheus service was found.
var ErrNoPrometheus = fmt.Errorf("no Prometheus service found in the cluster (looked for %s): pass --prometheus-url or --prometheus-service, or --no-traffic",
	strings.Join(WellKnownServices, ", "))

// Discover finds a Prometheus service (service, "NS/NAME[:PORT]", or the
// well-known ones when empty) and returns a reader that reaches it through
// the API server's service proxy, with the caller's credentials.
func Discover(ctx context.Context, kube kubernetes.Interface, cfg *rest.Config, service string) (*Prometheus, error) {
	candidates := WellKnownServices
	if service != "" {
		candidates = []string{service}
	}
	for _, c := range candidates {
		ref, port, err := parseService(c)
		if err != nil {
			return nil, err
		}
		ns, name, _ := strings.Cut(ref, "/")
		var svc *corev1.Service
		err = cluster.OnTransient(ctx, func() error {
			var err error
			svc, err = kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
			return err
		})
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			if service != "" {
				return nil, fmt.Errorf("prometheus service %s: %w", service, err)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get service %s: %w", ref, err)
		}
		if port == "" {
			port = servicePort(svc)
		}
		rt, err := rest.TransportFor(cfg)
		if err != nil {
			return nil, err
		}
		url := strings.TrimSuffix(cfg.Host, "/") + fmt.Sprintf("/api/v1/namespaces/%s/services/%s:%s/proxy", ns, name, port)
		return NewPrometheus(url, rt)
	}
	return nil, ErrNoPrometheus
}

func parseService(s string) (ref, port string, err error) {
	ref, port, _ = strings.Cut(s, ":")
	if ns, name, ok := strings.Cut(ref, "/"); !ok || ns == "" || name == "" {
		return "", "", fmt.Errorf("--prometheus-service %q: want NAMESPACE/NAME[:PORT]", s)
	}
	return ref, port, nil
}

// servicePort picks the service's web port: one named http/web, else 9090,
// else the first.
func servicePort(svc *corev1.Service) string {
	for _, p := range svc.Spec.Ports {
		if p.Name == "http" || p.Name == "web" || p.Name == "http-web" {
			return strconv.Itoa(int(p.Port))
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.Port == 9090 {
			return "9090"
		}
	}
	if len(svc.Spec.Ports) > 0 {
		return strconv.Itoa(int(svc.Spec.Ports[0].Port))
	}
	return "9090"
}
