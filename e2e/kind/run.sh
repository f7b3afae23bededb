#!/usr/bin/env bash
# The kind suite: a real Kubernetes cluster in Docker running Kafscale end to
# end. It needs docker, kind, kubectl, helm and nix (for the images); it cannot
# run on machines without a Docker engine. Run from the repository root:
#
#   e2e/kind/run.sh            # create, test, tear down
#   KEEP=1 e2e/kind/run.sh     # leave the cluster up for inspection
set -euo pipefail
cd "$(dirname "$0")/../.."

name=${KIND_CLUSTER:-kafscale-e2e}
ns=kafscale-e2e
cleanup() { [ -n "${KEEP:-}" ] || kind delete cluster --name "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "==> kind cluster $name"
kind create cluster --name "$name" --wait 120s

echo "==> images (nix build)"
for img in broker flusher operator; do
  nix build ".#${img}-image" -o "result-$img"
  docker load < "result-$img"
  kind load docker-image "kafscale-$img:latest" --name "$name"
done

echo "==> MinIO"
kubectl create namespace minio
kubectl -n minio apply -f e2e/kind/minio.yaml
kubectl -n minio rollout status deploy/minio --timeout=180s

echo "==> operator (Helm chart)"
kubectl create namespace "$ns"
helm install kafscale charts/kafscale --namespace "$ns" \
  --set image.repository=kafscale-operator --set image.tag=latest --set image.pullPolicy=Never --wait

echo "==> KafscaleCluster and KafscaleTopic"
kubectl -n "$ns" apply -f crds/samples/dev-cluster.yaml
kubectl -n "$ns" patch kafscalecluster dev --type merge -p \
  '{"spec":{"images":{"broker":"kafscale-broker:latest","flusher":"kafscale-flusher:latest"}}}'
kubectl -n "$ns" wait kafscalecluster/dev --for=condition=Ready --timeout=300s
kubectl -n "$ns" wait kafscaletopic/orders --for=condition=Ready --timeout=120s

echo "==> produce and consume from a pod"
kubectl -n "$ns" apply -f e2e/kind/client-job.yaml
kubectl -n "$ns" wait job/kafscale-client --for=condition=Complete --timeout=300s
kubectl -n "$ns" logs job/kafscale-client | tee /dev/stderr | grep -q "consumed 1000 records"

echo "==> conditions"
kubectl -n "$ns" get kafscalecluster dev -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True
echo "kind suite passed"
