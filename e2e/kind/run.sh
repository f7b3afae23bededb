#!/usr/bin/env bash
# The kind suite: a real Kubernetes cluster in Docker running Kafscale end to
# end. Run from the repository root:
#
#   e2e/kind/run.sh            # create, test, tear down
#   KEEP=1 e2e/kind/run.sh     # leave the cluster up for inspection
#   KIND_SCENARIOS="clients scaling" e2e/kind/run.sh   # only these scenarios
#
# Images: with a working `nix`, the flake's; otherwise scripts/build-images.sh
# builds the same ones from release binaries. MinIO, etcd and the client
# toolbox come from e2e/kind/local-images.sh, whose programs and Debian base
# scripts/install-cluster-deps.sh provides (run it first, with or without
# internet access). Without DOCKER_HOST or a running Docker the suite
# starts a Docker engine of its own in a network namespace with no route
# out (scripts/container-engine.sh) and builds kind's node image offline
# (e2e/kind/node-image.sh; KIND_NODE_IMAGE names another one); needs kind,
# kubectl and helm on PATH or from scripts/install-cluster-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
export PATH=$PATH:$cache/bin
name=${KIND_CLUSTER:-kafscale-e2e}
ns=kafscale-e2e
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig
own_engine=
if [ -z "${DOCKER_HOST:-}" ] && ! docker info >/dev/null 2>&1; then
  echo "==> Docker engine (network namespace of its own)"
  eval "$(scripts/container-engine.sh start)"
  own_engine=1
