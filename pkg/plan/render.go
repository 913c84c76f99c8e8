package plan

import (
	"bytes"
	"fmt"
	"path"
	"strings"

	"sigs.k8s.io/yaml"
)

// Manifest is the object a step writes, labelled with the plan's ID so the
// objects a plan created can be found (and only those removed on rollback).
// Nil for steps that write no object.
func (p *Plan) Manifest(st Step) map[string]any {
	if st.Object == nil {
		return nil
	}
	out := make(map[string]any, len(st.Object))
	for k, v := range st.Object {
		out[k] = v
	}
	md := map[string]any{}
	if m, ok := st.Object["metadata"].(map[string]any); ok {
		for k, v := range m {
			md[k] = v
		}
	}
	lbl := map[string]any{}
	if l, ok := md["labels"].(map[string]any); ok {
		for k, v := range l {
			lbl[k] = v
		}
	}
	lbl[LabelManagedBy] = ManagedBy
	lbl[LabelPlanID] = p.ID
	md["labels"] = lbl
	out["metadata"] = md
	return out
}

// file is one manifest file of Render.
type file struct {
	name    string
	header  []string
	objects []map[string]any
}

// Render returns the manifests each phase would apply, one file per phase
// per namespace ("NS/NN-PHASE.yaml"), ready for a GitOps repository: each
// file applies on its own with `kubectl apply --server-side -f`, and
// "NS/kustomization.yaml" lists the files holding each object's final
// version. Only pending steps are written: done, blocked and skipped ones
// are left out (their reasons are in the
// file's header); restarts, which are not objects, are listed there as
// commands. A step blocked only because another tool manages its object is
// written too, without this tool's labels, for that tool's source.
// Keys are paths relative to the output directory.
func (p *Plan) Render() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, ns := range p.Namespaces {
		var files []*file
		n := 0
		next := func(suffix string) *file {
			n++
			f := &file{name: fmt.Sprintf("%02d-%s.yaml", n, suffix)}
			files = append(files, f)
			return f
		}
		for _, ph := range ns.Phases {
			if ph.Name == PhaseVerify {
				continue
			}
			f := next(string(ph.Name))
			f.header = append(f.header, fmt.Sprintf("Plan %s, namespace %s (wave %d), phase %s: %s", p.ID, ns.Name, ns.Wave, ph.Name, ph.Status))
			if ph.Reason != "" {
				f.header = append(f.header, "  "+ph.Reason)
			}
			for _, st := range ph.Steps {
				switch {
				case st.Action == ActionGate:
					// Objects after a gate are the enforced versions: a file
					// of their own, applied once the gate has passed.
					f = next(string(ph.Name) + "-enforce")
					f.header = append(f.header, fmt.Sprintf("Plan %s, namespace %s, phase %s, after the gate %s: %s", p.ID, ns.Name, ph.Name, st.Target, st.Reason))
					continue
				case st.Status == StatusBlocked && st.Owner != "" && st.Object != nil:
					f.objects = append(f.objects, forOwner(st.Object))
					f.header = append(f.header, fmt.Sprintf("MANAGED BY %s %s: the tool does not apply it; make this change in the owner's source", st.Owner, st.Target))
				case st.Status != StatusPending:
					// Done steps need nothing; blocked and skipped ones must not
					// be applied from here either.
					f.header = append(f.header, fmt.Sprintf("%s %s %s: %s", strings.ToUpper(string(st.Status)), st.Action, st.Target, st.Reason))
					continue
				case st.Action == ActionLabelNamespace:
					f.objects = append(f.objects, p.namespaceObject(ns.Name, st))
					for _, k := range st.Remove {
						f.header = append(f.header, fmt.Sprintf("then remove label %s: kubectl label namespace %s %s-", k, ns.Name, k))
					}
				case st.Action == ActionRestartWorkload:
					kind, name, _ := strings.Cut(st.Target, "/")
					f.header = append(f.header, fmt.Sprintf("then restart: kubectl rollout restart %s/%s -n %s", strings.ToLower(kind), name, ns.Name))
				case st.Action == ActionDelete:
					kind, name, _ := strings.Cut(st.Target, "/")
					f.header = append(f.header, fmt.Sprintf("then delete: kubectl delete %s %s -n %s (%s)", strings.ToLower(kind), name, ns.Name, st.Reason))
				case st.Action == ActionApply:
					f.objects = append(f.objects, p.Manifest(st))
					if st.Forced {
						f.header = append(f.header, fmt.Sprintf("FORCED %s: %s", st.Target, st.Reason))
					}
				}
			}
		}
		final := map[string]string{} // object key -> last file holding it
		for _, f := range files {
			for _, o := range f.objects {
				final[objectKey(o)] = f.name
			}
		}
		var resources []string
		for _, f := range files {
			if len(f.objects) == 0 {
				continue
			}
			b, err := encodeFile(f)
			if err != nil {
				return nil, fmt.Errorf("render %s/%s: %w", ns.Name, f.name, err)
			}
			out[path.Join(ns.Name, f.name)] = b
			last := true
			for _, o := range f.objects {
				last = last && final[objectKey(o)] == f.name
			}
			if last {
				resources = append(resources, f.name)
			}
		}
		if len(resources) > 0 {
			var k bytes.Buffer
			fmt.Fprintf(&k, "# The final state of namespace %s under plan %s: the files holding each object's\n# last version. Apply the numbered files in order to migrate step by step.\n", ns.Name, p.ID)
			k.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
			for _, r := range resources {
				fmt.Fprintf(&k, "- %s\n", r)
			}
			out[path.Join(ns.Name, "kustomization.yaml")] = k.Bytes()
		}
	}
	return out, nil
}

// forOwner is the manifest of a change another tool manages, for its
// source: without this tool's labels, which would claim it (Helm, for one,
// refuses a release object whose managed-by is not Helm).
func forOwner(obj map[string]any) map[string]any {
	out := make(map[string]any, len(obj))
	for k, v := range obj {
		out[k] = v
	}
	md := map[string]any{}
	for k, v := range obj["metadata"].(map[string]any) {
		md[k] = v
	}
	if l, ok := md["labels"].(map[string]any); ok {
		labels := map[string]any{}
		for k, v := range l {
			if k != LabelManagedBy && k != LabelPlanID {
				labels[k] = v
			}
		}
		delete(md, "labels")
		if len(labels) > 0 {
			md["labels"] = labels
		}
	}
	out["metadata"] = md
	return out
}

// namespaceObject is a partial Namespace carrying only the labels the step
// sets, as server-side apply expects.
func (p *Plan) namespaceObject(name string, st Step) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": name, "labels": toAny(st.Labels)}}
}

func objectKey(o map[string]any) string {
	md, _ := o["metadata"].(map[string]any)
	return fmt.Sprintf("%v/%v/%v/%v", o["apiVersion"], o["kind"], md["namespace"], md["name"])
}

func encodeFile(f *file) ([]byte, error) {
	var b bytes.Buffer
	for _, h := range f.header {
		b.WriteString("# " + h + "\n")
	}
	for _, o := range f.objects {
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), nil
}
