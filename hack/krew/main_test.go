package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cli"
)

// fakeDist writes a dist folder as goreleaser does: one linux/amd64 archive
// holding files, artifacts.json and metadata.json.
func fakeDist(t *testing.T, files map[string]string) string {
	t.Helper()
	dist := t.TempDir()
	archive := filepath.Join(dist, "kubectl-meshmigrate_linux_amd64.tar.gz")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	gz.Close()
	f.Close()
	arts, _ := json.Marshal([]artifact{{Name: filepath.Base(archive), Path: archive, GoOS: "linux", GoArch: "amd64", Type: "Archive"}})
	if err := os.WriteFile(filepath.Join(dist, "artifacts.json"), arts, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dist, "metadata.json"), []byte(`{"tag":"v0.1.0","version":"0.1.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dist
}

func renderTo(t *testing.T, dist string) string {
	t.Helper()
	out := filepath.Join(dist, "krew", "meshmigrate.yaml")
	if err := render(dist, "../../krew/meshmigrate.yaml", out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRenderedManifestVerifiesAndInstalls(t *testing.T) {
	dist := fakeDist(t, map[string]string{"kubectl-meshmigrate": "#!/bin/sh\necho hi\n", "LICENSE": "x"})
	manifest := renderTo(t, dist)
	if err := verify(dist, manifest); err != nil {
		t.Fatalf("verify: %v", err)
	}
	root := t.TempDir()
	if err := install(dist, manifest, "linux", "amd64", root); err != nil {
		t.Fatalf("install: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "kubectl-meshmigrate")); err != nil {
		t.Errorf("no kubectl-meshmigrate link: %v", err)
	}
	if err := install(dist, manifest, "darwin", "arm64", root); err == nil {
		t.Error("install for a platform without an archive must fail")
	}
}

func TestVerifyCatches(t *testing.T) {
	for name, tc := range map[string]struct {
		files  map[string]string
		tamper func(string) string
		want   string
	}{
		"a wrong digest": {tamper: func(m string) string {
			i := strings.Index(m, "sha256: ") + len("sha256: ")
			return m[:i] + strings.Repeat("0", 64) + m[i+64:]
		}, want: "digests to"},
		"a missing bin":       {files: map[string]string{"LICENSE": "x"}, want: `bin "kubectl-meshmigrate" is not in`},
		"a version without v": {tamper: func(m string) string { return strings.Replace(m, "version: v0.1.0", "version: 0.1.0", 1) }, want: "not a semantic version"},
		"a wrong selector":    {tamper: func(m string) string { return strings.Replace(m, "os: linux", "os: plan9", 1) }, want: "no platform matches os=linux"},
		"an unsupported key": {tamper: func(m string) string {
			return strings.Replace(m, "arch: amd64", "arch: amd64\n          distro: debian", 1)
		}, want: `selector key "distro"`},
		"a multi-line shortDesc": {tamper: func(m string) string {
			return strings.Replace(m, "shortDescription: ", "shortDescription: |\n    x\n    ", 1)
		}, want: "shortDescription"},
	} {
		t.Run(name, func(t *testing.T) {
			files := tc.files
			if files == nil {
				files = map[string]string{"kubectl-meshmigrate": "bin", "LICENSE": "x"}
			}
			dist := fakeDist(t, files)
			manifest := renderTo(t, dist)
			if tc.tamper != nil {
				raw, _ := os.ReadFile(manifest)
				if err := os.WriteFile(manifest, []byte(tc.tamper(string(raw))), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := verify(dist, manifest)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("verify = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// The caveats krew prints after an install name today's commands and every
// Role and ClusterRole shipped in deploy/rbac.
func TestCaveatsDescribeTheCommandsAndTheRBAC(t *testing.T) {
	dist := fakeDist(t, map[string]string{"kubectl-meshmigrate": "bin", "LICENSE": "x"})
	p, err := load(renderTo(t, dist))
	if err != nil {
		t.Fatal(err)
	}
	caveats := p.Spec.Caveats
	if strings.Contains(caveats, "later release") {
		t.Errorf("caveats promise later releases:\n%s", caveats)
	}
	root := cli.NewRootCommand(genericiooptions.NewTestIOStreamsDiscard())
	for _, cmd := range root.Commands() {
		names := []string{cmd.Name()}
		switch cmd.Name() {
		case "completion", "help", "version": // they do not touch the cluster
			continue
		case "traffic":
			names = nil
			for _, sub := range cmd.Commands() {
				names = append(names, "traffic "+sub.Name())
			}
		}
		for _, n := range names {
			if !regexp.MustCompile(`\b` + n + `\b`).MatchString(caveats) {
				t.Errorf("caveats do not mention the %q command", n)
			}
		}
	}
	files, err := filepath.Glob("../../deploy/rbac/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no RBAC files: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(caveats, filepath.Base(f)) {
			t.Errorf("caveats do not name %s", filepath.Base(f))
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var obj struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if want := obj.Kind + " " + obj.Metadata.Name; !strings.Contains(strings.Join(strings.Fields(caveats), " "), want) {
				t.Errorf("caveats do not name %s (%s)", want, filepath.Base(f))
			}
		}
	}
}
