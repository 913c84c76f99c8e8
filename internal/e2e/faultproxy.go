package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// FaultProxy is a STAND-IN FOR AN UNRELIABLE API SERVER: a reverse proxy on
// 127.0.0.1 in front of the real one that answers some writes with errors
// (500, 429, 409) and drops the connection of others, before or after the
// API server handled them (a lost response). The tool talks to it over
// plain HTTP; the proxy authenticates to the API server as the suite's
// admin.
type FaultProxy struct {
	URL string
	srv *http.Server
	// Every is how often a write is faulted: every Every-th write.
	Every int

	mu       sync.Mutex
	writes   int
	injected map[string]int
}

// faults cycle in this order.
var faults = []string{"500", "drop-after", "429", "409", "drop-before"}

// StartFaultProxy proxies to the API server of cfg.
func StartFaultProxy(cfg *rest.Config, every int) (*FaultProxy, error) {
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, err
	}
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &FaultProxy{URL: "http://" + ln.Addr().String(), Every: every, injected: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = target.Host },
		Transport:     rt,
		FlushInterval: -1,
	}
	p.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch fault := p.pick(r); fault {
		case "":
			rp.ServeHTTP(w, r)
		case "500", "429", "409":
			code := map[string]int{"500": 500, "429": 429, "409": 409}[fault]
			reason := map[string]string{"500": "InternalError", "429": "TooManyRequests", "409": "Conflict"}[fault]
			if fault == "429" {
				w.Header().Set("Retry-After", "1")
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected by the e2e fault proxy","reason":%q,"code":%d}`, reason, code)
		case "drop-after":
			rp.ServeHTTP(httptest.NewRecorder(), r)
			drop(w)
		case "drop-before":
			drop(w)
		}
	})}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

func drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
		}
	}
}

// pick decides the fault for a request: only writes are faulted.
func (p *FaultProxy) pick(r *http.Request) string {
	if r.Method == http.MethodGet || strings.Contains(r.URL.RawQuery, "watch=") {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.writes++
	if p.writes%p.Every != 0 {
		return ""
	}
	f := faults[(p.writes/p.Every-1)%len(faults)]
	p.injected[f]++
	return f
}

// Injected returns how many faults of each kind were injected.
func (p *FaultProxy) Injected() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.injected {
		out[k] = v
	}
	return out
}

// Kubeconfig writes a kubeconfig that talks to the proxy.
func (p *FaultProxy) Kubeconfig(path string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fault-proxy
  cluster:
    server: %s
users:
- name: fault-proxy
  user: {}
contexts:
- name: fault-proxy
  context: {cluster: fault-proxy, user: fault-proxy}
current-context: fault-proxy
`, p.URL)), 0o600)
}

// Close stops the proxy.
func (p *FaultProxy) Close() error { return p.srv.Close() }
