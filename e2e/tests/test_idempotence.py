"""Default-configured producers (idempotence on, acks=all) and retried batches:
every record is stored exactly once."""

import random
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from clients import CACHE, JAVA_VERSIONS, REPO
from conftest import create_topic
from harness import Cluster, free_port
from proxy import DropFirstProduceResponse
from test_crash import BackgroundProducer
from verify import check_history, read_all
import subprocess

RECORDS = 50_000


def run(argv):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{argv[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("version", JAVA_VERSIONS)
def test_java_default_producer(cluster, version):
    topic = f"default-java-{version.replace('.', '_')}"
    create_topic(cluster.bootstrap, topic, 6)
    src = REPO / "e2e" / "clients" / "java" / "DefaultProducer.java"
    line = run(["java", "-cp", str(CACHE / "jars" / f"kafka-{version}" / "*"), str(src), cluster.bootstrap, topic, str(RECORDS)])
    assert line == f"ok default-producer records={RECORDS}"


def test_franz_go_default_producer(cluster):
    create_topic(cluster.bootstrap, "default-franz", 6)
    line = run([str(CACHE / "bin" / "franz-client"), "default", "-brokers", cluster.bootstrap,
                "-topic", "default-franz", "-count", str(RECORDS)])
    assert line == f"ok franz-go default-producer records={RECORDS}"


def test_retried_batch_is_not_stored_twice(tmp_path):
    proxy_port = free_port()
    cluster = Cluster(tmp_path, "dedupe", broker_args=["--advertised-port", str(proxy_port)])
    proxy = DropFirstProduceResponse(cluster.broker.port, proxy_port)
    try:
        bootstrap = f"127.0.0.1:{proxy_port}"
        create_topic(bootstrap, "dedupe", 1)
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20,
                             "log_level": 2})
        errors = []
        for i in range(2000):
            producer.produce("dedupe", value=str(i).encode(),
                             on_delivery=lambda err, msg: err and errors.append(str(err)))
        assert producer.flush(60) == 0
        assert errors == []
        assert proxy.dropped == 1, "the proxy never dropped a produce response"
        values = [v for _, v in read_all(bootstrap, "dedupe")[0]]
        assert sorted(values, key=int) == [str(i).encode() for i in range(2000)], "lost or duplicated records"
        assert len(values) == 2000
    finally:
        proxy.close()
        cluster.close()


def test_idempotent_production_survives_kill_9(cluster):
    topic = "idempotent-crash"
    create_topic(cluster.bootstrap, topic, 3)
    producer = BackgroundProducer(cluster.bootstrap, topic, idempotent=True)
    producer.start()
    rng = random.Random(11)
    try:
        for _ in range(5):
            time.sleep(rng.uniform(0.5, 1.5))
            cluster.broker.proc.kill()
            cluster.flusher.proc.kill()
            cluster.flusher.start()
            cluster.broker.start()
        time.sleep(2.0)
    finally:
        producer.stopping.set()
        producer.join(90)
    assert producer.fatal is None, producer.fatal
    assert len(producer.acked) > 1000
    check_history(producer.acked, read_all(cluster.bootstrap, topic))
