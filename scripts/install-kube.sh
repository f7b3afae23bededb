#!/usr/bin/env bash
# Builds Kubernetes commands from the k8s.io/kubernetes Go module into
# $KAFSCALE_CACHE/bin: kube-apiserver alone by default (the way envtest gets a
# real API server without containers), or the commands named as arguments
# (the real-cluster suite's kubelet, kubeadm, kube-controller-manager, ...).
# The kubernetes module refers to its staging modules as v0.0.0; the replace
# lines generated here point each at its published v0.MINOR.PATCH. Static
# (CGO_ENABLED=0), so they also run in images without a C library.
#
#   scripts/install-kube.sh [COMMAND...]
set -euo pipefail

cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
version=${KUBE_VERSION:-1.34.3}
commands=("$@")
[ ${#commands[@]} -gt 0 ] || commands=(kube-apiserver)

missing=()
for cmd in "${commands[@]}"; do
  # A stamp per command and version (kubeadm and kubectl have no --version).
  [ -x "$cache/bin/$cmd" ] && { [ "$(cat "$cache/bin/.$cmd.version" 2>/dev/null)" = "v$version" ] ||
    "$cache/bin/$cmd" --version 2>/dev/null | grep -q "v$version\$"; } || missing+=("$cmd")
done
[ ${#missing[@]} -gt 0 ] || exit 0

export GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOFLAGS=-mod=mod CGO_ENABLED=0
work="$cache/kube-build-$version"
mkdir -p "$work" "$cache/bin"
cd "$work"

gomod=$(go mod download -json "k8s.io/kubernetes@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
staging_version="v0.${version#1.}"
{
  echo "module kafscale.io/kube-build"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes v$version"
  echo
  grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}' | sort -u
} > go.mod
echo 'package tools' > tools.go
minor=${version#1.} minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=v$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done
for cmd in "${missing[@]}"; do
  go build -ldflags "$ldflags" -o "$cache/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  echo "v$version" > "$cache/bin/.$cmd.version"
done
"$cache/bin/${missing[0]}" --version 2>/dev/null || true
