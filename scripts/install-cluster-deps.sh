#!/usr/bin/env bash
# Builds what a real single-node Kubernetes cluster needs on a machine that
# can reach package registries but no image registry or GitHub, into
# $KAFSCALE_CACHE (default ~/.cache/kafscale): the container engine's Debian
# packages, Kubernetes' commands from the k8s.io/kubernetes module, kind,
# crictl, etcd and CoreDNS from their modules, the pause program, and a Debian
# base for kind's node image (debootstrap). Each step is
# skipped when its result is there, so a warm run takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
export KAFSCALE_CACHE=$cache GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" CGO_ENABLED=0
kube_version=${KUBE_VERSION:-1.34.3}
kind_version=v0.30.0
crictl_version=v1.34.0
# The versions kubeadm 1.34 deploys (cmd/kubeadm/app/constants).
etcd_version=3.6.5
coredns_version=v1.12.1
pause_version=3.10.1
bin=$cache/bin
mkdir -p "$bin"
log() { echo "==> $*" >&2; }

packages=(runc containerd docker.io containernetworking-plugins iptables nftables conntrack socat debootstrap)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "Kubernetes $kube_version commands (first run only; several minutes)"
KUBE_VERSION=$kube_version "$here/scripts/install-kube.sh" \
  kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl

stamp() { [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }
built() { echo "$2" > "$bin/.$1.version"; }

go_install() {  # go_install NAME VERSION PACKAGE
  stamp "$1" "$2" && return
  log "$1 $2"
  GOBIN=$bin go install -ldflags "-s -w" "$3@$2"
  built "$1" "$2"
}
go_install kind $kind_version sigs.k8s.io/kind
go_install crictl $crictl_version sigs.k8s.io/cri-tools/cmd/crictl
go_install coredns $coredns_version github.com/coredns/coredns

if ! stamp etcd $etcd_version; then
  log "etcd $etcd_version"
  work=$cache/etcd-build-$etcd_version
  mkdir -p "$work"
  # etcd's own main package lives in a module with replace directives,
  # which `go install` refuses; its server module exports the same Main.
  cat > "$work/go.mod" <<EOF
module kafscale.io/etcd-build

go 1.24

require go.etcd.io/etcd/server/v3 v$etcd_version
EOF
  cat > "$work/main.go" <<'EOF'
// etcd, as its release binary runs it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 && GOFLAGS=-mod=mod go build -ldflags "-s -w" -o "$bin/etcd" .)
  built etcd $etcd_version
fi

if ! stamp pause $pause_version; then
  log "pause $pause_version"
  src=$(go mod download -json "k8s.io/kubernetes@v$kube_version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  gcc -Os -static -DVERSION=v$pause_version -o "$bin/pause" "$src/build/pause/linux/pause.c"
  built pause $pause_version
fi
rootfs=$cache/kind/rootfs
if [ ! -f "$rootfs.complete" ]; then
  log "Debian base of the kind node (debootstrap)"
  rm -rf "$rootfs"
  mkdir -p "$cache/kind"
  # What kind's base image installs, with Debian's containerd, runc and CNI
  # plugins in place of its own builds.
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,conntrack,libseccomp2,pigz,bash,ca-certificates,procps,socat,jq,curl \
    bookworm "$rootfs" http://deb.debian.org/debian > "$cache/kind/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/kind/debootstrap.log" >&2; exit 1; }
  touch "$rootfs.complete"
fi
toolbox=$cache/kind/toolbox
if [ ! -f "$toolbox.complete" ]; then
  log "Debian base of the suite's client toolbox (debootstrap)"
  rm -rf "$toolbox"
  # Python for the history client (confluent-kafka comes from the test
  # venv), a Java runtime for Kafka's own tools, kcat, curl for S3 listings.
  debootstrap --variant=minbase \
    --include=python3,openjdk-17-jre-headless,kcat,curl,jq,ca-certificates,procps \
    bookworm "$toolbox" http://deb.debian.org/debian > "$cache/kind/debootstrap-toolbox.log" 2>&1 ||
    { tail -20 "$cache/kind/debootstrap-toolbox.log" >&2; exit 1; }
  rm -rf "$toolbox"/var/cache/apt/archives/*.deb "$toolbox"/usr/share/doc "$toolbox"/usr/share/locale
  touch "$toolbox.complete"
fi
log "cluster dependencies ready in $cache"
