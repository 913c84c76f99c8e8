package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/nonnil"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// seal computes the plan's hash over its content (everything but ID, Hash
// and CreatedAt, so planning the same state twice gives the same plan) and
// derives the ID from it. Empty lists are made [] first, so the file never
// holds a null list and the hash covers what is written. A file from an
// earlier version that holds null still loads: it decodes to nil and
// encodes to null again, as when it was hashed.
func (p *Plan) seal() error {
	nonnil.Fill(p)
	h, err := p.contentHash()
	if err != nil {
		return err
	}
	p.Hash = h
	p.ID = "mp-" + h[len("sha256:"):len("sha256:")+12]
	return nil
}

func (p *Plan) contentHash() (string, error) {
	c := *p
	c.ID, c.Hash, c.CreatedAt = "", "", time.Time{}
	b, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("hash the plan: %w", err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Marshal encodes the plan as YAML, or as indented JSON.
func (p *Plan) Marshal(asJSON bool) ([]byte, error) {
	if asJSON {
		b, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	return yaml.Marshal(p)
}

// Load reads a plan file written by `kubectl meshmigrate plan`.
func Load(path string) (*Plan, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("plan file %s does not exist: make one with `kubectl meshmigrate plan -o yaml > %s`", path, path)
		}
		return nil, fmt.Errorf("read plan file: %w", err)
	}
	p, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("plan file %s: %w", path, err)
	}
	return p, nil
}

// Parse decodes a plan (YAML or JSON) and checks it: the schema identity,
// the structure apply relies on, and that the content still matches its
// hash, so a plan edited after review is refused rather than applied.
func Parse(raw []byte) (*Plan, error) {
	var p Plan
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		return nil, fmt.Errorf("not a MigrationPlan: %w", err)
	}
	if p.APIVersion != APIVersion || p.Kind != Kind {
		return nil, fmt.Errorf("apiVersion %q kind %q, want %s %s (made by `kubectl meshmigrate plan`)", p.APIVersion, p.Kind, APIVersion, Kind)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	h, err := p.contentHash()
	if err != nil {
		return nil, err
	}
	if h != p.Hash {
		return nil, fmt.Errorf("content does not match its hash %s (it was edited after planning): make a new plan instead of editing one", p.Hash)
	}
	if want := "mp-" + h[len("sha256:"):len("sha256:")+12]; p.ID != want {
		return nil, fmt.Errorf("id %q does not match its hash (want %q): make a new plan", p.ID, want)
	}
	return &p, nil
}

var (
	validStatuses = map[Status]bool{StatusPending: true, StatusDone: true, StatusBlocked: true, StatusSkipped: true}
	validActions  = map[Action]bool{ActionLabelNamespace: true, ActionRestartWorkload: true, ActionApply: true, ActionGate: true, ActionReport: true, ActionDelete: true}
)

