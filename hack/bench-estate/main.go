// Command bench-estate measures kubectl-meshmigrate on a large estate: it
// builds one on a local control plane (real etcd and kube-apiserver, kwok
// fake nodes; no controller manager or scheduler: the estate's objects are
// made directly, as the controllers would have left them) and times
// `audit -A` and `plan -A` against the floor of one raw JSON list of every
// pod with kubectl, interleaved, medians of rounds. `make bench-estate` runs
// it; it is a benchmark, not a test.
//
//	bench-estate run [-sizes 5000,10000,20000] [-rounds 3]   build, measure at each size, delete
//	bench-estate up -pods N                                  build or grow the estate, leave it up
//	bench-estate measure [-rounds 3]                          measure the estate that is up
//	bench-estate down                                         delete the cluster
//
// The machine is shared: it waits while another control plane runs, and
// says so, rather than measure under contention.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/e2e"
)

// clusterName is not under the e2e suite's prefix (meshmigrate-e2e), which
// deletes its stale clusters, nor the demo's.
const clusterName = "meshmigrate-bench"

func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, "bench-estate: "+format+"\n", a...) }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench-estate run|up|measure|down [flags]")
		os.Exit(1)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	sizes := fs.String("sizes", "5000,10000,20000", "estate sizes in pods, ascending, multiples of 50 (run)")
	pods := fs.Int("pods", 20000, "estate size in pods, a multiple of 50 (up)")
	rounds := fs.Int("rounds", 3, "interleaved rounds per size; medians are reported")
	plugin := fs.String("plugin", "bin/kubectl-meshmigrate", "the plugin binary to measure")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := newBench(ctx, *plugin)
	if err == nil {
		switch os.Args[1] {
		case "run":
			err = b.run(ctx, *sizes, *rounds)
		case "up":
			err = b.up(ctx, *pods)
		case "measure":
			err = b.measureAll(ctx, *rounds)
		case "down":
			err = b.down(ctx)
		default:
			err = fmt.Errorf("unknown command %q: use run, up, measure or down", os.Args[1])
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

type bench struct {
	bin, dir, kubeconfig, plugin string
}

func newBench(ctx context.Context, plugin string) (*bench, error) {
	root, err := e2e.RepoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := e2e.Tools(ctx)
	if err != nil {
		return nil, err
	}
	if plugin, err = filepath.Abs(plugin); err != nil {
		return nil, err
	}
	dir := filepath.Join(root, ".cache", "bench-estate")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// kubectl finds plugins by name on PATH: link the binary under its name.
	pluginDir := filepath.Join(dir, "plugin")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return nil, err
	}
	link := filepath.Join(pluginDir, "kubectl-meshmigrate")
	_ = os.Remove(link)
	if err := os.Symlink(plugin, link); err != nil {
		return nil, fmt.Errorf("link the plugin: %w", err)
	}
	return &bench{bin: bin, dir: dir, kubeconfig: filepath.Join(dir, "kubeconfig"), plugin: link}, nil
}

func (b *bench) run(ctx context.Context, sizes string, rounds int) error {
	var ns []int
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 || n%podsPerNamespace != 0 {
			return fmt.Errorf("-sizes: %q is not a positive multiple of %d", s, podsPerNamespace)
		}
		ns = append(ns, n)
	}
	if !slices.IsSorted(ns) {
		return fmt.Errorf("-sizes must be ascending (the estate only grows): %s", sizes)
	}
	defer func() {
		if err := b.down(context.WithoutCancel(ctx)); err != nil {
			logf("warning: %v", err)
		}
	}()
	var rows []row
	for _, n := range ns {
		if err := b.up(ctx, n); err != nil {
			return err
		}
		r, err := b.measure(ctx, rounds)
		if err != nil {
			return err
		}
		rows = append(rows, r)
		printTable(os.Stdout, rows) // after each size, so a late failure keeps the numbers
	}
	return b.staleCheck(ctx, rounds)
}

