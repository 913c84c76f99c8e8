// Package plan turns an audit (and the traffic it observed) into a
// MigrationPlan: per namespace the phases inject, permissive, verify, strict
// and authz, each with its steps (the exact objects and changes) and gates,
// namespaces grouped into waves so none goes STRICT before its callers are
// meshed. It is pure: the same inputs give the same plan, byte for byte, and
// the same hash. docs/plan.md documents the file format.
package plan

import (
	"slices"
	"strings"
	"time"
)

// The plan file's schema identity. Bump the version on any breaking change.
const (
	APIVersion = "meshmigrate.io/v1alpha1"
	Kind       = "MigrationPlan"
)

// PhaseName names a phase of a namespace's migration.
type PhaseName string

// Phases, in the order they run (docs/apply.md).
const (
	PhaseInject PhaseName = "inject"
	// PhaseWaypoint and PhaseEnroll replace inject for a namespace moving
	// to the ambient data plane (docs/ambient.md): the waypoint comes
	// first, as in Istio's migration guide, so that the L7 policies are on
	// it before ztunnel could enforce them.
	PhaseWaypoint   PhaseName = "waypoint"
	PhaseEnroll     PhaseName = "enroll"
	PhasePermissive PhaseName = "permissive"
	PhaseVerify     PhaseName = "verify"
	PhaseStrict     PhaseName = "strict"
	PhaseAuthz      PhaseName = "authz"
)

// Phases lists the phases of a namespace moving to sidecars, in order.
var Phases = []PhaseName{PhaseInject, PhasePermissive, PhaseVerify, PhaseStrict, PhaseAuthz}

// AmbientPhases lists the phases of a namespace moving to ambient.
var AmbientPhases = []PhaseName{PhaseWaypoint, PhaseEnroll, PhasePermissive, PhaseVerify, PhaseStrict, PhaseAuthz}

// AllPhases is every phase name in the order phases run: what --phase,
// --through and rollback --to accept.
var AllPhases = []PhaseName{PhaseInject, PhaseWaypoint, PhaseEnroll, PhasePermissive, PhaseVerify, PhaseStrict, PhaseAuthz}

// The data planes a plan migrates to (--dataplane).
const (
	DataplaneSidecar = "sidecar"
	DataplaneAmbient = "ambient"
)

// PhasesOf lists the phases of a namespace planned for dataplane.
func PhasesOf(dataplane string) []PhaseName {
	if dataplane == DataplaneAmbient {
		return AmbientPhases
	}
	return Phases
}

// MeshPhase is the phase that meshes the namespace: inject, or enroll.
func (n *Namespace) MeshPhase() PhaseName {
	if n.Dataplane == DataplaneAmbient {
		return PhaseEnroll
	}
	return PhaseInject
}

// PhaseNames is phases as strings (flag values, shell completion, messages).
func PhaseNames(phases []PhaseName) []string {
	names := make([]string, len(phases))
	for i, p := range phases {
		names[i] = string(p)
	}
	return names
}

// PhaseList is every phase name in order, for messages: "inject, enroll, …".
func PhaseList() string { return strings.Join(PhaseNames(AllPhases), ", ") }

// Status is where a phase or a step stands in the plan.
type Status string

// Statuses of a phase or a step.
const (
	// StatusPending: to be done by apply.
	StatusPending Status = "pending"
	// StatusDone: the cluster already is as the step wants; apply skips it.
	StatusDone Status = "done"
	// StatusBlocked: its precondition cannot hold; Reason says why. apply
	// stops before it.
	StatusBlocked Status = "blocked"
	// StatusSkipped: left out on purpose (--target, --authz off,
	// --exclude-workload); Reason says why.
	StatusSkipped Status = "skipped"
)

// Action is what a step does.
type Action string

// Step actions.
const (
	ActionLabelNamespace  Action = "label-namespace"
	ActionRestartWorkload Action = "restart-workload"
	// ActionApply server-side applies Object.
	ActionApply Action = "apply"
	// ActionGate waits for the gate named in Target before the steps after
	// it (the authz dry-run gate sits between its dry-run and enforce steps).
	ActionGate Action = "gate"
	// ActionReport changes nothing: the user must act (Reason says how).
	ActionReport Action = "report"
	// ActionDelete deletes the object Target names, which must still be as
	// Object shows it (an L7 policy moved to a waypoint); rollback
	// re-creates it as it was.
	ActionDelete Action = "delete"
)

// Labels and annotations the plan's objects carry.
const (
	AnnotationDryRun = "istio.io/dry-run"
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	LabelPlanID      = "meshmigrate.io/plan-id"
	ManagedBy        = "kubectl-meshmigrate"

	defaultPeerAuthName    = "default"
	allowNothingPolicyName = "meshmigrate-allow-nothing"
	allowPolicyPrefix      = "meshmigrate-allow-"
	portExceptionPrefix    = "meshmigrate-ports-"
)

// GateName names a gate.
type GateName string

