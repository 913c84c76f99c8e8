package audit

import (
	"fmt"
	"sort"
	"strings"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cluster"
	"github.com/meshmigrate/kubectl-meshmigrate/pkg/traffic"
)

// Observation is what the audit knows of traffic: a graph, or why there is
// none. The zero value means traffic was not read.
type Observation struct {
	Graph *traffic.Graph
	// Reason says why Graph is nil (e.g. --no-traffic, no Prometheus found).
	Reason string
	// Failed marks a Reason that is a failure to read (a finding), not the
	// user's choice (--no-traffic).
	Failed bool
}

// Traffic statuses.
const (
	TrafficObserved = "observed" // inbound traffic was seen over the window
	TrafficNoData   = "no-data"  // telemetry was read but shows no inbound traffic: inconclusive
	TrafficUnknown  = "unknown"  // telemetry was not read
)

// Traffic is what was observed of a namespace's traffic over the window.
type Traffic struct {
	// Status is observed, no-data or unknown: the audit never claims "no
	// plaintext" without having looked, nor from zero requests.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Window names the observation window and where it came from.
	Window string `json:"window,omitempty"`
	// Inbound counts requests (HTTP) plus connections (TCP) to the
	// namespace's workloads, by how they were secured.
	Inbound          TrafficCounts `json:"inbound"`
	PlaintextClients []Client      `json:"plaintextClients"`
	// PlaintextOutbound lists destinations elsewhere that this namespace's
	// workloads call in plaintext.
	PlaintextOutbound []Client `json:"plaintextOutbound"`
	// Edges are every observed edge into or out of the namespace.
	Edges []traffic.Edge `json:"edges,omitempty"`
}

// TrafficCounts sums requests and connections.
type TrafficCounts struct {
	Total     float64 `json:"total"`
	MTLS      float64 `json:"mtls"`
	Plaintext float64 `json:"plaintext"`
	Unknown   float64 `json:"unknown"`
	// Bytes received over TCP, all securities; long-lived connections show
	// here without opening any connection in the window.
	Bytes float64 `json:"bytes"`
}

// Client is one side of plaintext traffic, aggregated over destinations.
type Client struct {
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	// Meshed is "yes" (a sidecar that still sends plaintext: a DestinationRule
	// with tls DISABLE, excluded ports, pod-IP calls), "no" (no sidecar), or
	// "unknown" (a workload outside the audited namespaces).
	Meshed       string   `json:"meshed"`
	Destinations []string `json:"destinations"`
	Protocols    []string `json:"protocols"`
	Count        float64  `json:"count"`
	Bytes        float64  `json:"bytes,omitempty"`
}

// Name is "namespace/workload", or a description of unidentified clients.
func (c Client) Name() string {
	if c.Workload == "" || c.Workload == traffic.UnknownWorkload {
		return "unidentified clients without a sidecar"
	}
	return c.Namespace + "/" + c.Workload
}

// trafficIndex holds the graph's edges by namespace, built once per audit.
type trafficIndex struct {
	obs      Observation
	inbound  map[string][]traffic.Edge
	outbound map[string][]traffic.Edge
	// meshedWorkloads: "ns/workload" -> all its pods have a sidecar.
	meshedWorkloads map[string]bool
	audited         map[string]bool
}

func indexTraffic(obs Observation, s *cluster.Snapshot) *trafficIndex {
	ix := &trafficIndex{obs: obs, inbound: map[string][]traffic.Edge{}, outbound: map[string][]traffic.Edge{},
		meshedWorkloads: map[string]bool{}, audited: map[string]bool{}}
	if obs.Graph == nil {
		return ix
	}
	for _, e := range obs.Graph.Edges {
		ix.inbound[e.Destination.Namespace] = append(ix.inbound[e.Destination.Namespace], e)
		if e.Source.Namespace != "" && e.Source.Namespace != e.Destination.Namespace {
			ix.outbound[e.Source.Namespace] = append(ix.outbound[e.Source.Namespace], e)
		}
	}
	for _, ns := range s.Namespaces {
		ix.audited[ns.Name] = true
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		// Istio's workload name is the Deployment/StatefulSet/... name.
		key := p.Namespace + "/" + p.Owner.Name
		meshed, seen := ix.meshedWorkloads[key]
		ix.meshedWorkloads[key] = (meshed || !seen) && sidecarOf(p) != ""
	}
	return ix
}

func (ix *trafficIndex) meshed(e traffic.Edge) string {
	if e.UnmeshedSource() {
		return "no"
	}
	if !ix.audited[e.Source.Namespace] {
		return "unknown"
	}
	m, ok := ix.meshedWorkloads[e.Source.Namespace+"/"+e.Source.Workload]
	switch {
	case !ok:
		return "unknown"
	case m:
		return "yes"
	}
	return "no"
}

