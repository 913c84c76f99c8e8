package injector

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func apply(t *testing.T, pod *corev1.Pod, patch []byte) map[string]any {
	t.Helper()
	var ops []map[string]any
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	got := map[string]any{}
	for _, o := range ops {
		got[o["path"].(string)] = o["value"]
	}
	return got
}

func TestPatchFollowsIstiosContract(t *testing.T) {
	rev := Revision{Name: "1-30", ProxyImage: "proxyv2:1.30.0"}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"team": "a"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	got := apply(t, pod, Patch(pod, "shop", rev))
	if _, ok := got["/spec/containers/-"]; !ok {
		t.Errorf("classic injection adds istio-proxy to containers: %v", got)
	}
	var status struct{ Revision string }
	if err := json.Unmarshal([]byte(got["/metadata/annotations/sidecar.istio.io~1status"].(string)), &status); err != nil || status.Revision != "1-30" {
		t.Errorf("status annotation = %v", got)
	}
	if _, ok := got["/metadata/labels/istio.io~1rev"]; ok {
		t.Error("Istio's injector sets no istio.io/rev pod label")
	}

	rev.Native = true
	pod.Annotations = nil
	got = apply(t, pod, Patch(pod, "shop", rev))
	if ann, _ := got["/metadata/annotations"].(map[string]any); ann["istio.io/rev"] != "1-30" {
		t.Errorf("a pod without annotations gets the whole map: %v", got)
	}
	inits, _ := got["/spec/initContainers"].([]any)
	if len(inits) != 2 || inits[1].(map[string]any)["restartPolicy"] != "Always" {
		t.Errorf("native injection puts istio-proxy in initContainers with restartPolicy Always: %v", got)
	}
}

func TestPatchSkips(t *testing.T) {
	rev := Revision{Name: "1-30"}
	for name, pod := range map[string]*corev1.Pod{
		"hostNetwork":        {Spec: corev1.PodSpec{HostNetwork: true}},
		"opt-out annotation": {ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"sidecar.istio.io/inject": "false"}}},
		"already injected":   {ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"sidecar.istio.io/status": "{}"}}},
		"label false wins":   {ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"sidecar.istio.io/inject": "false"}, Annotations: map[string]string{"sidecar.istio.io/inject": "true"}}},
	} {
		if p := Patch(pod, "shop", rev); p != nil {
			t.Errorf("%s: patched %s", name, p)
		}
	}
	if p := Patch(&corev1.Pod{}, "kube-system", rev); p != nil {
		t.Error("kube-system is never injected")
	}
	if _, err := Start("0.0.0.0:0", rev); err == nil {
		t.Error("the stand-in must refuse non-loopback addresses")
	}
}
