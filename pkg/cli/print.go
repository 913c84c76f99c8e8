package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/nonnil"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/audit"
)

// colorEnabled is true only when w is a terminal and the user has not asked
// for no colour (NO_COLOR, TERM=dumb): kubectl's own rule.
func colorEnabled(w io.Writer) bool { return printers.AllowsColorOutput(w) }

// isTerminal tells whether w (or a reader) is a terminal, a person at it,
// rather than a pipe or a file.
func isTerminal(w any) bool { return printers.IsTerminal(w) }

// ansiCode matches the colour codes this tool writes, and nothing else.
var ansiCode = regexp.MustCompile(`\x1b\[(?:3[123]|0)m`)

// escapeCell escapes the terminal control characters of what a cell shows
// from the cluster (a label, a pod name, a policy's name), as kubectl does
// (printers.EscapeTerminal), keeping only the colour codes this tool adds.
func escapeCell(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range ansiCode.FindAllStringIndex(s, -1) {
		b.WriteString(printers.EscapeTerminal(s[last:m[0]]))
		b.WriteString(s[m[0]:m[1]])
		last = m[1]
	}
	b.WriteString(printers.EscapeTerminal(s[last:]))
	return b.String()
}

const (
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
	ansiGreen  = "\x1b[32m"
	ansiReset  = "\x1b[0m"
)

func paint(on bool, color, s string) string {
	if !on || s == "" {
		return s
	}
	return color + s + ansiReset
}

// table is a kubectl-style table: no borders, left aligned, columns
// separated by three spaces, no trailing blanks.
type table struct {
	*tablewriter.Table
	buf bytes.Buffer
	out io.Writer
}

func newTable(w io.Writer) *table {
	t := &table{out: w}
	t.Table = tablewriter.NewTable(&t.buf,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders: tw.BorderNone,
			Symbols: tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{
				Separators: tw.Separators{BetweenRows: tw.Off, BetweenColumns: tw.Off},
				Lines:      tw.Lines{ShowHeaderLine: tw.Off},
			},
		})),
		tablewriter.WithConfig(tablewriter.Config{
			Header: tw.CellConfig{
				Alignment:  tw.CellAlignment{Global: tw.AlignLeft},
				Formatting: tw.CellFormatting{AutoFormat: tw.Off},
				Padding:    tw.CellPadding{Global: tw.Padding{Right: "   "}},
			},
			Row: tw.CellConfig{
				Alignment:  tw.CellAlignment{Global: tw.AlignLeft},
				Formatting: tw.CellFormatting{AutoWrap: tw.WrapNone},
				Padding:    tw.CellPadding{Global: tw.Padding{Right: "   "}},
			},
		}),
	)
	return t
}

// Append adds a row, each cell escaped for the terminal.
func (t *table) Append(cells []string) error {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = escapeCell(c)
	}
	return t.Table.Append(row)
}

