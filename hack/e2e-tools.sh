#!/usr/bin/env bash
# Builds the real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler), kubectl, and kwok/kwokctl from their Go
# modules into a cache folder keyed by version, so that e2e tests run a real
# API server on machines without Docker (../shared/E2E-CLUSTER.md).
# A warm cache makes this a no-op. Prints the bin folder on stdout.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.5}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
# Outside the work tree, so fresh clones on a warm machine reuse it.
CACHE=${E2E_CACHE:-${MESHMIGRATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-meshmigrate}/e2e-tools}
BIN=$CACHE/bin-kube${KUBE_VERSION}-etcd${ETCD_VERSION}-kwok${KWOK_VERSION}
mkdir -p "$BIN"

log() { echo "e2e-tools: $*" >&2; }

staging_module() {
	# A throwaway module that requires k8s.io/kubernetes and maps each staging
	# replace (./staging/src/k8s.io/X) to the published k8s.io/X v0.Y.Z.
	local dir=$CACHE/src/kubernetes-$KUBE_VERSION
	local minor=v0.${KUBE_VERSION#v1.}
	if [ -f "$dir/.ready-with-kubectl" ]; then echo "$dir"; return; fi
	rm -rf "$dir" && mkdir -p "$dir"
	(
		cd "$dir"
		go mod init e2e-tools/kubernetes >/dev/null 2>&1
		go mod edit -require=k8s.io/kubernetes@"$KUBE_VERSION"
		local kmod
		kmod=$(go mod download -json k8s.io/kubernetes@"$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
		grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$kmod" | awk '{print $1}' | while read -r m; do
			go mod edit -replace="$m=$m@$minor"
		done
		cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
		go mod tidy >&2
	)
	touch "$dir/.ready-with-kubectl"
	echo "$dir"
}

build_kube() {
	local need=()
	for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
		[ -x "$BIN/$c" ] || need+=("$c")
	done
	[ ${#need[@]} -eq 0 ] && return
	local dir minor
	dir=$(staging_module)
	minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
	local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
	for c in "${need[@]}"; do
		log "building $c $KUBE_VERSION (several minutes on a cold cache)"
		(cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c")
	done
}

build_etcd() {
	[ -x "$BIN/etcd" ] && return
	local dir=$CACHE/src/etcd-$ETCD_VERSION
	rm -rf "$dir" && mkdir -p "$dir"
	log "building etcd $ETCD_VERSION"
	(
		cd "$dir"
		go mod init e2e-tools/etcd >/dev/null 2>&1
		cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
		go mod edit -require=go.etcd.io/etcd/server/v3@"$ETCD_VERSION"
		go mod tidy >&2
		CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
	)
}

build_kwok() {
	for c in kwok kwokctl; do
		[ -x "$BIN/$c" ] && continue
		log "building $c $KWOK_VERSION"
		GOBIN=$BIN CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/$c@$KWOK_VERSION"
	done
}

build_etcd
build_kwok
build_kube
echo "$BIN"
