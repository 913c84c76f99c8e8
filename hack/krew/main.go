// Command krew renders the krew plugin manifest from a goreleaser dist
// folder and checks it the way krew does before and while installing
// (krew itself is not available from our module proxy):
//
//	krew render  -dist dist -template krew/meshmigrate.yaml -out dist/krew/meshmigrate.yaml
//	krew verify  -dist dist -manifest dist/krew/meshmigrate.yaml
//	krew install -dist dist -manifest dist/krew/meshmigrate.yaml -os linux -arch amd64 -root DIR
//
// install unpacks the platform's archive as krew does and links the plugin
// into DIR/bin; put DIR/bin on PATH and run `kubectl meshmigrate`.
package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"golang.org/x/mod/semver"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const (
	apiVersion = "krew.googlecontainertools.github.com/v1alpha2"
	releaseURL = "https://github.com/meshmigrate/kubectl-meshmigrate/releases/download"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: krew render|verify|install [flags]")
		os.Exit(1)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dist := fs.String("dist", "dist", "goreleaser dist folder")
	tmpl := fs.String("template", "krew/meshmigrate.yaml", "manifest template")
	out := fs.String("out", "dist/krew/meshmigrate.yaml", "rendered manifest")
	manifest := fs.String("manifest", "dist/krew/meshmigrate.yaml", "manifest to check or install")
	goos := fs.String("os", "linux", "install: platform os")
	goarch := fs.String("arch", "amd64", "install: platform arch")
	root := fs.String("root", "", "install: folder to install into")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "render":
		err = render(*dist, *tmpl, *out)
	case "verify":
		err = verify(*dist, *manifest)
	case "install":
		err = install(*dist, *manifest, *goos, *goarch, *root)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "krew:", err)
		os.Exit(1)
	}
}

// artifact is an entry of goreleaser's dist/artifacts.json.
type artifact struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	GoOS   string `json:"goos"`
	GoArch string `json:"goarch"`
	Type   string `json:"type"`
}

