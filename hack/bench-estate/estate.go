package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	clientnetv1 "istio.io/client-go/pkg/apis/networking/v1"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
	"github.com/meshmigrate/kubectl-meshmigrate/internal/istiofixture"
)

// The estate's shape, the at 20,000 pods: 400 namespaces of 10
// Deployments with 5 pods each, 23 namespaces in 40 meshed (11,500 pods with
// a sidecar at 20,000).
const (
	podsPerNamespace = 50
	deploymentsPerNS = 10
	replicas         = podsPerNamespace / deploymentsPerNS
	podsPerNode      = 100
	revision         = "1-30"
	proxyImage       = "docker.io/istio/proxyv2:1.30.0"
	istioSystem      = "istio-system"
	// Four namespaces at once, each with up to 16 creates in flight: enough
	// to keep the API server busy on 2 cores.
	namespaceConcurrency = 4
	createConcurrency    = 16
	handMadeFieldOwner   = e2e.HandMade
)

func nsName(i int) string { return fmt.Sprintf("team-%03d", i) }

// meshed spreads 23 meshed namespaces evenly over every 40 (23 and 40 are
// coprime, so i*23 mod 40 visits each residue once per 40).
func meshed(i int) bool { return i*23%40 < 23 }

// estate creates objects directly, the way the controllers would have left
// them (Deployments own ReplicaSets own pods, pods bound to kwok nodes), so
// no controller manager or scheduler has to fill it at their rate limits.
type estate struct {
	kube  kubernetes.Interface
	istio istioclient.Interface
	nodes []string
}

// setup makes what the mesh itself contributes: istio-system with the mesh
// config and a mesh-wide PERMISSIVE PeerAuthentication, and the sidecar
// injector configuration of revision 1-30 as Istio's chart renders it
// (pointing at an istiod service; nothing serves it, and no pod is created
// in a namespace it selects: namespaces are labelled after their pods).
func (e *estate) setup(ctx context.Context) error {
	if err := ignoreExists(e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: istioSystem}}, metav1.CreateOptions{})); err != nil {
		return fmt.Errorf("create namespace %s: %w", istioSystem, err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: istioSystem, Name: "istio-" + revision, Labels: map[string]string{"istio.io/rev": revision}},
		Data: map[string]string{"mesh": "rootNamespace: istio-system\ntrustDomain: cluster.local\nenableAutoMtls: true\n"}}
	if err := ignoreExists(e.kube.CoreV1().ConfigMaps(istioSystem).Create(ctx, cm, metav1.CreateOptions{})); err != nil {
		return fmt.Errorf("create the mesh config: %w", err)
	}
	if err := e.peerAuthentication(ctx, istioSystem, securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE); err != nil {
		return err
	}
	fail, none, never := admissionv1.Fail, admissionv1.SideEffectClassNone, admissionv1.NeverReinvocationPolicy
	path, port, timeout := "/inject", int32(443), int32(10)
	mwc := &admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector-" + revision,
		Labels: map[string]string{"istio.io/rev": revision, "app": "sidecar-injector"}}}
	for _, w := range istiofixture.RevisionWebhooks(revision, true) {
		mwc.Webhooks = append(mwc.Webhooks, admissionv1.MutatingWebhook{
			Name: w.Name,
			ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{
				Namespace: istioSystem, Name: "istiod-" + revision, Path: &path, Port: &port}},
			Rules: []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: w.NamespaceSelector, ObjectSelector: w.ObjectSelector,
			FailurePolicy: &fail, SideEffects: &none, ReinvocationPolicy: &never, TimeoutSeconds: &timeout,
			AdmissionReviewVersions: []string{"v1"},
		})
	}
	if err := ignoreExists(e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{})); err != nil {
		return fmt.Errorf("create the injector configuration: %w", err)
	}
	return nil
}

// grow adds namespaces until the estate holds pods pods (a multiple of 50),
// each namespace complete: ServiceAccount, Deployments, their ReplicaSets
// (meshed ones with the older ReplicaSet their restart left behind), pods,
// then its labels and policies.
func (e *estate) grow(ctx context.Context, from, to int) error {
	var g errgroup.Group
	g.SetLimit(namespaceConcurrency)
	var done atomic.Int64
	for i := from / podsPerNamespace; i < to/podsPerNamespace; i++ {
		g.Go(func() error {
			if err := e.namespace(ctx, i); err != nil {
				return err
			}
			if n := done.Add(1); n%50 == 0 {
				logf("  %d namespaces added", n)
			}
			return nil
		})
	}
	return g.Wait()
}

