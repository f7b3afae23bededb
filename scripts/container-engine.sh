#!/usr/bin/env bash
# A Docker engine of the test suite's own, in a network namespace of its own,
# so that nothing a container does can send a packet off this machine (the
# namespace has a loopback and no route out) and nothing of the host's
# network configuration changes. Its data root is kept under the cache, so
# images built or loaded once stay for the next run.
#
#   scripts/container-engine.sh start   # prints the environment to use it
#   scripts/container-engine.sh stop    # stops the daemons, removes the namespace, restores sysctls
#   scripts/container-engine.sh exec CMD...  # runs CMD in the namespace with DOCKER_HOST set
#
# Kubernetes in containers (kind) changes a few global kernel settings from
# inside its node (kubelet sets vm.overcommit_memory, kernel.panic and
# kernel.panic_on_oops; systemd applies its sysctl.d); `start` saves them and
# `stop` puts them back.
set -euo pipefail

cache=${KAFSCALE_CACHE:-$HOME/.cache/kafscale}
netns=${KAFSCALE_NETNS:-kafscale-engine}
run=/run/$netns
root=$cache/engine
sock=$run/docker.sock
saved=$run/sysctls
# Global settings a node's kubelet or systemd may change.
sysctls=(vm.overcommit_memory kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes fs.inotify.max_user_watches fs.inotify.max_user_instances
  fs.protected_hardlinks fs.protected_symlinks fs.protected_regular fs.protected_fifos
  kernel.sysrq net.core.somaxconn)

in_netns() { nsenter --net="/run/netns/$netns" "$@"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "$what did not come up; see $run/*.log" >&2; tail -20 "$run"/*.log >&2; exit 1; }
    sleep 0.2
  done
}

start() {
  mkdir -p "$run" "$root/docker" "$root/containerd"
  if [ ! -f "$saved" ]; then
    for s in "${sysctls[@]}"; do
      v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v"
    done > "$saved"
  fi
  ip netns list | grep -qw "$netns" || ip netns add "$netns"
  in_netns ip link set lo up

  # Docker asks for CAP_SYS_RESOURCE for privileged containers, which this
  # kind of VM does not grant; the wrapper takes it out of the bundle.
  cat > "$run/runc" <<'EOF'
#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
def strip(path):
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return
    # A bundle's config.json holds the process; a --process file is one.
    caps = spec.get("process", spec).get("capabilities")
    if not caps:
        return
    for kind in caps:
        caps[kind] = [c for c in caps[kind] if c != "CAP_SYS_RESOURCE"]
    with open(path, "w") as f:
        json.dump(spec, f)
for i, a in enumerate(args):
    if a in ("--bundle", "-b") and i + 1 < len(args):
        strip(os.path.join(args[i + 1], "config.json"))
    elif a == "--process" and i + 1 < len(args):
        strip(args[i + 1])
os.execv("/usr/sbin/runc", ["runc"] + args)
EOF
  chmod +x "$run/runc"

  if ! [ -S "$run/containerd.sock" ] || ! in_netns ctr --address "$run/containerd.sock" version >/dev/null 2>&1; then
    cat > "$run/containerd.toml" <<EOF
version = 2
root = "$root/containerd"
state = "$run/containerd-state"
[grpc]
  address = "$run/containerd.sock"
EOF
    setsid nsenter --net="/run/netns/$netns" containerd --config "$run/containerd.toml" \
      > "$run/containerd.log" 2>&1 < /dev/null &
    wait_for 30 containerd ctr --address "$run/containerd.sock" version
  fi
  if ! DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then
    # No masquerading: the namespace has nowhere to send packets anyway,
    # and its iptables rules stay in it.
    setsid nsenter --net="/run/netns/$netns" dockerd --host "unix://$sock" --containerd "$run/containerd.sock" \
      --data-root "$root/docker" --exec-root "$run/docker-exec" --pidfile "$run/dockerd.pid" \
      --add-runtime "kafscale-runc=$run/runc" --default-runtime kafscale-runc \
      --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs \
      --ip-masq=false --bridge none --dns 127.0.0.1 \
      > "$run/dockerd.log" 2>&1 < /dev/null &
    wait_for 60 dockerd env DOCKER_HOST="unix://$sock" docker version
  fi
  echo "export DOCKER_HOST=unix://$sock KAFSCALE_NETNS=$netns"
}

stop() {
  # By their command lines: each daemon is found whether or not this
  # script started it in this shell.
  for daemon in "dockerd --host unix://$sock" "containerd --config $run/containerd.toml"; do
    pkill -f "$daemon" 2>/dev/null || continue
    for _ in $(seq 100); do pgrep -f "$daemon" >/dev/null || break; sleep 0.2; done
    pkill -9 -f "$daemon" 2>/dev/null || true
  done
  # Shims of containers that outlived their daemon.
  pkill -f "containerd-shim.*$run" 2>/dev/null || true
  ip netns list | grep -qw "$netns" && ip netns delete "$netns"
  if [ -f "$saved" ]; then
    while IFS== read -r key value; do
      [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] || sysctl -q -w "$key=$value" >/dev/null
    done < "$saved"
    rm -f "$saved"
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  exec) shift; DOCKER_HOST="unix://$sock" in_netns "$@" ;;
  *) echo "usage: $0 start|stop|exec CMD..." >&2; exit 2 ;;
esac