// Render writes the table, each line without its trailing padding.
func (t *table) Render() error {
	if err := t.Table.Render(); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(t.buf.String(), "\n") {
		trimmed := strings.TrimRight(line, " \n")
		if trimmed == "" && !strings.HasSuffix(line, "\n") {
			continue
		}
		if _, err := io.WriteString(t.out, trimmed+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// printObject writes v, a pointer, as indented JSON or as YAML: the one
// encoder of every -o json|yaml output (the plan file has its own, in
// pkg/plan). Empty lists print as [] and empty maps as {}, never null
// (schema/ holds each output's JSON Schema).
func printObject(w io.Writer, v any, format string) error {
	nonnil.Fill(v)
	var (
		b   []byte
		err error
	)
	switch format {
	case "json":
		if b, err = json.MarshalIndent(v, "", "  "); err == nil {
			b = append(b, '\n')
		}
	case "yaml":
		b, err = yaml.Marshal(v)
	default:
		if isTemplate(format) {
			return printTemplate(w, v, format)
		}
		return fmt.Errorf("unknown output format %q", format)
	}
	if err != nil {
		return fmt.Errorf("encode the output as %s: %w", format, err)
	}
	_, err = w.Write(b)
	return err
}

func printReport(w io.Writer, r *audit.Report, format string, color bool) error {
	switch format {
	case "table", "wide":
		return printTables(w, r, format == "wide", color)
	default:
		return printObject(w, r, format)
	}
}

// templateFormats are kubectl's -o formats that print part of an object
// (-o jsonpath='{.namespaces[*].name}'), for the outputs that carry an
// apiVersion and a kind as Kubernetes objects do (the audit report, the
// plan).
var templateFormats = []string{"jsonpath=", "jsonpath-as-json=", "jsonpath-file=", "go-template=", "go-template-file=", "template=", "templatefile="}

func isTemplate(format string) bool {
	for _, prefix := range templateFormats {
		if strings.HasPrefix(format, prefix) {
			return true
		}
	}
	return false
}

// printTemplate prints v through kubectl's own printers (cli-runtime's
// PrintFlags), as an unstructured object.
func printTemplate(w io.Writer, v any, format string) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	if err := json.Unmarshal(b, &obj.Object); err != nil {
		return err
	}
	pf := genericclioptions.NewPrintFlags("")
	pf.OutputFormat = &format
	p, err := pf.ToPrinter()
	if err != nil {
		return fmt.Errorf("-o %s: %w", format, err)
	}
	return p.PrintObj(obj, w)
}

// checkObjectOutput is checkOutput for an output that carries an
// apiVersion and a kind: kubectl's templates are allowed too.
func checkObjectOutput(format string, allowed ...string) error {
	if isTemplate(format) {
		return nil
	}
	err := checkOutput(format, allowed...)
	if err != nil {
		return fmt.Errorf("%w, or a kubectl template (jsonpath=, go-template=)", err)
	}
	return nil
}

func mtlsCell(m audit.MTLS) string {
	if m.Source == "default" || m.Source == "unavailable" {
		return fmt.Sprintf("%s (%s)", m.Mode, m.Source)
	}
	return fmt.Sprintf("%s (%s %s)", m.Mode, m.Source, m.Policy)
}

func injectionCell(i audit.Injection) string {
	switch {
	case i.Mode == audit.InjectionRevision && i.Tag != "":
		return fmt.Sprintf("rev %s (tag %s)", i.Revision, i.Tag)
	case i.Mode == audit.InjectionRevision && i.Revision != "":
		return "rev " + i.Revision
	case i.Mode == audit.InjectionRevision:
		return i.Label + " (no injector)"
	case i.Mode == audit.InjectionEnabled && i.Webhook == "":
		return "enabled (no injector)"
	}
	return i.Mode
}

func authzCell(a audit.Authz) string {
	switch {
	case a.AllowNothing:
		return fmt.Sprintf("%d, allow-nothing", a.Policies)
	case a.AllowNothingDryRun:
		return fmt.Sprintf("%d, allow-nothing dry-run", a.Policies)
	}
	return fmt.Sprint(a.Policies)
}

func trafficCell(ns audit.NamespaceReport, color bool) string {
	t := ns.Traffic
	switch {
	case ns.Excluded != "":
		return "-"
	case t.Status != audit.TrafficObserved:
		return t.Status
	case len(t.PlaintextClients) > 0:
		return paint(color, ansiYellow, fmt.Sprintf("plaintext from %d", len(t.PlaintextClients)))
	}
	return paint(color, ansiGreen, "all mTLS")
}

func nextCell(rd audit.Readiness, color bool) string {
	switch {
	case rd.Next == audit.PhaseNone:
		return "-"
	case rd.Next == audit.PhaseDone:
		return paint(color, ansiGreen, "done")
	case rd.Safe:
		return paint(color, ansiGreen, rd.Next)
	}
	return paint(color, ansiYellow, rd.Next+" (blocked)")
}

func findingsCell(fs []audit.Finding, color bool) string {
	counts := map[string]int{}
	for _, f := range fs {
		counts[f.Severity]++
	}
	var parts []string
	if n := counts[audit.SeverityError]; n > 0 {
		parts = append(parts, paint(color, ansiRed, count(n, "error")))
	}
	if n := counts[audit.SeverityWarning]; n > 0 {
		parts = append(parts, paint(color, ansiYellow, count(n, "warning")))
	}
	if n := counts[audit.SeverityInfo]; n > 0 {
		parts = append(parts, count(n, "info"))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// count is "1 warning", "2 warnings", as every summary line says it; a
// lone "info" stays uncounted as a noun ("2 info").
func count(n int, noun string) string {
	if n != 1 && noun != "info" {
		noun += "s"
	}
	return fmt.Sprintf("%d %s", n, noun)
}

func severityCell(s string, color bool) string {
	switch s {
	case audit.SeverityError:
		return paint(color, ansiRed, strings.ToUpper(s))
	case audit.SeverityWarning:
		return paint(color, ansiYellow, strings.ToUpper(s))
	}
	return strings.ToUpper(s)
}

func printTables(w io.Writer, r *audit.Report, wide, color bool) error {
	if len(r.Namespaces) == 0 {
		_, err := fmt.Fprintln(w, "No namespaces to audit.")
		return err
	}
	t := newTable(w)
	header := []string{"NAMESPACE", "INJECTION", "PODS", "MESHED", "RESTART", "MTLS", "AUTHZ", "TRAFFIC", "NEXT", "FINDINGS"}
	if wide {
		header = append(header, "WRONG-REV", "NOT-INJECTABLE", "DR-TLS-OFF", "WEBHOOK")
	}
	t.Header(header)
	for _, ns := range r.Namespaces {
		row := []string{ns.Name, injectionCell(ns.Injection), fmt.Sprint(ns.Pods.Total), fmt.Sprint(ns.Pods.Meshed), fmt.Sprint(ns.Pods.NeedRestart),
			mtlsCell(ns.MTLS), authzCell(ns.Authz), trafficCell(ns, color), nextCell(ns.Readiness, color), findingsCell(ns.Findings, color)}
		if wide {
			webhook := ns.Injection.Webhook
			if webhook == "" {
				webhook = "-"
			}
			row = append(row, fmt.Sprint(ns.Pods.WrongRevision), fmt.Sprint(ns.Pods.NotInjectable), fmt.Sprint(len(ns.DestinationRules)), webhook)
		}
		if err := t.Append(row); err != nil {
			return err
		}
	}
	if err := t.Render(); err != nil {
		return err
	}

	if wide {
		fmt.Fprintln(w)
		pt := newTable(w)
		pt.Header([]string{"NAMESPACE", "POD", "WORKLOAD", "STATE", "SIDECAR", "REVISION", "REASON"})
		for _, ns := range r.Namespaces {
			for _, p := range ns.Pods.Items {
				if err := pt.Append([]string{ns.Name, p.Name, p.Workload, p.State, dash(p.Sidecar), dash(p.Revision), dash(p.Reason)}); err != nil {
					return err
				}
			}
		}
		if err := pt.Render(); err != nil {
			return err
		}
	}

	if wide && r.Traffic != nil {
		if err := printEdges(w, r); err != nil {
			return err
		}
	}

	// Findings: errors and warnings always, info only in wide output.
	type row struct {
		ns string
		f  audit.Finding
	}
	var rows []row
	for _, f := range r.Findings {
		rows = append(rows, row{"*", f})
	}
	for _, ns := range r.Namespaces {
		for _, f := range ns.Findings {
			rows = append(rows, row{ns.Name, f})
		}
	}
	ft := newTable(w)
	ft.Header([]string{"SEVERITY", "NAMESPACE", "CODE", "OBJECT", "MESSAGE"})
	shown, hidden := 0, 0
	for _, rw := range rows {
		if rw.f.Severity == audit.SeverityInfo && !wide {
			hidden++
			continue
		}
		shown++
		if err := ft.Append([]string{severityCell(rw.f.Severity, color), rw.ns, rw.f.Code, rw.f.Object, rw.f.Message}); err != nil {
			return err
		}
	}
	if shown > 0 {
		fmt.Fprintln(w)
		if err := ft.Render(); err != nil {
			return err
		}
	}
	if r.Traffic != nil {
		fmt.Fprintf(w, "\nTraffic: %s over %s since %s (%s).\n", count(r.Traffic.Edges, "edge"), r.Traffic.Window, r.Traffic.Start.UTC().Format("2006-01-02T15:04:05Z"), r.Traffic.Source)
	}
	if hidden > 0 {
		fmt.Fprintf(w, "\n%s not shown: use -o wide or -o json.\n", count(hidden, "info finding"))
	}
	return nil
}

// printEdges lists each namespace's observed inbound edges.
func printEdges(w io.Writer, r *audit.Report) error {
	et := newTable(w)
	et.Header([]string{"NAMESPACE", "SOURCE", "DESTINATION", "PROTOCOL", "SECURITY", "COUNT"})
	rows := 0
	for _, ns := range r.Namespaces {
		for _, e := range ns.Traffic.Edges {
			if e.Destination.Namespace != ns.Name {
				continue // outbound: listed under its destination's namespace
			}
			src := e.Source.Namespace + "/" + e.Source.Workload
			if e.UnmeshedSource() {
				src = "(no sidecar)"
			}
			rows++
			if err := et.Append([]string{ns.Name, src, e.Destination.Workload, e.Protocol, e.Security, fmt.Sprintf("%.0f", e.Count)}); err != nil {
				return err
			}
		}
	}
	if rows == 0 {
		return nil
	}
	fmt.Fprintln(w)
	return et.Render()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// renderRows prints a kubectl-style table.
func renderRows(w io.Writer, header []string, rows [][]string) error {
	t := newTable(w)
	t.Header(header)
	for _, r := range rows {
		if err := t.Append(r); err != nil {
			return err
		}
	}
	return t.Render()
}

// checkOutput is every command's check of -o: format must be one of
// allowed ("" stands for leaving -o out), with one wording for all.
func checkOutput(format string, allowed ...string) error {
	if slices.Contains(allowed, format) {
		return nil
	}
	var names []string
	for _, a := range allowed {
		if a != "" {
			names = append(names, a)
		}
	}
	if slices.Contains(allowed, "") {
		names = append(names, "leave -o out")
	}
	want := names[len(names)-1]
	if len(names) > 1 {
		want = strings.Join(names[:len(names)-1], ", ") + " or " + want
	}
	return fmt.Errorf("unknown output format %q: use %s", format, want)
}
