// Package schema holds the JSON Schemas (draft 2020-12) of every
// machine-readable output of kubectl-meshmigrate, one file each, and
// validates documents against them. The files are embedded, so the tests
// (unit and e2e) check real outputs against the committed schemas; the
// binary does not import this package.
package schema

import (
	"bytes"
	"embed"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// The schema files, one per output.
const (
	AuditReport   = "auditreport.json"   // audit -o json|yaml
	MigrationPlan = "migrationplan.json" // plan -o json|yaml, the plan file
	TrafficGraph  = "trafficgraph.json"  // traffic export, --traffic-file
	Status        = "status.json"        // status -o json|yaml
	Verify        = "verify.json"        // verify -o json
	ApplySummary  = "applysummary.json"  // apply -o json, its last line
	ApplyEvent    = "applyevent.json"    // apply -o json, every line before the last
	Version       = "version.json"       // version -o json
)

// Names lists every schema file.
var Names = []string{AuditReport, MigrationPlan, TrafficGraph, Status, Verify, ApplySummary, ApplyEvent, Version}

// BaseID starts every schema's $id: the file name follows it. Its version
// is the version of the outputs' apiVersion (meshmigrate.io/v1alpha1).
const BaseID = "https://meshmigrate.io/schema/v1alpha1/"

//go:embed *.json
var files embed.FS

// Read returns the schema file name.
func Read(name string) ([]byte, error) {
	return files.ReadFile(name)
}

var (
	compileOnce sync.Once
	compiled    map[string]*jsonschema.Schema
	compileErr  error
)

// compile compiles every schema once, each checked against the draft
// 2020-12 meta-schema, with formats (date-time) asserted.
func compile() (map[string]*jsonschema.Schema, error) {
	compileOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat()
		for _, name := range Names {
			raw, err := files.ReadFile(name)
			if err != nil {
				compileErr = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				compileErr = fmt.Errorf("schema %s: %w", name, err)
				return
			}
			if err := c.AddResource(BaseID+name, doc); err != nil {
				compileErr = fmt.Errorf("schema %s: %w", name, err)
				return
			}
		}
		compiled = map[string]*jsonschema.Schema{}
		for _, name := range Names {
			s, err := c.Compile(BaseID + name)
			if err != nil {
				compileErr = fmt.Errorf("schema %s: %w", name, err)
				return
			}
			compiled[name] = s
		}
	})
	return compiled, compileErr
}

// Validate checks doc, JSON or YAML as the tool prints it, against the
// schema file name.
func Validate(name string, doc []byte) error {
	schemas, err := compile()
	if err != nil {
		return err
	}
	s, ok := schemas[name]
	if !ok {
		return fmt.Errorf("no schema %q (have %s)", name, strings.Join(Names, ", "))
	}
	v, err := Decode(doc)
	if err != nil {
		return err
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("does not match %s: %w", name, err)
	}
	return nil
}

// Check is what the tests ask of every output: it matches the schema file
// name, and it holds no null but at the JSON pointers allowNull names,
// where "*" stands for one segment and a final "**" for any number: an
// empty list prints as [], an empty map as {}.
func Check(name string, doc []byte, allowNull ...string) error {
	if err := Validate(name, doc); err != nil {
		return err
	}
	v, err := Decode(doc)
	if err != nil {
		return err
	}
	var bad []string
	for _, p := range Nulls(v) {
		if !matchesAny(p, allowNull) {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("null at %s: an empty list prints as [] and an empty map as {}, never null", strings.Join(bad, ", "))
	}
	return nil
}

func matchesAny(pointer string, patterns []string) bool {
	segs := strings.Split(pointer, "/")
	for _, pat := range patterns {
		ps, s := strings.Split(pat, "/"), segs
		if n := len(ps) - 1; ps[n] == "**" {
			if len(s) <= n {
				continue
			}
			ps, s = ps[:n], s[:n]
		}
		if len(ps) == len(s) && matchSegments(ps, s) {
			return true
		}
	}
	return false
}

func matchSegments(pattern, segs []string) bool {
	for i := range pattern {
		if pattern[i] != "*" && pattern[i] != segs[i] {
			return false
		}
	}
	return true
}

// Decode reads JSON or YAML into the values a JSON decoder gives (numbers
// as json.Number), the form Validate and Nulls take.
func Decode(doc []byte) (any, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, fmt.Errorf("not JSON or YAML: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	return v, nil
}

// Nulls lists, sorted, the JSON pointer of every null in v (decoded JSON),
// e.g. "/namespaces/1/findings". No output prints a list or a map as null;
// the few nulls that mean something (a label that was absent, in an undo
// record) are for the caller to allow.
func Nulls(v any) []string {
	var out []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case nil:
			out = append(out, path)
		case map[string]any:
			for k, e := range x {
				walk(path+"/"+escape(k), e)
			}
		case []any:
			for i, e := range x {
				walk(path+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("", v)
	sort.Strings(out)
	return out
}

// escape escapes a key for a JSON pointer (RFC 6901).
func escape(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
