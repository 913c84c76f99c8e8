package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
