#!/usr/bin/env bash
# Installs everything the test suite runs against, into ~/.cache/kafscale (or
# $KAFSCALE_CACHE): etcd, MinIO, kcat, a Python venv with confluent-kafka and
# pytest, Kafka's Java client and tool jars, the franz-go test client and
# cargo-fuzz (the fuzz targets need the nightly toolchain this machine has).
# Each step is skipped when its result is already there, so repeat runs are fast.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
mkdir -p "$cache/bin" "$cache/jars"
export GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOFLAGS=-mod=mod GOBIN="$cache/bin"
export GOCACHE="${GOCACHE:-$HOME/.cache/go-build}"

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
KAFKA_VERSIONS="3.9.1 4.1.1"
CONFLUENT_KAFKA_VERSION=2.12.2
HELM_VERSION=v3.19.0
KUBE_VERSION=1.34.3

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v kcat >/dev/null || need_apt+=(kcat)
command -v strace >/dev/null || need_apt+=(strace)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v nix-instantiate >/dev/null || need_apt+=(nix-bin)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$cache/bin/minio" ]; then
  log "building MinIO (first run only; several minutes)"
  go install "github.com/minio/minio@$MINIO_VERSION"
fi

if [ ! -x "$cache/venv/bin/pytest" ] || ! "$cache/venv/bin/python" -c "import confluent_kafka, yaml" 2>/dev/null; then
  log "python venv with pytest and confluent-kafka"
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q --disable-pip-version-check pytest pyyaml "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
fi

pom="$here/e2e/clients/java/pom.xml"
pom_hash=$(sha256sum "$pom" | cut -c1-12)
for v in $KAFKA_VERSIONS; do
  if [ ! -f "$cache/jars/kafka-$v/.complete-$pom_hash" ]; then
    log "Kafka $v client and tool jars"
    rm -rf "$cache/jars/kafka-$v"
    mvn -q -B -f "$pom" -Dmaven.repo.local="$cache/m2" \
      -Dkafka.version="$v" dependency:copy-dependencies -DoutputDirectory="$cache/jars/kafka-$v"
    touch "$cache/jars/kafka-$v/.complete-$pom_hash"
  fi
done

if [ ! -x "$cache/bin/helm" ]; then
  log "helm (first run only)"
  go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

log "kube-apiserver $KUBE_VERSION (first run only; several minutes)"
KUBE_VERSION=$KUBE_VERSION "$here/scripts/install-kube.sh" >/dev/null

if [ ! -x "$cache/cargo-fuzz/bin/cargo-fuzz" ]; then
  log "cargo-fuzz (first run only)"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$cache/cargo-fuzz"
fi

log "franz-go test client"
(cd "$here/e2e/clients/franz" && go build -o "$cache/bin/franz-client" .)

log "test dependencies ready in $cache"