// namespaceTraffic summarizes the namespace's observed traffic.
func (ix *trafficIndex) namespaceTraffic(ns string) Traffic {
	t := Traffic{Status: TrafficUnknown, PlaintextClients: []Client{}, PlaintextOutbound: []Client{}}
	g := ix.obs.Graph
	if g == nil {
		t.Reason = ix.obs.Reason
		if t.Reason == "" {
			t.Reason = "traffic was not read"
		}
		return t
	}
	t.Window = g.Describe()
	in := ix.inbound[ns]
	clients := map[string]*Client{}
	for _, e := range in {
		t.Inbound.Total += e.Count
		t.Inbound.Bytes += e.Bytes
		switch e.Security {
		case traffic.MutualTLS:
			t.Inbound.MTLS += e.Count
			continue
		case traffic.Plaintext:
			t.Inbound.Plaintext += e.Count
		default:
			t.Inbound.Unknown += e.Count
		}
		addClient(clients, e.Source.Namespace, e.Source.Workload, ix.meshed(e), e.Destination.Workload, e)
	}
	t.PlaintextClients = sortedClients(clients)
	out := map[string]*Client{}
	for _, e := range ix.outbound[ns] {
		if e.Security != traffic.MutualTLS {
			addClient(out, e.Destination.Namespace, e.Destination.Workload, "", e.Source.Workload, e)
		}
	}
	t.PlaintextOutbound = sortedClients(out)
	t.Edges = append(append([]traffic.Edge{}, in...), ix.outbound[ns]...)
	switch {
	case g.Empty():
		t.Status, t.Reason = TrafficNoData, "no Istio traffic at all in the window: is telemetry enabled and scraped?"
	case t.Inbound.Total == 0 && t.Inbound.Bytes == 0:
		t.Status, t.Reason = TrafficNoData, "no inbound traffic observed: inconclusive (no callers in the window, or its workloads have no sidecar to report)"
	default:
		t.Status = TrafficObserved
	}
	return t
}

func addClient(m map[string]*Client, ns, workload, meshed, peer string, e traffic.Edge) {
	key := ns + "/" + workload
	c := m[key]
	if c == nil {
		c = &Client{Namespace: ns, Workload: workload, Meshed: meshed}
		m[key] = c
	}
	c.Count += e.Count
	c.Bytes += e.Bytes
	if !contains(c.Destinations, peer) {
		c.Destinations = append(c.Destinations, peer)
	}
	if !contains(c.Protocols, e.Protocol) {
		c.Protocols = append(c.Protocols, e.Protocol)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedClients(m map[string]*Client) []Client {
	out := make([]Client, 0, len(m))
	for _, c := range m {
		sort.Strings(c.Destinations)
		sort.Strings(c.Protocols)
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

func trafficFindings(ns string, t Traffic) []Finding {
	var f []Finding
	for _, c := range t.PlaintextClients {
		obj := "Workload/" + c.Namespace + "/" + c.Workload
		who := c.Name()
		switch {
		case c.Workload == "" || c.Workload == traffic.UnknownWorkload:
			// the name already says it
		case c.Meshed == "no":
			who += " (no sidecar)"
		case c.Meshed == "yes":
			who += " (has a sidecar but sends plaintext: a DestinationRule with tls DISABLE, excluded ports or pod-IP calls)"
		}
		if c.Workload == "" || c.Workload == traffic.UnknownWorkload {
			obj = "Namespace/" + ns
		}
		f = append(f, Finding{Code: CodePlaintextClient, Severity: SeverityWarning, Object: obj,
			Message: fmt.Sprintf("%s sent %s to %s over %s: STRICT would reject them; mesh the client or keep PERMISSIVE",
				who, amount(c), strings.Join(c.Destinations, ", "), t.Window)})
	}
	for _, c := range t.PlaintextOutbound {
		f = append(f, Finding{Code: CodePlaintextOutbound, Severity: SeverityInfo, Object: "Workload/" + c.Namespace + "/" + c.Workload,
			Message: fmt.Sprintf("this namespace's %s sent %s to %s over %s",
				strings.Join(c.Destinations, ", "), amount(c), c.Name(), t.Window)})
	}
	return f
}

// amount says how much plaintext a client sent: "120 plaintext requests",
// "5000 plaintext bytes over long-lived connections".
func amount(c Client) string {
	out := fmt.Sprintf("%.0f plaintext %s", c.Count, unit(c.Protocols))
	switch {
	case c.Count == 0 && c.Bytes > 0:
		return fmt.Sprintf("%.0f plaintext bytes over long-lived TCP connections", c.Bytes)
	case c.Bytes > 0:
		out += fmt.Sprintf(" (%.0f bytes)", c.Bytes)
	}
	return out
}

func unit(protocols []string) string {
	switch strings.Join(protocols, ",") {
	case traffic.HTTP:
		return "requests"
	case traffic.TCP:
		return "connections"
	}
	return "requests/connections"
}