// up creates the cluster if it is not up, and grows the estate to pods.
func (b *bench) up(ctx context.Context, pods int) error {
	if pods <= 0 || pods%podsPerNamespace != 0 {
		return fmt.Errorf("-pods %d is not a positive multiple of %d", pods, podsPerNamespace)
	}
	out, err := e2e.Kwokctl(ctx, b.bin, "get", "clusters")
	if err != nil {
		return err
	}
	if _, err := os.Stat(b.kubeconfig); err != nil || !slices.Contains(strings.Fields(out), clusterName) {
		if err := b.create(ctx); err != nil {
			return err
		}
	}
	cfg, err := b.restConfig()
	if err != nil {
		return err
	}
	kube := kubeClient(cfg)
	have, err := countPods(ctx, kube, "")
	if err != nil {
		return err
	}
	if have > pods {
		return fmt.Errorf("the estate has %d pods already, more than %d: bench-estate down first", have, pods)
	}
	nodes := (pods + podsPerNode - 1) / podsPerNode
	if _, err := e2e.Kwokctl(ctx, b.bin, "scale", "node", "--replicas", strconv.Itoa(nodes), "--name", clusterName); err != nil {
		return err
	}
	names, err := nodeNames(ctx, kube, nodes)
	if err != nil {
		return err
	}
	e := &estate{kube: kube, istio: istioclient.NewForConfigOrDie(cfg), nodes: names}
	if err := e.setup(ctx); err != nil {
		return err
	}
	start := time.Now()
	logf("growing the estate from %d to %d pods (%d namespaces, %d nodes)", have, pods, pods/podsPerNamespace, nodes)
	if err := e.grow(ctx, have, pods); err != nil {
		return err
	}
	logf("estate of %d pods ready after %s", pods, time.Since(start).Round(time.Second))
	return nil
}

// create starts the cluster, once no other control plane runs.
func (b *bench) create(ctx context.Context) error {
	if err := waitAlone(ctx, ""); err != nil {
		return err
	}
	e2e.DeleteStaleClusters(ctx, b.bin, clusterName)
	cfg, err := e2e.KwokConfig(b.bin, b.dir, "kube-controller-manager", "kube-scheduler")
	if err != nil {
		return err
	}
	if err := appendNodeStages(ctx, cfg); err != nil {
		return err
	}
	logf("starting cluster %s (kwok, binary runtime)", clusterName)
	if _, err := e2e.Kwokctl(ctx, b.bin, "create", "cluster", "--name", clusterName, "--config", cfg, "--wait", "2m"); err != nil {
		return err
	}
	out, err := e2e.Kwokctl(ctx, b.bin, "get", "kubeconfig", "--name", clusterName)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.kubeconfig, []byte(out), 0o600); err != nil {
		return err
	}
	rc, err := b.restConfig()
	if err != nil {
		return err
	}
	return e2e.InstallIstioCRDs(ctx, rc)
}

// appendNodeStages gives kwok its default node stages (ready, heartbeat)
// and no pod stage: the estate writes its pods' status itself, at its own
// pace, and kwok leaves them alone. (Under load kwok replays a pod's ready
// stage, doubling its pod IPs, and retries the invalid patch for ever.)
func appendNodeStages(ctx context.Context, cfg string) error {
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", "sigs.k8s.io/kwok@"+e2e.KwokVersion).Output()
	if err != nil {
		return fmt.Errorf("locate the kwok module: %w", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("locate the kwok module: %q: %v", out, err)
	}
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, stage := range []string{"node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"} {
		b, err := os.ReadFile(filepath.Join(mod.Dir, "kustomize", "stage", stage))
		if err != nil {
			return fmt.Errorf("read kwok's stage %s: %w", stage, err)
		}
		if _, err := fmt.Fprintf(f, "---\n%s\n", b); err != nil {
			return err
		}
	}
	return f.Close()
}

func (b *bench) down(ctx context.Context) error {
	logf("deleting cluster %s", clusterName)
	e2e.DeleteStaleClusters(ctx, b.bin, clusterName)
	if err := os.Remove(b.kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// restConfig is the generator's own client, without a client-side rate
// limit (the API server's priority and fairness still applies).
func (b *bench) restConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", b.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", b.kubeconfig, err)
	}
	cfg.QPS = -1
	return cfg, nil
}

