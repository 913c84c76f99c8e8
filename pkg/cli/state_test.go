package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestStatusAllListsEveryNamespaceDespiteABadCheckpoint(t *testing.T) {
	api, kubeconfig := startAPI(t)
	cm := func(ns, data string) string {
		quoted, _ := json.Marshal(data)
		return `{"metadata":{"name":"meshmigrate-checkpoint","namespace":"` + ns + `","labels":{"app.kubernetes.io/managed-by":"kubectl-meshmigrate","app.kubernetes.io/component":"checkpoint"}},` +
			`"data":{"checkpoint.json":` + string(quoted) + `}}`
	}
	good := func(ns string) string {
		return `{"namespace":"` + ns + `","planID":"mp-1","phases":[{"name":"inject","state":"done"}],"records":[]}`
	}
	list := `{"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[` +
		cm("alpha", good("alpha")) + "," + cm("broken", `{"namespace": "broken", "records": [`) + "," + cm("zulu", good("zulu")) + `]}`
	api.routes["GET /api/v1/configmaps"] = func(w http.ResponseWriter, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(list))
	}
	api.routes["GET /apis/coordination.k8s.io/v1/leases"] = func(w http.ResponseWriter, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"LeaseList","apiVersion":"coordination.k8s.io/v1","metadata":{},"items":[]}`))
	}
	for _, format := range []string{"table", "json"} {
		out, stderr, code := runAgainst(t, kubeconfig, nil, "status", "-A", "-o", format)
		if code != ExitError {
			t.Errorf("-o %s: exit %d, want %d (a checkpoint cannot be used)", format, code, ExitError)
		}
		for _, ns := range []string{"alpha", "broken", "zulu"} {
			if !strings.Contains(out, ns) {
				t.Errorf("-o %s: stdout lacks namespace %s:\n%s", format, ns, out)
			}
		}
		if !strings.Contains(out+stderr, "the checkpoint ConfigMap broken/meshmigrate-checkpoint is not readable") {
			t.Errorf("-o %s: the bad namespace's error is not shown:\nstdout %s\nstderr %s", format, out, stderr)
		}
		if !strings.Contains(stderr, "error: 1 of 3 checkpoints cannot be used (broken)") {
			t.Errorf("-o %s: stderr %q, want the summary of what cannot be used", format, stderr)
		}
	}
	out, _, _ := runAgainst(t, kubeconfig, nil, "status", "-A")
	row := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "broken ") {
			row = l
		}
	}
	if !strings.Contains(row, " invalid ") {
		t.Errorf("the bad namespace's row %q does not say invalid:\n%s", row, out)
	}
}
