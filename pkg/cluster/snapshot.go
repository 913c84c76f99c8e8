// Package cluster reads what the audit needs from a live cluster into an
// immutable Snapshot of plain values. It is the only place (with traffic and
// phases) that talks to the API server; everything downstream is pure.
package cluster

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Snapshot is what the cluster looked like when it was read. It holds compact
// copies of the fields the audit uses, not whole objects, so a 20,000-pod
// estate stays small in memory. Nothing in it is mutated after Read returns.
type Snapshot struct {
	TakenAt time.Time `json:"takenAt"`
	// Context and Server name the cluster the snapshot was read from.
	Context string `json:"context,omitempty"`
	Server  string `json:"server,omitempty"`
	// ClusterUID is the UID of the kube-system namespace: the cluster's
	// identity, whatever the kubeconfig context is called. Empty when it
	// could not be read.
	ClusterUID string `json:"clusterUID,omitempty"`

	// Namespaces are the audited namespaces, sorted by name.
	Namespaces []Namespace `json:"namespaces"`
	// Pods in the audited namespaces.
	Pods []Pod `json:"pods"`
	// OnDelete lists the StatefulSets and DaemonSets of the audited
	// namespaces with updateStrategy OnDelete: a rollout restart does not
	// replace their pods.
	OnDelete []NamespacedWorkload `json:"onDelete,omitempty"`
	// Injectors are the webhooks of Istio's sidecar injector configurations.
	Injectors []InjectorWebhook `json:"injectors"`
	// IstiodNamespace is where the injector's service lives (istio-system by default).
	IstiodNamespace string     `json:"istiodNamespace"`
	Mesh            MeshConfig `json:"mesh"`

	// Istio says whether Istio's policy kinds could be read; when they could
	// not, PeerAuthentications, DestinationRules and AuthorizationPolicies are
	// empty and the audit must not conclude anything from their absence.
	Istio               IstioAvailability    `json:"istio"`
	PeerAuthentications []PeerAuthentication `json:"peerAuthentications"`
	DestinationRules    []DestinationRule    `json:"destinationRules"`
	// AuthorizationPolicies of the audited namespaces and the root namespace
	// (mesh-wide policies).
	AuthorizationPolicies []AuthorizationPolicy `json:"authorizationPolicies"`
	// Ambient is what runs of Istio's ambient data plane.
	Ambient AmbientComponents `json:"ambient"`
}

// Namespace is an audited namespace.
type Namespace struct {
	Name            string            `json:"name"`
	UID             string            `json:"uid"`
	ResourceVersion string            `json:"resourceVersion"`
	Labels          map[string]string `json:"labels,omitempty"`
	Annotations     map[string]string `json:"annotations,omitempty"`
}

// Pod holds the facts about a pod that decide its place in the mesh.
type Pod struct {
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	HostNetwork    bool              `json:"hostNetwork,omitempty"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
	Phase          string            `json:"phase,omitempty"`
	Containers     []Container       `json:"containers,omitempty"`
	InitContainers []Container       `json:"initContainers,omitempty"`
	// Owner is the top-level controller: a ReplicaSet is resolved to its
	// Deployment and a Job to its CronJob. Kind "Pod" means a bare pod.
	Owner     WorkloadRef `json:"owner"`
	CreatedAt time.Time   `json:"createdAt"`
}

// Container is a container or init container of a pod.
type Container struct {
	Name  string `json:"name"`
	Image string `json:"image,omitempty"`
	// RestartAlways marks a native sidecar (an init container with
	// restartPolicy: Always).
	RestartAlways bool `json:"restartAlways,omitempty"`
}

// WorkloadRef names the workload that owns pods.
type WorkloadRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (w WorkloadRef) String() string { return w.Kind + "/" + w.Name }

// NamespacedWorkload is a workload and its namespace.
type NamespacedWorkload struct {
	Namespace string `json:"namespace"`
	WorkloadRef
}

// InjectorWebhook is one webhook of a sidecar injector
// MutatingWebhookConfiguration (istio-sidecar-injector[-rev] or
// istio-revision-tag-<tag>). Its selectors decide which pods it injects.
type InjectorWebhook struct {
	Configuration string `json:"configuration"`
	Name          string `json:"name"`
	// Revision is the revision that injects, from the configuration's
	// istio.io/rev label; a tag's configuration carries the revision the tag
	// points to (docs/istio.md 1.2).
	Revision          string                `json:"revision"`
	Tag               string                `json:"tag,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	ObjectSelector    *metav1.LabelSelector `json:"objectSelector,omitempty"`
	ServiceNamespace  string                `json:"serviceNamespace,omitempty"`
}