// kubeClient speaks protobuf (built-in kinds only; Istio's stay JSON).
func kubeClient(cfg *rest.Config) *kubernetes.Clientset {
	pb := rest.CopyConfig(cfg)
	pb.ContentType = "application/vnd.kubernetes.protobuf"
	return kubernetes.NewForConfigOrDie(pb)
}

func countPods(ctx context.Context, kube kubernetes.Interface, fieldSelector string) (int, error) {
	n := 0
	cont := ""
	for {
		l, err := kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fieldSelector, Limit: 5000, Continue: cont})
		if err != nil {
			return 0, fmt.Errorf("count pods: %w", err)
		}
		n += len(l.Items)
		if cont = l.Continue; cont == "" {
			return n, nil
		}
	}
}

// nodeNames waits for n kwok nodes and returns their names, sorted, so
// pod k of the estate lands on node k/100 whatever size it grew from.
func nodeNames(ctx context.Context, kube kubernetes.Interface, n int) ([]string, error) {
	var names []string
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
		if err != nil {
			return false, nil
		}
		names = names[:0]
		for _, nd := range l.Items {
			names = append(names, nd.Name)
		}
		return len(names) >= n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("wait for %d kwok nodes (have %d): %w", n, len(names), err)
	}
	sort.Strings(names)
	return names, nil
}

// waitAlone waits (up to 20 minutes) until no kube-apiserver runs but
// ours (its command line names our cluster's folder; "" for none at all).
func waitAlone(ctx context.Context, ours string) error {
	deadline := time.Now().Add(20 * time.Minute)
	for {
		others := otherAPIServers(ours)
		if len(others) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another control plane kept running for 20 minutes (pid %v): not measuring under contention", others)
		}
		logf("another kube-apiserver runs (pid %v); waiting, not measuring under contention", others)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Minute):
		}
	}
}

// waitQuiet waits (up to 2 minutes) until the machine's CPUs are less
// than a quarter busy over 3 seconds: other work (builds, tests) shares
// them, and a round measured under it says little. Our idle cluster (node
// heartbeats) stays well under that.
func waitQuiet(ctx context.Context) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		busy, err := cpuBusy(ctx, 3*time.Second)
		if err != nil || busy < 0.25 {
			return
		}
		if time.Now().After(deadline) {
			logf("the machine is still %.0f%% busy after 2 minutes; measuring anyway", busy*100)
			return
		}
		logf("the machine is %.0f%% busy; waiting for it to quieten", busy*100)
	}
}

// cpuBusy is the share of CPU time not idle over d, from /proc/stat.
func cpuBusy(ctx context.Context, d time.Duration) (float64, error) {
	sample := func() (busy, total float64, err error) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, err
		}
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0]) // cpu user nice system idle iowait ...
		for i, v := range f[1:] {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("parse /proc/stat: %w", err)
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		return busy, total, nil
	}
	b0, t0, err := sample()
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	b1, t1, err := sample()
	if err != nil || t1 == t0 {
		return 0, err
	}
	return (b1 - b0) / (t1 - t0), nil
}

