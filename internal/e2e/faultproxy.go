package e2e

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// FaultProxy is a STAND-IN FOR AN UNRELIABLE API SERVER: a reverse proxy on
// 127.0.0.1 in front of the real one that answers some writes with errors
// (500, 429, 409) and drops the connection of others, before or after the
// API server handled them (a lost response), and answers some reads (GET,
// get or list; never a watch) with 503, 500 or 429 or drops them. The tool
// talks to it over plain HTTP; the proxy authenticates to the API server
// as the suite's admin.
//
// client-go itself retries a GET whose connection dropped and a 429 with
// Retry-After; a 500 or 503 without Retry-After reaches the tool's own
// retry policy.
type FaultProxy struct {
	URL string
	srv *http.Server
	// Every is how often a write is faulted (every Every-th write), and
	// EveryRead how often a read is; 0 faults none.
	Every, EveryRead int
	// FaultFirst are paths whose first read is faulted whatever the
	// count, so a test knows those reads met a fault.
	FaultFirst []string

	mu           sync.Mutex
	writes       int
	reads        int
	readsFaulted int
	injected     map[string]int
	// faultedReads counts the faulted reads by path.
	faultedReads map[string]int
}

// Faults cycle in these orders; a read's are named "read 503" and so on.
var (
	faults     = []string{"500", "drop-after", "429", "409", "drop-before"}
	readFaults = []string{"503", "drop-before", "500", "429"}
)

// StartFaultProxy proxies to the API server of cfg, faulting every
// every-th write and every everyRead-th read (0: none).
func StartFaultProxy(cfg *rest.Config, every, everyRead int) (*FaultProxy, error) {
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
	p := &FaultProxy{URL: "http://" + ln.Addr().String(), Every: every, EveryRead: everyRead,
		injected: map[string]int{}, faultedReads: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = target.Host },
		Transport:     rt,
		FlushInterval: -1,
	}
	p.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch fault := strings.TrimPrefix(p.pick(r), "read "); fault {
		case "":
			rp.ServeHTTP(w, r)
		case "500", "503", "429", "409":
			code := map[string]int{"500": 500, "503": 503, "429": 429, "409": 409}[fault]
			reason := map[string]string{"500": "InternalError", "503": "ServiceUnavailable", "429": "TooManyRequests", "409": "Conflict"}[fault]
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

// pick decides the fault for a request, if any: every Every-th write and
// every EveryRead-th read, watches never (the tool polls; it does not
// watch).
func (p *FaultProxy) pick(r *http.Request) string {
	if strings.Contains(r.URL.RawQuery, "watch=") {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Method == http.MethodGet {
		p.reads++
		first := slices.Contains(p.FaultFirst, r.URL.Path) && p.faultedReads[r.URL.Path] == 0
		if !first && (p.EveryRead == 0 || p.reads%p.EveryRead != 0) {
			return ""
		}
		f := "read " + readFaults[p.readsFaulted%len(readFaults)]
		p.readsFaulted++
		p.injected[f]++
		p.faultedReads[r.URL.Path]++
		return f
	}
	p.writes++
	if p.Every == 0 || p.writes%p.Every != 0 {
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
	return maps.Clone(p.injected)
}

// FaultedReads returns how many reads of each path were faulted.
func (p *FaultProxy) FaultedReads() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.faultedReads)
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
