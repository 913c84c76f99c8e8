package cluster

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/watch"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// watchListKube is the fake clientset standing for a client whose server
// can stream lists (client-go's fake says it cannot, so the reader pages).
type watchListKube struct{ *kubefake.Clientset }

func (watchListKube) IsWatchListSemanticsUnSupported() bool { return false }

// playWatchList makes the fake answer a watch of pods as an API server
// answers a watch-list: an ADDED event for each pod, then the bookmark that
// ends the initial events (or, with end false, the end of the watch). It
// records the options of each watch in got.
func (f *fixture) playWatchList(t *testing.T, end bool, got *[]metav1.ListOptions) {
	t.Helper()
	f.kube.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		*got = append(*got, a.(k8stesting.WatchActionImpl).ListOptions)
		list, err := f.kube.Tracker().List(corev1.SchemeGroupVersion.WithResource("pods"), corev1.SchemeGroupVersion.WithKind("Pod"), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		pods := list.(*corev1.PodList).Items
		w := watch.NewFakeWithChanSize(len(pods)+1, false)
		for i := range pods {
			w.Add(&pods[i])
		}
		if end {
			w.Action(watch.Bookmark, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "42",
				Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}})
		} else {
			w.Stop()
		}
		return true, w, nil
	})
}

func (f *fixture) readStreaming(scope Scope) (*Snapshot, error) {
	r := NewReader(Clients{Kube: watchListKube{f.kube}, Istio: f.istio, Metadata: f.md})
	return r.Read(context.Background(), scope)
}

func podActions(f *fixture) (lists, watches int) {
	for _, a := range f.kube.Actions() {
		if a.GetResource().Resource != "pods" {
			continue
		}
		switch a.GetVerb() {
		case "list":
			lists++
		case "watch":
			watches++
		}
	}
	return lists, watches
}

func TestReadStreamsPodsClusterWide(t *testing.T) {
	paged, err := newFixture(true).read(t, Scope{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(true)
	var opts []metav1.ListOptions
	f.playWatchList(t, true, &opts)
	s, err := f.readStreaming(Scope{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Pods, paged.Pods) {
		t.Errorf("streamed pods differ from paged ones:\n%+v\n%+v", s.Pods, paged.Pods)
	}
	if lists, watches := podActions(f); lists != 0 || watches != 1 {
		t.Errorf("%d pod lists and %d watches, want one watch-list", lists, watches)
	}
	want := metav1.ListOptions{Watch: true, SendInitialEvents: opts[0].SendInitialEvents, AllowWatchBookmarks: true,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan}
	if len(opts) != 1 || !reflect.DeepEqual(opts[0], want) || opts[0].SendInitialEvents == nil || !*opts[0].SendInitialEvents {
		t.Errorf("watch options = %+v: want a consistent watch-list (sendInitialEvents, NotOlderThan, no resourceVersion)", opts)
	}
}

func TestReadPagesWhenTheWatchListIsRefused(t *testing.T) {
	for name, refusal := range map[string]error{
		"no watch permission": apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("RBAC: watch denied")),
		"server without watch-list": apierrors.NewInvalid(schema.GroupKind{Kind: "ListOptions"}, "", field.ErrorList{
			field.Forbidden(field.NewPath("sendInitialEvents"), "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")}),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(true)
			f.kube.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) { return true, nil, refusal })
			s, err := f.readStreaming(Scope{AllNamespaces: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Pods) != 4 {
				t.Errorf("got %d pods, want 4", len(s.Pods))
			}
			if lists, watches := podActions(f); lists != 1 || watches != 1 {
				t.Errorf("%d pod lists and %d watches, want the refused watch and one list", lists, watches)
			}
		})
	}
}

func TestReadFailsWhenTheWatchListEndsEarly(t *testing.T) {
	f := newFixture(true)
	var opts []metav1.ListOptions
	f.playWatchList(t, false, &opts)
	_, err := f.readStreaming(Scope{AllNamespaces: true})
	if err == nil || !strings.Contains(err.Error(), "watch pods cluster-wide") || !strings.Contains(err.Error(), "before the end of the initial events") {
		t.Errorf("err = %v, want the cut watch-list named", err)
	}
	if lists, _ := podActions(f); lists != 0 {
		t.Error("pods already visited must not be read again in pages")
	}
}

func TestReadNamedNamespacesInPages(t *testing.T) {
	f := newFixture(true)
	var opts []metav1.ListOptions
	f.playWatchList(t, true, &opts)
	s, err := f.readStreaming(Scope{Namespaces: []string{"shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if lists, watches := podActions(f); len(s.Pods) != 3 || lists != 1 || watches != 0 {
		t.Errorf("%d pods from %d lists and %d watches: a namespace is one page, never a watch", len(s.Pods), lists, watches)
	}
}

// A watch-list cut short (a restarting API server) starts the read over:
// the snapshot holds every pod once.
func TestReadStartsOverWhenTheWatchListIsCut(t *testing.T) {
	f := newFixture(true)
	want, err := f.read(t, Scope{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	watches := 0
	f.kube.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		watches++
		list, err := f.kube.Tracker().List(corev1.SchemeGroupVersion.WithResource("pods"), corev1.SchemeGroupVersion.WithKind("Pod"), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		pods := list.(*corev1.PodList).Items
		w := watch.NewFakeWithChanSize(len(pods)+1, false)
		for i := range pods {
			w.Add(&pods[i])
		}
		if watches == 1 {
			w.Stop() // cut before the bookmark
		} else {
			w.Action(watch.Bookmark, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "42",
				Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}})
		}
		return true, w, nil
	})
	got, err := f.readStreaming(Scope{AllNamespaces: true})
	if err != nil {
		t.Fatalf("read after a cut watch-list: %v", err)
	}
	if watches != 2 || len(got.Pods) != len(want.Pods) {
		t.Errorf("%d watches, %d pods; want 2 watches and the %d pods once each", watches, len(got.Pods), len(want.Pods))
	}
}