func otherAPIServers(ours string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if filepath.Base(args[0]) != "kube-apiserver" || (ours != "" && strings.Contains(string(cmd), ours)) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// ourCluster is what our kube-apiserver's command line contains.
func ourCluster() string {
	return string(filepath.Separator) + filepath.Join("clusters", clusterName) + string(filepath.Separator)
}

// staleCheck times apply's stale-plan check of one namespace: a plan of the
// whole estate, one namespace changed behind it, and `apply -n NS` on it,
// which must exit 3 (stale) after reading only that namespace.
func (b *bench) staleCheck(ctx context.Context, rounds int) error {
	planFile := filepath.Join(b.dir, "plan.yaml")
	f, err := os.Create(planFile)
	if err != nil {
		return err
	}
	_, err = b.command(ctx, f, []int{0, 2}, b.plugin, "plan", "-A", "--no-traffic", "-o", "yaml")
	f.Close()
	if err != nil {
		return err
	}
	cfg, err := b.restConfig()
	if err != nil {
		return err
	}
	kube := kubeClient(cfg)
	ns := nsName(1) // unmeshed: labelling it for injection changes its plan
	label := func(v any) error {
		patch := fmt.Sprintf(`{"metadata":{"labels":{"istio-injection":%s}}}`, v)
		_, err := kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	}
	if err := label(`"enabled"`); err != nil {
		return fmt.Errorf("make namespace %s stale: %w", ns, err)
	}
	defer func() { _ = label("null") }()
	var walls []time.Duration
	for i := 0; i < rounds; i++ {
		m, err := b.command(ctx, nil, []int{3}, b.plugin, "apply", "-f", planFile, "-n", ns, "--yes")
		if err != nil {
			return err
		}
		walls = append(walls, m.wall)
	}
	info, _ := os.Stat(planFile)
	fmt.Printf("\napply's stale-plan check of one namespace (%s, plan of the whole estate, %.1f MiB of YAML): median %s of %d (exit 3 each time)\n",
		ns, float64(info.Size())/(1<<20), median(walls).Round(time.Millisecond), rounds)
	return nil
}

// measureAll measures the estate that is up, and the stale check.
func (b *bench) measureAll(ctx context.Context, rounds int) error {
	r, err := b.measure(ctx, rounds)
	if err != nil {
		return err
	}
	printTable(os.Stdout, []row{r})
	return b.staleCheck(ctx, rounds)
}

// A measurement of one command run.
type measurement struct {
	wall, cpu time.Duration
	rssKiB    int64
}

type row struct {
	pods             int
	raw, audit, plan []measurement
	// load is the machine's load average (1 minute) before and after.
	load [2]string
}

// measure runs the raw list, audit -A and plan -A interleaved, once each
// to warm up (not counted), then rounds times.
func (b *bench) measure(ctx context.Context, rounds int) (r row, err error) {
	cfg, err := b.restConfig()
	if err != nil {
		return row{}, err
	}
	pods, err := countPods(ctx, kubeClient(cfg), "")
	if err != nil {
		return row{}, err
	}
	r = row{pods: pods, load: [2]string{loadAverage(), ""}}
	defer func() { r.load[1] = loadAverage() }()
	kubectl := filepath.Join(b.bin, "kubectl")
	for i := 0; i <= rounds; i++ {
		if err := waitAlone(ctx, ourCluster()); err != nil {
			return row{}, err
		}
		waitQuiet(ctx)
		raw, err := b.command(ctx, nil, []int{0}, kubectl, "get", "--raw", "/api/v1/pods")
		if err != nil {
			return row{}, err
		}
		audit, err := b.command(ctx, nil, []int{0, 2}, kubectl, "meshmigrate", "audit", "-A", "--no-traffic", "-o", "json")
		if err != nil {
			return row{}, err
		}
		plan, err := b.command(ctx, nil, []int{0, 2}, kubectl, "meshmigrate", "plan", "-A", "--no-traffic", "-o", "yaml")
		if err != nil {
			return row{}, err
		}
		if i == 0 {
			continue // warm-up
		}
		logf("%d pods, round %d: raw %s, audit %s, plan %s", pods, i, raw.wall.Round(time.Millisecond), audit.wall.Round(time.Millisecond), plan.wall.Round(time.Millisecond))
		r.raw, r.audit, r.plan = append(r.raw, raw), append(r.audit, audit), append(r.plan, plan)
	}
	return r, nil
}

// loadAverage is the 1-minute load average, to say how busy the machine
// (shared: other work runs on it) was around a measurement.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// command runs name args with stdout to out (nil: discarded), expecting one
// of the exit codes ok, and returns its wall time, CPU and peak RSS
// (/usr/bin/time -v where installed, else the child's rusage).
func (b *bench) command(ctx context.Context, out io.Writer, ok []int, name string, args ...string) (measurement, error) {
	timeFile := filepath.Join(b.dir, "time.txt")
	useTime := false
	if _, err := os.Stat("/usr/bin/time"); err == nil {
		useTime = true
		args = append([]string{"-v", "-o", timeFile, name}, args...)
		name = "/usr/bin/time"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = out, &stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+b.kubeconfig, "PATH="+filepath.Dir(b.plugin)+string(os.PathListSeparator)+b.bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	code := cmd.ProcessState.ExitCode()
	if useTime {
		// time exits with the command's code; it reports a signal itself.
		if err != nil && !slices.Contains(ok, code) {
			return measurement{}, fmt.Errorf("%s: exit %d: %s", strings.Join(args[3:], " "), code, lastLines(stderr.String()))
		}
		m, perr := parseTime(timeFile)
		m.wall = wall
		return m, perr
	}
	if err != nil && !slices.Contains(ok, code) {
		return measurement{}, fmt.Errorf("%s %s: exit %d: %s", name, strings.Join(args, " "), code, lastLines(stderr.String()))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return measurement{wall: wall, cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), rssKiB: ru.Maxrss}, nil
}

// parseTime reads /usr/bin/time -v's report: peak RSS and CPU seconds.
func parseTime(path string) (measurement, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return measurement{}, err
	}
	var m measurement
	for _, line := range strings.Split(string(b), "\n") {
		k, v, found := strings.Cut(strings.TrimSpace(line), ": ")
		if !found {
			continue
		}
		switch k {
		case "Maximum resident set size (kbytes)":
			m.rssKiB, err = strconv.ParseInt(v, 10, 64)
		case "User time (seconds)", "System time (seconds)":
			var s float64
			s, err = strconv.ParseFloat(v, 64)
			m.cpu += time.Duration(s * float64(time.Second))
		}
		if err != nil {
			return m, fmt.Errorf("parse %s line %q: %w", path, line, err)
		}
	}
	if m.rssKiB == 0 {
		return m, fmt.Errorf("no peak RSS in %s: %s", path, b)
	}
	return m, nil
}

func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "\n")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianOf(ms []measurement) measurement {
	var w, c []time.Duration
	var r []int64
	for _, m := range ms {
		w, c, r = append(w, m.wall), append(c, m.cpu), append(r, m.rssKiB)
	}
	slices.Sort(r)
	return measurement{wall: median(w), cpu: median(c), rssKiB: r[len(r)/2]}
}