func (e *estate) namespace(ctx context.Context, i int) error {
	ns := nsName(i)
	if err := ignoreExists(e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"team": ns}}}, metav1.CreateOptions{})); err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	// The controller manager would make it; pods need it to pass admission.
	if err := ignoreExists(e.kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})); err != nil {
		return fmt.Errorf("create serviceaccount %s/default: %w", ns, err)
	}
	mesh := meshed(i)
	var g errgroup.Group
	g.SetLimit(createConcurrency)
	for j := 0; j < deploymentsPerNS; j++ {
		g.Go(func() error { return e.deployment(ctx, g.Go, i, j, mesh) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if !mesh {
		return nil
	}
	labels := map[string]string{"team": ns, "istio-injection": "enabled"}
	if i%2 == 1 {
		labels = map[string]string{"team": ns, "istio.io/rev": revision}
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if _, err := e.kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("label namespace %s: %w", ns, err)
	}
	mode := securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE
	if i%4 == 0 {
		mode = securityv1beta1.PeerAuthentication_MutualTLS_STRICT
	}
	if err := e.peerAuthentication(ctx, ns, mode); err != nil {
		return err
	}
	if i%10 == 0 {
		dr := &clientnetv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc-0"},
			Spec: networkingv1alpha3.DestinationRule{Host: "svc-0." + ns + ".svc.cluster.local",
				TrafficPolicy: &networkingv1alpha3.TrafficPolicy{Tls: &networkingv1alpha3.ClientTLSSettings{Mode: networkingv1alpha3.ClientTLSSettings_ISTIO_MUTUAL}}}}
		if err := ignoreExists(e.istio.NetworkingV1().DestinationRules(ns).Create(ctx, dr, metav1.CreateOptions{FieldManager: handMadeFieldOwner})); err != nil {
			return fmt.Errorf("create destinationrule %s/svc-0: %w", ns, err)
		}
	}
	return nil
}

func (e *estate) peerAuthentication(ctx context.Context, ns string, mode securityv1beta1.PeerAuthentication_MutualTLS_Mode) error {
	pa := &clientsecv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"},
		Spec: securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: mode}}}
	if err := ignoreExists(e.istio.SecurityV1().PeerAuthentications(ns).Create(ctx, pa, metav1.CreateOptions{FieldManager: handMadeFieldOwner})); err != nil {
		return fmt.Errorf("create peerauthentication %s/default: %w", ns, err)
	}
	return nil
}

// deployment creates Deployment j of namespace i, its ReplicaSet(s) and
// pods; the pods' creates go to the namespace's pool through spawn.
func (e *estate) deployment(ctx context.Context, spawn func(func() error), i, j int, mesh bool) error {
	ns, app := nsName(i), fmt.Sprintf("svc-%d", j)
	tmpl := podTemplate(ns, app, mesh)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app, Labels: map[string]string{"app": app}},
		Spec: appsv1.DeploymentSpec{Replicas: int32p(replicas), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}, Template: tmpl}}
	uid, err := create(ctx, d, handMadeFieldOwner, e.kube.AppsV1().Deployments(ns).Create, e.kube.AppsV1().Deployments(ns).Get)
	if err != nil {
		return fmt.Errorf("create deployment %s/%s: %w", ns, app, err)
	}
	revs := []bool{mesh}
	if mesh {
		revs = []bool{false, true} // the ReplicaSet from before the restart, scaled to zero
	}
	for r, injected := range revs {
		hash := templateHash(ns, app, r)
		rsTmpl := podTemplate(ns, app, injected)
		rsTmpl.Labels["pod-template-hash"] = hash
		n := int32(0)
		if r == len(revs)-1 {
			n = replicas
		}
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app + "-" + hash,
			Labels:          rsTmpl.Labels,
			Annotations:     map[string]string{"deployment.kubernetes.io/revision": fmt.Sprint(r + 1), "deployment.kubernetes.io/desired-replicas": fmt.Sprint(replicas)},
			OwnerReferences: []metav1.OwnerReference{controllerRef("apps/v1", "Deployment", app, uid)}},
			Spec: appsv1.ReplicaSetSpec{Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app, "pod-template-hash": hash}}, Template: rsTmpl}}
		rsUID, err := create(ctx, rs, controllerManager, e.kube.AppsV1().ReplicaSets(ns).Create, e.kube.AppsV1().ReplicaSets(ns).Get)
		if err != nil {
			return fmt.Errorf("create replicaset %s/%s: %w", ns, rs.Name, err)
		}
		for k := int32(0); k < n; k++ {
			p, node := e.pod(i, j, int(k), rs.Name, rsUID, rsTmpl, injected)
			spawn(func() error { return e.startPod(ctx, p, node) })
		}
	}
	return nil
}

