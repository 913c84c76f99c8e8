package nonnil

import (
	"encoding/json"
	"testing"
	"time"
)

type inner struct {
	List []string `json:"list"`
}

type Embedded struct {
	Culprits []string `json:"culprits"`
}

type doc struct {
	Embedded
	List     []string           `json:"list"`
	Map      map[string]int     `json:"map"`
	Optional []string           `json:"optional,omitempty"`
	Skipped  []string           `json:"-"`
	Items    []inner            `json:"items"`
	ByName   map[string]inner   `json:"byName"`
	Ptr      *inner             `json:"ptr"`
	NilPtr   *inner             `json:"nilPtr"`
	Object   map[string]any     `json:"object"`
	Labels   map[string]*string `json:"labels"`
	Raw      []byte             `json:"raw"`
	At       time.Time          `json:"at"`
	hidden   []string
}

func TestFillLeavesNoNullList(t *testing.T) {
	d := doc{
		Items:  []inner{{}},
		ByName: map[string]inner{"a": {}},
		Ptr:    &inner{},
		Object: map[string]any{"spec": nil, "rules": []any(nil)},
		Labels: map[string]*string{"gone": nil},
	}
	Fill(&d)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"culprits":[],"list":[],"map":{},"items":[{"list":[]}],"byName":{"a":{"list":[]}},"ptr":{"list":[]},"nilPtr":null,` +
		`"object":{"rules":null,"spec":null},"labels":{"gone":null},"raw":null,"at":"0001-01-01T00:00:00Z"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	if d.Optional != nil || d.Skipped != nil || d.hidden != nil {
		t.Error("omitempty, `json:\"-\"` and unexported fields must stay as they were")
	}
}

func TestFillTopLevelSlice(t *testing.T) {
	var list []inner
	Fill(&list)
	if b, _ := json.Marshal(list); string(b) != "[]" {
		t.Errorf("got %s, want []", b)
	}
}
