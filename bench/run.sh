#!/usr/bin/env bash
# Kafscale vs Apache Kafka on this machine (see bench/compare.py). Installs the
# test dependencies (etcd, MinIO, Kafka jars) if needed, builds release
# binaries, and prints one Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
scripts/install-test-deps.sh
cargo build --release --locked --bins
KAFSCALE_PROFILE=release "$cache/venv/bin/python" bench/compare.py "$@"
