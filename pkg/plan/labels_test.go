package plan_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/istiofixture"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

const (
	labelInjection = "istio-injection"
	labelRev       = "istio.io/rev"
)

func TestInjectionLabels(t *testing.T) {
	defaultOnly := istiofixture.Injectors("1-30", true)
	revisionOnly := istiofixture.Injectors("1-30", false)
	defaultAndCanary := append(istiofixture.Injectors("1-30", true, "canary"), istiofixture.Injectors("1-31", false)...)
	twoRevisions := append(istiofixture.Injectors("1-30", false), istiofixture.Injectors("1-31", false)...)

	cases := []struct {
		name      string
		injectors []cluster.InjectorWebhook
		labels    []string
		revision  string
		// want
		status   plan.Status
		set      map[string]string
		remove   []string
		gateRev  string // the revision the sidecars gate expects
		reason   string // part of the reason, for done and blocked steps
		restarts []string
	}{
		{name: "default injector", injectors: defaultOnly,
			status: plan.StatusPending, set: map[string]string{labelInjection: "enabled"}, gateRev: "1-30", restarts: []string{"Deployment/web"}},
		{name: "already enabled", injectors: defaultOnly, labels: []string{labelInjection, "enabled"},
			status: plan.StatusDone, gateRev: "1-30", reason: "already selected for injection (istio-injection=enabled)", restarts: []string{"Deployment/web"}},
		{name: "single revision, no default", injectors: revisionOnly,
			status: plan.StatusPending, set: map[string]string{labelRev: "1-30"}, gateRev: "1-30", restarts: []string{"Deployment/web"}},
		{name: "single revision replaces istio-injection", injectors: revisionOnly, labels: []string{labelInjection, "enabled"},
			status: plan.StatusPending, set: map[string]string{labelRev: "1-30"}, remove: []string{labelInjection}, gateRev: "1-30", restarts: []string{"Deployment/web"}},
		{name: "a tag the namespace already uses is kept", injectors: defaultAndCanary, labels: []string{labelRev, "canary"},
			status: plan.StatusDone, gateRev: "1-30", reason: "istio.io/rev=canary", restarts: []string{"Deployment/web"}},
		{name: "--revision replaces istio-injection", injectors: defaultAndCanary, labels: []string{labelInjection, "enabled"}, revision: "1-31",
			status: plan.StatusPending, set: map[string]string{labelRev: "1-31"}, remove: []string{labelInjection}, gateRev: "1-31", restarts: []string{"Deployment/web"}},
		{name: "--revision with a tag", injectors: defaultAndCanary, revision: "canary",
			status: plan.StatusPending, set: map[string]string{labelRev: "canary"}, gateRev: "1-30", restarts: []string{"Deployment/web"}},
		{name: "--revision keeps an explicit disable", injectors: defaultAndCanary, labels: []string{labelInjection, "disabled"}, revision: "1-31",
			status: plan.StatusBlocked, reason: "istio-injection=disabled is set"},
		{name: "several revisions and no default", injectors: twoRevisions,
			status: plan.StatusBlocked, reason: "re-plan with --revision"},
		{name: "both labels: istio-injection wins and istio.io/rev goes", injectors: defaultAndCanary, labels: []string{labelInjection, "enabled", labelRev, "1-31"},
			status: plan.StatusPending, remove: []string{labelRev}, gateRev: "1-30", restarts: []string{"Deployment/web"}},
		{name: "both labels, only the revision served: istio-injection goes", injectors: twoRevisions, labels: []string{labelInjection, "enabled", labelRev, "1-31"},
			status: plan.StatusPending, remove: []string{labelInjection}, gateRev: "1-31", restarts: []string{"Deployment/web"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := estate()
			s.Injectors = c.injectors
			s.Namespaces = []cluster.Namespace{ns("shop", c.labels...)}
			s.Pods = deploy("shop", "web", 2)
			p := build(t, s, nil, plan.Options{Revision: c.revision})
			inject := phaseOf(t, p, "shop", plan.PhaseInject)
			st := oneStep(t, inject, "Namespace/shop")
			if st.Action != plan.ActionLabelNamespace || st.Status != c.status {
				t.Fatalf("label step = %s %s %q, want %s", st.Action, st.Status, st.Reason, c.status)
			}
			if !reflect.DeepEqual(st.Labels, c.set) || !reflect.DeepEqual(st.Remove, c.remove) {
				t.Errorf("label step sets %v removes %v, want %v and %v", st.Labels, st.Remove, c.set, c.remove)
			}
			if c.reason != "" && !strings.Contains(st.Reason, c.reason) {
				t.Errorf("reason %q lacks %q", st.Reason, c.reason)
			}
			after := applyLabels(ns("shop", c.labels...).Labels, st)
			if _, inj := after[labelInjection]; inj {
				if _, rev := after[labelRev]; rev {
					t.Errorf("after the step the namespace has both %s and %s: %v", labelInjection, labelRev, after)
				}
			}
			if st.Status == plan.StatusBlocked {
				if inject.Status != plan.StatusBlocked || inject.Gate != nil {
					t.Errorf("inject phase = %+v, want blocked", inject)
				}
				return
			}
			if inject.Gate == nil || inject.Gate.Name != plan.GateSidecars || !strings.HasSuffix(inject.Gate.Description, "of revision "+c.gateRev) {
				t.Errorf("inject gate = %+v, want sidecars of revision %s", inject.Gate, c.gateRev)
			}
			var restarts []string
			for _, r := range inject.Steps[1:] {
				if r.Action == plan.ActionRestartWorkload && r.Status == plan.StatusPending {
					restarts = append(restarts, r.Target)
				}
			}
			if !reflect.DeepEqual(restarts, c.restarts) {
				t.Errorf("restarts = %v, want %v", restarts, c.restarts)
			}
		})
	}
}

