package phases

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

func checkpointCM(ns, data string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: CheckpointName, Namespace: ns,
		Labels: map[string]string{plan.LabelManagedBy: plan.ManagedBy, LabelComponent: "checkpoint"}},
		Data: map[string]string{CheckpointKey: data}}
}

func TestStatusAllShowsUndecodableCheckpoint(t *testing.T) {
	good := func(ns string) string {
		return `{"namespace":"` + ns + `","planID":"mp-1","phases":[{"name":"inject","state":"done"}],"records":[]}`
	}
	planted := `{"namespace":"c","planID":"mp-1","records":[{"seq":7,"planID":"mp-1","phase":"authz","action":"apply","target":"Namespace/kube-system","state":"done",` +
		`"undo":{"apiVersion":"security.istio.io/v1","existed":true,"prior":{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kube-system"}}}}]}`
	c := &Cluster{Kube: fake.NewClientset(
		checkpointCM("a", good("a")), checkpointCM("b", `{"namespace": "b", "records": [`),
		checkpointCM("c", planted), checkpointCM("d", good("d")))}
	sts, err := c.Status(context.Background(), nil, true)
	if err != nil {
		t.Fatalf("one bad checkpoint broke status -A: %v", err)
	}
	var names []string
	for _, s := range sts {
		names = append(names, s.Namespace)
	}
	if strings.Join(names, ",") != "a,b,c,d" {
		t.Fatalf("status -A lists %v, want every namespace a,b,c,d", names)
	}
	// -o json shows each namespace's own error, and nothing else is wrong.
	shown := func(i int) string {
		b, err := json.Marshal(sts[i])
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for i, want := range map[int]string{
		1: `the checkpoint ConfigMap b/meshmigrate-checkpoint is not readable`,
		2: `checkpoint meshmigrate-checkpoint in namespace c holds record 7 (authz apply Namespace/kube-system) that this tool never writes`,
	} {
		if got := shown(i); !strings.Contains(got, `"error":`) || !strings.Contains(got, want) {
			t.Errorf("status of %s = %s, want its error %q", sts[i].Namespace, got, want)
		}
	}
	for _, i := range []int{0, 3} {
		if got := shown(i); strings.Contains(got, `"error"`) || sts[i].Phase != plan.PhaseInject || sts[i].State != StateDone {
			t.Errorf("status of %s = %s, want inject done and no error", sts[i].Namespace, got)
		}
	}

	// Named, the bad one is shown the same way, and the others still are.
	sts, err = (&Cluster{Kube: fake.NewClientset(checkpointCM("a", good("a")), checkpointCM("c", planted),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "c"}})}).
		Status(context.Background(), []string{"a", "c"}, false)
	if err != nil || len(sts) != 2 {
		t.Fatalf("status -n a,c = %+v, %v", sts, err)
	}
	if got := shown(1); !strings.Contains(got, "record 7 (authz apply Namespace/kube-system)") {
		t.Errorf("status -n c = %s, want its error", got)
	}
}
