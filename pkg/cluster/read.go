package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/pager"
	"k8s.io/client-go/util/watchlist"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
)

// DefaultPageSize is the page size of every list (limit/continue).
const DefaultPageSize = 500

// Clients are the API clients the reader uses. Each is an interface so unit
// tests can hand in fakes.
type Clients struct {
	Kube     kubernetes.Interface
	Istio    istioclient.Interface
	Metadata metadata.Interface
}

// Scope says which namespaces to read.
type Scope struct {
	// Namespaces are read by name; ignored when AllNamespaces is set.
	Namespaces    []string
	AllNamespaces bool
	// Selector is a label selector on namespaces.
	Selector string
	// Ambient reads the ambient data plane's node agents whatever the
	// namespaces' labels (a plan that moves them to ambient).
	Ambient bool
}

// Reader reads a Snapshot.
type Reader struct {
	Clients
	PageSize int64
	// Context and Server are copied into the snapshot to name the cluster.
	Context, Server string
	now             func() time.Time
}

// NewReader returns a Reader over the given clients.
func NewReader(c Clients) *Reader {
	return &Reader{Clients: c, PageSize: DefaultPageSize, now: time.Now}
}

var (
	gvrReplicaSets = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
	gvrJobs        = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
)

// readAttempts bounds how often Read starts over because a list's continue
// token expired.
const readAttempts = 3

// Read takes a Snapshot of the namespaces in scope. Every kind is read once,
// in pages; namespaced kinds with one cluster-wide list when the scope spans
// the cluster and RBAC allows it, otherwise namespace by namespace.
//
// Every request (each page of a list) is retried on transient errors as
// OnTransient does, so a gate polling through Read polls on through a
// restarting or throttling API server. A continue token that expired
// (410: etcd was compacted past the list's version while it was read)
// cannot be retried, nor can a watch-list cut short: the whole read starts
// over, since what was read is in the snapshot already and a restarted
// list would visit it again.
func (r *Reader) Read(ctx context.Context, scope Scope) (*Snapshot, error) {
	for attempt := 1; ; attempt++ {
		snap, err := r.read(ctx, scope)
		restart := apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || errors.Is(err, errStreamCut)
		if err == nil || !restart || attempt == readAttempts {
			return snap, err
		}
	}
}