func archives(dist string) ([]artifact, error) {
	raw, err := os.ReadFile(filepath.Join(dist, "artifacts.json"))
	if err != nil {
		return nil, fmt.Errorf("read goreleaser's artifact list: %w (run `make release-snapshot` first)", err)
	}
	var all []artifact
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, fmt.Errorf("parse %s/artifacts.json: %w", dist, err)
	}
	var out []artifact
	for _, a := range all {
		if a.Type == "Archive" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("goreleaser produced no archives")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func digest(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type platformData struct{ OS, Arch, URI, SHA256, Bin string }

func render(dist, tmplPath, out string) error {
	raw, err := os.ReadFile(filepath.Join(dist, "metadata.json"))
	if err != nil {
		return fmt.Errorf("read goreleaser's metadata: %w", err)
	}
	var meta struct {
		Tag     string `json:"tag"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return err
	}
	version := meta.Version
	if !strings.HasPrefix(version, "v") {
		version = "v" + version
	}
	arts, err := archives(dist)
	if err != nil {
		return err
	}
	data := struct {
		Version   string
		Platforms []platformData
	}{Version: version}
	for _, a := range arts {
		sum, err := digest(a.Path)
		if err != nil {
			return err
		}
		bin := "kubectl-meshmigrate"
		if a.GoOS == "windows" {
			bin += ".exe"
		}
		data.Platforms = append(data.Platforms, platformData{OS: a.GoOS, Arch: a.GoArch, SHA256: sum, Bin: bin,
			URI: releaseURL + "/" + meta.Tag + "/" + a.Name})
	}
	t, err := template.ParseFiles(tmplPath)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	fmt.Println("rendered", out, "version", version, "with", len(data.Platforms), "platforms")
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// Plugin is the subset of krew's manifest that krew validates and uses.
type Plugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string     `json:"version"`
		ShortDescription string     `json:"shortDescription"`
		Description      string     `json:"description"`
		Caveats          string     `json:"caveats"`
		Homepage         string     `json:"homepage"`
		Platforms        []Platform `json:"platforms"`
	} `json:"spec"`
}

// Platform is one installable archive of a plugin.
type Platform struct {
	Selector *metav1.LabelSelector `json:"selector"`
	URI      string                `json:"uri"`
	SHA256   string                `json:"sha256"`
	Bin      string                `json:"bin"`
	Files    []struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"files"`
}

var (
	safeName = regexp.MustCompile(`^[\w-]+$`)
	sha256Re = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

func load(manifest string) (*Plugin, error) {
	raw, err := os.ReadFile(manifest)
	if err != nil {
		return nil, err
	}
	var p Plugin
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		return nil, fmt.Errorf("parse %s: %w", manifest, err)
	}
	return &p, nil
}

// validate checks what krew's ValidatePlugin checks.
func validate(p *Plugin, fileName string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if p.APIVersion != apiVersion {
		bad("apiVersion is %q, krew supports %q", p.APIVersion, apiVersion)
	}
	if p.Kind != "Plugin" {
		bad("kind is %q, want Plugin", p.Kind)
	}
	if !safeName.MatchString(p.Metadata.Name) {
		bad("plugin name %q must match %s", p.Metadata.Name, safeName)
	}
	if want := strings.TrimSuffix(filepath.Base(fileName), ".yaml"); p.Metadata.Name != want {
		bad("plugin is named %q but its manifest file is %q", p.Metadata.Name, filepath.Base(fileName))
	}
	if p.Spec.ShortDescription == "" || strings.ContainsAny(p.Spec.ShortDescription, "\r\n") {
		bad("shortDescription must be one non-empty line")
	}
	if !strings.HasPrefix(p.Spec.Version, "v") || !semver.IsValid(p.Spec.Version) {
		bad("version %q is not a semantic version starting with v", p.Spec.Version)
	}
	if p.Spec.Homepage == "" || p.Spec.Description == "" || p.Spec.Caveats == "" {
		bad("homepage, description and caveats must be set")
	}
	if len(p.Spec.Platforms) == 0 {
		bad("no platforms")
	}
	for i, pl := range p.Spec.Platforms {
		where := fmt.Sprintf("platform %d", i)
		if pl.URI == "" || pl.Bin == "" {
			bad("%s: uri and bin must be set", where)
		}
		if !sha256Re.MatchString(pl.SHA256) {
			bad("%s: sha256 %q must match %s", where, pl.SHA256, sha256Re)
		}
		if pl.Files != nil && len(pl.Files) == 0 {
			bad("%s: files must be unset or non-empty", where)
		}
		for _, f := range pl.Files {
			if f.From == "" || f.To == "" {
				bad("%s: files need from and to", where)
			}
		}
		if pl.Selector == nil || (len(pl.Selector.MatchLabels) == 0 && len(pl.Selector.MatchExpressions) == 0) {
			bad("%s: a selector is required", where)
			continue
		}
		for k := range pl.Selector.MatchLabels {
			if k != "os" && k != "arch" {
				bad("%s: selector key %q not supported (os, arch)", where, k)
			}
		}
	}
	return errs
}

// matching returns the platform krew would pick for os/arch: the first whose
// selector matches, as krew's GetMatchingPlatform does.
func matching(p *Plugin, goos, goarch string) (*Platform, int, error) {
	for i := range p.Spec.Platforms {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Platforms[i].Selector)
		if err != nil {
			return nil, 0, err
		}
		if sel.Matches(labels.Set{"os": goos, "arch": goarch}) {
			return &p.Spec.Platforms[i], i, nil
		}
	}
	return nil, 0, fmt.Errorf("no platform matches os=%s arch=%s", goos, goarch)
}

// verify validates the manifest, then for every archive checks that krew on
// that os/arch would pick the platform naming it, that its sha256 is the
// archive's real digest, and that bin exists in the unpacked archive.
func verify(dist, manifest string) error {
	p, err := load(manifest)
	if err != nil {
		return err
	}
	errs := validate(p, manifest)
	arts, err := archives(dist)
	if err != nil {
		return err
	}
	used := map[int]bool{}
	for _, a := range arts {
		pl, i, err := matching(p, a.GoOS, a.GoArch)
		if err != nil {
			errs = append(errs, fmt.Errorf("archive %s: %w", a.Name, err))
			continue
		}
		used[i] = true
		if path.Base(pl.URI) != a.Name {
			errs = append(errs, fmt.Errorf("%s/%s: uri %s does not name archive %s", a.GoOS, a.GoArch, pl.URI, a.Name))
		}
		sum, err := digest(a.Path)
		if err != nil {
			return err
		}
		if sum != pl.SHA256 {
			errs = append(errs, fmt.Errorf("%s/%s: sha256 %s, but %s digests to %s", a.GoOS, a.GoArch, pl.SHA256, a.Name, sum))
		}
		names, err := entries(a.Path)
		if err != nil {
			return fmt.Errorf("read %s: %w", a.Path, err)
		}
		if !names[path.Clean(strings.TrimPrefix(pl.Bin, "./"))] {
			errs = append(errs, fmt.Errorf("%s/%s: bin %q is not in %s", a.GoOS, a.GoArch, pl.Bin, a.Name))
		}
		fmt.Printf("ok  %-8s %-6s %s sha256 %s bin %s\n", a.GoOS, a.GoArch, a.Name, sum[:12], pl.Bin)
	}
	for i := range p.Spec.Platforms {
		if !used[i] {
			errs = append(errs, fmt.Errorf("platform %d matches no archive of the release", i))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	fmt.Printf("%s: valid krew manifest, version %s, %d platforms\n", manifest, p.Spec.Version, len(p.Spec.Platforms))
	return nil
}

// entries lists the regular files in a .tar.gz or .zip archive.
func entries(file string) (map[string]bool, error) {
	out := map[string]bool{}
	err := unpack(file, func(name string, _ os.FileMode, _ io.Reader) error {
		out[path.Clean(name)] = true
		return nil
	})
	return out, err
}

func unpack(file string, visit func(name string, mode os.FileMode, r io.Reader) error) error {
	if strings.HasSuffix(file, ".zip") {
		z, err := zip.OpenReader(file)
		if err != nil {
			return err
		}
		defer z.Close()
		for _, f := range z.File {
			if f.FileInfo().IsDir() {
				continue
			}
			rc, err := f.Open()
			if err != nil {
				return err
			}
			err = visit(f.Name, f.Mode(), rc)
			rc.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if err := visit(h.Name, h.FileInfo().Mode(), tr); err != nil {
				return err
			}
		}
	}
}

// install does what `kubectl krew install --manifest --archive` does for one
// platform: pick it by os/arch, check the digest, unpack into the store, and
// link bin as kubectl-<name> into root/bin.
func install(dist, manifest, goos, goarch, root string) error {
	if root == "" {
		return errors.New("-root is required")
	}
	p, err := load(manifest)
	if err != nil {
		return err
	}
	if errs := validate(p, manifest); len(errs) > 0 {
		return errors.Join(errs...)
	}
	pl, _, err := matching(p, goos, goarch)
	if err != nil {
		return err
	}
	archive := filepath.Join(dist, path.Base(pl.URI))
	sum, err := digest(archive)
	if err != nil {
		return err
	}
	if sum != pl.SHA256 {
		return fmt.Errorf("sha256 of %s is %s, manifest says %s", archive, sum, pl.SHA256)
	}
	store := filepath.Join(root, "store", p.Metadata.Name, p.Spec.Version)
	err = unpack(archive, func(name string, mode os.FileMode, r io.Reader) error {
		dst := filepath.Join(store, filepath.FromSlash(path.Clean(name)))
		if !strings.HasPrefix(dst, store+string(os.PathSeparator)) {
			return fmt.Errorf("archive entry %q escapes the install folder", name)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode.Perm()|0o200)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, r)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return err
	}
	bin := filepath.Join(store, filepath.FromSlash(pl.Bin))
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("bin %s not found after unpacking: %w", pl.Bin, err)
	}
	binDir := filepath.Join(root, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	link := filepath.Join(binDir, "kubectl-"+p.Metadata.Name)
	_ = os.Remove(link)
	if err := os.Symlink(bin, link); err != nil {
		return err
	}
	fmt.Printf("installed %s %s for %s/%s: %s -> %s\n", p.Metadata.Name, p.Spec.Version, goos, goarch, link, bin)
	return nil
}
