package e2e

import (
	"context"
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// AnnotationRedirection is what istio-cni writes on a pod whose traffic it
// redirected to ztunnel (docs/istio.md 1.6).
const AnnotationRedirection = "ambient.istio.io/redirection"

// StartCNI is a STAND-IN FOR ISTIO-CNI (there is no CNI agent, no ztunnel
// and no pod network here): every interval it does to the pods of the
// given namespaces what istio-cni does to their annotations. In a namespace
// labelled istio.io/dataplane-mode=ambient it marks each running pod
// captured, unless the pod carries a sidecar (sidecar.istio.io/status),
// runs on the host network or opted out (istio.io/dataplane-mode=none),
// as Istio's cni/pkg/util/enablement_selector.go decides; in a namespace
// that left ambient it removes the mark. It stops with ctx.
func StartCNI(ctx context.Context, kube kubernetes.Interface, interval time.Duration, namespaces ...string) {
	every(ctx, interval, func() {
		for _, ns := range namespaces {
			cniPass(ctx, kube, ns)
		}
	})
}

// every runs pass at once and then every interval, in the background,
// until ctx ends: the loop of the controller stand-ins.
func every(ctx context.Context, interval time.Duration, pass func()) {
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			pass()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func cniPass(ctx context.Context, kube kubernetes.Interface, ns string) {
	n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return
	}
	ambient := n.Labels["istio.io/dataplane-mode"] == "ambient"
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		want := ambient && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil &&
			p.Annotations["sidecar.istio.io/status"] == "" && !p.Spec.HostNetwork && p.Labels["istio.io/dataplane-mode"] != "none"
		has := p.Annotations[AnnotationRedirection] == "enabled"
		if want == has {
			continue
		}
		var value any // null removes the annotation
		if want {
			value = "enabled"
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationRedirection: value}}})
		_, _ = kube.CoreV1().Pods(ns).Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	}
}