fi
# Every docker, kind, kubectl and helm call runs where the engine's network is.
in_engine() { if [ -n "$own_engine" ]; then scripts/container-engine.sh exec "$@"; else "$@"; fi; }
# On a failure, what a person would look at first, before the cluster goes.
diagnose() {
  echo "==> diagnostics" >&2
  in_engine kubectl get pods -A -o wide >&2 || true
  in_engine kubectl -n "$ns" get kafscaleclusters,kafscaletopics,statefulsets,jobs >&2 || true
  in_engine kubectl -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -40 >&2 || true
  for pod in $(in_engine kubectl -n "$ns" get pods -o name 2>/dev/null | grep -E 'broker|operator|client'); do
    echo "--- $pod" >&2
    in_engine kubectl -n "$ns" logs "$pod" --all-containers --tail=30 --prefix >&2 || true
  done
}
cleanup() {
  status=$?
  [ "$status" -eq 0 ] || [ ! -f "$KUBECONFIG" ] || diagnose
  if [ -z "${KEEP:-}" ]; then
    in_engine kind delete cluster --name "$name" >/dev/null 2>&1 || true
    [ -z "$own_engine" ] || scripts/container-engine.sh stop
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> images"
if nix --version >/dev/null 2>&1 && nix build ".#broker-image" -o "$work/result-broker" 2>/dev/null; then
  for img in broker flusher operator; do
    nix build ".#${img}-image" -o "$work/result-$img"
    in_engine docker load -i "$work/result-$img"
    in_engine docker tag "kafscale-$img:latest" "kafscale-$img:e2e"
  done
else
  scripts/build-images.sh
  for img in broker flusher operator; do
    in_engine docker load -i "$cache/images/kafscale-$img.tar" >/dev/null
    in_engine docker tag "kafscale-$img:latest" "kafscale-$img:e2e"
  done
fi
# Earlier runs' builds, now untagged, would pile up in the cached engine.
in_engine docker image prune -f >/dev/null
e2e/kind/local-images.sh >/dev/null

echo "==> kind cluster $name"
config=$work/kind.yaml
echo "kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4" > "$config"
if [ -n "${KIND_NODE_IMAGE:-}" ]; then
  node_image=$KIND_NODE_IMAGE
elif [ -n "$own_engine" ]; then
  node_image=$(in_engine e2e/kind/node-image.sh)
  # That node image has a bridge network in place of kindnetd, and holds
  # the suite's MinIO, etcd and toolbox images already.
  printf 'networking:\n  disableDefaultCNI: true\n' >> "$config"
  images_in_node=1
fi
in_engine kind create cluster --name "$name" ${node_image:+--image "$node_image"} --config "$config" \
  --kubeconfig "$KUBECONFIG" --wait 120s
# A tag other than latest, so that pods take the loaded images rather than
# pulling (Kubernetes pulls :latest always). The rolling-change scenario
# moves the brokers to a second tag of the same image.
in_engine docker tag kafscale-broker:e2e kafscale-broker:e2e-b
in_engine docker save kafscale-broker:e2e kafscale-broker:e2e-b kafscale-flusher:e2e kafscale-operator:e2e \
  -o "$work/kafscale.tar"
in_engine kind load image-archive "$work/kafscale.tar" --name "$name"
if [ -z "${images_in_node:-}" ]; then
  for archive in minio etcd toolbox; do
    in_engine kind load image-archive "$cache/kind/images/$archive.tar" --name "$name"
  done
fi

echo "==> MinIO"
in_engine kubectl create namespace minio
in_engine kubectl -n minio apply -f e2e/kind/minio.yaml
in_engine kubectl -n minio rollout status deploy/minio --timeout=180s
in_engine kubectl -n minio wait job/make-bucket --for=condition=Complete --timeout=120s

echo "==> operator (Helm chart)"
in_engine kubectl create namespace "$ns"
in_engine helm install kafscale charts/kafscale --namespace "$ns" \
  --set image.repository=kafscale-operator --set image.tag=e2e --set image.pullPolicy=Never --wait

echo "==> KafscaleCluster and KafscaleTopic"
# The sample with the loaded images: set before the first pods exist, so no
# pod waits on an image it cannot pull.
python3 - crds/samples/dev-cluster.yaml > "$work/dev-cluster.yaml" <<'EOF'
import sys
text = open(sys.argv[1]).read()
images = ("  images:\n    broker: kafscale-broker:e2e\n    flusher: kafscale-flusher:e2e\n"
          "    etcd: kafscale-e2e/etcd:3.6.5\n")
marker = "  brokers:\n    replicas: 1\n"
config = "  config:\n    flushIntervalMs: 5\n"
assert marker in text and config in text, "crds/samples/dev-cluster.yaml changed: update e2e/kind/run.sh"
# Intake objects compacted into segments soon, so the topic scenario sees a
# topic's own objects come and go.
text = text.replace(config, config + "    intakeCompactionDelayMs: 15000\n")
sys.stdout.write(text.replace(marker, marker + images))
EOF
in_engine kubectl -n "$ns" apply -f "$work/dev-cluster.yaml"
in_engine kubectl -n "$ns" wait kafscalecluster/dev --for=condition=Ready --timeout=300s
in_engine kubectl -n "$ns" wait kafscaletopic/orders --for=condition=Ready --timeout=120s

echo "==> produce and consume from a pod"
in_engine kubectl -n "$ns" apply -f e2e/kind/client-job.yaml
in_engine kubectl -n "$ns" wait job/kafscale-client --for=condition=Complete --timeout=300s
# `logs job/…` would show the Job's first pod, which may be a failed attempt:
# read the one that succeeded (it read at least 1000: a failed attempt may
# have produced its own 1000 first), and show every failed attempt's logs.
for failed in $(in_engine kubectl -n "$ns" get pods -l job-name=kafscale-client \
    --field-selector=status.phase=Failed -o name); do
  echo "--- $failed failed; the Job retried it:" >&2
  in_engine kubectl -n "$ns" logs "$failed" >&2 || true
done
succeeded=$(in_engine kubectl -n "$ns" get pods -l job-name=kafscale-client \
  --field-selector=status.phase=Succeeded -o jsonpath='{.items[0].metadata.name}')
in_engine kubectl -n "$ns" logs "$succeeded" | tee /dev/stderr | grep -qE "consumed [0-9]+ records"

echo "==> conditions"
in_engine kubectl -n "$ns" get kafscalecluster dev -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True

echo "==> scenarios (e2e/kind/scenarios.py)"
in_engine python3 e2e/kind/scenarios.py --namespace "$ns" ${KIND_SCENARIOS:-}
echo "kind suite passed"
