package audit

import (
	"encoding/json"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
)

// Istio's injection keys (docs/istio.md 1.1, 1.6).
const (
	labelInjection       = "istio-injection"
	labelRev             = "istio.io/rev"
	labelDataplaneMode   = cluster.LabelDataplaneMode
	keyInject            = "sidecar.istio.io/inject"
	annotationStatus     = "sidecar.istio.io/status"
	annotationRev        = "istio.io/rev"
	annotationAmbient    = "ambient.istio.io/redirection"
	proxyContainer       = "istio-proxy"
	dataplaneModeAmbient = cluster.DataplaneModeAmbient
)

// ignoredNamespaces are never injected by Istio's injector
// (src pkg/kube/inject/initializer.go, docs/istio.md 1.3).
var ignoredNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true,
}

// injector is an injector webhook with its selectors parsed once.
type injector struct {
	cluster.InjectorWebhook
	ns, obj labels.Selector
}

// compileInjectors parses the webhooks' selectors. A webhook whose selector
// cannot be parsed is dropped: the API server would reject it too.
func compileInjectors(ws []cluster.InjectorWebhook) []injector {
	out := make([]injector, 0, len(ws))
	for _, w := range ws {
		ns, err1 := selectorOf(w.NamespaceSelector)
		obj, err2 := selectorOf(w.ObjectSelector)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, injector{InjectorWebhook: w, ns: ns, obj: obj})
	}
	return out
}

