package e2e

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GatewaysGVR is the Gateway API's gateways at v1.
var GatewaysGVR = schema.GroupVersionResource{Group: gatewayv1.GroupName, Version: "v1", Resource: "gateways"}

// StartWaypoints is a STAND-IN FOR ISTIOD'S GATEWAY CONTROLLER (there is
// no istiod and no waypoint Deployment here): every interval it marks each
// Gateway of class istio-waypoint in the given namespaces Accepted and
// Programmed for its current generation, which istiod does once it has
// deployed the waypoint and given it an address. Other Gateways are left
// alone. It stops with ctx.
func StartWaypoints(ctx context.Context, dyn dynamic.Interface, interval time.Duration, namespaces ...string) {
	every(ctx, interval, func() {
		for _, ns := range namespaces {
			programWaypoints(ctx, dyn, ns)
		}
	})
}

func programWaypoints(ctx context.Context, dyn dynamic.Interface, ns string) {
	list, err := dyn.Resource(GatewaysGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for i := range list.Items {
		gw := &list.Items[i]
		if class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName"); class != "istio-waypoint" {
			continue
		}
		gen := gw.GetGeneration()
		now := metav1.Now()
		conds := []metav1.Condition{
			{Type: string(gatewayv1.GatewayConditionAccepted), Status: metav1.ConditionTrue, Reason: string(gatewayv1.GatewayReasonAccepted),
				Message: "accepted by the e2e stand-in for istiod", ObservedGeneration: gen, LastTransitionTime: now},
			{Type: string(gatewayv1.GatewayConditionProgrammed), Status: metav1.ConditionTrue, Reason: string(gatewayv1.GatewayReasonProgrammed),
				Message: "programmed by the e2e stand-in for istiod", ObservedGeneration: gen, LastTransitionTime: now},
		}
		if programmed(gw, gen) {
			continue
		}
		var raw []any
		for _, c := range conds {
			m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&c)
			if err != nil {
				return
			}
			raw = append(raw, m)
		}
		gw.Object["status"] = map[string]any{"conditions": raw}
		_, _ = dyn.Resource(GatewaysGVR).Namespace(ns).UpdateStatus(ctx, gw, metav1.UpdateOptions{})
	}
}

func programmed(gw *unstructured.Unstructured, gen int64) bool {
	conds, _, _ := unstructured.NestedSlice(gw.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == string(gatewayv1.GatewayConditionProgrammed) && m["status"] == "True" && m["observedGeneration"] == gen {
			return true
		}
	}
	return false
}
