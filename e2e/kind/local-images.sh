#!/usr/bin/env bash
# The images a kind cluster needs, built here instead of pulled: kubeadm's
# control plane (apiserver, controller-manager, scheduler, kube-proxy, etcd,
# CoreDNS, pause, under the registry.k8s.io names kubeadm 1.34 asks for),
# MinIO and a toolbox for the test clients, each a `docker save` archive in
# $KAFSCALE_CACHE/kind/images. The programs come from
# scripts/install-cluster-deps.sh and scripts/install-test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
bin=$cache/bin
out=$cache/kind/images
rootfs=$cache/kind/rootfs
kube_version=v${KUBE_VERSION:-1.34.3}
mkdir -p "$out"
archive() { scripts/image-archive.py "$@" >/dev/null; }
path=PATH=/usr/local/bin:/usr/bin:/bin

for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  archive -o "$out/$cmd.tar" --tag "registry.k8s.io/$cmd:$kube_version" \
    --program "$bin/$cmd:/usr/local/bin/$cmd" --env "$path" --entrypoint "/usr/local/bin/$cmd"
done
# kube-proxy programs the node's iptables, so it needs iptables' programs
# and their libraries: the node's own Debian base holds them.
archive -o "$out/kube-proxy.tar" --tag "registry.k8s.io/kube-proxy:$kube_version" \
  --dir "$rootfs:/" --program "$bin/kube-proxy:/usr/local/bin/kube-proxy" --entrypoint /usr/local/bin/kube-proxy
# The clients' toolbox: kcat and confluent-kafka (librdkafka), Kafka's Java
# tools, curl and jq. The Python package is the test venv's (same Python).
site=$(echo "$cache"/venv/lib/python3*/site-packages)
py=$(basename "$(dirname "$site")")
kafka_jars=$cache/jars/kafka-${KAFKA_VERSION:-4.1.1}
[ -d "$site/confluent_kafka" ] && [ -d "$kafka_jars" ] ||
  { echo "no confluent-kafka in $site or no $kafka_jars: run scripts/install-test-deps.sh" >&2; exit 1; }
[ -x "$cache/kind/toolbox/usr/bin/$py" ] ||
  { echo "the toolbox base has no $py (the venv's): rerun scripts/install-cluster-deps.sh" >&2; exit 1; }
archive -o "$out/toolbox.tar" --tag kafscale-e2e/toolbox:local --dir "$cache/kind/toolbox:/" \
  --dir "$kafka_jars:/opt/kafka/libs" \
  --dir "$site/confluent_kafka:/usr/local/lib/$py/dist-packages/confluent_kafka" \
  --dir "$site/confluent_kafka.libs:/usr/local/lib/$py/dist-packages/confluent_kafka.libs" \
  --env "$path" --entrypoint /bin/sh
archive -o "$out/etcd.tar" --tag registry.k8s.io/etcd:3.6.5-0 --tag kafscale-e2e/etcd:3.6.5 \
  --program "$bin/etcd:/usr/local/bin/etcd" --env "$path" --empty-dir /tmp --empty-dir /var/lib/etcd
# Root without file capabilities: kubeadm's CoreDNS Deployment drops every
# capability but NET_BIND_SERVICE, which binding port 53 needs (the
# registry's image grants it as a file capability instead).
archive -o "$out/coredns.tar" --tag registry.k8s.io/coredns/coredns:v1.12.1 \
  --program "$bin/coredns:/coredns" --entrypoint /coredns
archive -o "$out/pause.tar" --tag registry.k8s.io/pause:3.10.1 \
  --program "$bin/pause:/pause" --entrypoint /pause --user 65535:65535
archive -o "$out/minio.tar" --tag kafscale-e2e/minio:local \
  --program "$bin/minio:/usr/local/bin/minio" --env "$path" --empty-dir /data --empty-dir /tmp \
  --entrypoint /usr/local/bin/minio
ls -la "$out"
