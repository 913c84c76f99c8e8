package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

// -n completes from the cluster's namespaces, read through the root
// command's factory (here over a fake clientset): what the shell offers
// after `kubectl meshmigrate audit -n sh<TAB>`.
func TestNamespaceCompletionReadsThroughTheFactory(t *testing.T) {
	ns := func(name string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	kube := kubefake.NewClientset(ns("shop"), ns("shipping"), ns("payments"))
	var out, errOut bytes.Buffer
	cmd := newRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, &Factory{kube: kube})
	cmd.SetOut(&out) // cobra prints completions to the command's own output
	cmd.SetArgs([]string{"__complete", "audit", "-n", "sh"})
	cmd.SetContext(context.Background())
	if err := cmd.Execute(); err != nil {
		t.Fatalf("__complete: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	got := strings.Join(lines[:len(lines)-1], " ") // the last line is cobra's directive
	if got != "shipping shop" && got != "shop shipping" {
		t.Errorf("completions %q, want shop and shipping (and not payments)\n%s\n%s", got, out.String(), errOut.String())
	}
}
