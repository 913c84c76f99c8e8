package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

// flaky fails the first n calls of each distinct request (verb, resource,
// namespace, name) with err, as an API server that is restarting or
// throttling does; it counts every call.
type flaky struct {
	n     int
	err   error
	mu    sync.Mutex
	calls map[string]int
}

func newFlaky(n int, err error) *flaky { return &flaky{n: n, err: err, calls: map[string]int{}} }

// key names a request "verb resource [namespace] [name]".
func key(a k8stesting.Action) string {
	parts := []string{a.GetVerb(), a.GetResource().Resource}
	if ns := a.GetNamespace(); ns != "" {
		parts = append(parts, ns)
	}
	if g, ok := a.(k8stesting.GetAction); ok && g.GetName() != "" {
		parts = append(parts, g.GetName())
	}
	return strings.Join(parts, " ")
}

func (f *flaky) react(a k8stesting.Action) (bool, runtime.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := key(a)
	f.calls[k]++
	if f.calls[k] <= f.n {
		return true, nil, f.err
	}
	return false, nil, nil
}

// everywhere puts the reactor in front of every fake the reader uses
// (the discovery fake shares the clientset's).
func (fx *fixture) everywhere(react k8stesting.ReactionFunc) {
	fx.kube.PrependReactor("*", "*", react)
	fx.istio.PrependReactor("*", "*", react)
	fx.md.PrependReactor("*", "*", react)
}

// connReset is what client-go returns when the connection drops mid-request.
func connReset() error {
	return &url.Error{Op: "Get", URL: "https://10.0.0.1:6443/api/v1/pods",
		Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
}

func comparable(s *Snapshot) *Snapshot {
	c := *s
	c.TakenAt = time.Time{}
	return &c
}

// Every read of a snapshot (discovery, gets, each list) that fails twice
// with a transient error is retried: the snapshot is the one a healthy
// API server gives.
func TestReadRetriesTransientErrors(t *testing.T) {
	fastRetries(t)
	// With kube-system, whose UID names the cluster (best effort, so a
	// read that gave up on it would still succeed, without the UID).
	newFixture := func() *fixture {
		f := newFixture(true)
		_ = f.kube.Tracker().Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system", UID: "u-cluster"}})
		return f
	}
	for _, scope := range []Scope{{AllNamespaces: true}, {Namespaces: []string{"shop", "other"}}} {
		want, err := newFixture().read(t, scope)
		if err != nil || want.ClusterUID != "u-cluster" {
			t.Fatalf("a healthy read: %v, cluster UID %q", err, want.ClusterUID)
		}
		for _, tc := range []struct {
			name string
			err  error
		}{
			{"503", apierrors.NewServiceUnavailable("apiserver is restarting")},
			{"500", apierrors.NewInternalError(errors.New("etcd hiccup"))},
			{"connection reset", connReset()},
		} {
			f := newFixture()
			fl := newFlaky(2, tc.err)
			f.everywhere(fl.react)
			got, err := f.read(t, scope)
			if err != nil {
				t.Errorf("%+v, %s: %v", scope, tc.name, err)
				continue
			}
			if !reflect.DeepEqual(comparable(got), comparable(want)) {
				t.Errorf("%+v, %s: the snapshot differs from a healthy read:\ngot  %+v\nwant %+v", scope, tc.name, got, want)
			}
			for _, k := range []string{"get version", "list mutatingwebhookconfigurations", "get configmaps istio-system istio", "list replicasets", "list peerauthentications"} {
				if c := fl.calls[k] + fl.calls[k+" shop"]; c < 3 {
					t.Errorf("%+v, %s: %q was called %d times, want 2 failures and a success", scope, tc.name, k, c)
				}
			}
		}
	}
}

// podPages answers pod lists in two pages, the second behind continue
// token "2"; second may fail a call of the second page. It counts the
// calls per token.
type podPages struct {
	mu     sync.Mutex
	calls  map[string]int
	second func(call int) error
}

func (p *podPages) react(a k8stesting.Action) (bool, runtime.Object, error) {
	opts := a.(k8stesting.ListActionImpl).ListOptions
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[opts.Continue]++
	pod := func(name string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}}
	}
	switch opts.Continue {
	case "":
		return true, &corev1.PodList{ListMeta: metav1.ListMeta{Continue: "2"}, Items: []corev1.Pod{pod("a"), pod("b")}}, nil
	case "2":
		if err := p.second(p.calls["2"]); err != nil {
			return true, nil, err
		}
		return true, &corev1.PodList{Items: []corev1.Pod{pod("c")}}, nil
	}
	return true, nil, fmt.Errorf("unexpected continue token %q", opts.Continue)
}

func podNames(s *Snapshot) string {
	var names []string
	for _, p := range s.Pods {
		names = append(names, p.Name)
	}
	return strings.Join(names, ",")
}

