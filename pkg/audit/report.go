// Package audit turns a cluster Snapshot into a Report: per namespace, where
// it stands on the way to every pod meshed, STRICT mTLS and deny-by-default
// authorization. It is pure: no I/O, the same snapshot gives the same report.
package audit

import (
	"time"
)

// The report's schema identity. Bump the version on any breaking change to
// the JSON/YAML shape; docs/audit-report.md documents it.
const (
	APIVersion = "meshmigrate.io/v1alpha1"
	Kind       = "AuditReport"
)

// Report is the audit of a set of namespaces.
type Report struct {
	APIVersion  string            `json:"apiVersion"`
	Kind        string            `json:"kind"`
	GeneratedAt time.Time         `json:"generatedAt"`
	Cluster     Cluster           `json:"cluster"`
	Mesh        Mesh              `json:"mesh"`
	Namespaces  []NamespaceReport `json:"namespaces"`
	// Traffic says where observed traffic came from; absent when none was read.
	Traffic *TrafficSource `json:"traffic,omitempty"`
	// Findings about the mesh as a whole (mesh config, Istio availability).
	Findings []Finding `json:"findings"`
	Summary  Summary   `json:"summary"`
}

// Cluster names the cluster audited.
type Cluster struct {
	Context string `json:"context,omitempty"`
	Server  string `json:"server,omitempty"`
}

// Mesh is what the audit learned about the Istio installation.
type Mesh struct {
	RootNamespace   string     `json:"rootNamespace"`
	TrustDomain     string     `json:"trustDomain"`
	AutoMTLS        bool       `json:"autoMtls"`
	ConfigSource    string     `json:"configSource"`
	IstiodNamespace string     `json:"istiodNamespace"`
	PoliciesRead    bool       `json:"policiesReadable"`
	PoliciesReason  string     `json:"policiesUnreadableReason,omitempty"`
	Injectors       []Injector `json:"injectors"`
	// MTLS is the mesh-wide PeerAuthentication in the root namespace.
	MTLS MTLSSource `json:"mtls"`
	// AuthorizationPolicies in the root namespace apply mesh-wide:
	// "namespace/name (ACTION[, dry-run])".
	AuthorizationPolicies []string `json:"authorizationPolicies,omitempty"`
}

// Injector is an Istio sidecar injector webhook found in the cluster.
type Injector struct {
	Configuration string `json:"configuration"`
	Webhook       string `json:"webhook"`
	Revision      string `json:"revision"`
	Tag           string `json:"tag,omitempty"`
}

// MTLSSource is an mTLS mode and the policy it comes from.
type MTLSSource struct {
	Mode   string `json:"mode"`
	Source string `json:"source"`
	Policy string `json:"policy,omitempty"`
}

// NamespaceReport is the audit of one namespace.
type NamespaceReport struct {
	Name string `json:"name"`
	// Excluded says why the namespace is outside any migration (Istio never
	// injects it, or it runs the control plane); empty for the others.
	Excluded         string               `json:"excluded,omitempty"`
	Injection        Injection            `json:"injection"`
	Pods             Pods                 `json:"pods"`
	MTLS             MTLS                 `json:"mtls"`
	DestinationRules []DestinationRuleTLS `json:"destinationRules"`
	Authz            Authz                `json:"authz"`
	Traffic          Traffic              `json:"traffic"`
	Readiness        Readiness            `json:"readiness"`
	Findings         []Finding            `json:"findings"`

	// istioMutualDR: some DestinationRule sets ISTIO_MUTUAL toward the
	// namespace (matters when auto mTLS is off).
	istioMutualDR bool
}

// ClientsSendIstioMTLS tells whether meshed clients send Istio mTLS to the
// namespace: auto mTLS is on, or a DestinationRule sets ISTIO_MUTUAL toward
// it (docs/istio.md 2.3).
func (n *NamespaceReport) ClientsSendIstioMTLS(autoMTLS bool) bool {
	return autoMTLS || n.istioMutualDR
}

// Injection modes, from the namespace's labels (docs/istio.md 1.3).
const (
	InjectionEnabled  = "enabled"  // istio-injection=enabled
	InjectionRevision = "revision" // istio.io/rev=<revision or tag>
	InjectionDisabled = "disabled" // istio-injection set to anything but enabled
	InjectionAmbient  = "ambient"  // istio.io/dataplane-mode=ambient
	InjectionDefault  = "mesh-default"
	InjectionNone     = "none"
	InjectionIgnored  = "ignored" // a namespace Istio never injects, or the control plane's
)

// Injection is how a namespace is selected for sidecar injection.
type Injection struct {
	Mode string `json:"mode"`
	// Label is the label that decides, e.g. "istio.io/rev=canary".
	Label string `json:"label,omitempty"`
	// Revision is the revision that would inject a new pod, resolved through
	// revision tags; empty when no injector selects the namespace.
	Revision string `json:"revision,omitempty"`
	Tag      string `json:"tag,omitempty"`
	// Webhook is the injector (configuration/webhook) that acts on the
	// namespace's selection; empty when none would.
	Webhook string `json:"webhook,omitempty"`
}