// validate checks what apply relies on, so that a damaged file is an error
// here and never a surprise halfway through a migration.
func (p *Plan) validate() error {
	if p.Hash == "" || p.ID == "" {
		return errors.New("missing id or hash")
	}
	switch p.Options.Target {
	case TargetStrict, TargetPermissive:
	default:
		return fmt.Errorf("options.target %q: want strict or permissive", p.Options.Target)
	}
	switch p.Options.Authz {
	case AuthzOff, AuthzDryRun, AuthzEnforce:
	default:
		return fmt.Errorf("options.authz %q: want off, dry-run or enforce", p.Options.Authz)
	}
	if w := p.Options.MinVerifyWindow; w != "" {
		if d, err := time.ParseDuration(w); err != nil || d <= 0 {
			return fmt.Errorf("options.minVerifyWindow %q: want a positive duration such as 10m", w)
		}
	}
	seen := map[string]bool{}
	for i, ns := range p.Namespaces {
		if ns.Name == "" || seen[ns.Name] {
			return fmt.Errorf("namespaces[%d]: empty or repeated name %q", i, ns.Name)
		}
		seen[ns.Name] = true
		if ns.Wave < 1 || ns.Wave > len(p.Waves) {
			return fmt.Errorf("namespace %s: wave %d is not one of the plan's %d waves", ns.Name, ns.Wave, len(p.Waves))
		}
		if ns.Dataplane != "" && ns.Dataplane != DataplaneAmbient {
			return fmt.Errorf("namespace %s: dataplane %q: want ambient or none", ns.Name, ns.Dataplane)
		}
		want := PhasesOf(ns.Dataplane)
		if len(ns.Phases) != len(want) {
			return fmt.Errorf("namespace %s: %d phases, want %d (%v)", ns.Name, len(ns.Phases), len(want), want)
		}
		for j, ph := range ns.Phases {
			if ph.Name != want[j] {
				hint := ""
				if ns.Dataplane == DataplaneAmbient && j == 0 && ph.Name == PhaseEnroll {
					hint = ": a plan made before waypoints were deployed (enroll first); re-plan with this version"
				}
				return fmt.Errorf("namespace %s: phase %d is %q, want %q%s", ns.Name, j, ph.Name, want[j], hint)
			}
			if !validStatuses[ph.Status] {
				return fmt.Errorf("namespace %s phase %s: unknown status %q", ns.Name, ph.Name, ph.Status)
			}
			for k, st := range ph.Steps {
				if !validActions[st.Action] || !validStatuses[st.Status] || st.Target == "" {
					return fmt.Errorf("namespace %s phase %s step %d: action %q, status %q, target %q not valid", ns.Name, ph.Name, k, st.Action, st.Status, st.Target)
				}
				// Only a pending apply writes its object; a blocked one has
				// none (there is nothing safe to write).
				if (st.Action == ActionApply || st.Action == ActionDelete) && st.Status == StatusPending && st.Object == nil {
					return fmt.Errorf("namespace %s phase %s step %d: pending %s without an object", ns.Name, ph.Name, k, st.Action)
				}
				if err := checkStep(ns.Name, st); err != nil {
					return fmt.Errorf("namespace %s phase %s step %d: %w", ns.Name, ph.Name, k, err)
				}
			}
		}
	}
	for i, w := range p.Waves {
		if w.Number != i+1 {
			return fmt.Errorf("waves[%d]: number %d, want %d", i, w.Number, i+1)
		}
		for _, n := range w.Namespaces {
			if !seen[n] {
				return fmt.Errorf("wave %d names namespace %q that the plan does not hold", w.Number, n)
			}
		}
	}
	return nil
}

// The kinds a plan touches, by action: apply and rollback write nothing
// else. The checkpoint's undo records are held to the same rules
// (pkg/phases), since a record is only ever written for a plan's step.
var (
	WorkloadKinds = []string{"Deployment", "StatefulSet", "DaemonSet"}
	PolicyKinds   = []string{"PeerAuthentication", "AuthorizationPolicy", "Gateway"}
	// DeleteKinds are what a delete step may delete: an L7 policy moved
	// to a waypoint.
	DeleteKinds = []string{"AuthorizationPolicy"}
)

// PolicyGroup is the API group of the policies an apply step writes.
const PolicyGroup = "security.istio.io"

// groupOf is the API group of a kind apply writes: Istio's policies, or the
// Gateway API's Gateway that is a waypoint.
func groupOf(kind string) string {
	if kind == "Gateway" {
		return cluster.GatewayGroup
	}
	return PolicyGroup
}