// A page that fails is retried on its own: the list goes on from its
// continue token rather than starting over.
func TestReadRetriesEachPage(t *testing.T) {
	fastRetries(t)
	f := newFixture(true)
	pages := &podPages{calls: map[string]int{}, second: func(call int) error {
		if call == 1 {
			return apierrors.NewServiceUnavailable("restarting")
		}
		return nil
	}}
	f.kube.PrependReactor("list", "pods", pages.react)
	s, err := f.read(t, Scope{Namespaces: []string{"shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := podNames(s); got != "a,b,c" {
		t.Errorf("pods = %s, want a,b,c once each", got)
	}
	if pages.calls[""] != 1 || pages.calls["2"] != 2 {
		t.Errorf("calls per continue token = %v, want the first page once and the second twice", pages.calls)
	}
}

// A continue token that expired (410: the API server compacted past the
// list's version) cannot be retried: the read starts over and visits no
// item twice.
func TestReadStartsOverWhenAContinueTokenExpired(t *testing.T) {
	fastRetries(t)
	f := newFixture(true)
	pages := &podPages{calls: map[string]int{}, second: func(call int) error {
		if call == 1 {
			return apierrors.NewResourceExpired("the provided continue parameter is too old")
		}
		return nil
	}}
	f.kube.PrependReactor("list", "pods", pages.react)
	s, err := f.read(t, Scope{Namespaces: []string{"shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := podNames(s); got != "a,b,c" {
		t.Errorf("pods = %s, want a,b,c once each", got)
	}
	if pages.calls[""] != 2 || pages.calls["2"] != 2 {
		t.Errorf("calls per continue token = %v, want the list started over once", pages.calls)
	}
}

// Denials and absence are answers, not faults: after a transient error
// each is taken at once, and the RBAC fallback (a cluster-wide list
// forbidden -> one list per namespace) and the mesh config's "not there,
// try the revision's" still happen.
func TestReadDoesNotRetryDenialsOrAbsence(t *testing.T) {
	fastRetries(t)
	f := newFixture(true)
	var mu sync.Mutex
	calls := map[string]int{}
	// Each request first meets a 503, then its real answer; the
	// cluster-wide pod list's real answer is 403.
	f.everywhere(func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		k := key(a)
		calls[k]++
		switch {
		case calls[k] == 1:
			return true, nil, apierrors.NewServiceUnavailable("restarting")
		case k == "list pods":
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("cluster-wide list not allowed"))
		}
		return false, nil, nil
	})
	s, err := f.read(t, Scope{Selector: "team=a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Namespaces) != 1 || len(s.Pods) != 3 {
		t.Errorf("got %d namespaces, %d pods: want shop and its 3 pods through the per-namespace fallback", len(s.Namespaces), len(s.Pods))
	}
	if s.Mesh.Source != "istio-system/istio-1-30" {
		t.Errorf("mesh config from %q, want istio-system/istio-1-30 after istio was not found", s.Mesh.Source)
	}
	for k, want := range map[string]int{
		"list pods":                         2, // 503, then 403: not retried
		"list pods shop":                    2, // the fallback
		"get configmaps istio-system istio": 2, // 503, then 404: not retried
	} {
		if calls[k] != want {
			t.Errorf("%q: %d calls, want %d", k, calls[k], want)
		}
	}

	f = newFixture(true)
	calls = map[string]int{}
	f.everywhere(func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		k := key(a)
		if calls[k]++; calls[k] == 1 {
			return true, nil, apierrors.NewServiceUnavailable("restarting")
		}
		return false, nil, nil
	})
	_, err = f.read(t, Scope{Namespaces: []string{"shop", "nope"}})
	if err == nil || !strings.Contains(err.Error(), `namespace "nope" not found`) {
		t.Errorf("err = %v, want the missing namespace named", err)
	}
	if c := calls["get namespaces nope"]; c != 2 {
		t.Errorf("get namespace nope: %d calls, want 2 (a 503, then a 404 taken at once)", c)
	}
}

// A fault that does not clear is the caller's after the policy's tries,
// named by the read that met it.
func TestReadGivesUpOnAPersistentFault(t *testing.T) {
	fastRetries(t)
	f := newFixture(true)
	calls := 0
	f.kube.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		return true, nil, apierrors.NewServiceUnavailable("down for good")
	})
	_, err := f.read(t, Scope{Namespaces: []string{"shop"}})
	if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "list pods in namespace shop") {
		t.Errorf("err = %v, want the 503 of list pods in namespace shop", err)
	}
	if calls != transientBackoff.Steps {
		t.Errorf("%d calls, want the policy's %d tries", calls, transientBackoff.Steps)
	}
}