// Gate names.
const (
	GateSidecars        GateName = "sidecars-current"
	GatePinned          GateName = "peer-authentication-in-force"
	GateNoPlaintext     GateName = "no-plaintext"
	GateNoShadowDenials GateName = "no-shadow-denials"
	// GateAmbientCaptured: every pod of the namespace is captured by
	// ztunnel (ambient.istio.io/redirection=enabled) and none carries a
	// sidecar.
	GateAmbientCaptured GateName = "ambient-captured"
	// GateWaypointProgrammed: the namespace's waypoint Gateway is of class
	// istio-waypoint and its Programmed condition is True.
	GateWaypointProgrammed GateName = "waypoint-programmed"
	// GateCallersAllowed: in an ambient namespace's authz phase, every
	// caller seen over mTLS since STRICT is allowed by the planned ALLOW
	// policy of the workload it calls (docs/ambient.md).
	GateCallersAllowed GateName = "callers-allowed"
)

// Target and authz modes (--target, --authz).
const (
	TargetStrict     = "strict"
	TargetPermissive = "permissive"
	AuthzOff         = "off"
	AuthzDryRun      = "dry-run"
	AuthzEnforce     = "enforce"
)

// Plan is a MigrationPlan.
type Plan struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// ID names the plan; it is derived from Hash, so the same inputs give
	// the same ID. Objects the plan creates carry it as a label.
	ID string `json:"id"`
	// Hash is "sha256:<hex>" over everything but ID, Hash and CreatedAt.
	// Load refuses a file whose content no longer matches it.
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"createdAt"`
	Cluster   Cluster   `json:"cluster"`
	Mesh      Mesh      `json:"mesh"`
	// Traffic is the observation the plan is based on; nil when telemetry
	// was not read.
	Traffic *Traffic `json:"traffic,omitempty"`
	Options Options  `json:"options"`
	// Waves group the namespaces: a namespace goes STRICT only after every
	// planned namespace whose workloads call it in plaintext has finished.
	Waves      []Wave      `json:"waves"`
	Namespaces []Namespace `json:"namespaces"`
	// Skipped lists namespaces in scope that the plan leaves alone, and why.
	Skipped []SkippedNamespace `json:"skipped,omitempty"`
	Summary Summary            `json:"summary"`
}

// Cluster names the cluster the plan was made for.
type Cluster struct {
	Context string `json:"context,omitempty"`
	Server  string `json:"server,omitempty"`
	// UID is the kube-system namespace's UID: apply refuses a plan whose UID
	// differs from the cluster's.
	UID string `json:"uid,omitempty"`
}

// Mesh is what the plan relies on from the Istio installation.
type Mesh struct {
	RootNamespace string `json:"rootNamespace"`
	TrustDomain   string `json:"trustDomain"`
	// SecurityAPIVersion is the security.istio.io version the plan's
	// policies are written in (v1 from Istio 1.22, else v1beta1).
	SecurityAPIVersion string `json:"securityAPIVersion"`
	// Fingerprint covers the injectors and mesh-wide settings the plan
	// depends on.
	Fingerprint Fingerprint `json:"fingerprint"`
}

// Traffic is the observation window the plan used.
type Traffic struct {
	Source string    `json:"source"`
	Window string    `json:"window"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Edges  int       `json:"edges"`
}

// Options are the choices the plan was made with.
type Options struct {
	Target string `json:"target"`
	Authz  string `json:"authz"`
	// Revision is the revision or revision tag to inject (--revision); empty
	// to keep the namespace's selection or use the mesh's default.
	Revision         string   `json:"revision,omitempty"`
	ExcludeWorkloads []string `json:"excludeWorkloads,omitempty"`
	PortExceptions   []string `json:"portExceptions,omitempty"`
	// AllowNoCallers acknowledges workloads ("NS/WORKLOAD" or "NS/*") that
	// would receive no allow, so the enforced allow-nothing denies all
	// their inbound traffic.
	AllowNoCallers []string `json:"allowNoCallers,omitempty"`
	// ForceStrict names namespaces whose STRICT step goes ahead despite its
	// blockers, which stay listed in the step.
	ForceStrict []string `json:"forceStrict,omitempty"`
	// MinVerifyWindow is the shortest window the traffic gates may judge
	// (a Go duration): a gate over less, or --verify-window under it, is
	// not a pass. Empty in plans made before it existed: DefaultMinVerifyWindow.
	MinVerifyWindow string `json:"minVerifyWindow,omitempty"`
	// Dataplane is what the namespaces move to: sidecar (empty in plans
	// made before it existed) or ambient (--dataplane).
	Dataplane string `json:"dataplane,omitempty"`
}

// DefaultMinVerifyWindow is the verify window's floor unless the plan sets
// another: many scrape intervals of any usual Prometheus (15 s to 1 min), so
// that one lucky request cannot pass a gate.
const DefaultMinVerifyWindow = 10 * time.Minute