// Pod states.
const (
	PodMeshed             = "meshed"
	PodNeedsRestart       = "needs-restart"
	PodWrongRevision      = "wrong-revision"
	PodSidecarNotExpected = "sidecar-not-expected"
	PodNotInjectable      = "not-injectable"
	PodNotSelected        = "not-selected"
)

// Pods counts a namespace's running pods by their place in the mesh.
// Succeeded and Failed pods are not counted: they carry no traffic.
type Pods struct {
	Total int `json:"total"`
	// Meshed pods carry a sidecar (classic or native), whatever its revision.
	Meshed             int `json:"meshed"`
	NotMeshed          int `json:"notMeshed"`
	NeedRestart        int `json:"needRestart"`
	WrongRevision      int `json:"wrongRevision"`
	SidecarNotExpected int `json:"sidecarNotExpected"`
	NotInjectable      int `json:"notInjectable"`
	NotSelected        int `json:"notSelected"`
	// Items lists every pod; printed by -o wide, json and yaml.
	Items []Pod `json:"items"`
}

// Pod is one pod's place in the mesh.
type Pod struct {
	Name     string `json:"name"`
	Workload string `json:"workload"` // Kind/name of the top-level owner
	State    string `json:"state"`
	// Sidecar is "classic", "native", "ambient" (captured by ztunnel) or ""
	// (none).
	Sidecar          string `json:"sidecar,omitempty"`
	Revision         string `json:"revision,omitempty"`
	ExpectedRevision string `json:"expectedRevision,omitempty"`
	Reason           string `json:"reason,omitempty"`
}

// MTLS is the namespace's effective PeerAuthentication (docs/istio.md 2.1).
type MTLS struct {
	// Mode is STRICT, PERMISSIVE or DISABLE; UNKNOWN only when Istio's
	// policies could not be read.
	Mode string `json:"mode"`
	// Source is "namespace", "mesh", "default" (no policy: PERMISSIVE) or
	// "unavailable".
	Source string `json:"source"`
	// Policy is namespace/name of the policy that sets Mode.
	Policy string `json:"policy,omitempty"`
	// NamespacePolicy is the namespace-wide policy in force, if any (it pins
	// the namespace against mesh-wide changes even when it inherits).
	NamespacePolicy string `json:"namespacePolicy,omitempty"`
	// Ignored lists policies Istio ignores, and why.
	Ignored   []string       `json:"ignored,omitempty"`
	Workloads []WorkloadMTLS `json:"workloads,omitempty"`
}

// WorkloadMTLS is a workload-level PeerAuthentication and what it resolves to.
type WorkloadMTLS struct {
	Policy   string            `json:"policy"`
	Selector map[string]string `json:"selector"`
	Mode     string            `json:"mode"`
	// Ports maps workload (target) ports to their resolved mode.
	Ports map[uint32]string `json:"ports,omitempty"`
	Pods  int               `json:"pods"`
}

// DestinationRuleTLS is a DestinationRule setting that makes clients send
// plaintext (DISABLE) or their own TLS (SIMPLE, MUTUAL) toward a host of the
// namespace: a STRICT sidecar rejects all three.
type DestinationRuleTLS struct {
	Policy string `json:"policy"`
	Host   string `json:"host"`
	Where  string `json:"where"`
	Mode   string `json:"mode"`
}

// Authz summarizes the namespace's AuthorizationPolicies.
type Authz struct {
	Policies int `json:"policies"`
	DryRun   int `json:"dryRun"`
	// AllowNothing: an enforced namespace-wide ALLOW policy with no rules.
	AllowNothing       bool `json:"allowNothing"`
	AllowNothingDryRun bool `json:"allowNothingDryRun"`
	// DenyAll: an enforced namespace-wide DENY policy with an empty rule.
	DenyAll bool `json:"denyAll"`
}

// TrafficSource describes the observation the report used.
type TrafficSource struct {
	Source string    `json:"source"`
	Window string    `json:"window"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Edges  int       `json:"edges"`
}

// Phases of a migration, in order (docs/apply.md).
const (
	PhaseInject     = "inject"
	PhasePermissive = "permissive"
	PhaseVerify     = "verify"
	PhaseStrict     = "strict"
	PhaseAuthz      = "authz"
	PhaseDone       = "done"
	PhaseNone       = "none"
)

// Readiness is the verdict: which phase comes next and whether it is safe to
// start it now.
type Readiness struct {
	Next     string   `json:"next"`
	Safe     bool     `json:"safe"`
	Reason   string   `json:"reason"`
	Blockers []string `json:"blockers,omitempty"`
}

// Severities, most severe first.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
	SeverityInfo    = "info"
)

// Finding is one thing the audit found, with a stable code (docs/findings.md).
type Finding struct {
	Code     string `json:"code"`
	Severity string `json:"severity"`
	// Object is what the finding is about, e.g. "Deployment/web".
	Object  string `json:"object"`
	Message string `json:"message"`
}

// Summary counts namespaces and findings.
type Summary struct {
	Namespaces int            `json:"namespaces"`
	Findings   map[string]int `json:"findings"`
	Next       map[string]int `json:"next"`
}

// NeedsAttention is true when any finding is an error or a warning: the
// audit's exit code is then 2.
func (r *Report) NeedsAttention() bool {
	return r.Summary.Findings[SeverityError] > 0 || r.Summary.Findings[SeverityWarning] > 0
}
