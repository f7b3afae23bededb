"""What compacted topics are for, with unmodified Kafka tools: a Kafka
Streams application with its default settings whose state store is restored
from its changelog after a broker restart, and Kafka Connect in distributed
mode whose connector, with its offsets, survives restarts of the broker and
of the worker. Both create their compacted topics themselves; the cleaner
runs meanwhile."""

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from clients import JAVA_VERSIONS
from conftest import create_topic, running
from harness import CACHE, REPO, Cluster, free_port
from test_compaction import CLEANING_ARGS

KAFKA = JAVA_VERSIONS[-1]
JARS = str(CACHE / "jars" / f"kafka-{KAFKA}" / "*")
VOCABULARY = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running(Cluster(tmp_path_factory.mktemp("compacted-clients"), name="compacted-clients",
                         broker_args=CLEANING_ARGS)) as c:
        yield c


class JavaProcess:
    """A Java program whose output lines are collected as they come."""

    def __init__(self, args: list[str], log: Path):
        self.log = log.open("w")
        self.lines: list[str] = []
        self.proc = subprocess.Popen(["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", JARS, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            self.log.write(line)
            self.log.flush()

    def wait_for_line(self, text: str, timeout: float):
        deadline = time.time() + timeout
        while text not in self.lines:
            assert self.proc.poll() is None, f"exited before {text!r}:\n" + "\n".join(self.lines[-40:])
            assert time.time() < deadline, f"no {text!r} in {timeout}s:\n" + "\n".join(self.lines[-40:])
            time.sleep(0.2)

    def stop(self, timeout: float = 60):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def policy(bootstrap: str, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(timeout=30)["cleanup.policy"].value


def read_topic(bootstrap: str, topic: str, partitions: int):
    """Every record of `topic` from the beginning, as (key, value)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, done = [], set()
    try:
        while len(done) < partitions:
            m = c.poll(10)
            assert m is not None, f"{topic}: no end of partitions"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                done.add(m.partition())
            else:
                out.append((m.key(), m.value()))
    finally:
        c.close()
    return out


def produce_lines(bootstrap: str, topic: str, lines: list[str]):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "log_level": 2})
    for line in lines:
        p.produce(topic, value=line.encode())
    assert p.flush(60) == 0


def lines(start: int, count: int) -> list[str]:
    return [" ".join(VOCABULARY[(i * j) % len(VOCABULARY)] for j in range(1, 5)) for i in range(start, start + count)]


def word_count(cluster: Cluster, state_dir: Path, log: Path) -> JavaProcess:
    app = JavaProcess([str(REPO / "e2e" / "clients" / "java" / "WordCount.java"), cluster.bootstrap, "text",
                       "counts", str(state_dir), "wordcount"], log)
    app.wait_for_line("RUNNING", 180)
    return app


def wait_for_counts(cluster: Cluster, expected: Counter, timeout: float = 120):
    deadline = time.time() + timeout
    while True:
        latest = {k.decode(): int.from_bytes(v, "big") for k, v in read_topic(cluster.bootstrap, "counts", 3)}
        if latest == dict(expected):
            return
        assert time.time() < deadline, f"counts {latest} are not {dict(expected)}"
        time.sleep(1)


def test_streams_state_is_restored_from_its_compacted_changelog_after_a_broker_restart(cluster, tmp_path):
    create_topic(cluster.bootstrap, "text", 3)
    create_topic(cluster.bootstrap, "counts", 3)
    first, second = lines(0, 300), lines(300, 200)
    produce_lines(cluster.bootstrap, "text", first)
    app = word_count(cluster, tmp_path / "state-a", tmp_path / "wordcount-a.log")
    try:
        wait_for_counts(cluster, Counter(w for line in first for w in line.split()))
    finally:
        app.stop()
    assert policy(cluster.bootstrap, "wordcount-counts-changelog") == "compact"

    cluster.restart_broker_and_flusher()
    produce_lines(cluster.bootstrap, "text", second)
    # A new state directory: the store can only come back from the changelog.
    app = word_count(cluster, tmp_path / "state-b", tmp_path / "wordcount-b.log")
    try:
        wait_for_counts(cluster, Counter(w for line in first + second for w in line.split()))
    finally:
        app.stop()


def rest(port: int, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"}, method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def connect_worker(cluster: Cluster, tmp_path: Path, port: int, run: int) -> JavaProcess:
    props = tmp_path / "worker.properties"
    # Connect's defaults otherwise: its three topics are created by the
    # worker, compacted, with its default replication factor.
    props.write_text(f"""bootstrap.servers={cluster.bootstrap}
group.id=connect-e2e
config.storage.topic=connect-configs
offset.storage.topic=connect-offsets
status.storage.topic=connect-status
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
listeners=http://127.0.0.1:{port}
offset.flush.interval.ms=1000
""")
    worker = JavaProcess(["org.apache.kafka.connect.cli.ConnectDistributed", str(props)],
                         tmp_path / f"connect-{run}.log")
    deadline = time.time() + 180
    while True:
        try:
            rest(port, "/connectors")
            return worker
        except OSError:
            assert worker.proc.poll() is None, "the worker exited:\n" + "\n".join(worker.lines[-40:])
            assert time.time() < deadline, "the worker's REST API never answered:\n" + "\n".join(worker.lines[-40:])
            time.sleep(1)


def wait_for_lines(cluster: Cluster, expected: list[str], timeout: float = 120):
    deadline = time.time() + timeout
    while True:
        got = [v.decode() for _, v in read_topic(cluster.bootstrap, "file-lines", 1)]
        if len(got) >= len(expected):
            first_difference = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
            assert got == expected, (f"lines lost, duplicated or out of order: {len(got)} read, "
                                     f"{len(expected)} written, first difference at {first_difference}")
            return
        assert time.time() < deadline, f"{len(got)} of {len(expected)} lines arrived"
        time.sleep(1)


def test_connect_distributed_keeps_its_connector_and_offsets_across_restarts(cluster, tmp_path):
    create_topic(cluster.bootstrap, "file-lines", 1)
    source = tmp_path / "input.txt"
    source.write_text("".join(f"line {i}\n" for i in range(50)))
    port = free_port()
    worker = connect_worker(cluster, tmp_path, port, 1)
    try:
        for topic in ("connect-configs", "connect-offsets", "connect-status"):
            assert policy(cluster.bootstrap, topic) == "compact", topic
        rest(port, "/connectors", {"name": "lines", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "tasks.max": "1", "file": str(source), "topic": "file-lines"}})
        wait_for_lines(cluster, [f"line {i}" for i in range(50)])
        time.sleep(2)  # past an offset flush
    finally:
        worker.stop()

    cluster.restart_broker_and_flusher()
    with source.open("a") as f:
        f.write("".join(f"line {i}\n" for i in range(50, 80)))
    worker = connect_worker(cluster, tmp_path, port, 2)
    try:
        # The REST API answers before the worker has read its config topic
        # back; the connector is there once it has.
        deadline = time.time() + 120
        while True:
            try:
                connectors = rest(port, "/connectors")
                status = rest(port, "/connectors/lines/status") if connectors == ["lines"] else None
            except urllib.error.HTTPError as e:  # 404 or 409 while the worker rejoins
                connectors, status = f"HTTP {e.code}", None
            states = [status["connector"]["state"]] + [t["state"] for t in status["tasks"]] if status else []
            if status and status["tasks"] and all(s == "RUNNING" for s in states):
                break
            assert time.time() < deadline, f"connectors {connectors}, status {status}"
            time.sleep(1)
        # Resumed from its stored offset: the old lines are not read again.
        wait_for_lines(cluster, [f"line {i}" for i in range(80)])
    finally:
        worker.stop()
