#!/usr/bin/env bash
# Builds kube-apiserver from the k8s.io/kubernetes Go module (the way envtest
# gets a real API server without containers) into $KAFSCALE_CACHE/bin. The
# kubernetes module refers to its staging modules as v0.0.0; the replace lines
# generated here point each at its published v0.MINOR.PATCH.
set -euo pipefail

cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
version=${KUBE_VERSION:-1.34.3}
out="$cache/bin/kube-apiserver"
[ -x "$out" ] && "$out" --version 2>/dev/null | grep -q "v$version" && exit 0

export GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOFLAGS=-mod=mod
work="$cache/kube-build-$version"
mkdir -p "$work" "$cache/bin"
cd "$work"

gomod=$(go mod download -json "k8s.io/kubernetes@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
staging_version="v0.${version#1.}"
{
  echo "module kafscale.io/kube-apiserver-build"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes v$version"
  echo
  grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}' | sort -u
} > go.mod
echo 'package tools' > tools.go
go build -ldflags "-X k8s.io/component-base/version.gitVersion=v$version" -o "$out" k8s.io/kubernetes/cmd/kube-apiserver
"$out" --version