// pod is pod k of ReplicaSet rsName, bound to the node that holds pod
// number i*50+j*5+k of the estate (100 a node), and that node's index.
func (e *estate) pod(i, j, k int, rsName string, rsUID types.UID, tmpl corev1.PodTemplateSpec, injected bool) (*corev1.Pod, int) {
	name := rsName + "-" + suffix(rsName, k)
	p := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
	p.Namespace, p.Name, p.GenerateName = nsName(i), name, rsName+"-"
	p.OwnerReferences = []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", rsName, rsUID)}
	n := i*podsPerNamespace + j*replicas + k
	node := n / podsPerNode % len(e.nodes)
	p.Spec.NodeName = e.nodes[node]
	p.Status.PodIP = fmt.Sprintf("10.%d.%d.%d", node/256, node%256, n%podsPerNode+2)
	if injected {
		inject(p)
	}
	return p, node
}

// startPod creates p and writes the status a kubelet (kwok's pod-ready
// stage) would: Running, ready, with its IPs and container states.
func (e *estate) startPod(ctx context.Context, p *corev1.Pod, node int) error {
	ip := p.Status.PodIP
	p.Status = corev1.PodStatus{}
	c := e.kube.CoreV1().Pods(p.Namespace)
	out, err := c.Create(ctx, p, metav1.CreateOptions{FieldManager: controllerManager})
	if apierrors.IsAlreadyExists(err) { // an interrupted run made it
		if out, err = c.Get(ctx, p.Name, metav1.GetOptions{}); err == nil && out.Status.Phase == corev1.PodRunning {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	now := metav1.Now()
	host := fmt.Sprintf("192.0.%d.%d", 2+node/250, 1+node%250)
	st := &out.Status
	st.Phase = corev1.PodRunning
	st.HostIP, st.HostIPs = host, []corev1.HostIP{{IP: host}}
	st.PodIP, st.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	st.StartTime = &now
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, ic := range out.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{Name: ic.Name, Image: ic.Image, Ready: true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed", StartedAt: now, FinishedAt: now}}})
	}
	for _, ac := range out.Spec.Containers {
		started := true
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{Name: ac.Name, Image: ac.Image, Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	if _, err := c.UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: "kubelet"}); err != nil {
		return fmt.Errorf("start pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// podTemplate is an application's pod template: one container with the
// ports, environment, probes and resources real workloads carry.
func podTemplate(ns, app string, restarted bool) corev1.PodTemplateSpec {
	t := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app, "version": "v1",
			"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": ns}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "default",
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.example.com/" + ns + "/" + app + ":1.4.2",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}},
				Env: []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}, {Name: "LISTEN_ADDR", Value: ":8080"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 10},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/livez", Port: intstr.FromInt32(8080)}},
					InitialDelaySeconds: 10, PeriodSeconds: 20},
			}},
			Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	if restarted {
		t.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-01-05T10:00:00Z"}
	}
	return t
}

