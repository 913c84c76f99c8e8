# kubectl-meshmigrate. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

BIN        := bin/kubectl-meshmigrate
# Built tools are cached outside the work tree so fresh clones reuse them.
CACHE      ?= $(or $(MESHMIGRATE_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kubectl-meshmigrate)
GOBIN_DIR  := $(CACHE)/tools
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
DATE       ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG        := github.com/meshmigrate/kubectl-meshmigrate/pkg/cli
LDFLAGS    := -s -w -X $(PKG).version=$(VERSION) -X $(PKG).commit=$(COMMIT) -X $(PKG).date=$(DATE)

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(GOBIN_DIR)/staticcheck-$(STATICCHECK_VERSION)
# v2.16 and v2.17 depend (through nfpm's msix support) on a module our Go
# module proxy refuses to serve; v2.15.0 is the newest that installs here.
GORELEASER_VERSION := v2.15.0
GORELEASER := $(GOBIN_DIR)/goreleaser-$(GORELEASER_VERSION)

E2E_PROVIDER ?= kwok

.PHONY: help build test unit prometheus e2e e2e-tools demo demo-down lint fmt vet staticcheck bench bench-estate release-snapshot verify-release clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## Build bin/kubectl-meshmigrate
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/kubectl-meshmigrate

test: lint verify-release unit e2e ## Everything CI runs: lint, the release check, unit and e2e tests

unit: ## Unit tests (no cluster needed)
	go test -count=1 ./...

e2e-tools: ## Build the local control plane (etcd, kube-*, kubectl, kwok), cached by version
	bash hack/e2e-tools.sh

prometheus: ## Install a real Prometheus for the e2e suite and demo (Debian's package) if none is on PATH
	@command -v prometheus >/dev/null || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@prometheus --version 2>&1 | head -1

e2e: prometheus ## E2E tests against a real API server (E2E_PROVIDER=kwok, default, or kind)
	E2E_PROVIDER=$(E2E_PROVIDER) go test -tags e2e -count=1 -timeout 40m -v ./test/e2e/

demo: build prometheus ## Start a local cluster mid-migration; audit it, plan it, apply the plan to one namespace, show the status
	go build -o bin/meshmigrate-demo ./hack/demo
	kubeconfig=$$(bin/meshmigrate-demo up); \
	prom=$$(cat .cache/demo/prometheus-url); \
	tools=$$(bash hack/e2e-tools.sh 2>/dev/null); \
	export KUBECONFIG=$$kubeconfig PATH="$(CURDIR)/bin:$$PATH:$$tools"; \
	step() { echo; echo "$$ $$*"; code=0; "$$@" || code=$$?; echo "(exit code $$code)"; }; \
	step kubectl meshmigrate audit -A --prometheus-url $$prom --traffic-window 1m; [ $$code -le 2 ] || exit 1; \
	echo; echo "$$ kubectl meshmigrate plan -A --prometheus-url $$prom --traffic-window 1m -o yaml > .cache/demo/plan.yaml"; \
	code=0; kubectl meshmigrate plan -A --prometheus-url $$prom --traffic-window 1m -o yaml > .cache/demo/plan.yaml || code=$$?; \
	echo "(exit code $$code: 2 means some steps are blocked, each with its reason)"; [ $$code -le 2 ] || exit 1; \
	step kubectl meshmigrate plan -A --prometheus-url $$prom --traffic-window 1m -o table; \
	step kubectl meshmigrate apply -f .cache/demo/plan.yaml -n legacy --through permissive --yes; [ $$code -eq 0 ] || exit 1; \
	step kubectl meshmigrate status -A; \
	echo; echo "The demo cluster stays up. To use it:"; \
	echo "  export KUBECONFIG=$$kubeconfig PATH=$(CURDIR)/bin:\$$PATH:$$tools"; \
	echo "  kubectl meshmigrate audit -A -o wide --prometheus-url $$prom --traffic-window 1m"; \
	echo "  kubectl meshmigrate rollback -n legacy --all --yes"; \
	echo "To tear it down:  make demo-down"

demo-down: ## Delete the demo cluster and stop its stand-ins and Prometheus
	go build -o bin/meshmigrate-demo ./hack/demo
	bin/meshmigrate-demo down

lint: fmt vet staticcheck ## gofmt, go vet and staticcheck

fmt:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi

vet:
	go vet -tags e2e ./...

$(STATICCHECK):
	mkdir -p $(GOBIN_DIR)
	GOBIN=$(GOBIN_DIR) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(GOBIN_DIR)/staticcheck $@

staticcheck: $(STATICCHECK)
	$(STATICCHECK) -tags e2e ./...

$(GORELEASER):
	mkdir -p $(GOBIN_DIR)/goreleaser-build
	GOBIN=$(GOBIN_DIR)/goreleaser-build go install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)
	mv $(GOBIN_DIR)/goreleaser-build/goreleaser $@

release-snapshot: $(GORELEASER) ## Build every release archive into dist/ (goreleaser --snapshot)
	$(GORELEASER) check
	GIT_COMMIT=$(COMMIT) $(GORELEASER) release --snapshot --clean

verify-release: release-snapshot ## Render the krew manifest from dist/, check it as krew would, install and run it
	go run ./hack/krew render -dist dist -template krew/meshmigrate.yaml -out dist/krew/meshmigrate.yaml
	go run ./hack/krew verify -dist dist -manifest dist/krew/meshmigrate.yaml
	root=$$(mktemp -d); trap 'rm -rf "$$root"' EXIT; \
	go run ./hack/krew install -dist dist -manifest dist/krew/meshmigrate.yaml -os linux -arch amd64 -root "$$root"; \
	tools=$$(bash hack/e2e-tools.sh 2>/dev/null || true); \
	echo '$$ kubectl meshmigrate version'; \
	PATH="$$root/bin:$$PATH:$$tools" kubectl meshmigrate version; \
	PATH="$$root/bin:$$PATH:$$tools" kubectl meshmigrate version -o json | tee "$$root/version.json"; \
	grep -q '"commit": "$(COMMIT)"' "$$root/version.json" && grep -q '"version": "0\.[0-9.]*-snapshot+$(COMMIT)"' "$$root/version.json"

bench: ## Benchmarks with time and allocations per operation
	go test -run '^$$' -bench . -benchmem ./...

bench-estate: build ## Time audit -A and plan -A against a raw list of every pod on a local cluster of 5k, 10k and 20k pods (about 6 minutes; a benchmark, not a test)
	go run ./hack/bench-estate run -plugin $(BIN)

clean:
	rm -rf bin dist
