#!/usr/bin/env bash
# The broker, flusher and operator images without Nix: the same entrypoints,
# user, ports, CA bundle and labels as flake.nix's dockerTools images, built
# from this checkout's release binaries into `docker save` archives under
# $KAFSCALE_CACHE/images (default ~/.cache/kafscale/images), which
# `docker load` and `ctr images import` both take. Where Nix works,
# `nix build .#broker-image` (and so on) is the reproducible path.
# KAFSCALE_PROFILE=debug packs debug builds instead (the test suite's).
#
#   scripts/build-images.sh [--load-docker] [--load-containerd SOCKET]
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
out=$cache/images
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { echo "no CA bundle at $ca: apt-get install ca-certificates" >&2; exit 1; }

profile=${KAFSCALE_PROFILE:-release}
case $profile in
  release) cargo_profile=(--release) ;;
  debug) cargo_profile=() ;;
  *) echo "KAFSCALE_PROFILE is release or debug, not $profile" >&2; exit 2 ;;
esac
cargo build "${cargo_profile[@]}" --locked -p kafscale-broker-server -p kafscale-flusher -p kafscale-operator \
  --bin kafscale-broker --bin kafscale-flusher --bin kafscale-operator

# name, port: as in flake.nix.
for spec in broker:9092 flusher:9095 operator:8080; do
  name=${spec%%:*} port=${spec##*:}
  scripts/image-archive.py -o "$out/kafscale-$name.tar" --tag "kafscale-$name:latest" --tag "kafscale-$name:$version" \
    --program "$CARGO_TARGET_DIR/$profile/kafscale-$name:/bin/kafscale-$name" \
    --file "$ca:/etc/ssl/certs/ca-bundle.crt" --empty-dir /tmp \
    --entrypoint "/bin/kafscale-$name" --user 65532:65532 --port "$port/tcp" \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt \
    --label "org.opencontainers.image.title=kafscale-$name" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.licenses=Apache-2.0"
done

while [ $# -gt 0 ]; do
  case $1 in
    --load-docker)
      for name in broker flusher operator; do docker load -i "$out/kafscale-$name.tar"; done ;;
    --load-containerd)
      for name in broker flusher operator; do
        ctr --address "$2" -n k8s.io images import "$out/kafscale-$name.tar"
      done
      shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
