#!/usr/bin/env bash
# kind's node image built without any download (`kind build node-image`
# fetches its base image and kubeadm's images): the Debian base from
# scripts/install-cluster-deps.sh, kind's own base files from its module,
# Debian's containerd, runc and CNI plugins, the Kubernetes commands built
# here, and kubeadm's images (e2e/kind/local-images.sh) imported into the
# node's containerd. Needs a Docker engine (DOCKER_HOST) that can run
# privileged containers. Prints the image's name; a second run with the
# same inputs reuses it.
#
#   e2e/kind/node-image.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
export GOPATH="$cache/go" GOMODCACHE="$cache/go/mod"
bin=$cache/bin
kube_version=v${KUBE_VERSION:-1.34.3}
kind_version=v0.30.0
images=$cache/kind/images
rootfs=$cache/kind/rootfs
[ -f "$rootfs.complete" ] || { echo "no Debian base at $rootfs: run scripts/install-cluster-deps.sh" >&2; exit 1; }
e2e/kind/local-images.sh >/dev/null

# The image is named after everything that goes into it.
inputs=$( { cat "$0" e2e/kind/local-images.sh; sha256sum "$bin"/{kubeadm,kubelet,kubectl,crictl} "$images"/*.tar; } | sha256sum | cut -c1-12)
image=kafscale-e2e/kind-node:$kube_version-$inputs
if docker image inspect "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi

kind_src=$(go mod download -json "sigs.k8s.io/kind@$kind_version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
files=$kind_src/images/base/files
work=$(mktemp -d)
container=
cleanup() {
  [ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
node=$work/rootfs
echo "==> node root file system" >&2
cp -a "$rootfs" "$node"

# kind's base image, as its Dockerfile lays it out.
install -m 0755 "$files"/usr/local/bin/* "$node/usr/local/bin/"
mkdir -p "$node/kind/bin" "$node/etc/systemd/system/kubelet.service.d" "$node/etc/kubernetes/manifests" "$node/kind/manifests"
install -m 0755 "$files"/kind/bin/* "$node/kind/bin/"
install -m 0644 "$files"/etc/crictl.yaml "$node/etc/"
install -m 0644 "$files"/etc/containerd/* "$node/etc/containerd/"
install -m 0644 "$files"/etc/default/* "$node/etc/default/"
install -m 0644 "$files"/etc/sysctl.d/* "$node/etc/sysctl.d/"
install -m 0644 "$files"/etc/systemd/system/*.service "$files"/etc/systemd/system/*.slice "$node/etc/systemd/system/"
install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$node/etc/systemd/system/kubelet.service.d/"
rm -f "$node/etc/systemd/system/containerd-fuse-overlayfs.service"
# Debian's containerd, runc and CNI plugins where kind's units and
# containerd look for its own builds.
ln -sf /usr/bin/containerd "$node/usr/local/bin/containerd"
mkdir -p "$node/opt/cni"
ln -sfn /usr/lib/cni "$node/opt/cni/bin"
# This kind of VM has no CAP_SYS_RESOURCE: containerd must not lower
# oom_score_adj; the sandbox image is kubeadm 1.34's pause; no
# fuse-overlayfs snapshotter is installed.
python3 - "$node/etc/containerd/config.toml" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r'(?s)\[proxy_plugins\].*?(?=\n\[plugins)', '', text)
text = text.replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true")
text = re.sub(r'sandbox_image = "[^"]*"', 'sandbox_image = "registry.k8s.io/pause:3.10.1"', text)
open(path, "w").write(text)
EOF
# The base runtime spec kind generates with `ctr oci spec`: with its hook
# that mounts the product files, without rlimits (which need
# CAP_SYS_RESOURCE to raise).
ctr oci spec | python3 -c '
import json, sys
spec = json.load(sys.stdin)
spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
spec["process"].pop("rlimits", None)
json.dump(spec, sys.stdout, indent=2)
' > "$node/etc/containerd/cri-base.json"
# systemd as kind runs it in a container.
find "$node/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
rm -f "$node"/lib/systemd/system/multi-user.target.wants/* "$node"/etc/systemd/system/*.wants/* \
  "$node"/lib/systemd/system/local-fs.target.wants/* "$node"/lib/systemd/system/sockets.target.wants/*udev* \
  "$node"/lib/systemd/system/sockets.target.wants/*initctl* "$node"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >> "$node/etc/systemd/journald.conf"
ln -sf /lib/systemd/systemd "$node/sbin/init"
for unit in kubelet.service containerd.service undo-mount-hacks.service; do
  mkdir -p "$node/etc/systemd/system/multi-user.target.wants"
  ln -sf "/etc/systemd/system/$unit" "$node/etc/systemd/system/multi-user.target.wants/$unit"
done
ln -sf /dev/null "$node/etc/systemd/system/systemd-binfmt.service"

# Kubernetes, as `kind build node-image` installs it.
for cmd in kubeadm kubelet kubectl; do install -m 0755 "$bin/$cmd" "$node/usr/bin/$cmd"; done
install -m 0755 "$bin/crictl" "$node/usr/local/bin/crictl"
printf '%s' "$kube_version" > "$node/kind/version"
# kindnetd is not on any registry reachable here: clusters are created with
# `networking.disableDefaultCNI` and this bridge network serves the one
# node (kind's default pod subnet).
mkdir -p "$node/etc/cni/net.d"
cat > "$node/etc/cni/net.d/10-bridge.conflist" <<'EOF'
{
  "cniVersion": "1.0.0",
  "name": "kind-bridge",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
echo "# kindnetd is replaced by /etc/cni/net.d/10-bridge.conflist" > "$node/kind/manifests/default-cni.yaml"
# No default-storage.yaml: without it kind creates the StorageClass
# "standard" on the host-path provisioner its controller-manager enables,
# instead of local-path-provisioner's image, which is not on any registry
# reachable here.

echo "==> base image" >&2
base=kafscale-e2e/kind-base:$inputs
tar -C "$node" --numeric-owner -c . | docker import \
  --change 'ENV container=docker' \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' - "$base" >/dev/null

echo "==> kubeadm's images into the node's containerd" >&2
container=$(docker run -d --privileged --entrypoint sleep "$base" infinity)
docker exec -d "$container" containerd
for _ in $(seq 100); do docker exec "$container" ctr version >/dev/null 2>&1 && break; sleep 0.2; done
for archive in "$images"/*.tar; do
  docker exec -i "$container" ctr --namespace=k8s.io images import --all-platforms --snapshotter=overlayfs - < "$archive" >/dev/null
done
docker exec "$container" ctr --namespace=k8s.io images ls -q >&2
docker exec "$container" pkill containerd || true
sleep 1
docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' "$container" "$image" >/dev/null
docker rm -f "$container" >/dev/null
container=
docker rmi "$base" >/dev/null
# Node images of earlier inputs would pile up in the cached engine.
docker images --format '{{.Repository}}:{{.Tag}}' kafscale-e2e/kind-node | grep -vxF "$image" |
  xargs -r docker rmi >/dev/null || true
echo "$image"
