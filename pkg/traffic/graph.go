// Package traffic reads the observed call graph of the mesh from Istio's
// standard metrics in Prometheus (or from a file saved earlier). It never
// writes to Kubernetes.
package traffic

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshmigrate/kubectl-meshmigrate/internal/nonnil"
)

// The graph file's schema identity (docs/traffic.md).
const (
	APIVersion = "meshmigrate.io/v1alpha1"
	Kind       = "TrafficGraph"
)

// Security of an edge, from the destination sidecar's
// connection_security_policy label (docs/istio.md 3.2).
const (
	MutualTLS = "mutual_tls" // the server sidecar saw a peer certificate
	Plaintext = "plaintext"  // "none": the server sidecar accepted plaintext
	Unknown   = "unknown"    // anything else, e.g. ambient's inbound passthrough
)

// Protocols of an edge.
const (
	HTTP = "http" // istio_requests_total (HTTP and gRPC); Count is requests
	TCP  = "tcp"  // istio_tcp_connections_opened_total; Count is connections
)

// UnknownWorkload is Istio's value for a label it could not fill: a client
// without a sidecar has no workload on the destination's series.
const UnknownWorkload = "unknown"

// Endpoint is one end of an edge.
type Endpoint struct {
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	// Principal is the SPIFFE identity without "spiffe://", e.g.
	// cluster.local/ns/shop/sa/web, as AuthorizationPolicies spell it;
	// empty for plaintext.
	Principal string `json:"principal,omitempty"`
	Service   string `json:"service,omitempty"`
}

// Edge is traffic observed from a source to a destination over the window.
type Edge struct {
	Source      Endpoint `json:"source"`
	Destination Endpoint `json:"destination"`
	// Port is the destination port where telemetry tells it; Istio's
	// standard metrics do not, so it is 0 for edges read from Prometheus.
	Port     int     `json:"port,omitempty"`
	Protocol string  `json:"protocol"`
	Security string  `json:"security"`
	Count    float64 `json:"count"`
	// Bytes is what a TCP destination received over the window; a
	// long-lived connection opened before the window has Bytes but Count 0.
	Bytes float64 `json:"bytes,omitempty"`
}

// UnmeshedSource tells a client that carries no sidecar: Istio could not
// identify it (docs/istio.md 3.2).
func (e Edge) UnmeshedSource() bool {
	return e.Source.Workload == UnknownWorkload || e.Source.Workload == ""
}

// Graph is the observed traffic over a window.
type Graph struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Source says where the edges came from: "prometheus URL" or "file PATH".
	Source string `json:"source"`
	// Window and Start..End are the observation window.
	Window string    `json:"window"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	// Queries are the PromQL queries that produced the edges.
	Queries []string `json:"queries,omitempty"`
	Edges   []Edge   `json:"edges"`
}

// Empty is true when no Istio traffic at all was seen: inconclusive, never
// "no plaintext".
func (g *Graph) Empty() bool { return len(g.Edges) == 0 }

// Describe names the window for verdicts: "24h since 2026-01-01T00:00:00Z".
func (g *Graph) Describe() string {
	return fmt.Sprintf("%s since %s (%s)", g.Window, g.Start.UTC().Format(time.RFC3339), g.Source)
}

func (g *Graph) sort() {
	sort.Slice(g.Edges, func(i, j int) bool {
		a, b := g.Edges[i], g.Edges[j]
		for _, c := range [][2]string{
			{a.Destination.Namespace, b.Destination.Namespace}, {a.Destination.Workload, b.Destination.Workload},
			{a.Source.Namespace, b.Source.Namespace}, {a.Source.Workload, b.Source.Workload},
			{a.Source.Principal, b.Source.Principal}, {a.Protocol, b.Protocol}, {a.Security, b.Security},
			{a.Destination.Service, b.Destination.Service},
		} {
			if c[0] != c[1] {
				return c[0] < c[1]
			}
		}
		return false
	})
}

// Save writes the graph as YAML (or JSON when path ends in .json).
func (g *Graph) Save(path string) error {
	nonnil.Fill(g)
	var (
		b   []byte
		err error
	)
	if strings.HasSuffix(path, ".json") {
		b, err = json.MarshalIndent(g, "", "  ")
	} else {
		b, err = yaml.Marshal(g)
	}
	if err != nil {
		return fmt.Errorf("encode the traffic graph: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write the traffic graph: %w", err)
	}
	return nil
}

// Load reads a graph saved by Save (YAML or JSON), rejecting anything that
// is not one.
func Load(path string) (*Graph, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read traffic file: %w", err)
	}
	var g Graph
	if err := yaml.UnmarshalStrict(raw, &g); err != nil {
		return nil, fmt.Errorf("traffic file %s is not a TrafficGraph: %w", path, err)
	}
	if g.APIVersion != APIVersion || g.Kind != Kind {
		return nil, fmt.Errorf("traffic file %s has apiVersion %q kind %q, want %s %s (made by `kubectl meshmigrate traffic export`)",
			path, g.APIVersion, g.Kind, APIVersion, Kind)
	}
	for i, e := range g.Edges {
		if e.Destination.Namespace == "" || (e.Security != MutualTLS && e.Security != Plaintext && e.Security != Unknown) || e.Count < 0 || e.Bytes < 0 || (e.Count == 0 && e.Bytes == 0) {
			return nil, fmt.Errorf("traffic file %s: edge %d is malformed (destination namespace, security mutual_tls|plaintext|unknown, count and bytes >= 0, not both 0)", path, i)
		}
	}
	g.Source = "file " + path
	return &g, nil
}
