package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/phases"
)

// What the cluster holds reaches a terminal escaped, as kubectl escapes
// its table cells (an escape no longer starts a control sequence); the
// tool's own colours stay colours.
func TestTableCellsAndProgressAreEscapedForTheTerminal(t *testing.T) {
	evil := "web\x1b]0;pwned\x07\x1b[2J"
	cell := escapeCell(paint(true, ansiRed, "error") + " " + evil)
	if !strings.HasPrefix(cell, ansiRed+"error"+ansiReset) {
		t.Errorf("the colour code was escaped: %q", cell)
	}
	if strings.Contains(cell[len(ansiRed+"error"+ansiReset):], "\x1b") {
		t.Errorf("a control character from the cluster reached the terminal: %q", cell)
	}
	var buf bytes.Buffer
	textEvents(&buf)(phases.Event{Type: phases.EventRollout, Namespace: "shop", Message: "inject: Deployment/" + evil + ": 1 of 2 updated"})
	if strings.Contains(buf.String(), "\x1b") {
		t.Errorf("progress line not escaped: %q", buf.String())
	}
}
