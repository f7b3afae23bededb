"""Starts and stops the real servers the end-to-end tests run against: etcd,
MinIO, the flusher and the broker as separate processes, each on a free
loopback port in a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KAFSCALE_CACHE", Path.home() / ".cache" / "kafscale"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / os.environ.get("KAFSCALE_PROFILE", "debug")
MINIO_USER = "kafscale-test"
MINIO_PASSWORD = "kafscale-test-secret"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in a session. Another
    process can still take it before it is bound (ephemeral ports of client
    connections come from the same range): see `Proc.start_retrying_ports`."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for_port(port: int, proc: "Proc", timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not open port {port}:\n{proc.tail()}")


@dataclass
class Proc:
    """A child process with its log in the test's directory."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        env = dict(os.environ)
        env.update(self.env)
        logf = open(self.log, "ab")
        logf.write(f"\n==== start {' '.join(self.argv)}\n".encode())
        logf.flush()
        self.popen = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logf.close()
        return self

    def set_arg(self, flag: str, value: str) -> None:
        self.argv[self.argv.index(flag) + 1] = value

    def lost_port_race(self) -> bool:
        """Exited because a port it was given got taken in the meantime."""
        return not self.alive() and "Address already in use" in self.tail(80)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a crashed pod."""
        if self.alive():
            self.popen.kill()
            self.popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Etcd:
    def __init__(self, workdir: Path, extra: list[str] | None = None):
        self.port, peer = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "etcd"
        self.proc = Proc(
            "etcd",
            [
                "etcd", "--name", "default", "--data-dir", str(self.data),
                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer}",
                *(extra or []),
            ],
            workdir / "etcd.log",
        )

    def start(self) -> "Etcd":
        self.proc.start()
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def discard(self) -> None:
        """Stops etcd for good and frees its disk (its WAL preallocates 64 MB)."""
        self.proc.stop()
        shutil.rmtree(self.data, ignore_errors=True)


class MinIO:
    def __init__(self, workdir: Path):
        self.port, self.console = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "minio"
        self.proc = Proc(
            "minio",
            [str(CACHE / "bin" / "minio"), "server", str(self.data), "--quiet",
             "--address", f"127.0.0.1:{self.port}", "--console-address", f"127.0.0.1:{self.console}"],
            workdir / "minio.log",
            env={"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
                 "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"},
        )

    def start(self) -> "MinIO":
        self.proc.start()
        wait_for_port(self.port, self.proc)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=1)
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"MinIO not ready:\n{self.proc.tail()}")

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        self.proc.kill()

    def discard(self) -> None:
        """Stops MinIO for good and frees its disk: a whole suite's objects
        would otherwise stay in the temp directories until pytest prunes them,
        and MinIO refuses writes once the disk is nearly full."""
        self.proc.stop()
        shutil.rmtree(self.data, ignore_errors=True)


class Flusher:
    def __init__(self, workdir: Path, minio: MinIO, prefix: str, bucket: str = "kafscale",
                 extra: list[str] | None = None):
        self.socket = workdir / "run" / "flusher.sock"
        self.http_port = free_port()
        self.proc = Proc(
            "flusher",
            [str(TARGET / "kafscale-flusher"), "--socket", str(self.socket), "--bucket", bucket,
             "--endpoint", minio.endpoint, "--path-style", "--create-bucket", "--prefix", prefix,
             "--s3-attempt-timeout-ms", "2000", "--s3-max-attempts", "3",
             "--http-listen", f"127.0.0.1:{self.http_port}", *(extra or [])],
            workdir / "flusher.log",
            env={"AWS_ACCESS_KEY_ID": MINIO_USER, "AWS_SECRET_ACCESS_KEY": MINIO_PASSWORD,
                 "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "info"},
        )

    def start(self) -> "Flusher":
        for attempt in range(3):
            if self.socket.exists():
                self.socket.unlink()
            self.proc.start()
            deadline = time.time() + 30
            while not self.socket.exists():
                if not self.proc.alive():
                    break
                if time.time() > deadline:
                    raise TimeoutError(f"flusher socket missing:\n{self.proc.tail()}")
                time.sleep(0.05)
            try:
                wait_for_port(self.http_port, self.proc)
                return self
            except RuntimeError:
                pass
            if not self.proc.lost_port_race() or attempt == 2:
                raise RuntimeError(f"flusher exited:\n{self.proc.tail()}")
            self.http_port = free_port()
            self.proc.set_arg("--http-listen", f"127.0.0.1:{self.http_port}")
        return self


# The write path of every broker the suite starts unless a test chooses one:
# the broker's default (intake), or KAFSCALE_E2E_WRITE_PATH=segments.
WRITE_PATH = os.environ.get("KAFSCALE_E2E_WRITE_PATH", "intake")


def write_path_of(extra: list[str] | None) -> str:
    args = extra or []
    return args[args.index("--write-path") + 1] if "--write-path" in args else WRITE_PATH


def write_path_args(extra: list[str] | None) -> list[str]:
    return [] if "--write-path" in (extra or []) else ["--write-path", WRITE_PATH]


class Broker:
    def __init__(self, workdir: Path, etcd: Etcd, flusher: Flusher, cluster_id: str, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None):
        self.port = port or free_port()
        self.http_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.write_path = write_path_of(extra)
        self.proc = Proc(
            "broker",
            [str(TARGET / "kafscale-broker"), "--mode", "production", "--listen", self.bootstrap,
             "--etcd-endpoints", etcd.endpoint, "--flusher-socket", str(flusher.socket),
             "--cluster-id", cluster_id, "--default-partitions", "3",
             "--http-listen", f"127.0.0.1:{self.http_port}", *write_path_args(extra), *(extra or [])],
            workdir / "broker.log",
            env={"RUST_LOG": "info", **(env or {})},
        )

    def start(self) -> "Broker":
        for attempt in range(3):
            self.proc.start()
            try:
                wait_for_port(self.port, self.proc)
                wait_for_port(self.http_port, self.proc)
                return self
            except RuntimeError:
                pass
            if not self.proc.lost_port_race() or attempt == 2:
                raise RuntimeError(f"broker exited:\n{self.proc.tail()}")
            # Only the HTTP port can change: clients keep the Kafka port.
            self.http_port = free_port()
            self.proc.set_arg("--http-listen", f"127.0.0.1:{self.http_port}")
        return self


class Cluster:
    """etcd + MinIO + flusher + broker, all real, all separate processes."""

    def __init__(self, workdir: Path, name: str = "e2e", broker_args: list[str] | None = None,
                 flusher_args: list[str] | None = None, broker_env: dict[str, str] | None = None,
                 broker_port: int | None = None, etcd_args: list[str] | None = None):
        self.workdir = workdir
        self.started: list[Proc] = []
        try:
            self.etcd = self._up(Etcd(workdir, etcd_args))
            self.minio = self._up(MinIO(workdir))
            self.prefix = f"test/{name}"
            self.flusher = self._up(Flusher(workdir, self.minio, self.prefix, extra=flusher_args))
            self.broker = self._up(Broker(workdir, self.etcd, self.flusher, name, broker_args, broker_env, broker_port))
        except BaseException:
            # A cluster that fails to start leaves nothing running.
            for p in reversed(self.started):
                p.stop()
            raise

    def _up(self, component):
        self.started.append(component.proc)
        return component.start()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def restart_broker_and_flusher(self, kill: bool = True) -> None:
        for p in (self.broker.proc, self.flusher.proc):
            p.kill() if kill else p.stop()
        self.flusher.start()
        self.broker.start()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in
                         (self.broker.proc, self.flusher.proc, self.minio.proc, self.etcd.proc))

    def close(self) -> None:
        for p in (self.broker.proc, self.flusher.proc):
            p.stop()
        self.minio.discard()
        self.etcd.discard()

    def objects(self, topic: str) -> list[Path]:
        return segment_objects(self.minio, self.prefix, topic)

    @property
    def write_path(self) -> str:
        return self.broker.write_path

    def intake_objects(self) -> list[str]:
        return intake_objects(self.minio, self.prefix)


def intake_objects(minio: "MinIO", prefix: str) -> list[str]:
    """Names of the intake objects MinIO holds under a cluster's prefix."""
    root = minio.data / "kafscale" / prefix / "!intake"
    return sorted(name for name in (os.listdir(root) if root.exists() else []) if name.endswith(".kfi"))


