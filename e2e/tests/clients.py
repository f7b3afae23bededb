"""Runs the real Kafka clients used by the tests: the Java client (3.9 and 4.x
jars), franz-go and librdkafka (confluent-kafka)."""

from __future__ import annotations

import os
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

from harness import CACHE, REPO

JAVA_VERSIONS = ["3.9.1", "4.1.1"]


def java_roundtrip(version: str, bootstrap: str, topic: str, codec: str, count: int,
                   config_file: str | None = None) -> str:
    """`config_file`: a properties file of further client settings (security)."""
    jars = CACHE / "jars" / f"kafka-{version}" / "*"
    src = REPO / "e2e" / "clients" / "java" / "RoundTrip.java"
    out = subprocess.run(
        ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(jars), str(src), bootstrap, topic, codec, str(count)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "KAFSCALE_CLIENT_CONFIG": config_file or ""},
    )
    assert out.returncode == 0, f"java {version} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout.strip().splitlines()[-1]


def franz_roundtrip(bootstrap: str, topic: str, codec: str, count: int, *flags: str) -> str:
    """`flags`: franz-client's security flags (-tls-ca, -sasl, -user, ...)."""
    out = subprocess.run(
        [str(CACHE / "bin" / "franz-client"), "roundtrip", "-brokers", bootstrap, "-topic", topic,
         "-codec", codec, "-count", str(count), *flags],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, f"franz-go failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout.strip().splitlines()[-1]


def record(codec: str, i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return (f"key-{i}".encode(), f"value-{i}-{'x' * (i % 200)}".encode(),
            [("idx", str(i).encode()), ("codec", codec.encode())])


def librdkafka_roundtrip(bootstrap: str, topic: str, codec: str, count: int,
                         config: dict | None = None) -> str:
    """`config`: further librdkafka settings (security.protocol, sasl.*, ssl.*)."""
    config = config or {}
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                         "compression.type": codec, "linger.ms": 5, **config})
    acked: dict[tuple[int, int], int] = {}
    errors: list[str] = []

    def on_delivery(i):
        def cb(err, msg):
            if err is not None:
                errors.append(f"{i}: {err}")
            else:
                acked[(msg.partition(), msg.offset())] = i
        return cb

    for i in range(count):
        key, value, headers = record(codec, i)
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery(i))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0, "librdkafka producer did not drain"
    assert not errors, errors[:5]
    assert len(acked) == count, f"{len(acked)} distinct positions for {count} records"

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"unused-{topic}", "enable.auto.commit": False,
                         **config})
    if "oauth_cb" in config:
        # The token callback is served by poll; metadata needs the token.
        consumer.poll(0.5)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    seen = 0
    deadline = time.time() + 120
    try:
        while seen < count:
            assert time.time() < deadline, f"timed out after {seen} of {count}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            i = acked.pop((msg.partition(), msg.offset()), None)
            assert i is not None, f"unexpected record at {msg.partition()}/{msg.offset()}"
            key, value, headers = record(codec, i)
            assert (msg.key(), msg.value(), msg.headers()) == (key, value, headers), f"record {i} differs"
            seen += 1
    finally:
        consumer.close()
    return f"ok librdkafka codec={codec} records={seen}"