// CheckTarget reports whether a step (or undo record) of action may touch
// target in namespace ns: its own namespace's labels, a workload of its own
// to restart, or a policy of its own. Steps that write nothing (gate,
// report) have no rule.
func CheckTarget(action Action, ns, target string) error {
	kind, name, _ := strings.Cut(target, "/")
	switch action {
	case ActionLabelNamespace:
		if target != "Namespace/"+ns {
			return fmt.Errorf("target %q: a label-namespace step labels its own namespace only, Namespace/%s", target, ns)
		}
		return nil
	case ActionRestartWorkload:
		if !slices.Contains(WorkloadKinds, kind) {
			return fmt.Errorf("target %q: a restart-workload step restarts only a %s", target, either(WorkloadKinds))
		}
	case ActionApply:
		if !slices.Contains(PolicyKinds, kind) {
			return fmt.Errorf("target %q: an apply step writes only a %s", target, either(PolicyKinds))
		}
	case ActionDelete:
		if !slices.Contains(DeleteKinds, kind) {
			return fmt.Errorf("target %q: a delete step deletes only an %s", target, either(DeleteKinds))
		}
	default:
		return nil
	}
	// The name ends up in an API path: nothing but a valid object name.
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("target %q: %q is not a valid name (%s)", target, name, strings.Join(errs, "; "))
	}
	return nil
}

// either lists kinds as "A, B or C".
func either(kinds []string) string {
	if len(kinds) < 2 {
		return strings.Join(kinds, "")
	}
	return strings.Join(kinds[:len(kinds)-1], ", ") + " or " + kinds[len(kinds)-1]
}

// CheckObject reports whether obj is the object target names in namespace
// ns, in the policies' API group: what an apply step writes, and what
// rollback may write back.
func CheckObject(ns, target string, obj map[string]any) error {
	kind, name, _ := strings.Cut(target, "/")
	apiVersion, _ := obj["apiVersion"].(string)
	if err := CheckAPIVersion(kind, apiVersion); err != nil {
		return fmt.Errorf("object %w", err)
	}
	md, _ := obj["metadata"].(map[string]any)
	objKind, _ := obj["kind"].(string)
	objName, _ := md["name"].(string)
	objNS, _ := md["namespace"].(string)
	switch {
	case objKind != kind:
		return fmt.Errorf("object kind %q, but target %q", objKind, target)
	case objName != name:
		return fmt.Errorf("object metadata.name %q, but target %q", objName, target)
	case objNS != ns:
		return fmt.Errorf("object metadata.namespace %q, want %s", objNS, ns)
	}
	return nil
}

// CheckAPIVersion reports whether apiVersion is a version of kind's API
// group.
func CheckAPIVersion(kind, apiVersion string) error {
	group := groupOf(kind)
	if gv, err := schema.ParseGroupVersion(apiVersion); err != nil || gv.Group != group || gv.Version == "" {
		return fmt.Errorf("apiVersion %q, want %s/VERSION", apiVersion, group)
	}
	return nil
}

// CheckLabel reports whether key is a label key and value (nil: absent)
// a label value.
func CheckLabel(key string, value *string) error {
	if errs := validation.IsQualifiedName(key); len(errs) > 0 {
		return fmt.Errorf("label %q is not a label key (%s)", key, strings.Join(errs, "; "))
	}
	if value != nil {
		if errs := validation.IsValidLabelValue(*value); len(errs) > 0 {
			return fmt.Errorf("label %s=%q is not a label value (%s)", key, *value, strings.Join(errs, "; "))
		}
	}
	return nil
}

// checkStep holds a step to what the plan itself produces, so a file
// edited and sealed again cannot point apply at another namespace or kind.
func checkStep(ns string, st Step) error {
	if err := CheckTarget(st.Action, ns, st.Target); err != nil {
		return err
	}
	switch st.Action {
	case ActionApply, ActionDelete:
		if st.Object == nil {
			return nil // a blocked step: nothing to write (a pending one needs its object, checked above)
		}
		return CheckObject(ns, st.Target, st.Object)
	case ActionLabelNamespace:
		for _, k := range slices.Sorted(maps.Keys(st.Labels)) {
			v := st.Labels[k]
			if err := CheckLabel(k, &v); err != nil {
				return err
			}
		}
		for _, k := range st.Remove {
			if err := CheckLabel(k, nil); err != nil {
				return err
			}
		}
	}
	return nil
}