def segment_objects(minio: "MinIO", prefix: str, topic: str) -> list[Path]:
    """Segment files MinIO holds for a topic (MinIO's single-drive layout keeps key paths)."""
    root = minio.data / "kafscale" / prefix / topic
    # os.walk skips what disappears while it walks (merging, retention).
    return sorted(Path(d) / name for d, dirs, files in os.walk(root) for name in dirs + files
                  if name.startswith("segment-") and name.endswith((".kfs", ".index")))


class Node:
    """One broker pod's worth of processes: a flusher and a broker with its own
    id, ports and directory."""

    def __init__(self, workdir: Path, etcd: Etcd, minio: MinIO, prefix: str, name: str, node_id: int,
                 broker_args: list[str]):
        self.id = node_id
        self.dir = workdir / f"node{node_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flusher = Flusher(self.dir, minio, prefix)
        self.broker = Broker(self.dir, etcd, self.flusher, name, ["--node-id", str(node_id), *broker_args])

    def start(self) -> "Node":
        if not self.flusher.proc.alive():
            self.flusher.start()
        self.broker.start()
        return self

    def signal(self, sig: int) -> None:
        self.broker.proc.popen.send_signal(sig)


class MultiCluster:
    """etcd + MinIO + several (flusher, broker) nodes sharing one cluster."""

    def __init__(self, workdir: Path, name: str = "multi", nodes: int = 3, broker_args: list[str] | None = None):
        self.workdir = workdir
        self.write_path = write_path_of(broker_args)
        self.etcd = Etcd(workdir).start()
        self.nodes = []
        try:
            self.minio = MinIO(workdir).start()
            self.prefix = f"test/{name}"
            for i in range(nodes):
                self.nodes.append(Node(workdir, self.etcd, self.minio, self.prefix, name, i, broker_args or []))
        except BaseException:
            # A cluster that fails to start leaves nothing running.
            for n in self.nodes:
                n.broker.proc.stop()
                n.flusher.proc.stop()
            if hasattr(self, "minio"):
                self.minio.proc.stop()
            self.etcd.proc.stop()
            raise

    def bootstrap(self, nodes: list[int] | None = None) -> str:
        return ",".join(self.nodes[i].broker.bootstrap for i in (nodes if nodes is not None else range(len(self.nodes))))

    def objects(self, topic: str) -> list[Path]:
        return segment_objects(self.minio, self.prefix, topic)

    def intake_objects(self) -> list[str]:
        return intake_objects(self.minio, self.prefix)

    def logs(self) -> str:
        procs = [p for n in self.nodes for p in (n.broker.proc, n.flusher.proc)]
        return "\n".join(f"--- node log {p.log}\n{p.tail()}" for p in procs)

    def warnings(self, count: int = 6) -> str:
        """Each process's last warnings and errors, short enough to go into an
        assertion message (CI shows those whole, long logs only in part)."""
        out = []
        for n in self.nodes:
            for p in (n.broker.proc, n.flusher.proc):
                try:
                    text = re.sub(r"\x1b\[[0-9;]*m", "", p.log.read_text(errors="replace"))
                except OSError:
                    continue
                found = [l for l in text.splitlines() if " WARN " in l or " ERROR " in l]
                out += [f"[{p.log.parent.name}/{p.log.name}] {l[-300:]}" for l in found[-count:]]
        return "\n".join(out)

    def close(self) -> None:
        for n in self.nodes:
            if n.broker.proc.alive():
                n.signal(signal.SIGCONT)
            n.broker.proc.kill()
            n.flusher.proc.stop()
        self.minio.discard()
        self.etcd.discard()


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET on 127.0.0.1:port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except urllib.error.URLError as e:
        return 0, str(e.reason)  # not listening (yet)


def scrape(port: int) -> dict[str, float]:
    """Prometheus text from /metrics as {'name{labels}': value}."""
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
