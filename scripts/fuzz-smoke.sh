#!/usr/bin/env bash
# Runs every fuzz target for a short, bounded time (default 20 s each), from
# the seed corpus in fuzz/corpus. New inputs go to a temporary directory, not
# into the repository. A crash, a leak, an allocation over 1 GiB or RSS over
# 2 GiB fails the run and leaves the input under fuzz/artifacts/.
#   scripts/fuzz-smoke.sh [seconds-per-target] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
export PATH="$cache/cargo-fuzz/bin:$PATH"
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(kafka_request flusher_protocol record_batch segment)

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: run scripts/install-test-deps.sh" >&2; exit 1; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "the nightly toolchain is missing (rustup toolchain install nightly)" >&2; exit 1; }

target_dir="$cache/fuzz-target"
cd fuzz
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  echo "fuzzing $t for ${seconds}s"
  status=0
  cargo +nightly fuzz run -O --target-dir "$target_dir" "$t" "$work" "corpus/$t" -- \
    -max_total_time="$seconds" -malloc_limit_mb=1024 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$work.log" 2>&1 || status=$?
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|ERROR|SUMMARY|panicked" "$work.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$work.log" >&2
    echo "fuzz target $t failed (exit $status); the input is under fuzz/artifacts/$t" >&2
    rm -rf "$work" "$work.log"
    exit 1
  fi
  rm -rf "$work" "$work.log"
done