// MeshConfig holds the mesh settings the audit uses (docs/istio.md 2.2).
type MeshConfig struct {
	RootNamespace  string `json:"rootNamespace"`
	TrustDomain    string `json:"trustDomain"`
	EnableAutoMTLS bool   `json:"enableAutoMtls"`
	// Source is namespace/name of the ConfigMap read, or "defaults".
	Source string `json:"source"`
}

// IstioAvailability says whether Istio's policy kinds could be read.
type IstioAvailability struct {
	PoliciesReadable bool   `json:"policiesReadable"`
	Reason           string `json:"reason,omitempty"`
	// DestinationRulesPartial: listing DestinationRules cluster-wide was
	// forbidden, so only those in the audited and root namespaces were read;
	// a rule elsewhere may still turn TLS off toward an audited namespace.
	DestinationRulesPartial bool `json:"destinationRulesPartial,omitempty"`
	// SecurityVersion and NetworkingVersion are the API versions read.
	SecurityVersion   string `json:"securityVersion,omitempty"`
	NetworkingVersion string `json:"networkingVersion,omitempty"`
}

// mTLS modes as Istio names them (istio/api PeerAuthentication.MutualTLS.Mode).
const (
	ModeUnset      = "UNSET"
	ModeDisable    = "DISABLE"
	ModePermissive = "PERMISSIVE"
	ModeStrict     = "STRICT"
)

// PeerAuthentication is a security.istio.io PeerAuthentication.
type PeerAuthentication struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
	// Selector is spec.selector.matchLabels; empty means namespace-wide.
	Selector map[string]string `json:"selector,omitempty"`
	// Mode is spec.mtls.mode, UNSET when absent.
	Mode string `json:"mode"`
	// PortModes is spec.portLevelMtls keyed by workload (target) port.
	PortModes map[uint32]string `json:"portModes,omitempty"`
	// Ownership tells who else manages it (the plan never takes it over).
	Ownership Ownership `json:"ownership,omitzero"`
}

// DestinationRule is a networking.istio.io DestinationRule, reduced to the TLS
// settings it makes.
type DestinationRule struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Host      string   `json:"host"`
	ExportTo  []string `json:"exportTo,omitempty"`
	TLS       []DRTLS  `json:"tls,omitempty"`
}

// DRTLS is one TLS setting of a DestinationRule and where in the spec it sits.
type DRTLS struct {
	// Where is e.g. "trafficPolicy", "trafficPolicy port 8080", "subset v1".
	Where string `json:"where"`
	Mode  string `json:"mode"`
}

// AuthorizationPolicy is a security.istio.io AuthorizationPolicy, reduced to
// what tells allow-nothing and deny-all apart.
type AuthorizationPolicy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Action    string `json:"action"`
	// Namespaced is true when neither selector nor targetRefs narrow it.
	Namespaced bool `json:"namespaced"`
	Rules      int  `json:"rules"`
	// EmptyRule is true when some rule is {} (matches everything).
	EmptyRule bool `json:"emptyRule,omitempty"`
	DryRun    bool `json:"dryRun,omitempty"`
	// Ownership tells who else manages it (the plan never takes it over).
	Ownership Ownership `json:"ownership,omitzero"`
	// L7 lists the attributes its rules use that only an L7 proxy judges
	// (methods, paths, hosts, requestPrincipals, request.* conditions).
	L7 []string `json:"l7,omitempty"`
	// TargetRefs are "Kind/name" of what it targets (a waypoint's Gateway,
	// a Service); empty for a selector or namespace-wide policy.
	TargetRefs []string `json:"targetRefs,omitempty"`
	// Selector is its workload selector's matchLabels (nil: none). Spec is
	// its spec as JSON, kept only for a policy with L7 attributes and no
	// targetRefs: what a plan copies onto a waypoint (docs/ambient.md).
	Selector map[string]string `json:"-"`
	Spec     map[string]any    `json:"-"`
}