// VerifyFloor is the plan's MinVerifyWindow, or the default.
func (p *Plan) VerifyFloor() time.Duration {
	if d, err := time.ParseDuration(p.Options.MinVerifyWindow); err == nil && d > 0 {
		return d
	}
	return DefaultMinVerifyWindow
}

// Wave is a group of namespaces migrated together.
type Wave struct {
	Number     int      `json:"number"`
	Namespaces []string `json:"namespaces"`
}

// Namespace is the plan for one namespace.
type Namespace struct {
	Name string `json:"name"`
	Wave int    `json:"wave"`
	// Fingerprint is the state the namespace was planned against; apply
	// refuses the plan (exit 3) when the cluster no longer matches it.
	Fingerprint Fingerprint `json:"fingerprint"`
	// CalledBy are the planned namespaces that must be meshed first (they
	// call this one in plaintext).
	CalledBy []string `json:"calledBy,omitempty"`
	// Dataplane is ambient for a namespace moving to ambient (its phases
	// are AmbientPhases); empty for sidecars.
	Dataplane string  `json:"dataplane,omitempty"`
	Phases    []Phase `json:"phases"`
	// Uncovered lists workloads that receive no ALLOW because no caller was
	// observed: the allow-nothing policy denies all their inbound traffic.
	Uncovered []string `json:"uncovered,omitempty"`
}

// SkippedNamespace is a namespace the plan does not migrate.
type SkippedNamespace struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Phase is one phase of a namespace's migration.
type Phase struct {
	Name   PhaseName `json:"name"`
	Status Status    `json:"status"`
	Reason string    `json:"reason,omitempty"`
	Steps  []Step    `json:"steps,omitempty"`
	// Gate must pass before the next phase starts.
	Gate *Gate `json:"gate,omitempty"`
	// Notes are what a reviewer should know that changes nothing.
	Notes []string `json:"notes,omitempty"`
}

// Step is one change, or one thing the user must do.
type Step struct {
	Action Action `json:"action"`
	// Target is Kind/name (namespaced objects in the phase's namespace),
	// e.g. "Namespace/shop", "Deployment/web",
	// "PeerAuthentication/default".
	Target string `json:"target"`
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Labels are the namespace labels label-namespace sets; Remove the ones
	// it removes.
	Labels map[string]string `json:"labels,omitempty"`
	Remove []string          `json:"remove,omitempty"`
	// Object is the manifest apply (server-side) writes.
	Object map[string]any `json:"object,omitempty"`
	// Forced marks a STRICT step that goes ahead over the blockers in
	// Reason because of --force-strict.
	Forced bool `json:"forced,omitempty"`
	// Owner names who else manages the object, when that alone blocks the
	// step ("Argo CD (application shop)"): the tool never takes it over,
	// and --out-dir renders the change for the owner's source instead.
	Owner string `json:"owner,omitempty"`
}

// Gate is a condition apply checks before moving on.
type Gate struct {
	Name        GateName `json:"name"`
	Description string   `json:"description"`
	// Expect lists what the plan expects the gate to see cleared first,
	// e.g. plaintext callers that the inject phase of another namespace
	// meshes.
	Expect []string `json:"expect,omitempty"`
	// Callers are the callers behind Expect ("namespace/workload"): the
	// gate passes only once each of them is seen arriving over mTLS.
	Callers []string `json:"callers,omitempty"`
	// Inbound are the namespace's workloads that served traffic over the
	// plan's window: the gate passes only once each of them shows inbound
	// traffic over its own window, so a busy workload cannot hide a
	// silent one.
	Inbound []string `json:"inbound,omitempty"`
}

// Summary counts what the plan holds.
type Summary struct {
	Namespaces int `json:"namespaces"`
	Waves      int `json:"waves"`
	Steps      int `json:"steps"`
	Blocked    int `json:"blocked"`
	// BlockedSteps are "namespace phase: target: reason" for each blocked
	// step or phase.
	BlockedSteps []string `json:"blockedSteps,omitempty"`
}

// NeedsAttention is true when a step is blocked: `plan` then exits 2.
func (p *Plan) NeedsAttention() bool { return p.Summary.Blocked > 0 }

// Namespace returns the plan of namespace name.
func (p *Plan) Namespace(name string) (*Namespace, bool) {
	for i := range p.Namespaces {
		if p.Namespaces[i].Name == name {
			return &p.Namespaces[i], true
		}
	}
	return nil, false
}

// Phase returns the namespace's phase by name.
func (n *Namespace) Phase(name PhaseName) (*Phase, bool) {
	for i := range n.Phases {
		if n.Phases[i].Name == name {
			return &n.Phases[i], true
		}
	}
	return nil, false
}

// Callees are the planned namespaces whose calledBy names ns: they rely on
// ns's sidecars once they are STRICT.
func (p *Plan) Callees(ns string) []string {
	var out []string
	for _, n := range p.Namespaces {
		if slices.Contains(n.CalledBy, ns) {
			out = append(out, n.Name)
		}
	}
	return out
}