func (r *Reader) read(ctx context.Context, scope Scope) (*Snapshot, error) {
	if _, err := retried(ctx, r.Kube.Discovery().ServerVersion); err != nil {
		return nil, reachError(r.Server, err)
	}
	nss, err := r.namespaces(ctx, scope)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{TakenAt: r.now().UTC(), Context: r.Context, Server: r.Server, Namespaces: nss}
	// kube-system's UID names the cluster whatever the kubeconfig calls it; a
	// plan records it so it is never applied to another cluster. Best effort:
	// the audit does not need it, and an empty UID makes apply fall back to
	// the server URL.
	if ks, err := retried(ctx, func() (*corev1.Namespace, error) {
		return r.Kube.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	}); err == nil {
		snap.ClusterUID = string(ks.UID)
	}
	names := make([]string, len(nss))
	inScope := make(map[string]bool, len(nss))
	for i, ns := range nss {
		names[i] = ns.Name
		inScope[ns.Name] = true
	}
	clusterWide := scope.AllNamespaces || scope.Selector != ""

	// The injectors tell where istiod lives, which tells where the mesh
	// config is, which names the root namespace the policies are read from.
	if snap.Injectors, snap.IstiodNamespace, err = r.injectors(ctx); err != nil {
		return nil, err
	}
	if snap.Mesh, err = r.meshConfig(ctx, snap.IstiodNamespace, snap.Injectors); err != nil {
		return nil, err
	}
	if len(nss) == 0 {
		return snap, nil
	}
	policyNamespaces := names
	if !inScope[snap.Mesh.RootNamespace] {
		policyNamespaces = append(append([]string{}, names...), snap.Mesh.RootNamespace)
	}

	var (
		g         errgroup.Group
		owners    = map[string]WorkloadRef{} // "ns/ReplicaSet/name" or "ns/Job/name" -> owner
		ownersMu  sync.Mutex
		rawOwners []podOwner
	)
	addOwners := func(kind string) func(runtime.Object) error {
		return func(o runtime.Object) error {
			m := o.(*metav1.PartialObjectMetadata)
			if ref := metav1.GetControllerOf(m); ref != nil {
				ownersMu.Lock()
				owners[m.Namespace+"/"+kind+"/"+m.Name] = WorkloadRef{Kind: ref.Kind, Name: ref.Name}
				ownersMu.Unlock()
			}
			return nil
		}
	}
	for _, k := range []struct {
		kind string
		gvr  schema.GroupVersionResource
	}{{"ReplicaSet", gvrReplicaSets}, {"Job", gvrJobs}} {
		g.Go(func() error {
			return r.listNamespaced(ctx, "list", k.gvr.Resource, names, clusterWide, func(ns string) pager.ListPageFunc {
				return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
					return r.Metadata.Resource(k.gvr).Namespace(ns).List(ctx, o)
				}
			}, nil, inScope, addOwners(k.kind))
		})
	}
	g.Go(func() error {
		return r.listNamespaced(ctx, "list", "pods", names, clusterWide, func(ns string) pager.ListPageFunc {
			return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return r.Kube.CoreV1().Pods(ns).List(ctx, o)
			}
		}, r.streamable(r.Kube, r.Kube.CoreV1().Pods(metav1.NamespaceAll).Watch), inScope, func(o runtime.Object) error {
			p := o.(*corev1.Pod)
			pod, owner := podFrom(p)
			snap.Pods = append(snap.Pods, pod)
			rawOwners = append(rawOwners, owner)
			return nil
		})
	})
	var onDeleteMu sync.Mutex
	addOnDelete := func(ns, kind, name string) {
		onDeleteMu.Lock()
		snap.OnDelete = append(snap.OnDelete, NamespacedWorkload{Namespace: ns, WorkloadRef: WorkloadRef{Kind: kind, Name: name}})
		onDeleteMu.Unlock()
	}
	g.Go(func() error {
		return r.listNamespaced(ctx, "list", "statefulsets", names, clusterWide, func(ns string) pager.ListPageFunc {
			return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return r.Kube.AppsV1().StatefulSets(ns).List(ctx, o)
			}
		}, nil, inScope, func(o runtime.Object) error {
			if st := o.(*appsv1.StatefulSet); st.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
				addOnDelete(st.Namespace, "StatefulSet", st.Name)
			}
			return nil
		})
	})
	g.Go(func() error {
		return r.listNamespaced(ctx, "list", "daemonsets", names, clusterWide, func(ns string) pager.ListPageFunc {
			return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return r.Kube.AppsV1().DaemonSets(ns).List(ctx, o)
			}
		}, nil, inScope, func(o runtime.Object) error {
			if ds := o.(*appsv1.DaemonSet); ds.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType {
				addOnDelete(ds.Namespace, "DaemonSet", ds.Name)
			}
			return nil
		})
	})
	if scope.Ambient || anyAmbient(nss) {
		// Only then: gates re-read their namespace every few seconds.
		g.Go(func() error {
			var err error
			snap.Ambient, err = r.ambient(ctx, snap.IstiodNamespace)
			return err
		})
	}
	g.Go(func() error {
		avail, err := r.istioPolicies(ctx, snap, policyNamespaces, clusterWide)
		snap.Istio = avail
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if scope.Ambient || anyAmbient(nss) {
		if err := r.waypointInputs(ctx, snap); err != nil {
			return nil, err
		}
	}
	for i := range snap.Pods {
		snap.Pods[i].Owner = resolveOwner(snap.Pods[i], rawOwners[i], owners)
	}
	sort.Slice(snap.OnDelete, func(i, j int) bool {
		a, b := snap.OnDelete[i], snap.OnDelete[j]
		return a.Namespace+"/"+a.String() < b.Namespace+"/"+b.String()
	})
	sort.Slice(snap.Pods, func(i, j int) bool {
		a, b := snap.Pods[i], snap.Pods[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return snap, nil
}

// namespaces resolves the scope to namespaces, sorted by name. A named
// namespace that does not exist is an error, not an empty report.
func (r *Reader) namespaces(ctx context.Context, scope Scope) ([]Namespace, error) {
	var out []Namespace
	add := func(n *corev1.Namespace) {
		out = append(out, Namespace{Name: n.Name, UID: string(n.UID), ResourceVersion: n.ResourceVersion, Labels: n.Labels, Annotations: n.Annotations})
	}
	if scope.AllNamespaces || (scope.Selector != "" && len(scope.Namespaces) == 0) {
		err := r.each(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = scope.Selector
			return r.Kube.CoreV1().Namespaces().List(ctx, o)
		}, func(o runtime.Object) error { add(o.(*corev1.Namespace)); return nil })
		if err != nil {
			return nil, apiError("list", "namespaces", "", err)
		}
	} else {
		sel, err := parseSelector(scope.Selector)
		if err != nil {
			return nil, err
		}
		for _, name := range scope.Namespaces {
			n, err := retried(ctx, func() (*corev1.Namespace, error) {
				return r.Kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			})
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("namespace %q not found: check the name and --context", name)
			}
			if err != nil {
				return nil, apiError("get", "namespaces", "", err)
			}
			if sel.Matches(labelSet(n.Labels)) {
				add(n)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// each visits every item of a paged list. Each page is retried on its own
// (the list goes on from its continue token, nothing is visited twice).
func (r *Reader) each(ctx context.Context, page pager.ListPageFunc, visit func(runtime.Object) error) error {
	p := pager.New(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return retried(ctx, func() (runtime.Object, error) { return page(ctx, o) })
	})
	p.PageSize = r.PageSize
	return p.EachListItem(ctx, metav1.ListOptions{}, visit)
}

// watchFunc opens a watch over the whole cluster.
type watchFunc func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)

// streamable returns w when client can stream a list with it (a watch-list,
// see stream), or nil: client-go's fakes cannot, and users can turn it off
// with client-go's own gate (KUBE_FEATURE_WatchListClient=false).
func (r *Reader) streamable(client any, w watchFunc) watchFunc {
	if !clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) || watchlist.DoesClientNotSupportWatchListSemantics(client) {
		return nil
	}
	return w
}

// stream visits every item of a kind with a watch-list: one watch request
// with sendInitialEvents, which the API server answers from its watch cache
// with the current state (consistent like a list: resourceVersionMatch
// NotOlderThan and no resourceVersion) and a bookmark marking its end. For
// 20,000 pods that is half the API server's CPU of pages of 500 (each page
// a read from etcd), and one object at a time keeps the client's memory
// flat. started is false when the request was refused and nothing was
// visited (no watch permission, or a server that does not serve watch-list:
// before Kubernetes 1.32, and 1.33): the caller then reads pages.
func stream(ctx context.Context, w watchFunc, visit func(runtime.Object) error) (started bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wi, err := w(ctx, metav1.ListOptions{SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	if err != nil {
		return false, err
	}
	defer wi.Stop()
	for ev := range wi.ResultChan() {
		switch ev.Type {
		case watch.Added:
			if err := visit(ev.Object); err != nil {
				return true, err
			}
		case watch.Bookmark:
			m, err := metaOf(ev.Object)
			if err != nil {
				return true, fmt.Errorf("watch-list bookmark: %w", err)
			}
			if m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
				return true, nil
			}
		case watch.Error:
			err := apierrors.FromObject(ev.Object)
			if Transient(err) {
				err = fmt.Errorf("%w: %w", errStreamCut, err)
			}
			return true, err
		default:
			// Modified or Deleted come only after the initial events end.
			return true, fmt.Errorf("watch-list: unexpected %s event before the end of the initial events", ev.Type)
		}
	}
	if err := ctx.Err(); err != nil {
		return true, err
	}
	return true, fmt.Errorf("%w: the API server ended the watch before the end of the initial events", errStreamCut)
}

// errStreamCut is a watch-list cut before its end (a restarting API
// server, a dropped connection): the objects it gave are in the snapshot
// already, so the read starts over rather than retry the stream alone.
var errStreamCut = errors.New("watch-list cut short")

// listNamespaced visits a namespaced kind across the audited namespaces: one
// cluster-wide read when the scope spans the cluster (items outside the
// scope are skipped), streamed when the kind has a watch and the server
// serves it, else in pages; falling back to one list per namespace when RBAC
// forbids the cluster-wide list. A forbidden per-namespace list is an error
// that names the verb and resource.
func (r *Reader) listNamespaced(ctx context.Context, verb, resource string, namespaces []string, clusterWide bool,
	page func(ns string) pager.ListPageFunc, watchAll watchFunc, inScope map[string]bool, visit func(runtime.Object) error) error {
	filtered := func(o runtime.Object) error {
		m, err := metaOf(o)
		if err != nil {
			return err
		}
		if !inScope[m.GetNamespace()] {
			return nil
		}
		return visit(o)
	}
	if clusterWide {
		if watchAll != nil {
			started, err := stream(ctx, watchAll, filtered)
			if err == nil {
				return nil
			}
			if started {
				return apiError("watch", resource, "", err)
			}
		}
		err := r.each(ctx, page(metav1.NamespaceAll), filtered)
		if err == nil {
			return nil
		}
		if !apierrors.IsForbidden(err) {
			return apiError(verb, resource, "", err)
		}
	}
	for _, ns := range namespaces {
		if err := r.each(ctx, page(ns), filtered); err != nil {
			return apiError(verb, resource, ns, err)
		}
	}
	return nil
}

func metaOf(o runtime.Object) (metav1.Object, error) {
	if m, ok := o.(metav1.Object); ok {
		return m, nil
	}
	return nil, fmt.Errorf("unexpected list item %T", o)
}

// podOwner is a pod's controller reference before ReplicaSets and Jobs are
// resolved to their own owners.
type podOwner struct{ kind, name string }

// istioAnnotation tells whether a pod annotation matters to the audit; the
// rest (last-applied-configuration and friends) is dropped to save memory.
func istioAnnotation(k string) bool {
	return strings.Contains(k, "istio.io/")
}

func podFrom(p *corev1.Pod) (Pod, podOwner) {
	pod := Pod{
		Namespace:      p.Namespace,
		Name:           p.Name,
		Labels:         p.Labels,
		HostNetwork:    p.Spec.HostNetwork,
		ServiceAccount: p.Spec.ServiceAccountName,
		Phase:          string(p.Status.Phase),
		CreatedAt:      p.CreationTimestamp.Time,
	}
	for k, v := range p.Annotations {
		if istioAnnotation(k) {
			if pod.Annotations == nil {
				pod.Annotations = map[string]string{}
			}
			pod.Annotations[k] = v
		}
	}
	for _, c := range p.Spec.Containers {
		pod.Containers = append(pod.Containers, Container{Name: c.Name, Image: c.Image})
	}
	for _, c := range p.Spec.InitContainers {
		always := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		pod.InitContainers = append(pod.InitContainers, Container{Name: c.Name, Image: c.Image, RestartAlways: always})
	}
	var owner podOwner
	if ref := metav1.GetControllerOf(p); ref != nil {
		owner = podOwner{kind: ref.Kind, name: ref.Name}
	}
	return pod, owner
}

// resolveOwner walks ReplicaSet -> Deployment and Job -> CronJob, the way
// kubectl names a pod's workload.
func resolveOwner(p Pod, o podOwner, owners map[string]WorkloadRef) WorkloadRef {
	if o.kind == "" {
		return WorkloadRef{Kind: "Pod", Name: p.Name}
	}
	if o.kind == "ReplicaSet" || o.kind == "Job" {
		if top, ok := owners[p.Namespace+"/"+o.kind+"/"+o.name]; ok {
			return top
		}
	}
	return WorkloadRef{Kind: o.kind, Name: o.name}
}

// reachError explains a failure to reach the API server at all.
func reachError(server string, err error) error {
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return fmt.Errorf("cannot reach the Kubernetes API server %s: %w (check --kubeconfig and --context)", server, err)
	}
	return apiError("get", "version", "", err)
}

// apiError wraps an API error with the verb and resource that failed and,
// for RBAC denials, what the caller needs.
func apiError(verb, resource, ns string, err error) error {
	where := "cluster-wide"
	if ns != "" {
		where = "in namespace " + ns
	}
	if apierrors.IsForbidden(err) {
		return &ForbiddenError{Verb: verb, Resource: resource, Namespace: ns, Err: err}
	}
	return fmt.Errorf("%s %s %s: %w", verb, resource, where, err)
}

// ForbiddenError is an RBAC denial, naming the verb and resource.
type ForbiddenError struct {
	Verb, Resource, Namespace string
	Err                       error
}

func (e *ForbiddenError) Error() string {
	where := "cluster-wide"
	if e.Namespace != "" {
		where = "in namespace " + e.Namespace
	}
	return fmt.Sprintf("forbidden: cannot %s %s %s; grant the verb %q on %q (see deploy/rbac in the README): %v",
		e.Verb, e.Resource, where, e.Verb, e.Resource, e.Err)
}

func (e *ForbiddenError) Unwrap() error { return e.Err }

// meshConfigData is the subset of Istio's MeshConfig the audit reads.
type meshConfigData struct {
	RootNamespace  string `json:"rootNamespace"`
	TrustDomain    string `json:"trustDomain"`
	EnableAutoMtls *bool  `json:"enableAutoMtls"`
}

// meshConfig reads the mesh ConfigMap: "istio" (or "istio-<rev>" for a
// revisioned install) in istiod's namespace, key "mesh" (docs/istio.md 2.2).
// Absent, Istio's defaults apply.
func (r *Reader) meshConfig(ctx context.Context, istiodNS string, injectors []InjectorWebhook) (MeshConfig, error) {
	mc := MeshConfig{RootNamespace: "istio-system", TrustDomain: "cluster.local", EnableAutoMTLS: true, Source: "defaults"}
	candidates := []string{"istio"}
	seen := map[string]bool{"istio": true}
	for _, w := range injectors {
		if name := "istio-" + w.Revision; w.Revision != "" && w.Revision != "default" && !seen[name] {
			seen[name] = true
			candidates = append(candidates, name)
		}
	}
	for _, name := range candidates {
		cm, err := retried(ctx, func() (*corev1.ConfigMap, error) {
			return r.Kube.CoreV1().ConfigMaps(istiodNS).Get(ctx, name, metav1.GetOptions{})
		})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return mc, apiError("get", "configmaps", istiodNS, err)
		}
		var d meshConfigData
		if err := yaml.Unmarshal([]byte(cm.Data["mesh"]), &d); err != nil {
			return mc, fmt.Errorf("parse mesh config %s/%s key mesh: %w", istiodNS, name, err)
		}
		if d.RootNamespace != "" {
			mc.RootNamespace = d.RootNamespace
		}
		if d.TrustDomain != "" {
			mc.TrustDomain = d.TrustDomain
		}
		if d.EnableAutoMtls != nil {
			mc.EnableAutoMTLS = *d.EnableAutoMtls
		}
		mc.Source = istiodNS + "/" + name
		return mc, nil
	}
	return mc, nil
}