func printTable(out io.Writer, rows []row) {
	fmt.Fprintf(out, "\n%-7s | %-24s | %-32s | %-32s | %s\n", "pods", "raw list (kubectl)", "audit -A --no-traffic", "plan -A --no-traffic", "load")
	fmt.Fprintf(out, "%-7s | %-24s | %-32s | %-32s |\n", "", "wall  cpu  peak RSS", "wall (ratio)  cpu  peak RSS", "wall (ratio)  cpu  peak RSS")
	for _, r := range rows {
		raw, audit, plan := medianOf(r.raw), medianOf(r.audit), medianOf(r.plan)
		cell := func(m measurement, ratio bool) string {
			s := fmt.Sprintf("%.2fs", m.wall.Seconds())
			if ratio {
				s += fmt.Sprintf(" (%.2fx)", m.wall.Seconds()/raw.wall.Seconds())
			}
			return s + fmt.Sprintf("  %.2fs  %d MiB", m.cpu.Seconds(), m.rssKiB/1024)
		}
		fmt.Fprintf(out, "%-7d | %-24s | %-32s | %-32s | %s -> %s\n", r.pods, cell(raw, false), cell(audit, true), cell(plan, true), r.load[0], r.load[1])
	}
	fmt.Fprintf(out, "(medians of %d interleaved rounds after one warm-up; %d cores; load average before -> after)\n", len(rows[0].raw), runtime.NumCPU())
	var per []string
	for _, r := range rows {
		per = append(per, fmt.Sprintf("%d pods %.0f ms", r.pods, medianOf(r.audit).wall.Seconds()*1000/float64(r.pods)*1000))
	}
	fmt.Fprintf(out, "audit wall per 1,000 pods: %s\n", strings.Join(per, ", "))
}