// inject does to p what Istio's injector does to a pod of revision 1-30
// (classic sidecar): istio-init and istio-proxy, their volumes, the
// sidecar.istio.io/status annotation and the canonical labels. Sizes matter
// here: a meshed pod is about twice an unmeshed one, as in a real mesh.
func inject(p *corev1.Pod) {
	app := p.Labels["app"]
	p.Labels["security.istio.io/tlsMode"] = "istio"
	p.Labels["service.istio.io/canonical-name"] = app
	p.Labels["service.istio.io/canonical-revision"] = "v1"
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	volumes := []string{"workload-socket", "credential-socket", "workload-certs", "istio-envoy", "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert"}
	status, _ := json.Marshal(map[string]any{"initContainers": []string{"istio-init"}, "containers": []string{"istio-proxy"},
		"volumes": volumes, "imagePullSecrets": nil, "revision": revision})
	for k, v := range map[string]string{
		"sidecar.istio.io/status":                      string(status),
		"istio.io/rev":                                 revision,
		"kubectl.kubernetes.io/default-container":      "app",
		"kubectl.kubernetes.io/default-logs-container": "app",
		"prometheus.io/path":                           "/stats/prometheus",
		"prometheus.io/port":                           "15020",
		"prometheus.io/scrape":                         "true",
	} {
		p.Annotations[k] = v
	}
	f, t := false, true
	uid := int64(1337)
	p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "istio-init", Image: proxyImage,
		Args: []string{"istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("40Mi")},
			Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
		SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &f, Privileged: &f, ReadOnlyRootFilesystem: &f, RunAsNonRoot: &f, RunAsUser: new(int64), RunAsGroup: new(int64),
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}}},
	})
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		{Name: "PILOT_CERT_PROVIDER", Value: "istiod"}, {Name: "CA_ADDR", Value: "istiod-1-30.istio-system.svc:15012"},
		field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"), field("INSTANCE_IP", "status.podIP"),
		field("SERVICE_ACCOUNT", "spec.serviceAccountName"), field("HOST_IP", "status.hostIP"),
		{Name: "ISTIO_CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
		{Name: "PROXY_CONFIG", Value: "{}\n"},
		{Name: "ISTIO_META_POD_PORTS", Value: `[{"name":"http","containerPort":8080,"protocol":"TCP"},{"name":"metrics","containerPort":9090,"protocol":"TCP"}]`},
		{Name: "ISTIO_META_APP_CONTAINERS", Value: "app"}, {Name: "GOMEMLIMIT", Value: "1073741824"}, {Name: "GOMAXPROCS", Value: "2"},
		{Name: "ISTIO_META_CLUSTER_ID", Value: "Kubernetes"}, field("ISTIO_META_NODE_NAME", "spec.nodeName"),
		{Name: "ISTIO_META_INTERCEPTION_MODE", Value: "REDIRECT"}, {Name: "ISTIO_META_WORKLOAD_NAME", Value: app},
		{Name: "ISTIO_META_OWNER", Value: "kubernetes://apis/apps/v1/namespaces/" + p.Namespace + "/deployments/" + app},
		{Name: "ISTIO_META_MESH_ID", Value: "cluster.local"}, {Name: "TRUST_DOMAIN", Value: "cluster.local"},
	}
	mounts := []corev1.VolumeMount{{Name: "workload-socket", MountPath: "/var/run/secrets/workload-spiffe-uds"},
		{Name: "credential-socket", MountPath: "/var/run/secrets/credential-uds"}, {Name: "workload-certs", MountPath: "/var/run/secrets/workload-spiffe-credentials"},
		{Name: "istiod-ca-cert", MountPath: "/var/run/secrets/istio"}, {Name: "istio-data", MountPath: "/var/lib/istio/data"},
		{Name: "istio-envoy", MountPath: "/etc/istio/proxy"}, {Name: "istio-token", MountPath: "/var/run/secrets/tokens"},
		{Name: "istio-podinfo", MountPath: "/etc/istio/pod"}}
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: proxyImage,
		Args:  []string{"proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local", "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"},
		Ports: []corev1.ContainerPort{{Name: "http-envoy-prom", ContainerPort: 15090, Protocol: corev1.ProtocolTCP}},
		Env:   env,
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(15021)}},
			InitialDelaySeconds: 1, PeriodSeconds: 2, TimeoutSeconds: 3, FailureThreshold: 30},
		VolumeMounts: mounts,
		SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &f, Privileged: &f, ReadOnlyRootFilesystem: &t, RunAsNonRoot: &t, RunAsUser: &uid, RunAsGroup: &uid,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
	})
	expiry := int64(43200)
	memory := corev1.StorageMediumMemory
	p.Spec.Volumes = append(p.Spec.Volumes,
		corev1.Volume{Name: "workload-socket", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "credential-socket", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "workload-certs", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "istio-envoy", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: memory}}},
		corev1.Volume{Name: "istio-data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "istio-podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}}}}},
		corev1.Volume{Name: "istio-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "istio-ca", ExpirationSeconds: &expiry, Path: "istio-token"}}}}}},
		corev1.Volume{Name: "istiod-ca-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-root-cert"}}}},
	)
}

// templateHash stands in for pod-template-hash: stable per revision.
func templateHash(ns, app string, rev int) string {
	return fmt.Sprintf("%010x", hash64(fmt.Sprintf("%s/%s/%d", ns, app, rev)))[:10]
}

// suffix is a pod's random-looking 5-character name suffix, stable so
// growing the estate again finds the pods it made.
func suffix(rs string, k int) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	h := hash64(fmt.Sprintf("%s/%d", rs, k))
	b := make([]byte, 5)
	for i := range b {
		b[i] = alphabet[h%uint64(len(alphabet))]
		h /= uint64(len(alphabet))
	}
	return string(b)
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

func controllerRef(apiVersion, kind, name string, uid types.UID) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: &t, BlockOwnerDeletion: &t}
}

func int32p(i int32) *int32 { return &i }

// controllerManager is the field manager of what the controllers would
// have made (ReplicaSets, pods).
const controllerManager = "kube-controller-manager"

// create creates obj as manager, or finds it from an earlier run, and
// returns its UID.
func create[T metav1.Object](ctx context.Context, obj T, manager string,
	createFn func(context.Context, T, metav1.CreateOptions) (T, error),
	getFn func(context.Context, string, metav1.GetOptions) (T, error)) (types.UID, error) {
	out, err := createFn(ctx, obj, metav1.CreateOptions{FieldManager: manager})
	if apierrors.IsAlreadyExists(err) {
		out, err = getFn(ctx, obj.GetName(), metav1.GetOptions{})
	}
	if err != nil {
		return "", err
	}
	return out.GetUID(), nil
}

func ignoreExists[T any](_ T, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