// TestRevisionFlagRestartsPodsOfTheOldRevision: moving a meshed namespace
// to another revision relabels it and restarts every pod of the old one.
func TestRevisionFlagRestartsPodsOfTheOldRevision(t *testing.T) {
	s := estate()
	s.Injectors = append(istiofixture.Injectors("1-30", true), istiofixture.Injectors("1-31", false)...)
	s.Namespaces = []cluster.Namespace{ns("shop", labelInjection, "enabled")}
	s.Pods = pods(deploy("shop", "web", 2, injected("1-30")), deploy("shop", "api", 1, injected("1-31")))

	same := build(t, s, nil, plan.Options{})
	if got := steps(phaseOf(t, same, "shop", plan.PhaseInject), "Deployment/web"); len(got) != 0 {
		t.Errorf("without --revision the 1-30 pods are current: %s", describeSteps(got))
	}

	p := build(t, s, nil, plan.Options{Revision: "1-31"})
	inject := phaseOf(t, p, "shop", plan.PhaseInject)
	label := oneStep(t, inject, "Namespace/shop")
	if !reflect.DeepEqual(label.Labels, map[string]string{labelRev: "1-31"}) || !reflect.DeepEqual(label.Remove, []string{labelInjection}) {
		t.Errorf("label step = %+v", label)
	}
	web := oneStep(t, inject, "Deployment/web")
	if web.Action != plan.ActionRestartWorkload || web.Status != plan.StatusPending || !strings.Contains(web.Reason, "2 pods without a current sidecar") {
		t.Errorf("web = %+v, want a restart of its two 1-30 pods", web)
	}
	if got := steps(inject, "Deployment/api"); len(got) != 0 {
		t.Errorf("api already runs 1-31: %s", describeSteps(got))
	}
	if p.Options.Revision != "1-31" {
		t.Errorf("options = %+v", p.Options)
	}
}

func TestUnknownRevisionIsAnError(t *testing.T) {
	s := estate()
	s.Injectors = append(istiofixture.Injectors("1-30", true, "canary"), istiofixture.Injectors("1-31", false)...)
	s.Namespaces = []cluster.Namespace{ns("shop")}
	s.Pods = deploy("shop", "web", 1)
	_, err := tryBuild(s, nil, plan.Options{Revision: "1-32"})
	if err == nil {
		t.Fatal("--revision 1-32 with no such injector built a plan")
	}
	for _, want := range []string{"--revision 1-32", "1-30", "1-31", "canary (tag of 1-30)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
