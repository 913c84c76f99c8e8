//go:build e2e

package e2e

import (
	"testing"

	contract "github.com/meshmigrate/kubectl-meshmigrate/schema"
)

// undoNulls are the nulls a checkpoint means: a label absent before a
// change or after it, and what the API server left null in an object's
// prior state.
var undoNulls = []string{"/*/checkpoint/records/*/undo/labels/*", "/*/checkpoint/records/*/undo/after/*", "/*/checkpoint/records/*/undo/prior/**"}

// matchesSchema fails unless out, an output of the plugin as printed (JSON
// or YAML), matches its JSON Schema in schema/ and holds no null but at
// the JSON pointers allowNull names: the e2e run checks the output
// contract on a real cluster, as the unit tests do on fakes.
func matchesSchema(t *testing.T, name, out string, allowNull ...string) {
	t.Helper()
	if err := contract.Check(name, []byte(out), allowNull...); err != nil {
		t.Errorf("output does not keep its contract (%s): %v\noutput:\n%s", name, err, out)
	}
}
