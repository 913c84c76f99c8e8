package schema

import (
	"encoding/json"
	"io/fs"
	"slices"
	"strings"
	"testing"
)

func TestSchemasCompileWithTheirIDs(t *testing.T) {
	if _, err := compile(); err != nil {
		t.Fatal(err)
	}
	embedded, err := fs.Glob(files, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Sort(embedded); !slices.Equal(embedded, slices.Sorted(slices.Values(Names))) {
		t.Errorf("schema files %v, Names %v: list every file in Names", embedded, Names)
	}
	for _, name := range Names {
		raw, _ := Read(name)
		var head struct {
			Schema string `json:"$schema"`
			ID     string `json:"$id"`
			Title  string `json:"title"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if head.Schema != "https://json-schema.org/draft/2020-12/schema" || head.ID != BaseID+name || !strings.Contains(head.Title, "(meshmigrate.io/v1alpha1)") {
			t.Errorf("%s: $schema %q, $id %q, title %q", name, head.Schema, head.ID, head.Title)
		}
	}
}

func TestValidateRejectsNullLists(t *testing.T) {
	ok := `[{"namespace": "shop", "name": "no-plaintext", "result": "passed", "message": "m", "at": "2026-01-01T00:00:00Z"}]`
	if err := Validate(Verify, []byte(ok)); err != nil {
		t.Errorf("valid verify output: %v", err)
	}
	yamlDoc := "- namespace: shop\n  name: no-plaintext\n  result: failed\n  message: m\n  culprits: [legacy/batch]\n  at: \"2026-01-01T00:00:00Z\"\n"
	if err := Validate(Verify, []byte(yamlDoc)); err != nil {
		t.Errorf("the same as YAML: %v", err)
	}
	for name, doc := range map[string]string{
		"a null list":      strings.Replace(ok, `"message": "m"`, `"message": "m", "culprits": null`, 1),
		"an unknown field": strings.Replace(ok, `"message": "m"`, `"message": "m", "extra": 1`, 1),
		"a bad result":     strings.Replace(ok, "passed", "maybe", 1),
		"a bad time":       strings.Replace(ok, "2026-01-01T00:00:00Z", "yesterday", 1),
		"null for []":      "null",
	} {
		if err := Validate(Verify, []byte(doc)); err == nil {
			t.Errorf("%s: valid, want an error", name)
		}
	}
	if err := Validate("nope.json", []byte("{}")); err == nil {
		t.Error("an unknown schema name must be an error")
	}
}

func TestNullsNamesEachPath(t *testing.T) {
	v, err := Decode([]byte(`{"a": null, "b": [1, null, {"c/d": null}], "e": {"f": "x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := Nulls(v)
	want := []string{"/a", "/b/1", "/b/2/c~1d"}
	if !slices.Equal(got, want) {
		t.Errorf("Nulls = %v, want %v", got, want)
	}
}

func TestCheckAllowsOnlyTheNamedNulls(t *testing.T) {
	doc := []byte(`[{"namespace": "shop", "name": "no-plaintext", "result": "passed", "message": "m", "at": "2026-01-01T00:00:00Z"}]`)
	if err := Check(Verify, doc); err != nil {
		t.Errorf("Check: %v", err)
	}
	for _, tc := range []struct {
		pointer string
		allow   []string
		want    bool
	}{
		{"/0/undo/labels/a", []string{"/*/undo/labels/*"}, true},
		{"/0/undo/after/a", []string{"/*/undo/labels/*"}, false},
		{"/0/undo/prior/metadata/creationTimestamp", []string{"/*/undo/prior/**"}, true},
		{"/0/undo/prior", []string{"/*/undo/prior/**"}, false},
		{"/0/findings", nil, false},
	} {
		if got := matchesAny(tc.pointer, tc.allow); got != tc.want {
			t.Errorf("matchesAny(%s, %v) = %t, want %t", tc.pointer, tc.allow, got, tc.want)
		}
	}
}
