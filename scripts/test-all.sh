#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (scripts/install-test-deps.sh), checks formatting and lints, runs the Rust
# unit and integration tests, runs every fuzz target briefly, then the
# end-to-end suites against real etcd,
# MinIO, Kafka clients and the broker and flusher binaries.
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
"$cache/venv/bin/pytest" -q -p no:cacheprovider e2e/tests "$@"