// selectorOf follows admission semantics: a nil selector matches everything.
func selectorOf(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

// selecting returns the first injector whose selectors match the namespace
// and pod labels. Webhook selection uses labels only (docs/istio.md 1.3).
func selecting(injectors []injector, nsLabels, podLabels map[string]string) *injector {
	for i := range injectors {
		if injectors[i].ns.Matches(labels.Set(nsLabels)) && injectors[i].obj.Matches(labels.Set(podLabels)) {
			return &injectors[i]
		}
	}
	return nil
}

// namespaceInjection derives the injection mode from the namespace's labels
// and the injector that would act on an ordinary pod there.
func namespaceInjection(ns cluster.Namespace, injectors []injector, excluded bool) (Injection, *injector) {
	inj := Injection{Mode: InjectionNone}
	lbl := ns.Labels
	switch {
	case excluded:
		inj.Mode = InjectionIgnored
	case lbl[labelInjection] != "":
		// istio-injection beats istio.io/rev: the revision webhooks require
		// it absent, so any value but "enabled" blocks every revision.
		inj.Label = labelInjection + "=" + lbl[labelInjection]
		inj.Mode = InjectionDisabled
		if lbl[labelInjection] == "enabled" {
			inj.Mode = InjectionEnabled
		}
	case lbl[labelRev] != "":
		inj.Mode = InjectionRevision
		inj.Label = labelRev + "=" + lbl[labelRev]
	case lbl[labelDataplaneMode] == dataplaneModeAmbient:
		inj.Mode = InjectionAmbient
		inj.Label = labelDataplaneMode + "=" + dataplaneModeAmbient
	}
	if excluded {
		return inj, nil
	}
	w := selecting(injectors, lbl, nil)
	if w != nil {
		inj.Revision = w.Revision
		inj.Tag = w.Tag
		inj.Webhook = w.Configuration + "/" + w.Name
		if inj.Mode == InjectionNone {
			// e.g. the auto. webhook of enableNamespacesByDefault.
			inj.Mode = InjectionDefault
		}
	}
	return inj, w
}

// sidecarOf says whether the pod carries Istio's sidecar: an istio-proxy
// container (classic) or an istio-proxy init container with restartPolicy
// Always (native). Kiali's HasIstioSidecar checks the same (docs/istio.md 1.4).
func sidecarOf(p *cluster.Pod) string {
	for _, c := range p.Containers {
		if c.Name == proxyContainer {
			return "classic"
		}
	}
	for _, c := range p.InitContainers {
		if c.Name == proxyContainer && c.RestartAlways {
			return "native"
		}
	}
	return ""
}

// revisionOf is the revision that actually injected the pod: the
// sidecar.istio.io/status annotation's "revision", else the istio.io/rev
// annotation the injector sets (docs/istio.md 1.4). A pod label istio.io/rev is
// user intent, not a fact, and is not read here.
func revisionOf(p *cluster.Pod) string {
	if s := p.Annotations[annotationStatus]; s != "" {
		var st struct {
			Revision string `json:"revision"`
		}
		if json.Unmarshal([]byte(s), &st) == nil && st.Revision != "" {
			return st.Revision
		}
	}
	return p.Annotations[annotationRev]
}

// injectOverride is the pod's sidecar.istio.io/inject value: the label wins
// over the (deprecated) annotation (docs/istio.md 1.3).
func injectOverride(p *cluster.Pod) (value, source string) {
	if v, ok := p.Labels[keyInject]; ok {
		return v, "label"
	}
	if v, ok := p.Annotations[keyInject]; ok {
		return v, "annotation"
	}
	return "", ""
}

// optsOut mirrors Istio's injectRequired: the value is lower-cased and only
// y, yes, true and on ask for injection; any other non-empty value ("false",
// "no", "off", "False", ...) opts the pod out, even though the webhook's
// `NotIn ["false"]` selector still sends such pods to the injector
// (src pkg/kube/inject/inject.go).
func optsOut(value string) bool {
	switch strings.ToLower(value) {
	case "", "y", "yes", "true", "on":
		return false
	}
	return true
}

// classifyPod decides a pod's state. A pod is injected on creation when an
// injector's selectors match and the injector's own checks pass: hostNetwork
// and the ignored namespaces are skipped, and sidecar.istio.io/inject=false
// is final (src pkg/kube/inject/inject.go injectRequired).
func classifyPod(p *cluster.Pod, nsLabels map[string]string, injectors []injector) Pod {
	out := Pod{Name: p.Name, Workload: p.Owner.String(), Sidecar: sidecarOf(p), Revision: revisionOf(p)}
	override, overrideSource := injectOverride(p)
	w := selecting(injectors, nsLabels, p.Labels)
	notInjectable := ""
	switch {
	case p.HostNetwork:
		notInjectable = "hostNetwork pod: Istio never injects it"
	case ignoredNamespaces[p.Namespace]:
		notInjectable = "Istio never injects namespace " + p.Namespace
	case optsOut(override):
		notInjectable = "opted out by the " + keyInject + "=" + override + " " + overrideSource
	}
	wouldInject := w != nil && notInjectable == ""
	if wouldInject {
		out.ExpectedRevision = w.Revision
	}
	if out.Sidecar == "" && ambientCaptured(p) {
		out.Sidecar, out.State = "ambient", PodMeshed
		return out
	}
	switch {
	case out.Sidecar != "" && !wouldInject:
		out.State = PodSidecarNotExpected
		out.Reason = "has a sidecar, but nothing would inject it now; a restart removes it"
		if notInjectable != "" {
			out.Reason = "has a sidecar, but is " + notInjectable + "; a restart removes it"
		}
	case out.Sidecar != "" && out.Revision != "" && out.Revision != out.ExpectedRevision:
		out.State = PodWrongRevision
		out.Reason = "sidecar of revision " + out.Revision + ", namespace selects " + out.ExpectedRevision
	case out.Sidecar != "":
		out.State = PodMeshed
	case notInjectable != "":
		out.State = PodNotInjectable
		out.Reason = notInjectable
	case wouldInject:
		out.State = PodNeedsRestart
		out.Reason = "created before injection was enabled: no sidecar"
	default:
		out.State = PodNotSelected
		out.Reason = "no injector selects this pod"
	}
	return out
}

// ambientCaptured tells an ambient-captured pod (docs/istio.md 1.6).
func ambientCaptured(p *cluster.Pod) bool {
	return p.Annotations[annotationAmbient] == "enabled"
}

// Classifier judges injection against a snapshot's injectors, compiled
// once: a planner asks about many namespaces and label sets.
type Classifier struct{ injectors []injector }

// NewClassifier compiles the snapshot's injector webhooks.
func NewClassifier(s *cluster.Snapshot) *Classifier {
	return &Classifier{injectors: compileInjectors(s.Injectors)}
}

// Pods classifies a namespace's running pods as they would stand if the
// namespace carried nsLabels (after the inject phase's label change and
// before any restart): which would be meshed, need a restart, or stay out.
func (c *Classifier) Pods(pods []*cluster.Pod, nsLabels map[string]string) Pods {
	return podsOf(pods, nsLabels, c.injectors)
}

// InjectorFor returns the injector that would inject an ordinary pod of a
// namespace labelled nsLabels, and false when none would.
func (c *Classifier) InjectorFor(nsLabels map[string]string) (Injector, bool) {
	w := selecting(c.injectors, nsLabels, nil)
	if w == nil {
		return Injector{}, false
	}
	return Injector{Configuration: w.Configuration, Webhook: w.Name, Revision: w.Revision, Tag: w.Tag}, true
}
