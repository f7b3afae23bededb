#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (scripts/install-test-deps.sh), checks formatting and lints, runs the Rust
# unit and integration tests, runs every fuzz target briefly, then the
# end-to-end suites against real etcd, MinIO, Kafka clients and the broker
# and flusher binaries, and last the kind suite in a real Kubernetes cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
# Builds are cached across clones and runs, like the downloads.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}

step() { printf '\n==== %s\n' "$*"; }

step "installing test dependencies"
scripts/install-test-deps.sh

step "cargo fmt"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "fuzz targets, briefly (scripts/fuzz-smoke.sh)"
scripts/fuzz-smoke.sh "${KAFSCALE_FUZZ_SECONDS:-20}"

step "building binaries for the end-to-end suites"
cargo build --workspace --locked --bins

step "end-to-end suites (etcd + MinIO + flusher + broker + real clients)"
# MinIO refuses every write once its drive is nearly full (under about 1 GiB
# free), which would fail the suites with storage errors far from the cause.
tmp=${TMPDIR:-/tmp}
free_mib=$(df -Pm "$tmp" | awk 'NR == 2 { print $4 }')
echo "${free_mib} MiB free under $tmp"
if [ "$free_mib" -lt 3072 ]; then
  echo "warning: the end-to-end suites want about 3 GiB free under $tmp; MinIO refuses writes" \
    "near a full disk (XMinioStorageFull). Free some space or point TMPDIR elsewhere." >&2
fi
# Temp directories of passed tests are removed as the suite goes.
"$cache/venv/bin/pytest" -q -p no:cacheprovider -o tmp_path_retention_policy=failed \
  -o tmp_path_retention_count=1 e2e/tests "$@"

step "a real Kubernetes cluster (kind): e2e/kind/run.sh"
# Kubernetes' commands, kind, etcd, CoreDNS and a Debian base for the node,
# built or fetched once into the cache; the cluster runs in a Docker engine
# of the suite's own, in a network namespace with no route off the machine.
scripts/install-cluster-deps.sh
KAFSCALE_PROFILE=debug e2e/kind/run.sh
